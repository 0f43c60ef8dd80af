#!/usr/bin/env bash
# GPU checks of issue #13, as one run (about 8 minutes at most; every step has its own time limit).
#
#   bash benchmarks/gpu_checks.sh            # writes under $OUT (default /tmp/gpu_checks)
#
# (a) logit-margin throughput against a bare forward loop (ResNet-50 random weights, 224 px, batch 256;
#     zoo CNNs, batch 2048), input margins against FAB in both norms (1,000 images), and the AutoAttack
#     comparison on 1,000 images (as many row groups as fit in its time limit);
# (b) the whole test suite on CUDA (the tests' device="auto" resolves to the GPU), output in pytest-cuda.txt.
# Without brittle installed, src/ goes on PYTHONPATH; wheels under .whl/ (e.g. pyautoattack) are installed
# into /tmp/site first (the device has no network).
set -u
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
LOG="$OUT/log.txt"
{
  date -u; nvidia-smi -L; nproc
  $PY -c "import torch, platform; print('torch', torch.__version__, torch.cuda.get_device_name(0), platform.python_version())"
} > "$OUT/machine.txt" 2>&1
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$LOG"
}
step 60 logit-resnet50 $PY benchmarks/bench_logit_margin.py --models resnet50 --n 4096 --batch-size 256 \
  --repeats 5 --device cuda --out "$OUT/logit_resnet50.json"
step 40 logit-cnn $PY benchmarks/bench_logit_margin.py --models standard,linf_madry --n 10000 --batch-size 2048 \
  --repeats 7 --device cuda --out "$OUT/logit_cnn.json"
step 90 margins-vs-fab $PY benchmarks/bench_margins.py --models standard,linf_madry --n 1000 --norms linf,l2 \
  --methods brittle,fab-autoattack --batch-size 1000 --device cuda --out "$OUT/margins_gpu.json"
step 230 autoattack $PY benchmarks/bench_autoattack.py --n 1000 --batch-size 1000 --device cuda --time-limit 150 \
  --out "$OUT/autoattack_gpu.json"
step 140 pytest-cuda $PY -m pytest -q --timeout 300 -n 16 -p no:cacheprovider -o addopts="" tests \
  > "$OUT/pytest-cuda.txt" 2>&1
tail -5 "$OUT/pytest-cuda.txt" | tee -a "$LOG"
