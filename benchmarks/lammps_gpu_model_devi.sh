#!/usr/bin/env bash
# Model deviation on the LAMMPS device path: the 500-atom deck of tests/data/model_devi (NVE from 600 K,
# run 20 + run 10) with the four bundled models compressed (cuau_se_e2_a drives; cuau_se_e2_r, cuau_hybrid,
# cuau_se_e3), out_freq 10, on 1 and 2 MPI ranks. Checks: with DEVICE=cuda the log says the device built
# the neighbour list; the model_devi file has pair_style deepmd's header and its rows equal, to the printed
# precision, the rows of the same steps in DeePMD-kit 3.2's file (tests/data/model_devi/lammps_plain.out,
# written every 5 steps). Reports the loop time per step. Called by benchmarks/gpu_check.sh; runs anywhere
# (DEVICE=cpu for a dry run without a GPU).
#
# Env: PYTHON, LMP, MPIEXEC (commands), DEVICE (cuda), RANKS ("1 2"), RUN_TIMEOUT (s per LAMMPS run, 60),
#      OUT (output folder; compressed models found there are reused).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
refs="$repo/tests/data/model_devi"
PYTHON=${PYTHON:-python3}
LMP=${LMP:-lmp}
MPIEXEC=${MPIEXEC:-mpiexec}
DEVICE=${DEVICE:-cuda}
RANKS=${RANKS:-1 2}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/deepcomp_lammps_gpu.XXXXXX")}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
models=""
for m in cuau_se_e2_a cuau_se_e2_r cuau_hybrid cuau_se_e3; do
    [ -s "$OUT/$m.dcz" ] || "$PYTHON" -m deepcomp_ase compress -i "$repo/tests/data/models/$m.dp" -o "$OUT/$m.dcz" \
        >"$OUT/compress_$m.txt" 2>&1 || { echo "lammps_gpu_model_devi: FAIL compressing $m (see $OUT/compress_$m.txt)"; exit 1; }
    models="$models $OUT/$m.dcz"
done
status=0
for n in $RANKS; do
    work="$OUT/model_devi.$DEVICE.np$n"
    mkdir -p "$work"
    printf 'pair_style deepcomp%s out_freq 10 out_file model_devi.out device %s\npair_coeff * * Cu Au\n' \
        "$models" "$DEVICE" >"$work/pair.in"
    if ! (cd "$work" && timeout "$RUN_TIMEOUT" "$MPIEXEC" -n "$n" "$LMP" -in "$refs/in.model_devi" -log log.lammps \
        -var data "$repo/tests/data/cuau_500.lmp") >"$work/screen" 2>&1; then
        echo "lammps_gpu_model_devi: FAIL on $n rank(s), see $work/screen"; tail -5 "$work/screen"; status=1; continue
    fi
    if [ "$DEVICE" = cuda ] && ! grep -q "neighbour list built on the device" "$work/log.lammps"; then
        echo "lammps_gpu_model_devi: FAIL $n rank(s) did not run the device path (no device neighbour list)"; status=1
    fi
    "$PYTHON" - "$work/model_devi.out" "$refs/lammps_plain.out" "$n" <<'PY' || status=1
import sys
import numpy as np
ours, ref, n = open(sys.argv[1]).read().splitlines(), open(sys.argv[2]).read().splitlines(), sys.argv[3]
rows = [[float(t) for t in line.split()] for line in ref[1:]]
want = [r for r in rows if int(r[0]) % 10 == 0]  # DeePMD-kit wrote every 5 steps; ours every 10
got = [[float(t) for t in line.split()] for line in ours[1:]]
ok = ours[:1] == ref[:1] and len(got) == len(want) and np.allclose(got, want, rtol=1e-6, atol=1e-12)
print(f"lammps_gpu_model_devi: {n} rank(s): steps {[int(r[0]) for r in got]} "
      + ("equal DeePMD-kit's rows to the printed precision" if ok else "FAIL differ from DeePMD-kit's rows"))
if not ok:
    print("\n".join(ours))
    sys.exit(1)
PY
done
{
    echo "| LAMMPS model deviation, 500 atoms, 4 models, out_freq 10, device $DEVICE | ranks | loop time s | steps | ms/step |"
    echo "|---|---|---|---|---|"
    for n in $RANKS; do
        # the second run (10 steps, one output step): Loop time of T on P procs for S steps with A atoms
        line=$(grep "^Loop time of" "$OUT/model_devi.$DEVICE.np$n/log.lammps" 2>/dev/null | tail -1)
        set -- $line
        [ -n "$line" ] && echo "| run 10 | $n | $4 | ${9} | $(awk -v t="$4" -v s="${9}" 'BEGIN {printf "%.2f", t / s * 1e3}') |"
    done
    echo
    for n in $RANKS; do
        grep -h "MPI rank(s), backend\|backend per MPI rank\|device step moved" \
            "$OUT/model_devi.$DEVICE.np$n/log.lammps" 2>/dev/null | sed "s/^ */- np$n: /"
    done
} | tee "$OUT/lammps_model_devi.md"
exit $status
