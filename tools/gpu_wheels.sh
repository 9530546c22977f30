#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels the GPU window's machine lacks, for its Python 3.12 on
# x86-64 Linux, at the versions of .ci/constraints.txt. The window (tools/gpu_window.sh) installs
# them offline before xopt itself. Run it on the development machine, which reaches PyPI.
#
#   bash tools/gpu_wheels.sh            # about 3.5 MB in 8 wheels
#
# Why these: the machine's image has torch, numpy, onnx, onnxruntime (CPU), nvidia-ml-py, rich,
# filelock, psutil, pillow, scikit-image, einops, pytest and hypothesis, but not
#   soundfile, soxr            xopt's base requirements (the Demucs pipeline's audio I/O)
#   cffi, pycparser            what soundfile loads its library with
#   filelock                   xopt needs >= 4.2 (dir_lock's retry); the image's may be older
#   demucs, julius             the Demucs model (imports nothing else the image lacks), so the
#                              window measures it beside MODNet
#   setuptools                 the build backend of the editable install, at the version the
#                              rehearsal here uses (the image's may be older than PEP 660 needs)
# OpenFold cannot travel (it builds from an sdist), nor can onnxruntime-gpu (too large) or
# TensorRT (its -libs wheels download from NVIDIA at install time).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${XOPT_WHEELS:-.whl}
NAMES=(soundfile soxr cffi pycparser filelock demucs julius setuptools)

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two would stop the window's install
for name in "${NAMES[@]}"; do
  pin=$(grep -i "^${name}==" .ci/constraints.txt || true)
  [ -n "$pin" ] || { echo "gpu_wheels: $name has no pin in .ci/constraints.txt" >&2; exit 1; }
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "$pin"
done
echo "gpu_wheels: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST/ (carry it: [\"$DEST\"])"
