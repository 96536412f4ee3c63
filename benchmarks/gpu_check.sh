#!/usr/bin/env bash
# One command for the device machine (under 5 minutes): GPU tests, then GPU timings.
#   bash benchmarks/gpu_check.sh
# The device image has CuPy, numpy, mpi4py and nvcc; ase, h5py, pyyaml and scipy come from the
# wheels in .whl/ (benchmarks/fetch_gpu_wheels.sh downloads them). Results: $OUT/gpu_results.md,
# $OUT/gpu_tests.txt, $OUT/gpu_test_errors.jsonl (when OUT is set). Without a GPU it runs the
# CPU-side checks, says so, and exits 3.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-/tmp/deepcomp_gpu_check}"
mkdir -p "$OUT_DIR"
export OUT="$OUT_DIR"
if ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl; then
        export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check: could not install .whl/*.whl on $(python3 --version) (built for cp312); using what is installed"
        export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    fi
else
    echo "gpu_check: no .whl/ folder (run benchmarks/fetch_gpu_wheels.sh first); using what is installed"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 - <<'PY' || { echo "gpu_check: python dependencies missing (see above)"; exit 1; }
import numpy, ase, h5py, yaml, scipy  # noqa: F401
print("gpu_check: numpy", numpy.__version__, "ase", ase.__version__, "h5py", h5py.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu_check: /'
reason=$(python3 -c "from deepcomp_ase.backends.cupy_gpu import why_unavailable; print(why_unavailable())" 2>&1)
if [ -n "$reason" ]; then
    echo "gpu_check: NO GPU -- $reason"
    echo "gpu_check: running only the CPU-side checks (launcher, nvcc, NVRTC); GPU tests and timings SKIPPED"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_launch_cpu.py tests/gpu/test_nvcc_compile.py \
        tests/gpu/test_nvrtc_compile.py 2>&1 | tail -3
    printf '# GPU check\n\nNot run: %s\n' "$reason" > "$OUT/gpu_results.md"
    exit 3
fi
rm -f "$OUT/gpu_test_errors.jsonl"
status=0
timeout 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 | tee "$OUT/gpu_tests.txt" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
timeout 150 python3 benchmarks/gpu_bench.py --steps 10 || status=1
python3 - <<'PY'
import json, os, pathlib
p = pathlib.Path(os.environ["OUT"], "gpu_test_errors.jsonl")
rows = [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []
for prec in ("float64", "float32"):
    w = [r for r in rows if r.get("test") == "whole_model" and r["precision"] == prec]
    if w:
        print(f"gpu_check: whole model {prec}: worst relative error over {len(w)} configurations: "
              + ", ".join(f"{k} {max(r[k] for r in w):.2e}" for k in ("energy", "forces", "virial")))
PY
exit $status
