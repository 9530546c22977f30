"""Vendor 3Dmol.js from the npm registry into analysis/assets/ (the structure viewer report.html
embeds): `python3 tools/vendor_3dmol.py [VERSION]`. Prints the sha256 to put in
analysis/html_assets.py THREEDMOL."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"package/build/3Dmol-min.js": "3Dmol-min.js", "package/build/3Dmol-min.js.LICENSE.txt":
         "3Dmol-min.js.LICENSE.txt", "package/LICENSE": "3Dmol-LICENSE.txt"}


def main(argv) -> int:
    version = argv[1] if len(argv) > 1 else "2.5.5"
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"3dmol@{version}", "--silent"], cwd=tmp, check=True)
        tgz = next(Path(tmp).glob("3dmol-*.tgz"))
        with tarfile.open(tgz) as tar:
            for member, name in FILES.items():
                with tar.extractfile(member) as src, open(ROOT / "analysis" / "assets" / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    js = (ROOT / "analysis" / "assets" / "3Dmol-min.js").read_bytes()
    print(f"3Dmol.js {version}: sha256 {hashlib.sha256(js).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
