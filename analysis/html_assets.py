"""JavaScript libraries a report embeds, so report.html works offline with no request out.

plotly.js comes from the installed `plotly` distribution (the version its Python side was
built for); 3Dmol.js (BSD-3-Clause) is the npm release vendored under assets/ by
tools/vendor_3dmol.py, which records the version and sha256 checked here.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

ASSETS = Path(__file__).with_name("assets")
THREEDMOL = {"version": "2.5.5", "file": "3Dmol-min.js",
             "sha256": "f7cc78921ae72e7623e89cdd111434f58c2efddd2ffda1cd212644b406fb8016"}


def plotly_version() -> str:
    import plotly

    return plotly.__version__


@lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


@lru_cache(maxsize=1)
def threedmol_js() -> str:
    import hashlib

    from xopt.errors import InternalError

    data = (ASSETS / THREEDMOL["file"]).read_bytes()
    if hashlib.sha256(data).hexdigest() != THREEDMOL["sha256"]:
        raise InternalError(f"{ASSETS / THREEDMOL['file']} is not 3Dmol.js {THREEDMOL['version']} "
                            "(sha256 differs); re-run tools/vendor_3dmol.py")
    return data.decode("utf-8")


def script(js: str) -> str:
    """An inline <script>; a library's text never holds '</script' (checked, not assumed)."""
    if "</script" in js.lower():
        raise ValueError("inline script contains '</script'")
    return f"<script>{js}</script>"
