"""The README and docs/ say only what is true of this checkout: every `xopt` command in them parses
with xopt's own argument parser (a made-up flag, model or variant fails here, not in a reader's
terminal), every relative link and anchor resolves, every script or module they name exists, and
the README stays one screen. Fast: nothing is run, only parsed."""
from __future__ import annotations

import importlib.util
import io
import re
import shlex
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
README_MAX_LINES = 80  # one screen

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE = re.compile(r"(?<!`)`(xopt [^`]+)`(?!`)")
OPERATORS = {"&&", "||", "|", ";", "&"}


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix() if ROOT in page.parents else page.name


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of each ```bash/sh/shell block."""
    return [(text.count("\n", 0, m.start()) + 2, m.group(2)) for m in FENCE.finditer(text)
            if m.group(1) in ("bash", "sh", "shell", "console")]


def shell_commands(block: str) -> list[list[str]]:
    """The simple commands of a shell block, as bash splits them: continuation lines joined,
    comments dropped, `&&`/`||`/`|`/`;` separating commands, a `$ ` prompt and leading VAR=value
    assignments removed."""
    out = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        line = re.sub(r"^\s*\$\s+", "", line)
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        words: list[str] = []
        for tok in [*lex, ";"]:
            if tok in OPERATORS:
                while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
                    words.pop(0)
                if words:
                    out.append(words)
                words = []
            else:
                words.append(tok)
    return out


def _is_placeholder(word: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_.]*", word))  # MODEL, DIR, A.onnx's kin in prose


# docs/plugins.md shows a third-party model being added; no such distribution is installed here
PLUGIN_EXAMPLES = {"mymodel", "broken"}
# what argparse says of a command named in prose without all its arguments (`xopt run demucs`
# writes ...): incomplete, not wrong; a flag, model or variant that does not exist still fails
INCOMPLETE = ("the following arguments are required", "expected one argument")


def xopt_error(args: list[str], partial: bool = False) -> str | None:
    """Why `xopt ARGS` would be refused by xopt's own parser before it runs (None: it parses).
    Beyond argparse, a model must be one xopt has (or an .onnx path or a placeholder such as
    MODEL) and each variant named one the model has. `partial`: a command mentioned in prose,
    whose missing arguments are no error."""
    from xopt.cli import build_parser, unknown_flags
    from xopt.errors import UserError
    from xopt.registry import get_model

    err = io.StringIO()
    parser = build_parser(args)
    try:
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            ns, extra = parser.parse_known_args(args)
    except SystemExit as exc:
        if exc.code in (0, None):  # --help, --version
            return None
        lines = err.getvalue().strip().splitlines()
        if not (partial and lines and any(m in lines[-1] for m in INCOMPLETE)):
            return lines[-1] if lines else f"exit {exc.code}"
        # incomplete: still no flag the command lacks, and a model it has
        sub = parser.commands[args[0]]
        flags = {o for a in sub._actions for o in a.option_strings}
        extra = [a for a in args if a.startswith("-") and a.split("=", 1)[0] not in flags]
        ns = type("Args", (), {"command": args[0], "model": args[1] if len(args) > 1 and "model" in
                               {a.dest for a in sub._actions} and not args[1].startswith("-") else None})()
    if extra:
        return unknown_flags(parser.commands.get(ns.command) or parser, extra)
    model = getattr(ns, "model", None)
    if model is None or _is_placeholder(model) or model.endswith(".onnx") or model in PLUGIN_EXAMPLES:
        return None
    try:
        spec = get_model(model)
        names = [getattr(ns, "variant", None)] if isinstance(getattr(ns, "variant", None), str) else \
            list(getattr(ns, "variant", None) or [])
        names += [v for v in (getattr(ns, "variants", None) or "").split(",") if v]
        for v in names:
            spec.variant(v)
    except UserError as exc:
        return str(exc)
    return None


def xopt_lines(page: Path) -> list[tuple[str, list[str], bool]]:
    """Every `xopt ...` command of a page as (where, args, partial): those of its shell blocks,
    complete, and its inline code spans (not elided with `...`), which may leave arguments out."""
    text = page.read_text(encoding="utf-8")
    found = []
    for line_no, block in bash_blocks(text):
        for words in shell_commands(block):
            if words[0] == "xopt":
                found.append((f"{_rel(page)}:{line_no}+", words[1:], False))
    for span in INLINE.findall(FENCE.sub("", text)):
        if "..." not in span and "…" not in span and "|" not in span:
            found.append((f"{_rel(page)} `{span}`", shlex.split(span)[1:], True))
    return found


ALL_COMMANDS = [c for page in PAGES for c in xopt_lines(page)]


def test_the_docs_hold_commands_for_every_xopt_command():
    from xopt.cli import commands

    names = {m.NAME for m in commands()}
    assert {(ROOT / "docs" / "commands" / f"{n}.md").is_file() for n in names} == {True}, \
        sorted(n for n in names if not (ROOT / "docs" / "commands" / f"{n}.md").is_file())
    used = {args[0] for _, args, partial in ALL_COMMANDS if args and not partial}
    assert names <= used, f"no example of: {sorted(names - used)}"
    assert len(ALL_COMMANDS) > 60


@pytest.mark.parametrize("where,args,partial", ALL_COMMANDS, ids=[w for w, _, _ in ALL_COMMANDS])
def test_every_documented_xopt_command_parses(where, args, partial):
    why = xopt_error(args, partial)
    assert why is None, f"{where}: xopt {shlex.join(args)}: {why}"


def test_the_checker_catches_a_made_up_flag_model_or_variant():
    assert xopt_error(["export", "modnet", "--fp16"]) is None
    assert "--fp17" in xopt_error(["export", "modnet", "--fp17"]) and "--fp16" in xopt_error(["export", "modnet", "--fp17"])
    assert "--variant" in xopt_error(["profile", "modnet", "--variant", "fp16"])  # no prefix matching
    assert xopt_error(["export", "modnte"]) is not None
    assert xopt_error(["profile", "modnet", "--variants", "fp32,fp17"]) is not None
    assert xopt_error(["exprt", "modnet"]) is not None
    assert xopt_error(["run", "modnet", "photo.jpg"]) is None  # -o has a default
    assert xopt_error(["run", "modnet"]) is not None  # the input has none
    assert xopt_error(["export", "--help"]) is None
    assert xopt_error(["run", "demucs"], partial=True) is None  # named in prose
    assert xopt_error(["run", "demucs", "--fp16"], partial=True) is not None
    assert xopt_error(["run", "dmucs"], partial=True) is not None
    with pytest.raises(AttributeError):
        _resolve("xopt.runtime.load_pipelines")


def test_a_page_with_a_made_up_flag_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# p\n\n```bash\n# a comment\npip install . && xopt export modnet \\\n    --fp17  # typo\n"
                    "xopt list | xopt profiles\n```\n\nand `xopt profile modnet --frame 3` inline.\n")
    found = xopt_lines(page)
    assert [(args, partial) for _, args, partial in found] == [
        (["export", "modnet", "--fp17"], False), (["list"], False), (["profiles"], False),
        (["profile", "modnet", "--frame", "3"], True)]
    assert [xopt_error(args, partial) is None for _, args, partial in found] == [False, True, True, False]


def test_shell_commands_split_as_bash_does():
    block = "# c\n$ A=1 xopt list && xopt run modnet 'f/*.png' -o m/ --ray   # note\nx | y; z \\\n  --w\n"
    assert shell_commands(block) == [["xopt", "list"], ["xopt", "run", "modnet", "f/*.png", "-o", "m/", "--ray"],
                                     ["x"], ["y"], ["z", "--w"]]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#+\s+(.*?)\s*$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or ROOT not in dest.parents:
            bad.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target} (no such heading)")
    assert not bad, f"{_rel(page)}: {bad}"


SCRIPT = re.compile(r"(?<![\w/.<-])((?:tools|models|tests|benchmarks|\.ci)/[\w./-]*\w)(?![\w/<*{-])")
MODULE = re.compile(r"python3? -m (xopt(?:\.\w+)+)")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_script_path_and_module_named_exists(page):
    text = LINK.sub("", page.read_text(encoding="utf-8"))  # link targets are relative to the page: checked above
    missing = [p for p in SCRIPT.findall(text) if not (ROOT / p).exists()]
    missing += [m for m in MODULE.findall(text) if importlib.util.find_spec(m) is None]
    assert not missing, f"{_rel(page)} names what this checkout lacks: {sorted(set(missing))}"


def test_the_checks_see_the_tools_the_readme_names():
    text = README.read_text(encoding="utf-8")
    assert {"tools/install_check.py", "tools/runtime_wheel_check.py"} <= set(SCRIPT.findall(text))


def test_the_readme_is_one_screen():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md is {lines} lines; the reference belongs in docs/"


def test_the_development_page_prints_the_readme_test_command():
    """.ci/run executes the README's line after the marker; the docs must not show another one."""
    readme = README.read_text(encoding="utf-8")
    command = readme.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "pytest" in command
    assert command in (ROOT / "docs" / "development.md").read_text(encoding="utf-8")


def test_the_readme_links_every_docs_page():
    readme = README.read_text(encoding="utf-8")
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in LINK.findall(readme) if not re.match(r"[a-z]+:", t)}
    assert not [_rel(p) for p in PAGES[1:] if p.resolve() not in linked]


def _resolve(dotted: str):
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


DOTTED = re.compile(r"\bxopt(?:\.[A-Za-z_]\w*)+")


def test_every_python_name_the_docs_use_exists():
    """`xopt.runtime.load_pipeline`, `xopt.fitting.measure_in_fresh_process`, ...: each resolves
    (the "xopt.models" entry-point group is a name, not a module path, but resolves as the package)."""
    names = sorted({n for page in PAGES for n in DOTTED.findall(page.read_text(encoding="utf-8"))})
    assert "xopt.runtime.load_pipeline" in names
    bad = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            bad.append(f"{name}: {exc}")
    assert not bad, bad


def _blocks(kind: str) -> list[tuple[str, str]]:
    return [(f"{_rel(p)}:{p.read_text(encoding='utf-8').count(chr(10), 0, m.start()) + 2}", m.group(2))
            for p in PAGES for m in FENCE.finditer(p.read_text(encoding="utf-8")) if m.group(1) == kind]


def test_every_python_and_toml_example_is_well_formed():
    """Python examples compile and name what xopt.runtime has; TOML examples parse (the sweep file
    is also loaded as a sweep by tests/analysis/test_sweep_file.py)."""
    import ast

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    import xopt.runtime as rt

    python, toml = _blocks("python"), _blocks("toml")
    assert python and toml
    for where, body in python:
        tree = ast.parse(body, where)
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                and isinstance(n.value, ast.Name) and n.value.id == "rt"}
        assert all(hasattr(rt, a) for a in used), (where, used)
    for where, body in toml:
        assert tomllib.loads(body), where
