#!/usr/bin/env bash
# One GPU check of the training path (issue 14, point 11), ready to run: about 8 minutes on one H100.
#
#   bench/gpu_check.sh                          # on a CUDA machine; results in $OUT/gpu_check.md
#   bench/gpu_check.sh --device cpu --smoke     # the script itself on a CPU, in well under a minute
#   bench/gpu_check.sh --out DIR                # where logs and the report go (default below)
#
# Checks, in order (each logged to $OUT/NAME.log, each with a time limit):
#   1. env       the machine: nvidia-smi, torch, the device, bf16 support
#   2. cuda      tests/test_cuda.py: bf16, FlashAttention, compile, a 3-step train() with resume on
#                CUDA, a compiled SFT run of varying lengths (at most 2 compiles), a training step
#                under torch.cuda.set_sync_debug_mode("error"), the seed shape (skipped on a CPU)
#   3. bench     bench/bench_train_gpu.py: eager and compiled, T = 512 and 1024, tokens/s and MFU
#                of the bare step and of train() (prefetch, accumulation 8)
#   4. pipeline  `spongebob pipeline --preset seed` capped at 3 steps a stage on world files shaped
#                like the real ones (the pretraining file repeated 20 times); --smoke: --dry-run
# Then $OUT/gpu_check.md holds a markdown table (check, status, seconds, detail) and the bench table.
set -uo pipefail

DEVICE=cuda
SMOKE=0
OUT="${TMPDIR:-/tmp}/spongebob-gpu-check"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="${2:?--device needs a value}"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
mkdir -p "$OUT" || exit 2
export SPONGEBOB_HOME="$OUT/home" SPONGEBOB_DEVICE="$DEVICE" PYTHONUNBUFFERED=1
REPORT="$OUT/gpu_check.md"
FAILED=0
{
  echo "# GPU check ($(date -u '+%Y-%m-%d %H:%M UTC'), device $DEVICE$([ $SMOKE = 1 ] && echo ', smoke'))"
  echo
  echo "| check | status | seconds | detail |"
  echo "|---|---|---|---|"
} > "$REPORT"

# run NAME LIMIT_SECONDS COMMAND...: log to $OUT/NAME.log, one row in the report
run() {
  local name=$1 limit=$2 t0 t1 rc status detail
  shift 2
  echo "== $name: $*"
  t0=$(date +%s.%N)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  if [ $rc = 0 ]; then status=ok; elif [ $rc = 124 ]; then status="TIMEOUT (${limit} s)"; else status="FAILED (exit $rc)"; fi
  if [ "$name" = cuda ] && [ $rc = 5 ] && [ "$DEVICE" = cpu ]; then
    status="skipped (no CUDA GPU)"  # pytest: the module skips itself, nothing collected
    rc=0
  fi
  [ $rc = 0 ] || FAILED=1
  detail=$(grep -E "passed|failed|skipped|error" "$OUT/$name.log" | tail -n 1 | tr '|' '/' | cut -c1-160)
  [ -n "$detail" ] || detail=$(tail -n 1 "$OUT/$name.log" | tr '|' '/' | cut -c1-160)
  printf '| %s | %s | %s | %s |\n' "$name" "$status" "$(awk "BEGIN {printf \"%.1f\", $t1 - $t0}")" \
    "$detail" >> "$REPORT"
  echo "   $status, log: $OUT/$name.log"
}

env_check() {
  command -v nvidia-smi > /dev/null && nvidia-smi
  "$PY" - << 'PYEOF'
import os, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda)
print("cores", os.cpu_count(), "| device", os.environ["SPONGEBOB_DEVICE"])
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability(),
          "| bf16", torch.cuda.is_bf16_supported(), "| GPUs", torch.cuda.device_count())
else:
    print("no CUDA GPU visible")
PYEOF
}

world_files() {  # the world's files, the pretraining file repeated 20 times (real-data volume)
  "$PY" -m spongebob data sample --out "$OUT/world" || return 1
  mkdir -p "$OUT/big" && cp "$OUT/world/"*.jsonl "$OUT/big/" || return 1
  for _ in $(seq 20); do cat "$OUT/world/pretrain.jsonl"; done > "$OUT/big/pretrain.jsonl"
  wc -l "$OUT/big/"*.jsonl | tail -n 1
}

export PY OUT
export -f env_check world_files
run env 60 bash -c env_check
if [ $SMOKE = 1 ]; then
  run cuda 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
  run bench 120 "$PY" bench/bench_train_gpu.py --device "$DEVICE" --smoke
  run world 60 bash -c world_files
  run pipeline 60 "$PY" -m spongebob pipeline --preset seed --data "$OUT/big" --out "$OUT/pipe" \
    --max-steps 3 --eval-limit 4 --device "$DEVICE" --dry-run
else
  # expected: about 1.5 + 3 + 0.1 + 3.5 minutes (compilation included); the limits leave room
  run cuda 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
  run bench 300 "$PY" bench/bench_train_gpu.py --device "$DEVICE" --seq-lens 512,1024 \
    --batches 32,64 --steps 10
  run world 60 bash -c world_files
  run pipeline 300 "$PY" -m spongebob pipeline --preset seed --data "$OUT/big" --out "$OUT/pipe" \
    --max-steps 3 --eval-limit 4 --device "$DEVICE"
fi
{
  echo
  echo "## bench/bench_train_gpu.py"
  echo
  grep -E '^\|' "$OUT/bench.log" || echo "(no table: see bench.log)"
} >> "$REPORT"
echo
cat "$REPORT"
exit $FAILED
