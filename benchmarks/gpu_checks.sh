#!/usr/bin/env bash
# GPU checks of issue #13, in two calls that fit a 15-minute device budget (each step has its own time limit).
#
#   bash benchmarks/gpu_checks.sh measure   # ~8 min: logit throughput, margins vs FAB, attack profile, AutoAttack
#   bash benchmarks/gpu_checks.sh verify    # ~8 min: the whole test suite on CUDA, then brittle's side again
#                                           #   (AutoAttack from the cache where it holds a row, run where not);
#   STEPS=pytest,margins bash benchmarks/gpu_checks.sh verify   # a subset of pytest,margins,profile,autoattack
#
# Results go under $OUT (default /tmp/gpu_checks), at most 8 files per call.
# measure: (a) logit-margin throughput against a bare forward loop (ResNet-50 random weights, 224 px, batch 256;
#   zoo CNNs, batch 2048); (b) input margins against FAB in both norms (1,000 images); (c) a per-stage and
#   per-operator profile of brittle's attack (benchmarks/profile_attack.py); (d) the AutoAttack comparison on
#   1,000 images, AutoAttack's per-sample results cached in autoattack_gpu_aa.json.
# verify: (e) the whole test suite on CUDA (the tests' device="auto" resolves to the GPU; tests/test_attack_graphs.py
#   compares CUDA-graph steps with eager ones), output in pytest-cuda.txt; (f) the margins-vs-FAB rows again, brittle
#   with CUDA graphs and without (brittle-eager), and the profile; (g) the AutoAttack comparison on all
#   seven row groups: brittle's side measured again, AutoAttack's read from benchmarks/results/
#   autoattack_gpu_aa.json where it holds the row and run (and cached) where it does not.
# The device has no network: wheels under .whl/ (and unpacked packages under .whl/site) are installed into
# /tmp/site first, and brittle itself is installed in editable mode without dependencies. Build .whl/ here
# (git-ignored; ~18 MB of the 64 MiB a call may carry) for the device's Python 3.12:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl shap==0.51.0 slicer==0.0.8 shapiq==1.4.1 colour==0.1.5 galois==0.4.11 sparse-transform==0.2.1 \
#     lightgbm==4.7.0 skops==0.16.0 prettytable==3.18.0 wcwidth pot==0.9.6 gguf==0.19.0 pyautoattack==0.2.0 \
#     pytest-xdist execnet pytest-timeout
#   then unzip the pyautoattack wheel into .whl/site without pyautoattack/examples/* and delete that wheel.
# pytest-xdist runs the suite on 16 workers; without it the suite runs serially (and may not fit its limit).
set -u
PHASE=${1:-measure}
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH="$PWD/src:/tmp/site:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}"
$PY -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "editable install failed"
LOG="$OUT/log-$PHASE.txt"
step() {  # step SECONDS NAME COMMAND...
  local limit=$1 name=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >> "$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0))s" | tee -a "$LOG"
}
{
  date -u; nvidia-smi -L; nproc
  $PY -c "import torch, platform; print('torch', torch.__version__, torch.cuda.get_device_name(0), platform.python_version())"
} >> "$LOG" 2>&1
if [ "$PHASE" = measure ]; then
  step 60 logit-resnet50 $PY benchmarks/bench_logit_margin.py --models resnet50 --n 4096 --batch-size 256 \
    --repeats 5 --device cuda --out "$OUT/logit_resnet50.json"
  step 40 logit-cnn $PY benchmarks/bench_logit_margin.py --models standard,linf_madry --n 10000 --batch-size 2048 \
    --repeats 7 --device cuda --out "$OUT/logit_cnn.json"
  step 90 margins-vs-fab $PY benchmarks/bench_margins.py --models standard,linf_madry --n 1000 --norms linf,l2 \
    --methods brittle,fab-autoattack --batch-size 1000 --device cuda --out "$OUT/margins_gpu.json"
  step 40 profile $PY benchmarks/profile_attack.py --model linf_madry --norms l2,linf --n 1000 --device cuda \
    --out "$OUT/profile.json"
  step 320 autoattack $PY benchmarks/bench_autoattack.py --n 1000 --batch-size 1000 --device cuda --time-limit 250 \
    --aa-cache "$OUT/autoattack_gpu_aa.json" --out "$OUT/autoattack_gpu.json"
else
  STEPS=${STEPS:-pytest,margins,profile,autoattack}  # which verify steps to run (a comma-separated subset)
  case ",$STEPS," in *,pytest,*)
  WORKERS=$($PY -c "import xdist" >/dev/null 2>&1 && echo "-n 16" || echo "")
  TIMEOUT=$($PY -c "import pytest_timeout" >/dev/null 2>&1 && echo "--timeout 300" || echo "")
  [ -n "$WORKERS" ] || echo "pytest-xdist missing: the suite runs serially" | tee -a "$LOG"
  step 150 pytest-cuda bash -c "$PY -m pytest -q $TIMEOUT $WORKERS -p no:cacheprovider \
    -o addopts='-ra --import-mode=importlib' tests > '$OUT/pytest-cuda.txt' 2>&1"
  tail -5 "$OUT/pytest-cuda.txt" | tee -a "$LOG";; esac
  case ",$STEPS," in *,margins,*)
  step 90 margins-vs-fab $PY benchmarks/bench_margins.py --models standard,linf_madry --n 1000 --norms linf,l2 \
    --methods brittle,brittle-eager,fab-autoattack --batch-size 1000 --device cuda --out "$OUT/margins_gpu.json";; esac
  case ",$STEPS," in *,profile,*)
  step 40 profile $PY benchmarks/profile_attack.py --model linf_madry --norms l2,linf --n 1000 --device cuda \
    --out "$OUT/profile.json";; esac
  case ",$STEPS," in *,autoattack,*)
  [ -f benchmarks/results/autoattack_gpu_aa.json ] && cp benchmarks/results/autoattack_gpu_aa.json "$OUT/"
  step 240 autoattack $PY benchmarks/bench_autoattack.py --n 1000 --batch-size 1000 --device cuda \
    --time-limit 200 --aa-cache "$OUT/autoattack_gpu_aa.json" --out "$OUT/autoattack_gpu.json";; esac
fi
