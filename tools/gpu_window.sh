#!/usr/bin/env bash
# The GPU window: one prepared command for a lent GPU machine (an H100/H200 with torch+CUDA,
# onnx, onnxruntime's CPU build and nvidia-ml-py, no network) that returns a result to trust.
#
# Before the window, on the development machine (fills .whl/, git-ignored, 8 wheels, about 3 MB):
#     bash tools/gpu_wheels.sh
# The device command (run tool: carry [".whl"], timeout_s 540; this line is the
# whole command line):
#     bash tools/gpu_window.sh
#
# Steps, each under its own timeout (at most 475 s in all; about 4 minutes expected):
#   1. gpu      (10 s)  nvidia-smi sees a GPU, else ONE line and exit 3 (the dry run on a CPU machine)
#   2. install  (60 s)  .whl/*.whl offline into a --target folder put on PYTHONPATH, then
#                       pip install --no-index --no-deps --no-build-isolation -e .
#   3. env      (40 s)  tools/gpu_env.py: driver, CUDA, cuDNN, GPU, clocks, MIG/ECC, TF32 flags,
#                       xopt's requirements met or not; nvidia-smi -q beside it
#   4. measure  (230 s) tools/gpu_measure.py: every model whose packages are here (MODNet; Demucs
#                       from the carried wheels; OpenFold cannot travel) x FP32/TF32/FP16/BF16
#   5. tests    (120 s) the gpu- and trt-marked tests, --junitxml
# What comes back, in $OUT (7 files, each cut to 15 MiB): window.log, env.json, nvidia-smi.txt,
# gpu-measure.json, gpu-measure.log, pytest-junit.xml, pytest.log.
# Not measurable in the window: ONNX Runtime CUDA/TensorRT providers (onnxruntime-gpu is too
# large to carry) and TensorRT engines (its -libs wheels download at install time).
#
# `bash tools/gpu_window.sh --install-only` runs step 2 alone with $PYTHON (default python3): the
# rehearsal tests/tools/test_gpu_window.py runs on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
WHEELS=${XOPT_WHEELS:-.whl}
SITE=${XOPT_WINDOW_SITE:-/tmp/xopt-window-site}
FAILED=()

install_xopt() {
  if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -qq --disable-pip-version-check --root-user-action=ignore --no-index --no-deps \
      --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl || return 1
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "install: no wheels in $WHEELS/ (bash tools/gpu_wheels.sh makes them): xopt's own needs must be installed already"
  fi
  "$PY" -m pip install -qq --disable-pip-version-check --root-user-action=ignore --no-index --no-deps \
    --no-build-isolation -e . || return 1
  "$PY" -c "import xopt.runtime, xopt.models.modnet, xopt.registry as r; \
print('install: xopt from', xopt.runtime.__file__.rsplit('/', 2)[0], '; models:', ', '.join(s.name for s in r.list_models()))"
}

if [ "${1:-}" = "--install-only" ]; then
  install_xopt
  exit $?
fi

# 1. A GPU, or one line and nothing else.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! timeout 10 nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_window: no NVIDIA GPU present (nvidia-smi missing or it lists no device); nothing run"
  exit 3
fi
if [ -z "${OUT:-}" ] || ! mkdir -p "$OUT"; then
  echo "gpu_window: \$OUT (the folder whose files come back) is not set or not writable"
  exit 2
fi
export PYTHONUNBUFFERED=1
T0=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run under its own timeout, note failures, never stop
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (timeout ${limit} s)"
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  [ "$rc" -eq 0 ] || FAILED+=("$name:$rc")
  return "$rc"
}

window() {
nvidia-smi -L
step install 60 bash tools/gpu_window.sh --install-only || {
  echo "gpu_window: the offline install failed: nothing else can run"; exit 4; }
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"

step nvidia-smi 15 sh -c "nvidia-smi -q > '$OUT/nvidia-smi.txt' 2>&1"
step env 40 "$PY" tools/gpu_env.py --out "$OUT/env.json" --force

step measure 230 sh -c "'$PY' tools/gpu_measure.py --out '$OUT/gpu-measure.json' --force --budget-s 210 \
  --child-timeout-s 120 > '$OUT/gpu-measure.log' 2>&1"
grep -E '^[a-z0-9_-]+ torch (fp32|tf32|fp16|bf16): ' "$OUT/gpu-measure.log" || tail -n 20 "$OUT/gpu-measure.log"

mapfile -t TESTS < <(grep -rlE 'mark\.(gpu|trt)\b' tests --include='test_*.py' | sort)
step tests 120 sh -c "'$PY' -m pytest -q -p no:cacheprovider -m 'gpu or trt' --junitxml '$OUT/pytest-junit.xml' \
  ${TESTS[*]} > '$OUT/pytest.log' 2>&1"
tail -n 15 "$OUT/pytest.log"

for f in "$OUT"/*; do  # the window returns files of at most 16 MiB
  [ "$(stat -c %s "$f")" -gt 15728640 ] && truncate -s 15M "$f" && echo "cut to 15 MiB: $f"
done
echo "gpu_window: done in $((SECONDS - T0)) s; failed steps: ${FAILED[*]:-none}; files: $(cd "$OUT" && ls | tr '\n' ' ')"
[ ${#FAILED[@]} -eq 0 ]
}

window 2>&1 | tee -a "$OUT/window.log"
exit "${PIPESTATUS[0]}"
