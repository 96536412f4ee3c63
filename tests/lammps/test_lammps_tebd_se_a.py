"""pair_style deepcomp with TF se_e2_a + type-embedding models (read folded into a plain se_e2_a):
LAMMPS's local + ghost layout gives what compute_atoms gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_lammps_physics import RTOL, TO_LAMMPS, check_against_reference, lammps_results, max_rel, model_types, run0

pytestmark = pytest.mark.lammps

MODELS = Path(__file__).parent.parent / "data" / "models" / "tf_graphs"


@pytest.mark.parametrize("name, elements", [("tf32_cuau_se_a_tebd", ("Cu", "Au")),
                                            ("tf32_cuau3_se_a_tebd", ("Ag", "Au"))])
def test_tebd_se_a_matches_compute_atoms(tmp_path, name, elements):
    from deepcomp_ase.compress.api import compress_model
    from deepcomp_ase.potential import DeepPotential

    model = tmp_path / f"{name}.dcz"
    compress_model(MODELS / f"{name}.pb", model)
    lmp = run0(model, f"pair_style deepcomp {{model}}\npair_coeff * * {' '.join(elements)}")
    try:
        got = lammps_results(lmp)
    finally:
        lmp.close()
    pot = DeepPotential.from_file(model, check_frequency=-1)
    if elements == ("Cu", "Au"):
        check_against_reference(pot, got)
        return
    # the third type (Ag) in place of Cu
    ref = pot.compute_atoms(got["x"], model_types(pot, got["types"], elements), got["cell"], (True,) * 3,
                            atomic_virial=True)
    assert abs(got["energy"] - ref.energy) <= RTOL * abs(ref.energy)
    assert max_rel(got["forces"], ref.forces) <= RTOL
    assert max_rel(got["virial"], ref.virial.reshape(9)[TO_LAMMPS]) <= RTOL
    assert max_rel(got["atom_energy"], ref.atom_energy) <= RTOL
    assert max_rel(got["atom_virial"], ref.atom_virial[:, TO_LAMMPS]) <= RTOL
