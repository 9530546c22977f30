"""Batch inference: a built artifact over many files (a music library, a folder of frames, a
proteome), in this process or through Ray Data.

In-process, one pipeline runs the files one after another. With Ray, the files stream through
`Dataset.map_batches` over an actor pool: each actor loads the pipeline once (one session per
actor) and processes the files Ray Data reads for it; the outputs come back to the driver, which
writes them. Either way an item's outputs appear all together (each written to a temporary name
and renamed), a file that fails is recorded and skipped, and OUT/batch.json records what was done
so a re-run processes only what is missing or changed.

    from xopt.runtime.batch import collect_inputs, run_batch
    result = run_batch("artifacts/demucs", collect_inputs("tracks/"), "stems/", use_ray=True)
    result.exit_code   # 0: every file done, 3: some failed (result.failed lists them)
"""
from __future__ import annotations

import glob
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from xopt import progress
from xopt.errors import OutputExistsError, UserError

RECORD_NAME = "batch.json"
KIND = "xopt-batch"
_GLOB = set("*?[")


def collect_inputs(where: str | os.PathLike) -> list[Path]:
    """The files a DIR (its visible files, sorted), a GLOB (`frames/*.png`, `**` recursive) or one
    FILE names."""
    text = str(where)
    path = Path(text)
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")]
    elif path.is_file():
        files = [path]
    elif _GLOB & set(text):
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True))
                 if Path(p).is_file() and not Path(p).name.startswith(".")]
    else:
        raise UserError(f"{text} does not exist", "pass a file, a directory or a glob such as 'frames/*.png'")
    if not files:
        raise UserError(f"{text} names no files", "pass a directory with input files or a glob that matches some")
    return [p.resolve() for p in files]


@dataclass
class BatchResult:
    total: int
    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    skipped: int = 0  # done by an earlier run, unchanged since
    where: str = "this process"
    wall_s: float = 0.0
    record: Path | None = None

    @property
    def incomplete(self) -> list[dict]:
        """Done, but the pipeline found something that failed a check (e.g. an input that ends early)."""
        return [d for d in self.done if any(n.get("failed") for n in d.get("notes") or ())]

    @property
    def exit_code(self) -> int:
        return 3 if self.failed or self.incomplete else 0

    @property
    def outputs(self) -> list[str]:
        return [o for d in self.done for o in d["outputs"]]


class _Record:
    """OUT/batch.json: per input its outputs (or its error), the input's size and mtime, and the
    artifact it went through; replaced atomically after every item."""

    def __init__(self, out: Path, artifact: dict, force: bool):
        self.path = out / RECORD_NAME
        self.artifact = artifact
        self.data = {"kind": KIND, "schema_version": 1, "items": {}, "runs": []}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            if not isinstance(data, dict) or data.get("kind") != KIND:
                if not force:
                    raise OutputExistsError(self.path, "-o/--output")
            else:
                self.data = data
        self._saved = 0.0

    def ours(self) -> set[str]:
        """Outputs an earlier batch wrote here: a re-run may replace them without --force."""
        return {o for it in self.data["items"].values() for o in it.get("outputs", [])}

    def unchanged(self, src: Path) -> bool:
        it = self.data["items"].get(str(src))
        if not it or it.get("status") != "ok" or it.get("artifact") != self.artifact:
            return False
        if any(n.get("failed") for n in it.get("notes") or ()):
            return False  # it failed a check (e.g. it ends early): run it again and say so again
        st = src.stat()
        return (it.get("size"), it.get("mtime_ns")) == (st.st_size, st.st_mtime_ns) and all(
            (self.path.parent / o).is_file() for o in it["outputs"])

    def put(self, src: Path, entry: dict, final: bool = False) -> None:
        try:
            st = src.stat()
            entry = {**entry, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        except OSError:
            pass
        self.data["items"][str(src)] = {**entry, "artifact": self.artifact}
        if final or time.monotonic() - self._saved > 1.0:  # a big corpus: at most one rewrite a second
            self.save()

    def save(self) -> None:
        from xopt.atomic import write_json

        write_json(self.path, self.data, force=True)
        self._saved = time.monotonic()


class _Commit:
    """Moves one item's outputs into OUT: all of them or none, never over a file xopt did not
    write (without force), never two inputs onto one output."""

    def __init__(self, out: Path, record: _Record, force: bool):
        self.out, self.force, self.ours, self.claimed = out, force, record.ours(), {}

    def check(self, src: Path, rels: list[str]) -> None:
        for rel in rels:
            other = self.claimed.get(rel)
            if other is not None and other != src:
                raise UserError(f"{src.name} and {other.name} both produce {rel}", "rename one of the inputs")
            dest = self.out / rel
            if dest.exists() and not self.force and rel not in self.ours:
                raise OutputExistsError(dest, "-o/--output")

    def files(self, src: Path, stage: Path, written: list[Path]) -> list[str]:
        rels = [str(Path(p).relative_to(stage)) for p in written]
        self.check(src, rels)
        for rel in rels:
            dest = self.out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, dest)  # same filesystem: the stage lives inside OUT
        self.claimed.update({r: src for r in rels})
        return rels

    def payload(self, src: Path, blob: bytes) -> list[str]:
        from xopt.atomic import write_bytes

        with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            rels = [m.name for m in members]
            if any(Path(r).is_absolute() or ".." in Path(r).parts for r in rels):
                raise UserError(f"a worker returned an output path outside {self.out}", "report this as a bug")
            self.check(src, rels)
            for m in members:
                write_bytes(self.out / m.name, tar.extractfile(m).read(), force=True)
        self.claimed.update({r: src for r in rels})
        return rels


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, UserError) else f"{type(exc).__name__}: {text}"


def _session_options(backend: str, threads: int | None) -> dict:
    return {"intra_op_num_threads": threads} if threads and backend.startswith("ort") else {}


def _artifact(art: Path, variant: str) -> dict:
    from xopt.manifest import load as load_manifest

    m = load_manifest(art)
    return {"model": m.model, "variant": variant, "sha256": m.variant(variant)["sha256"]}


class _Progress:
    def __init__(self, total: int, label: str, update):
        self.total, self.label, self.update = total, label, update
        self.done = self.failed = 0
        self.t0 = time.perf_counter()

    def item(self, src: Path, ok: bool, note: str) -> None:
        self.done += ok
        self.failed += not ok
        n = self.done + self.failed
        rate = (time.perf_counter() - self.t0) / n
        left = rate * (self.total - n)
        self.update({"what": "files", "done": n, "total": self.total})
        progress.info(f"[{n}/{self.total}, {self.failed} failed, ~{left:.0f} s left] {'✓' if ok else '✗'} "
                      f"{src.name}: {note}")


def run_batch(artifacts: str | os.PathLike, inputs: list[Path], out: str | os.PathLike, variant: str = "fp32",
              backend: str = "ort-cpu", force: bool = False, use_ray: bool = False, address: str | None = None,
              workers: int | None = None, threads: int | None = None) -> BatchResult:
    """Run every file of `inputs` through the pipeline of the export in `artifacts`; outputs
    under `out`. `use_ray` streams them through Ray Data (`address` joins a cluster, else an
    embedded Ray on 127.0.0.1), `workers` actors with `threads` intra-op threads each."""
    art, out = Path(artifacts), Path(out)
    inputs = [Path(p).resolve() for p in inputs]
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file, and many inputs need a directory", "pass a directory to -o/--output")
    if any(out.resolve() == p for p in inputs):
        raise UserError(f"the output {out} is one of the inputs", "choose another -o/--output")
    for name, n in (("--workers", workers), ("--threads", threads)):
        if n is not None and n < 1:
            raise UserError(f"{name} {n} is not a count", f"pass {name} 1 or more")
    artifact = _artifact(art, variant)
    out.mkdir(parents=True, exist_ok=True)
    record = _Record(out, artifact, force)
    result = BatchResult(total=len(inputs), record=record.path)
    todo = [p for p in inputs if not record.unchanged(p)]
    result.skipped = len(inputs) - len(todo)
    if result.skipped:
        progress.info(f"{result.skipped} of {len(inputs)} file(s) already done in {out} (unchanged): skipped")
    commit = _Commit(out, record, force)
    t0 = time.perf_counter()
    record.data["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": len(inputs),
                                "ray": use_ray, "variant": variant, "backend": backend})
    try:
        if todo:
            from xopt.runtime import ray_batch

            with progress.bar(f"{artifact['model']} {variant} on {len(todo)} file(s)") as update:
                track = _Progress(len(todo), artifact["model"], update)

                def finish(src: Path, outcome: dict) -> None:
                    outcome = {**outcome, "t": round(time.perf_counter() - t0, 3)}  # when, since the run began
                    ok = outcome["status"] == "ok"
                    (result.done if ok else result.failed).append({"input": str(src), **outcome})
                    record.put(src, outcome)
                    track.item(src, ok, f"{len(outcome['outputs'])} file(s) ({outcome['seconds']:.1f} s)" if ok
                               else outcome["error"])

                if use_ray:
                    result.where = ray_batch.run(art, todo, variant, backend, address, workers,
                                                 _session_options(backend, threads or 1), commit, finish)
                else:
                    _in_process(art, todo, out, variant, backend, _session_options(backend, threads), commit, finish)
    finally:
        result.wall_s = time.perf_counter() - t0
        record.data["runs"][-1].update(finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"), where=result.where,
                                       done=len(result.done), failed=len(result.failed), skipped=result.skipped,
                                       wall_s=round(result.wall_s, 2))
        record.save()
    return result


def _in_process(art, todo, out, variant, backend, options, commit, finish) -> None:
    from xopt.runtime import load_pipeline

    pipe = load_pipeline(art, backend=backend, variant=variant, **options)
    stage_root = Path(tempfile.mkdtemp(prefix=".xopt-batch-", dir=out))
    try:
        for i, src in enumerate(todo):
            stage = stage_root / str(i)
            stage.mkdir()
            t0 = time.perf_counter()
            pipe.notes.clear()
            try:
                written = pipe.process_file(src, pipe.batch_target(src, stage), force=True)
                rels = commit.files(src, stage, written)
                outcome = {"status": "ok", "outputs": rels, "error": None, "notes": list(pipe.notes)}
            except Exception as exc:  # noqa: BLE001 - a bad file is recorded and skipped
                outcome = {"status": "failed", "outputs": [], "error": _one_line(exc)}
            finish(src, {**outcome, "seconds": round(time.perf_counter() - t0, 3), "worker": os.getpid()})
            shutil.rmtree(stage, ignore_errors=True)
    finally:
        pipe.close()
        shutil.rmtree(stage_root, ignore_errors=True)
