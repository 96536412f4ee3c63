#!/usr/bin/env bash
# pair_style deepcomp on one GPU through LAMMPS: the 4000-atom Cu/Au NVT deck of
# lammps_examples/ on 1 and on 2 MPI ranks (both ranks share the GPU: local rank mod GPU count),
# thermo of the two compared at 1e-10 relative and against the CPU-made expected output at 1e-6,
# loop time per step and atom reported. With DEVICE=cuda this is the device path (LAMMPS builds no
# neighbour list; positions in, forces out: docs/gpu.md): the script fails if the log does not say
# so, and reports each rank's GPU and the bytes moved per step. Called by benchmarks/gpu_check.sh;
# runs anywhere (DEVICE=cpu for a dry run without a GPU).
#
# Env: PYTHON, LMP, MPIEXEC (commands), DEVICE (cuda), NSTEPS (20), OUT (output folder).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
ex="$repo/lammps_examples"
PYTHON=${PYTHON:-python3}
LMP=${LMP:-lmp}
MPIEXEC=${MPIEXEC:-mpiexec}
DEVICE=${DEVICE:-cuda}
NSTEPS=${NSTEPS:-20}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/deepcomp_lammps_gpu.XXXXXX")}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
model="$OUT/cuau_se_e2_a.dcz"
"$PYTHON" -m deepcomp_ase compress -i "$repo/tests/data/models/cuau_se_e2_a.dp" -o "$model" >/dev/null || exit 1
status=0
for n in 1 2; do
    log="$OUT/nvt_4000.$DEVICE.np$n.log"
    (cd "$ex" && timeout 70 "$MPIEXEC" -n "$n" "$LMP" -in in.cuau_nvt -log "$log" -var model "$model" \
        -var data cuau_4000.lmp -var nsteps "$NSTEPS" -var device "$DEVICE") >"$OUT/nvt_4000.$DEVICE.np$n.screen" 2>&1 ||
        { echo "lammps_gpu_ranks: FAIL on $n rank(s), see $OUT/nvt_4000.$DEVICE.np$n.screen"; tail -5 \
            "$OUT/nvt_4000.$DEVICE.np$n.screen"; status=1; }
done
log1="$OUT/nvt_4000.$DEVICE.np1.log" log2="$OUT/nvt_4000.$DEVICE.np2.log"
if [ $status = 0 ] && [ "$DEVICE" = cuda ]; then
    for n in 1 2; do
        grep -q "neighbour list built on the device" "$OUT/nvt_4000.$DEVICE.np$n.log" ||
            { echo "lammps_gpu_ranks: FAIL $n rank(s) did not run the device path (no device neighbour list)"; status=1; }
    done
fi
if [ $status = 0 ]; then
    "$PYTHON" "$ex/thermo_tools.py" same "$log1" "$log2" --rtol 1e-10 && echo "lammps_gpu_ranks: 1 and 2 ranks agree (1e-10)" ||
        { echo "lammps_gpu_ranks: FAIL 1 and 2 ranks differ"; status=1; }
    "$PYTHON" "$ex/thermo_tools.py" compare "$log1" "$ex/expected/nvt_4000.thermo" --rtol 1e-6 &&
        echo "lammps_gpu_ranks: matches the CPU expected thermo (1e-6)" ||
        { echo "lammps_gpu_ranks: FAIL differs from expected/nvt_4000.thermo"; status=1; }
fi
{
    echo "| LAMMPS, 4000 atoms, device $DEVICE | ranks | loop time s | steps | us/step/atom |"
    echo "|---|---|---|---|---|"
    for n in 1 2; do
        line=$(grep -m1 "^Loop time of" "$OUT/nvt_4000.$DEVICE.np$n.log" 2>/dev/null)
        # Loop time of T on P procs for S steps with A atoms
        set -- $line
        [ -n "$line" ] && echo "| nvt_4000 | $n | $4 | ${9} | $(awk -v t="$4" -v s="${9}" -v a="${12}" \
            'BEGIN {printf "%.3f", t / s / a * 1e6}') |"
    done
    echo
    for n in 1 2; do  # the backend line (each rank's GPU) and the bytes of one step (rank 0)
        grep -h "MPI rank(s), backend\|backend per MPI rank\|device step moved" "$OUT/nvt_4000.$DEVICE.np$n.log" 2>/dev/null |
            sed "s/^ */- np$n: /"
    done
} | tee "$OUT/lammps_gpu.md"
exit $status
