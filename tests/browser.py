"""Open a report in Debian's chromium through playwright and say what a reader would see.

`open_report(path, screenshot)` fails the test on any JavaScript error, console error or
network request other than the file itself, and returns what rendered: per plot container its
SVG/canvas count, per image whether it decoded, per audio element its readiness and duration,
per 3D viewer whether it drew a canvas. Outside CI a machine without chromium skips; in CI
(.ci/run installs it) that is a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         # WebGL for the 3D viewer without a GPU: Chromium's software rasteriser must be asked for
         "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]

STATE = """() => ({
  plots: [...document.querySelectorAll('.plot')].map(d => ({
    id: d.dataset.plot, svg: d.querySelectorAll('svg.main-svg').length,
    marks: d.querySelectorAll('svg .point, svg .trace, svg path.js-line, svg .bars path, svg .boxlayer path').length})),
  images: [...document.querySelectorAll('figure img')].map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
  audio: [...document.querySelectorAll('audio')].map(a => ({ready: a.readyState, duration: a.duration,
                                                            error: a.error && a.error.code})),
  mols: [...document.querySelectorAll('.mol')].map(m => ({rendered: m.dataset.rendered === '1',
                                                         canvas: m.querySelectorAll('canvas').length})),
  text: document.body.innerText,
})"""


def chromium_or_skip():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("playwright is not installed (pip install -e .[test])")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it with apt-get install chromium")
        pytest.skip("no chromium here (apt-get install chromium)")


def open_report(path: Path, screenshot: Path, width: int = 1300) -> dict:
    from playwright.sync_api import sync_playwright

    chromium_or_skip()
    url = Path(path).resolve().as_uri()
    errors, requests, dialogs = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url) if r.url != url and not r.url.startswith("data:")
                    else None)
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(url, wait_until="load")
            page.wait_for_function("() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)",
                                   timeout=20_000)
            page.wait_for_timeout(500)  # plotly's and 3Dmol's first frames
            state = page.evaluate(STATE)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not requests, f"the report made network requests: {requests}"
    assert not dialogs, f"a script ran from report text: {dialogs}"
    return state


def assert_rendered(state: dict, previews: bool = True, structures: bool = False) -> None:
    assert state["plots"], "no plot containers"
    empty = [p["id"] for p in state["plots"] if p["svg"] == 0]
    assert not empty, f"plot containers with no SVG: {empty}"
    if previews:
        assert state["images"], "no preview images"
        broken = [i["alt"] for i in state["images"] if not i["ok"]]
        assert not broken, f"preview images that did not load: {broken}"
        assert all(a["ready"] >= 1 and a["duration"] > 0 and not a["error"] for a in state["audio"]), state["audio"]
    if structures:
        assert state["mols"] and all(m["rendered"] and m["canvas"] for m in state["mols"]), state["mols"]


def keep_screenshot(src: Path, name: str) -> None:
    """A copy under benchmarks/results/screenshots/ for the record (XOPT_KEEP_SCREENSHOTS=1)."""
    if os.environ.get("XOPT_KEEP_SCREENSHOTS"):
        dest = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "screenshots" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)


def profile_and_open(model: str, variants, artifacts: Path, tmp: Path, structures: bool = False,
                     **profile_kw) -> tuple[dict, dict]:
    """Profile `model` through the Python API with previews, write its reports, open report.html;
    (report, what the browser saw). The screenshot is tmp/<model>.png."""
    from xopt.analysis.profiler import profile_model
    from xopt.analysis.report import write_reports

    chromium_or_skip()
    staging = tmp / "staging"
    report = profile_model(model, variants, artifacts=artifacts, previews_dir=staging, **profile_kw)
    paths = write_reports(report, tmp / "report", previews_dir=staging)
    assert paths["html"].stat().st_size < 10_000_000
    shot = tmp / f"{model}.png"
    state = open_report(paths["html"], shot)
    assert_rendered(state, previews=True, structures=structures)
    assert "Verdict" in state["text"] and "Ship for" in state["text"]
    keep_screenshot(shot, f"{model}-report.png")
    return report, state
