"""pair_style deepcomp with DPA-1 models (attention layers; the numpy evaluation behind the plugin).

The padding slots of a DPA-1 model take the type of the first local atom (DeePMD-kit's behaviour,
descriptors/dpa1.py); LAMMPS's local + ghost layout must give what compute_atoms gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_lammps_physics import check_against_reference, lammps_results, run0

pytestmark = pytest.mark.lammps

MODELS = Path(__file__).parent.parent / "data" / "models"


@pytest.mark.parametrize("name", ["pt_cuau_dpa1_strip_sharp", "pt_cuau_hybrid_dpa1"])
def test_dpa1_matches_compute_atoms(tmp_path, name):
    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    model = tmp_path / f"{name}.dcz"
    compress_model(MODELS / f"{name}.pth", model)
    lmp = run0(model, "pair_style deepcomp {model}\npair_coeff * * Cu Au")
    try:
        got = lammps_results(lmp)
    finally:
        lmp.close()
    check_against_reference(DeepPotential.from_file(model, check_frequency=-1), got)
