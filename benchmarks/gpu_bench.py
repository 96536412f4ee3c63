"""GPU backend timings: compressed cuau_se_e2_a, float64 and float32, whole step on the device.

Then the time of each kernel (CUDA events) at 32000 atoms, both table layouts (output-major,
coefficient-major) and plain launches against a CUDA graph at 32000 atoms, and one model per other descriptor (se_e2_r, se_e3,
se_atten_v2, hybrid) at 32000 atoms.

Usage: python benchmarks/gpu_bench.py [--sizes 4000 32000 256000] [--steps 20] [--no-max] [--out FILE]
       python benchmarks/gpu_bench.py --dry-run --out FILE   (emulated kernels on the CPU, 12 atoms)
Reports us/step/atom (device-resident step: positions already on the device, results left there,
timed between two synchronisations), the host round trip (numpy positions in, numpy results out),
the peak of CuPy's memory pool, energy/atom consistency across sizes (the cells are repeats of one
4000-atom cell) and the float32 error. Ends with the largest system that fits in one step.
Writes the markdown tables to --out (default $OUT/timings.md when OUT is set) after every row, so a
timeout keeps what was measured. Exits 3 when there is no GPU (and no --dry-run).
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


OUT_FILE: Path | None = Path(os.environ["OUT"], "timings.md") if os.environ.get("OUT") else None


def save(lines) -> None:
    """Write the tables so far (a timed-out run keeps what it measured)."""
    if OUT_FILE is not None:
        OUT_FILE.write_text("\n".join(lines) + "\n")


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


def run(backend, pot, pos, types, cell, steps: int, pbc=(True, True, True)):
    """Device-resident step time, host round trip, pool peak (the emulation: numpy, no pool)."""
    xp, sync = backend.xp, backend.ctx.synchronize
    pos_d = xp.asarray(pos)
    out = backend.compute_device(pot, pos_d, types, cell, pbc)  # warm-up: compile, upload, allocate
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        out = backend.compute_device(pot, pos_d, types, cell, pbc)
    sync()
    dev = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    res = backend.compute_atoms(pot, pos, types, cell, pbc)
    host = time.perf_counter() - start
    peak = xp.get_default_memory_pool().total_bytes() / 2**20 if xp is not np else 0.0
    return {"us_atom": dev / len(pos) * 1e6, "ms_step": dev * 1e3, "host_ms": host * 1e3,
            "peak_mib": peak, "e_atom": res.energy / len(pos), "forces": res.forces, "out": out}


def kernel_times(backend, pot, pos, types, cell, steps: int, pbc=(True, True, True)) -> dict:
    """Milliseconds per step of each kernel (CUDA events around every checked launch; on the
    emulation, wall time), plus 'other': the rest of the step (cuBLAS, CuPy sorts and fills)."""
    xp, ctx = backend.xp, backend.ctx
    pos_d = xp.asarray(pos)
    backend.compute_device(pot, pos_d, types, cell, pbc)
    ctx.synchronize()
    marks, launch = [], ctx.launch
    if xp is np:
        def timed(name, *args):
            t0 = time.perf_counter()
            out = launch(name, *args)
            marks.append((name, t0, time.perf_counter()))
            return out
    else:
        def timed(name, *args):
            a, b = xp.cuda.Event(), xp.cuda.Event()
            a.record()
            out = launch(name, *args)
            b.record()
            marks.append((name, a, b))
            return out
    ctx.launch = timed
    try:
        start = time.perf_counter()
        for _ in range(steps):
            backend.compute_device(pot, pos_d, types, cell, pbc)
        ctx.synchronize()
        total = (time.perf_counter() - start) / steps * 1e3
    finally:
        ctx.launch = launch
    per: dict = {}
    for name, a, b in marks:
        ms = (b - a) * 1e3 if xp is np else xp.cuda.get_elapsed_time(a, b)
        per[name] = per.get(name, 0.0) + ms / steps
    per["other (cuBLAS, sorts, fills, host)"] = max(0.0, total - sum(per.values()))
    per["step"] = total
    return per


#: counters (and the too-close record) read every this many calls, as in an MD run; without a
#: check frequency they would be read after every call, and the timed loop could not queue a step
#: while the last one runs
CHECK_FREQUENCY = 1000

#: one refsuite model per other descriptor kind, and its source file
OTHER_MODELS = {"cuau_se_e2_r": "cuau_se_e2_r.dp", "cuau_se_e3": "cuau_se_e3.dp",
                "cuau_se_atten_v2": "cuau_se_atten_v2.pb", "cuau_hybrid": "cuau_hybrid.dp"}


def time_other_descriptors(names, steps: int, tmp: Path, natoms: int = 32000) -> list[str]:
    """us/step/atom of the other descriptors' device kernels, float64."""
    import cupy

    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    lines = ["", f"Other descriptors, {natoms} atoms, float64 (same step as above):", "",
             "| model | descriptor | us/step/atom | ms/step | pool peak MiB |", "|---|---|---|---|---|"]
    be = cupy_gpu.Backend(precision="float64")
    for name in names:
        comp = tmp / f"{name}.dcz"
        compress_model(MODELS / OTHER_MODELS[name], comp)
        pot = DeepPotential.from_file(comp, backend="numpy", check_frequency=CHECK_FREQUENCY)
        be._state.clear()
        cupy.get_default_memory_pool().free_all_blocks()
        pos, types, cell = system(pot, natoms)
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
                   help="other refsuite models timed at 32000 atoms in float64 (default: one per descriptor)")
    p.add_argument("--out", type=Path, default=None, help="markdown file (default $OUT/timings.md when OUT is set)")
    p.add_argument("--dry-run", action="store_true",
                   help="emulated kernels on the CPU, a 12-atom cluster, one step: tests the script, measures nothing")
    args = p.parse_args(argv)
    global OUT_FILE
    if args.out is not None:
        OUT_FILE = args.out
    if args.dry_run:
        return dry_run()
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
        pot = DeepPotential.from_file(comp, backend="numpy", check_frequency=CHECK_FREQUENCY)
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
        lines += kernel_table(backends, pot, 32000, args.steps)
        save(lines)
        lines += layout_table(args.precisions, pot, 32000, args.steps)
        save(lines)
        lines += graph_table(args.precisions, pot, 32000, args.steps)
        save(lines)
        if args.descriptors:
            lines += time_other_descriptors(args.descriptors, max(3, args.steps // 2), Path(tmp))
    text = "\n".join(lines) + "\n"
    print(text)
    save(lines)
    return 0


def kernel_table(backends, pot, natoms: int, steps: int, system_of=None) -> list[str]:
    """Per-kernel milliseconds per step, one column per precision."""
    pos, types, cell, *pbc = (system_of or system)(pot, natoms)
    rows = {}
    for prec, be in backends.items():
        be._state.clear()
        for name, ms in kernel_times(be, pot, pos, types, cell, steps, *pbc).items():
            rows.setdefault(name, {})[prec] = ms
    precs = list(backends)
    lines = ["", f"Kernels, {len(pos)} atoms, ms per step:", "", "| kernel | " + " | ".join(precs) + " |",
             "|---|" + "---|" * len(precs)]
    for name, by in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{by.get(p, float('nan')):.3f}" for p in precs) + " |")
    print("\n".join(lines), flush=True)
    return lines


LAYOUTS = ("output-major", "coefficient-major")


def layout_table(precisions, pot, natoms: int, steps: int, emulate: bool = False, system_of=None) -> list[str]:
    """The same step with each table layout (equal results; the faster one is worth keeping)."""
    pos, types, cell, *pbc = (system_of or system)(pot, natoms)
    lines = ["", f"Table layouts (DEEPCOMP_GPU_TABLE_LAYOUT), {len(pos)} atoms:", "",
             "| layout | precision | us/step/atom | ms/step | same energy as output-major |", "|---|---|---|---|---|"]
    for prec in precisions:
        energies = {}
        for layout in LAYOUTS:
            be = cupy_gpu.Backend(precision=prec, table_layout=layout, emulate=emulate)
            r = run(be, pot, pos, types, cell, steps, *pbc)
            energies[layout] = r["e_atom"]
            same = "yes" if r["e_atom"] == energies[LAYOUTS[0]] else "NO"
            lines.append(f"| {layout} | {prec} | {r['us_atom']:.3f} | {r['ms_step']:.2f} | {same} |")
            print(lines[-1], flush=True)
    return lines


def graph_table(precisions, pot, natoms: int, steps: int, emulate: bool = False, system_of=None) -> list[str]:
    """The step with plain launches and replayed as a CUDA graph (DEEPCOMP_GPU_GRAPH)."""
    pos, types, cell, *pbc = (system_of or system)(pot, natoms)
    lines = ["", f"CUDA graph (DEEPCOMP_GPU_GRAPH), {len(pos)} atoms:", "",
             "| DEEPCOMP_GPU_GRAPH | precision | graph used | us/step/atom | ms/step | same energy |",
             "|---|---|---|---|---|---|"]
    saved = os.environ.get("DEEPCOMP_GPU_GRAPH")
    try:
        for prec in precisions:
            base = None
            for flag in ("0", "1"):
                os.environ["DEEPCOMP_GPU_GRAPH"] = flag
                be = cupy_gpu.Backend(precision=prec, emulate=emulate)
                r = run(be, pot, pos, types, cell, max(steps, 3), *pbc)  # the graph is captured on call 2
                base = r["e_atom"] if base is None else base
                used = "yes" if be.use_graph else ("no (emulation)" if emulate else "no (capture refused)")
                same = "yes" if r["e_atom"] == base else f"NO ({r['e_atom'] - base:.1e})"
                lines.append(f"| {flag} | {prec} | {used} | {r['us_atom']:.3f} | {r['ms_step']:.2f} | {same} |")
                print(lines[-1], flush=True)
    finally:
        if saved is None:
            os.environ.pop("DEEPCOMP_GPU_GRAPH", None)
        else:
            os.environ["DEEPCOMP_GPU_GRAPH"] = saved
    return lines


def cluster(pot, natoms: int):
    """The first ``natoms`` atoms of the 32-atom cell as a cluster (the dry run's system)."""
    pos, types, _cell = system(pot, 32)
    return pos[:natoms], types[:natoms], np.zeros((3, 3)), (False, False, False)


def dry_run() -> int:
    """Every table of a GPU run, on the emulated kernels with a 12-atom cluster and one step: the
    script and its output are tested here; the figures mean nothing."""
    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    lines = [f"# GPU backend timings -- DRY RUN (emulated kernels on the CPU; figures are not GPU timings), "
             f"{datetime.date.today()}, git {git_revision()}", ""]
    with tempfile.TemporaryDirectory() as tmp:
        comp = Path(tmp) / "cuau_se_e2_a.dcz"
        compress_model(MODELS / "cuau_se_e2_a.dp", comp)
        pot = DeepPotential.from_file(comp, backend="numpy", check_frequency=CHECK_FREQUENCY)
    backends = {prec: cupy_gpu.Backend(precision=prec, emulate=True) for prec in ("float64", "float32")}
    lines += kernel_table(backends, pot, 12, 1, system_of=cluster)
    save(lines)
    lines += layout_table(list(backends), pot, 12, 1, emulate=True, system_of=cluster)
    save(lines)
    lines += graph_table(["float64"], pot, 12, 1, emulate=True, system_of=cluster)
    save(lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
