"""The Python stages of benchmarks/gpu_check.sh, one per call, each writing its result file.

Usage: python benchmarks/gpu_stages.py STAGE OUT_DIR   (STAGE: env, kernels, smoke)

With DRY_RUN=1 every stage runs the emulated kernels (compiled for the CPU) at tiny sizes, so the
device check itself is tested before any device time is spent. Results are small files written
when the stage ends (a timeout still returns the stages before it):

* env     -> env.json: card, driver, CUDA runtime and driver versions, NVRTC, CuPy, numpy,
             Python, the project's revision (GPU_CHECK_REVISION: gpu_check.sh reads the
             revision.txt that its prepare step wrote, since .git may not travel);
* kernels -> kernels.md: per kernel and precision, registers, static shared and local memory and
             max threads per block of the compiled function, and the launch (block, grid,
             dynamic shared memory) of the bundled cuau_se_e2_a model; then the host work per
             step of the 4000-atom deck with a no-op launcher (gpu_host_overhead.py);
* smoke   -> smoke.json: float64 on one small configuration against the CPU reference, for the
             bundled se_e2_a model and a DPA-1 model with two attention layers (key "dpa1");
             exits 1 with a verdict line when any relative error exceeds 1e-10 (the script then stops).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import MODELS, REPO, git_revision  # noqa: E402

DRY_RUN = os.environ.get("DRY_RUN", "") not in ("", "0")
SMOKE_TOL = 1e-10


def backend(precision: str, **kw):
    from deepcomp_ase.backends.cupy_gpu import Backend

    return Backend(precision=precision, emulate=DRY_RUN, **kw)


def compressed(tmp: Path, name: str = "cuau_se_e2_a") -> Path:
    from deepcomp_ase.compress.api import compress_model

    out = tmp / f"{name}.dcz"
    if not out.exists():
        compress_model(MODELS / f"{name}.dp", out)
    return out


def potential(path: Path, **kw):
    from deepcomp_ase.potential import DeepPotential

    return DeepPotential.from_file(path, backend="numpy", check_frequency=-1, **kw)


# ---------------------------------------------------------------------------- stages
def stage_env(out: Path) -> int:
    row = {"dry_run": DRY_RUN, "revision": os.environ.get("GPU_CHECK_REVISION") or git_revision(),
           "python": platform.python_version(),
           "numpy": np.__version__, "host": platform.node()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        row["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        row["nvidia_smi"] = f"not run: {exc}"
    try:
        import cupy

        row["cupy"] = cupy.__version__
        rt = cupy.cuda.runtime
        row["cuda_runtime"] = rt.runtimeGetVersion()
        row["cuda_driver"] = rt.driverGetVersion()
        row["nvrtc"] = ".".join(str(v) for v in cupy.cuda.nvrtc.getVersion())
        props = rt.getDeviceProperties(0)
        name = props["name"]
        row["device"] = name.decode() if isinstance(name, bytes) else str(name)
        row["compute_capability"] = f"{props['major']}.{props['minor']}"
        row["multiprocessors"] = props["multiProcessorCount"]
        row["shared_per_block_optin"] = props.get("sharedMemPerBlockOptin")
        row["regs_per_multiprocessor"] = props.get("regsPerMultiprocessor")
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal: the dry run has no CuPy
        row["cupy"] = f"unavailable: {exc}"
    from deepcomp_ase.backends.cupy_gpu import why_unavailable

    row["gpu_backend"] = why_unavailable() or "available"
    (out / "env.json").write_text(json.dumps(row, indent=1) + "\n")
    print("gpu_stages env:", json.dumps(row))
    return 0


def stage_kernels(out: Path) -> int:
    """Compile both precisions; report each compiled kernel and the launch of the bundled model."""
    from deepcomp_ase.kernels.launch import DPA1_MAX_BLOCKS, KERNELS, launch_config, se_a_tile
    from deepcomp_ase.kernels.loader import kernel_thread_limit

    lines = ["| kernel | precision | registers | static shared B | local B | max threads/block | block | grid | "
             "dynamic shared B |", "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        pot = potential(compressed(Path(tmp)))
    part = pot.plan.parts[0]
    maxw = max(max(layer.n_in, layer.n_out) for net in part.nets for layer in net.layers)
    nloc = 4000
    status = 0
    for precision in ("float64", "float32"):
        start = time.perf_counter()
        be = backend(precision)
        itemsize = np.dtype(precision).itemsize
        dims = {"n": nloc, "nloc": nloc, "nnei": part.nnei, "ntypes": part.ntypes, "nsec": part.nsec, "ng": part.ng,
                "m2": part.m2, "ldd": part.dim_out, "maxw": maxw, "tile": se_a_tile(part.ng, part.m2, maxw, itemsize),
                "m": 240, "m_in": part.dim_out, "nblk": DPA1_MAX_BLOCKS}  # nblk: the DPA-1 kernels' scratch rows
        for name in KERNELS:
            row = be.ctx.kernel_report(name)
            try:
                grid, block, shared = launch_config(KERNELS[name], dims, itemsize,
                                                    kernel_thread_limit(be.ctx.function(name)))
            except Exception as exc:  # noqa: BLE001 - the report names the kernel that cannot launch
                grid, block, shared, status = f"FAIL {exc}", "", "", 1
            cells = [row[k] if row[k] is not None else "-" for k in ("num_regs", "shared_size_bytes",
                                                                       "local_size_bytes", "max_threads_per_block")]
            lines.append(f"| {name} | {precision} | " + " | ".join(str(c) for c in cells) +
                         f" | {block} | {grid} | {shared} |")
        print(f"gpu_stages kernels: {precision} compiled and inspected in {time.perf_counter() - start:.1f} s",
              flush=True)
    head = (f"Compiled kernels ({'host emulation: no registers' if DRY_RUN else 'NVRTC'}); launches for "
            f"cuau_se_e2_a (ng {part.ng}, m2 {part.m2}, nnei {part.nnei}) at {nloc} atoms.\n\n")
    from gpu_host_overhead import measure

    host = measure(steps=20 if DRY_RUN else 200)
    lines += ["", f"Host work per step, 4000-atom se_e2_a deck, no-op launcher: {host['us_per_step']:.0f} us "
              f"({host['launches']} launches; {host['uncached_us_per_step']:.0f} us validating every launch)."]
    (out / "kernels.md").write_text(head + "\n".join(lines) + "\n")
    print(f"gpu_stages kernels: host overhead {host['us_per_step']:.0f} us/step", flush=True)
    spills = [ln for ln in lines[2:] if ln.startswith("| ") and ln.split("|")[5].strip() not in ("-", "0")]
    if spills:
        print("gpu_stages kernels: local memory (spills) in:", *spills, sep="\n  ")
    return status


def smoke_structure():
    """Two unit cells' worth of the refsuite Cu/Au cell (32 atoms, periodic); a 12-atom cluster of
    it in the dry run (the emulation runs a CPU thread per CUDA thread)."""
    from common import cuau_cell

    atoms = cuau_cell(32)
    pos, cell, pbc = atoms.positions.copy(), atoms.cell.array.copy(), np.array([True] * 3)
    if DRY_RUN:
        pos, cell, pbc = pos[:12], np.zeros((3, 3)), np.array([False] * 3)
    return atoms, pos, cell, pbc


def _smoke_errors(path: Path, pos, types, cell, pbc) -> dict:
    """float64 on the device vs the CPU reference: relative errors of every output."""
    ref_pot, dev_pot = potential(path), potential(path)
    want = ref_pot.compute_atoms(pos, types, cell, pbc, atomic_virial=True)
    be = backend("float64")
    if be.unsupported_reason(dev_pot):  # the smoke test is about the device kernels
        raise RuntimeError(f"{path.name} does not run on the device: {be.unsupported_reason(dev_pot)}")
    got = be.compute_atoms(dev_pot, pos, types, cell, pbc, atomic_virial=True)

    def rel(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))

    return {name: rel(getattr(got, name), getattr(want, name))
            for name in ("energy", "forces", "virial", "atom_energy", "atom_virial")}


#: the DPA-1 model of the smoke test (two attention layers, strip, smooth; kernels/dpa1.cu)
SMOKE_DPA1 = "pt_cuau_se_atten_v2_a2"


def stage_smoke(out: Path) -> int:
    atoms, pos, cell, pbc = smoke_structure()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = compressed(Path(tmp))
        types = potential(path).types_of(atoms.get_chemical_symbols()[:len(pos)])
        errs = _smoke_errors(path, pos, types, cell, pbc)
        t_se_a = time.perf_counter() - start
        dpa1_errs = _smoke_errors(compressed(Path(tmp), SMOKE_DPA1), pos, types, cell, pbc)
    ok = all(np.isfinite(v) and v <= SMOKE_TOL for v in errs.values())
    ok_dpa1 = all(np.isfinite(v) and v <= SMOKE_TOL for v in dpa1_errs.values())
    row = {"atoms": len(pos), "periodic": bool(pbc.all()), "precision": "float64", "tolerance": SMOKE_TOL,
           "relative_errors": errs, "seconds": round(t_se_a, 2),
           "dpa1": {"model": SMOKE_DPA1, "relative_errors": dpa1_errs, "verdict": "PASS" if ok_dpa1 else "FAIL",
                    "seconds": round(time.perf_counter() - start - t_se_a, 2)},
           "verdict": "PASS" if ok and ok_dpa1 else "FAIL"}
    (out / "smoke.json").write_text(json.dumps(row, indent=1) + "\n")
    for label, e in (("cuau_se_e2_a", errs), (SMOKE_DPA1, dpa1_errs)):
        worst = max(e, key=e.get)
        print(f"gpu_stages smoke: {'PASS' if max(e.values()) <= SMOKE_TOL else 'FAIL'} -- {label}, float64 on "
              f"{len(pos)} atoms vs the CPU reference, worst relative error {e[worst]:.2e} ({worst}; limit "
              f"{SMOKE_TOL:g})", flush=True)
    return 0 if ok and ok_dpa1 else 1


STAGES = {"env": stage_env, "kernels": stage_kernels, "smoke": stage_smoke}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in STAGES:
        print(__doc__)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    return STAGES[argv[0]](out)


if __name__ == "__main__":
    sys.exit(main())
