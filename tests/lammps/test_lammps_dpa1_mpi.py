"""DPA-1 (attention layers) under ``mpiexec -n 2 lmp``: domain decomposition and model deviation.

The attention of a centre atom mixes only its own neighbours, so ghost atoms carry everything a rank
needs; the one decomposition-dependent input of DeePMD-kit's DPA-1, the type given to padding slots
(the first local atom's), drops out with the smooth strip embedding (the switch is zero there). So
1 and 2 ranks must agree to round-off: thermo over NVE steps, and the model-deviation file of two
DPA-1 models, which must also equal ``deepcomp model-devi`` (the ensemble path) on the same frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from lammps_helpers import DATA_500, REPO, run_lmp, thermo_table

pytestmark = [pytest.mark.lammps, pytest.mark.mpi, pytest.mark.slow]

MODELS = REPO / "tests" / "data" / "models"
# strip + smooth type embedding: padding rows do not depend on the first local atom
NAMES = ("pt_cuau_dpa1_strip", "pt_cuau_se_atten_v2_a2")

DECK = """
units           metal
atom_style      atomic
boundary        p p p
read_data       {data}
pair_style      deepcomp {models}
pair_coeff      * * Cu Au
neighbor        1.0 bin
neigh_modify    every 1 delay 0 check yes
velocity        all create 800.0 4928459 dist gaussian
timestep        0.001
fix             1 all nve
compute         pa all pe/atom
compute         spa all reduce sum c_pa
thermo          5
thermo_style    custom step temp pe ke etotal press pxx pyy pzz pxy pxz pyz c_spa
thermo_modify   format float %.17g
dump            d all custom 5 frames.dump id type x y z
dump_modify     d sort id format float %.17g
run             10
"""


@pytest.fixture(scope="module")
def dcz(tmp_path_factory) -> dict:
    from deepcomp_ase.compress.api import compress_model

    d = tmp_path_factory.mktemp("dpa1_models")
    out = {}
    for name in NAMES:
        out[name] = d / f"{name}.dcz"
        compress_model(MODELS / f"{name}.pth", out[name])
    return out


@pytest.fixture(scope="module")
def runs(dcz, tmp_path_factory) -> dict:
    out = {}
    for n in (1, 2):
        work = tmp_path_factory.mktemp(f"dpa1_np{n}")
        models = f"{dcz[NAMES[0]]} {dcz[NAMES[1]]} out_freq 5 out_file md.out"
        rc, text, _ = run_lmp(DECK.format(data=DATA_500, models=models), work, nprocs=n, timeout=400)
        assert rc == 0, text[-4000:]
        out[n] = (thermo_table(text), (work / "md.out").read_text(), work / "frames.dump")
    return out


def test_thermo_identical_on_1_and_2_ranks(runs):
    (header, one), _, _ = runs[1]
    (header2, two), _, _ = runs[2]
    assert header == header2 and one.shape == two.shape == (3, len(header))
    for k, name in enumerate(header):
        scale = np.abs(one[:, k]).max() if name.startswith("P") else np.abs(one[:, k])
        assert np.all(np.abs(one[:, k] - two[:, k]) <= 1e-10 * np.maximum(scale, 1e-300)), name
    pe, spa = one[:, header.index("PotEng")], one[:, header.index("c_spa")]
    assert np.all(np.abs(spa - pe) <= 1e-10 * np.abs(pe))


def test_model_devi_same_on_1_and_2_ranks_and_equal_to_the_ensemble(runs, dcz):
    _, md1, dump = runs[1]
    _, md2, _ = runs[2]
    a = np.loadtxt(md1.splitlines()[1:])
    b = np.loadtxt(md2.splitlines()[1:])
    assert a.shape == b.shape == (3, 7)  # step, max/min/avg devi_v, max/min/avg devi_f
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert a[:, 4].max() > 1e-3  # two different models: a real deviation

    from ase.io import read

    from deepcomp_ase.ensemble import model_devi_frames
    from deepcomp_ase.potential import DeepPotential

    frames = read(dump, index=":", format="lammps-dump-text")
    pots = [DeepPotential.from_file(dcz[n], backend="numpy") for n in NAMES]
    symbols = ["Cu" if t == 1 else "Au" for t in frames[0].get_array("type")]
    devi = model_devi_frames(pots, np.stack([f.positions for f in frames]), symbols,
                             np.stack([f.cell.array for f in frames]), True)
    got = np.array([d.row() for d in devi])
    # the file's numbers are printed with %.6e-like precision
    np.testing.assert_allclose(a[:, 1:], got, rtol=2e-6, atol=1e-10)
