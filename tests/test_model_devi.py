"""Model deviation: DeePMD-kit's definitions and file formats (deepcomp_ase.model_devi)."""

import numpy as np
import pytest

from deepcomp_ase import model_devi as M


def test_force_deviation_by_hand():
    # two models, one atom: F = (1,0,0) and (3,0,0) -> std per component (1,0,0) -> eps 1
    fs = np.array([[[1.0, 0, 0]], [[3.0, 0, 0]]])
    assert M.force_deviation(fs) == pytest.approx([1.0])
    # relative l: divided by |<F>| + l = 2 + 1
    assert M.force_deviation(fs, relative=1.0) == pytest.approx([1.0 / 3.0])


def test_virial_deviation_by_hand():
    v1 = np.zeros(9)
    v2 = np.zeros(9)
    v2[0], v2[4] = 4.0, -8.0  # std of xx 2, of yy 4 (before /N)
    devi = M.virial_deviation([v1, v2], natoms=2)
    assert devi[0] == pytest.approx(1.0) and devi[4] == pytest.approx(2.0) and devi[8] == 0.0
    vmax, vmin, vavg = M.summarize_virial(devi)
    assert (vmax, vmin) == (pytest.approx(2.0), 0.0)
    assert vavg == pytest.approx(np.sqrt(1 + 4) / 3)  # norm / 3, not the mean
    # per component (pair_style deepmd): |<W_ab>|/N = 1 and 2 -> divided by 2 and 3
    rel = M.virial_deviation([v1, v2], natoms=2, relative_v=1.0)
    assert rel[0] == pytest.approx(0.5) and rel[4] == pytest.approx(2.0 / 3.0)
    # whole tensor (dp model-devi): |<W>/N| = sqrt(5) for every component
    ten = M.virial_deviation([v1, v2], natoms=2, relative_v=1.0, magnitude="tensor")
    assert ten[0] == pytest.approx(1.0 / (np.sqrt(5) + 1))


def test_model_deviation_frame():
    rng = np.random.default_rng(3)
    fs = rng.normal(size=(4, 5, 3))
    vs = rng.normal(size=(4, 3, 3))
    d = M.model_deviation(fs, vs, energies=[1.0, 1.5, 1.0, 1.5])
    eps = np.sqrt(((fs - fs.mean(0)) ** 2).sum(-1).mean(0))
    assert d.atom_devi_f == pytest.approx(eps)
    assert (d.max_devi_f, d.min_devi_f, d.avg_devi_f) == pytest.approx((eps.max(), eps.min(), eps.mean()))
    assert d.devi_e == pytest.approx(0.25 / 5)


def test_lammps_format():
    # pair_style deepmd: "#" + step in 11, names in 19; rows: step in 12, " " + %18.6e
    head = M.lammps_header()
    assert head == ("#       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f"
                    "         min_devi_f         avg_devi_f\n")
    assert M.lammps_header(atomic=True).endswith("avg_devi_f      atm_devi_f(N)\n")
    row = M.lammps_row(5, (0.1816377, 1.34358e-3, 0.1039457, 0.6742621, 0.05159051, 0.233661), [1e-4])
    assert row == ("           5       1.816377e-01       1.343580e-03       1.039457e-01       6.742621e-01"
                   "       5.159051e-02       2.336610e-01       1.000000e-04\n")


def test_dp_format():
    d = M.Deviation(1, 2, 3, 4, 5, 6, 7, np.array([0.5]))
    text = M.dp_block("data/sys", [0, 10], [d, d], atomic=True)
    lines = text.splitlines()
    assert lines[0] == "# data/sys"
    assert lines[1].startswith("# step      max_devi_v         min_devi_v")
    assert lines[1].endswith("devi_e             atm_devi_f(N)      ")
    assert lines[3] == "          10" + "".join(f"{v:19.6e}" for v in (1, 2, 3, 4, 5, 6, 7, 0.5))
    assert M.read_model_devi_text(text).shape == (2, 9)
