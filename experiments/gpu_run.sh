#!/usr/bin/env bash
# The GPU backend's tests and benchmark on a machine with an NVIDIA GPU and this image's Python
# (numba, numba-cuda, numpy, scipy present; pyscipopt carried as a wheel in .whl/). Logs and
# JSON go to $OUT. Run from the repository root:
#
#   bash experiments/gpu_run.sh tests            # tests/test_gpu.py
#   bash experiments/gpu_run.sh bench ARGS...    # experiments/bench_gpu.py ARGS
#   bash experiments/gpu_run.sh all ARGS...      # both
#
# The package is made importable without building it: the repository root goes on the path
# and a meta-path finder maps tensorcomp.oracles to oracles/ (what the editable install does).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TENSORCOMP_COMPILE=foreground
ROOT=$(pwd)
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
SITE=$(python3 -c "import site; print(site.getsitepackages()[0])")
cat > "$SITE/_tensorcomp_checkout.py" <<PY
import importlib.util
import sys


class _Oracles:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname != "tensorcomp.oracles":
            return None
        return importlib.util.spec_from_file_location(
            fullname, "$ROOT/oracles/__init__.py",
            submodule_search_locations=["$ROOT/oracles"])


sys.meta_path.append(_Oracles)
PY
printf '%s\nimport _tensorcomp_checkout\n' "$ROOT" > "$SITE/_tensorcomp_checkout.pth"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import numpy, numba, sys; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__)"
  python3 -c "import tensorcomp.oracles, tensorcomp.gpu as g; print(g.available())"
} 2>&1 | tee "$OUT/env.log"
mode=${1:-all}
shift || true
status=0
if [ "$mode" = tests ] || [ "$mode" = all ]; then
  python3 -m pytest -q -p no:cacheprovider -x --durations=10 tests/test_gpu.py 2>&1 \
    | tee "$OUT/tests.log" || status=1
fi
if [ "$mode" = bench ] || [ "$mode" = all ]; then
  python3 experiments/bench_gpu.py --out "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log" \
    || status=1
fi
exit $status
