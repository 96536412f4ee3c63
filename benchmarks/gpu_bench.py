"""GPU backend timings: compressed cuau_se_e2_a, float64 and float32, whole step on the device.

Then one model per other descriptor (se_e2_r, se_e3, se_atten_v2, hybrid) at 4000 atoms.

Usage: python benchmarks/gpu_bench.py [--sizes 4000 32000 256000] [--steps 20] [--no-max]
Reports us/step/atom (device-resident step: positions already on the device, results left there,
timed between two synchronisations), the host round trip (numpy positions in, numpy results out),
the peak of CuPy's memory pool, energy/atom consistency across sizes (the cells are repeats of one
4000-atom cell) and the float32 error. Ends with the largest system that fits in one step.
Writes a markdown table to $OUT/gpu_results.md when OUT is set. Exits 3 when there is no GPU.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import MODELS, cuau_cell, git_revision  # noqa: E402

from deepcomp_ase.backends import cupy_gpu  # noqa: E402


def save(lines) -> None:
    """Write the table so far to $OUT/gpu_results.md (a timed-out run keeps what it measured)."""
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_results.md").write_text("\n".join(lines) + "\n")


def system(pot, natoms: int):
    atoms = cuau_cell(natoms)
    index = {s: k for k, s in enumerate(pot.type_map)}
    types = np.array([index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)
    return atoms.positions.copy(), types, atoms.cell.array.copy()


def big_system(pot, reps: int):
    base_pos, base_types, base_cell = system(pot, 4000)
    shifts = np.array([[i, j, k] for i in range(reps) for j in range(reps) for k in range(reps)], dtype=np.float64)
    pos = (base_pos[None, :, :] + (shifts @ base_cell)[:, None, :]).reshape(-1, 3)
    return pos, np.tile(base_types, len(shifts)), base_cell * reps


def run(backend, pot, pos, types, cell, steps: int):
    import cupy

    pool = cupy.get_default_memory_pool()
    pbc = (True, True, True)
    pos_d = cupy.asarray(pos)
    out = backend.compute_device(pot, pos_d, types, cell, pbc)  # warm-up: compile, upload, allocate
    cupy.cuda.Stream.null.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        out = backend.compute_device(pot, pos_d, types, cell, pbc)
    cupy.cuda.Stream.null.synchronize()
    dev = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    res = backend.compute_atoms(pot, pos, types, cell, pbc)
    host = time.perf_counter() - start
    return {"us_atom": dev / len(pos) * 1e6, "ms_step": dev * 1e3, "host_ms": host * 1e3,
            "peak_mib": pool.total_bytes() / 2**20, "e_atom": res.energy / len(pos), "forces": res.forces,
            "out": out}


#: one refsuite model per other descriptor kind, and its source file
OTHER_MODELS = {"cuau_se_e2_r": "cuau_se_e2_r.dp", "cuau_se_e3": "cuau_se_e3.dp",
                "cuau_se_atten_v2": "cuau_se_atten_v2.pb", "cuau_hybrid": "cuau_hybrid.dp"}


def time_other_descriptors(names, steps: int, tmp: Path) -> list[str]:
    """us/step/atom of the other descriptors' device kernels at 4000 atoms, float64."""
    import cupy

    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    lines = ["", "Other descriptors, 4000 atoms, float64 (same step as above):", "",
             "| model | descriptor | us/step/atom | ms/step | pool peak MiB |", "|---|---|---|---|---|"]
    be = cupy_gpu.Backend(precision="float64")
    for name in names:
        comp = tmp / f"{name}.dcz"
        compress_model(MODELS / OTHER_MODELS[name], comp)
        pot = DeepPotential.from_file(comp, backend="numpy", check_frequency=-1)
        be._state.clear()
        cupy.get_default_memory_pool().free_all_blocks()
        pos, types, cell = system(pot, 4000)
        r = run(be, pot, pos, types, cell, steps)
        kinds = "+".join(d.kind for d in pot.parts)
        lines.append(f"| {name} | {kinds} | {r['us_atom']:.3f} | {r['ms_step']:.2f} | {r['peak_mib']:.0f} |")
        print(lines[-1], flush=True)
    be._state.clear()
    cupy.get_default_memory_pool().free_all_blocks()
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[4000, 32000, 256000])
    p.add_argument("--precisions", nargs="+", default=["float64", "float32"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--no-max", action="store_true", help="skip the largest-system probe")
    p.add_argument("--descriptors", nargs="*", default=list(OTHER_MODELS),
                   help="other refsuite models timed at 4000 atoms in float64 (default: one per descriptor)")
    args = p.parse_args(argv)
    reason = cupy_gpu.why_unavailable()
    if reason:
        print(f"gpu_bench: no GPU, nothing measured ({reason})")
        return 3
    import cupy

    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    lines = [f"# GPU backend, {datetime.date.today()}, {gpu}, CuPy {cupy.__version__}, git {git_revision()}", "",
             "Compressed cuau_se_e2_a (step 0.01, extrapolate 5); device step = neighbour list + descriptor + "
             "fitting + forces/virial with positions and results on the device.", "",
             "| atoms | precision | us/step/atom | ms/step | host round trip ms | pool peak MiB | E/atom (eV) | "
             "f32 vs f64 max dF (eV/A) |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        comp = Path(tmp) / "cuau_se_e2_a.dcz"
        compress_model(MODELS / "cuau_se_e2_a.dp", comp)
        pot = DeepPotential.from_file(comp, backend="numpy", check_frequency=-1)
        backends = {prec: cupy_gpu.Backend(precision=prec) for prec in args.precisions}
        per_atom_bytes = {}
        for n in args.sizes:
            pos, types, cell = system(pot, n)
            ref_forces = None
            for prec, be in backends.items():
                cupy.get_default_memory_pool().free_all_blocks()
                be._state.clear()
                r = run(be, pot, pos, types, cell, args.steps)
                per_atom_bytes[prec] = r["peak_mib"] * 2**20 / len(pos)
                df = ""
                if prec == "float64":
                    ref_forces = r["forces"]
                elif ref_forces is not None:
                    df = f"{np.abs(r['forces'] - ref_forces).max():.2e}"
                lines.append(f"| {len(pos)} | {prec} | {r['us_atom']:.3f} | {r['ms_step']:.2f} | {r['host_ms']:.1f} | "
                             f"{r['peak_mib']:.0f} | {r['e_atom']:.12f} | {df} |")
                print(lines[-1], flush=True)
                save(lines)
                del r
            cupy.get_default_memory_pool().free_all_blocks()
        if not args.no_max:
            lines += ["", "| precision | largest system run (atoms) | bytes/atom (pool peak) |", "|---|---|---|"]
            free, _total = cupy.cuda.runtime.memGetInfo()
            for prec, be in backends.items():
                be._state.clear()
                cupy.get_default_memory_pool().free_all_blocks()
                free, _total = cupy.cuda.runtime.memGetInfo()
                reps = int((0.85 * free / per_atom_bytes[prec] / 4000) ** (1 / 3))
                done = 0
                while reps >= 1 and not done:
                    try:
                        pos, types, cell = big_system(pot, reps)
                        be.compute_device(pot, cupy.asarray(pos), types, cell, (True, True, True))
                        cupy.cuda.Stream.null.synchronize()
                        done = len(pos)
                    except cupy.cuda.memory.OutOfMemoryError:
                        be._state.clear()
                        cupy.get_default_memory_pool().free_all_blocks()
                        reps -= 1
                lines.append(f"| {prec} | {done} | {per_atom_bytes[prec]:.0f} |")
                print(lines[-1], flush=True)
                save(lines)
                be._state.clear()
                cupy.get_default_memory_pool().free_all_blocks()
        if args.descriptors:
            lines += time_other_descriptors(args.descriptors, max(3, args.steps // 2), Path(tmp))
    text = "\n".join(lines) + "\n"
    print(text)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
