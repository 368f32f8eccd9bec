#!/usr/bin/env bash
# Everything that needs a GPU, in one go, for a machine lent for a few minutes:
#   1. the `gpu`-marked tests (CUDA training step vs the CPU, bf16 + torch.compile on CUDA with a
#      resume on the CPU, compiled vs eager gradients on CUDA, CUDA backends vs the CPU), run
#      beside the suite's build phase, which times nothing;
#   2. then benchmarks/gpu_suite.sh's timings, with the machine to themselves.
#
#   bash benchmarks/gpu_checks.sh                       # logs under runs/gpu_suite/
#   PY=python3 PYTHONPATH=$PWD bash benchmarks/gpu_checks.sh   # with a Python that has the deps
set -uo pipefail
cd "$(dirname "$0")/.."
export PY=${PY:-.venv/bin/python} RUN_DIR=${RUN_DIR:-runs/gpu_suite} PYTHONUNBUFFERED=1
mkdir -p "$RUN_DIR"
timeout 420 "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/test_gpu.py tests/test_compile.py tests/test_runtime.py > "$RUN_DIR/pytest-gpu.log" 2>&1 &
tests=$!
PHASE=build bash benchmarks/gpu_suite.sh 2>&1 | tee "$RUN_DIR/suite-build.log"
build=$?
wait "$tests"
tests_rc=$?
tail -n 15 "$RUN_DIR/pytest-gpu.log"
PHASE=time bash benchmarks/gpu_suite.sh 2>&1 | tee "$RUN_DIR/suite-time.log"
timed=$?
echo "exit codes: gpu tests $tests_rc, suite build $build, suite timings $timed"
exit $((tests_rc || build || timed))
