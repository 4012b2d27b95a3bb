#!/usr/bin/env bash
# Runs ON an offline GPU host, with the wheels and speech bench/gpu_kit.py packed beside the repository:
#   bash bench/gpu_device.sh
# Installs the carried wheels beside the image's PyTorch, says what the machine has, and runs
# bench.parakeet_size at Parakeet TDT 0.6B v3's full size. Everything lands in $OUT (device.log,
# parakeet_size.json), which comes back even when a step fails or the time runs out.
set -uo pipefail
OUT=${OUT:-/tmp/stenopod-out}
PYTHON=${PYTHON:-python3}  # the image's python3 holds PyTorch
# What to measure; a smoke run on a CPU machine passes e.g. "--device cpu --size tiny --batches 1 2 --long 60".
BENCH_ARGS=${BENCH_ARGS:---device cuda}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
started=$(date +%s)
step() { echo "== $(($(date +%s) - started)) s: $*"; }

step "install the kit"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

step "the machine"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
"$PYTHON" -c "import sys, torch, lightning, nemo; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__, 'nemo', nemo.__version__)"
# faster-whisper on this GPU needs CTranslate2, whose PyPI wheels load CUDA 12's cuBLAS.
echo "cuBLAS / cuDNN libraries here:"
ldconfig -p | grep -E "libcublas\.so|libcudnn\.so" || true
timeout 30 find /usr/lib /usr/local /opt \( -name 'libcublas.so.1[0-9]*' -o -name 'libcudnn.so.[0-9]*' \) 2>/dev/null | head -20

step "parakeet at full size: batches 1/16/64/128 of 10 s, and one 600 s and one 3600 s recording"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
timeout 450 "$PYTHON" -m bench.parakeet_size $BENCH_ARGS --speech bench/work/gpu/speech.wav \
  --work /tmp/work --out "$OUT/parakeet_size.json"
echo "parakeet_size exit: $?"

# NeMo's CUDA-graph TDT decoder is off by default (it fails on hosts whose driver is older than the
# image's CUDA); where time is left, measure what it would give on this driver.
if (($(date +%s) - started < 300)); then
  step "the same with STENOPOD_NEMO_CUDA_GRAPHS=1, batches 16 and 128"
  # shellcheck disable=SC2086
  STENOPOD_NEMO_CUDA_GRAPHS=1 timeout 150 "$PYTHON" -m bench.parakeet_size $BENCH_ARGS --batches 16 128 --long \
    --speech bench/work/gpu/speech.wav --work /tmp/work --out "$OUT/parakeet_size_cuda_graphs.json"
  echo "parakeet_size (CUDA graphs) exit: $?"
fi
step "done"
