#!/usr/bin/env bash
# Run the deepcomp LAMMPS examples on 1 and 2 MPI ranks and compare their thermo output with
# expected/ (and the 1-rank with the 2-rank run).
#
#   ./run_examples.sh            run and compare
#   ./run_examples.sh --update   run and rewrite expected/
#
# Environment: PYTHON (python with deepcomp-ase installed), LMP (lmp), MPIEXEC (mpiexec),
# OUT (output directory, default: a new temporary directory), MODEL (compressed model; made
# from tests/data/models/cuau_se_e2_a.dp when missing).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
PYTHON=${PYTHON:-python}
LMP=${LMP:-lmp}
MPIEXEC=${MPIEXEC:-mpiexec}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/deepcomp_lammps_examples.XXXXXX")}
MODEL=${MODEL:-$OUT/cuau_se_e2_a.dcz}
update=0
[ "${1:-}" = "--update" ] && update=1
mkdir -p "$OUT"
# numpy's BLAS threads would compete with the MPI ranks
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

if [ ! -f "$MODEL" ]; then
    echo "compressing tests/data/models/cuau_se_e2_a.dp -> $MODEL"
    "$PYTHON" -m deepcomp_ase compress -i "$repo/tests/data/models/cuau_se_e2_a.dp" -o "$MODEL" >/dev/null ||
        "$PYTHON" -c "import sys; from deepcomp_ase.compress.api import compress_model; compress_model(*sys.argv[1:])" \
            "$repo/tests/data/models/cuau_se_e2_a.dp" "$MODEL"
fi
echo "outputs in $OUT"

status=0
# name deck expected_exit_status lmp-variables...
run_case() {
    local name=$1 deck=$2 want=$3
    shift 3
    for n in 1 2; do
        local log="$OUT/$name.np$n.log"
        local start=$SECONDS rc=0
        (cd "$here" && "$MPIEXEC" -n "$n" "$LMP" -in "$deck" -log "$log" -var model "$MODEL" "$@") \
            >"$OUT/$name.np$n.screen" 2>&1 || rc=$?
        if { [ "$want" = 0 ] && [ $rc -ne 0 ]; } || { [ "$want" != 0 ] && [ $rc -eq 0 ]; }; then
            echo "FAIL $name on $n rank(s): exit status $rc (see $OUT/$name.np$n.screen)"
            status=1
            continue
        fi
        printf '%-22s %d rank(s): %3ds, exit %d\n' "$name" "$n" $((SECONDS - start)) "$rc"
    done
    local log1="$OUT/$name.np1.log" log2="$OUT/$name.np2.log"
    [ "$want" = 0 ] || { log1="$OUT/$name.np1.screen"; log2="$OUT/$name.np2.screen"; }
    if ! "$PYTHON" "$here/thermo_tools.py" same "$log1" "$log2" --rtol 1e-10; then
        echo "FAIL $name: 1 and 2 ranks differ"
        status=1
    fi
    if [ $update = 1 ]; then
        "$PYTHON" "$here/thermo_tools.py" extract "$log1" >"$here/expected/$name.thermo"
    elif ! "$PYTHON" "$here/thermo_tools.py" compare "$log1" "$here/expected/$name.thermo" --rtol 1e-6; then
        echo "FAIL $name: differs from expected/$name.thermo"
        status=1
    fi
}

mkdir -p "$here/expected"
run_case nvt_500 in.cuau_nvt 0 -var data cuau_500.lmp -var nsteps 100
run_case npt_500 in.cuau_npt 0 -var data cuau_500.lmp -var nsteps 100
run_case nvt_4000 in.cuau_nvt 0 -var data cuau_4000.lmp -var nsteps 20
run_case overflow_warn in.cuau_overflow 0 -var policy warn
run_case overflow_error in.cuau_overflow 1 -var policy error

if [ $status = 0 ]; then echo "all examples OK"; else echo "some examples FAILED"; fi
exit $status
