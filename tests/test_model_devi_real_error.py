"""``deepcomp model-devi --real-error``: the RMS error of the models against the systems' labels,
in the columns of ``dp model-devi --real_error`` (DeePMD-kit 3.2.0's output is the oracle:
tests/data/make_real_error_refs.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_model_devi import DATA, assert_printed_precision, dp_blocks

REFS = DATA / "real_error"  # labelled systems and dp's outputs on them

MODELS = [DATA / "models" / "cuau_se_e2_a.dp", DATA / "models" / "cuau_se_e2_r.dp"]


def run_cli(tmp_path, monkeypatch, capsys, system: str, extra: list[str], flag: str = "--real-error"):
    """``deepcomp model-devi --real-error`` (or dp's spelling ``flag``) of the two models on a copy of ``system``."""
    from deepcomp_ase.cli import main

    if not (tmp_path / system).exists():
        shutil.copytree(REFS / system, tmp_path / system)
    monkeypatch.chdir(tmp_path)
    rc = main(["model-devi", "-m", *map(str, MODELS), "-s", system, "-o", "md.out", "--backend", "numpy",
               flag, *extra])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(("ref", "system", "extra", "flag"), [
    ("real_plain.out", "labelled", ["-f", "10"], "--real-error"),
    ("real_rel_atomic.out", "labelled", ["-f", "10", "--relative", "1.0", "--atomic"], "--real_error"),
    ("real_rel_v.out", "labelled_1f", ["--relative", "0.5", "--relative_v", "1.0"], "--real-error"),
])
def test_real_error_equals_dp(tmp_path, monkeypatch, capsys, ref, system, extra, flag):
    rc, err = run_cli(tmp_path, monkeypatch, capsys, system, extra, flag)
    assert rc == 0, err
    ours = dp_blocks((tmp_path / "md.out").read_text())
    want = dp_blocks((REFS / ref).read_text())
    assert sorted(ours) == sorted(want)
    for name in want:
        assert ours[name][0] == want[name][0]
        assert_printed_precision(ours[name][1], want[name][1])


def test_without_virial_labels_the_virial_columns_are_nan(tmp_path, monkeypatch, capsys):
    shutil.copytree(REFS / "labelled", tmp_path / "labelled")
    (tmp_path / "labelled" / "n32_x25" / "set.000" / "virial.npy").unlink()
    rc, err = run_cli(tmp_path, monkeypatch, capsys, "labelled", ["-f", "10"])
    assert rc == 0, err
    assert "n32_x25: no virial.npy in set.000" in err, err
    ours = dp_blocks((tmp_path / "md.out").read_text())
    want = dp_blocks((REFS / "real_plain.out").read_text())
    rows, ref = ours["labelled/n32_x25"][1], want["labelled/n32_x25"][1]
    assert np.isnan(rows[:, 1:4]).all()
    assert_printed_precision(rows[:, [0, 4, 5, 6, 7]], ref[:, [0, 4, 5, 6, 7]])
    assert_printed_precision(ours["labelled/n32_x75"][1], want["labelled/n32_x75"][1])


def test_missing_force_labels_are_refused(tmp_path, monkeypatch, capsys):
    shutil.copytree(REFS / "labelled", tmp_path / "labelled")
    (tmp_path / "labelled" / "n32_x75" / "set.000" / "force.npy").unlink()
    rc, err = run_cli(tmp_path, monkeypatch, capsys, "labelled", [])
    assert rc == 1
    assert "n32_x75/set.000/force.npy: cannot read" in err and "labels" in err, err
    assert not (tmp_path / "md.out").exists()


def test_wrong_label_size_is_refused(tmp_path, monkeypatch, capsys):
    shutil.copytree(REFS / "labelled", tmp_path / "labelled")
    path = tmp_path / "labelled" / "n32_x25" / "set.000" / "energy.npy"
    np.save(path, np.load(path)[:3])
    rc, err = run_cli(tmp_path, monkeypatch, capsys, "labelled", [])
    assert rc == 1
    assert "energy.npy: 3 numbers are not 5 frames x 1" in err, err


def test_trajectories_have_no_labels_to_read(tmp_path, monkeypatch, capsys):
    from ase.build import bulk
    from ase.io import write

    write(tmp_path / "t.extxyz", bulk("Cu", "fcc", a=3.6, cubic=True))
    rc, err = run_cli(tmp_path, monkeypatch, capsys, "t.extxyz", [])
    assert rc == 1
    assert "reads its labels from DeePMD-kit npy systems" in err, err


def test_real_error_definitions():
    """RMS over the models of the difference from the label, per component; relative: by the label."""
    from deepcomp_ase.model_devi import model_deviation

    fs = np.array([[[1.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]]])  # two models, one atom
    vs = np.zeros((2, 9))
    vs[:, 0] = [2.0, 4.0]
    labels = {"energy": 1.0, "force": np.array([[2.0, 2.0, 0.0]]), "virial": np.eye(3).ravel() * 3.0}
    d = model_deviation(fs, vs, 1, np.array([0.0, 4.0]), labels=labels)
    assert d.max_devi_f == pytest.approx(np.sqrt(1.0 + 4.0))  # x: RMS of (-1, 1); y: RMS of (-2, -2)
    assert d.devi_e == pytest.approx(np.sqrt((1.0 + 9.0) / 2))
    # xx: RMS of (-1, 1) = 1; yy, zz: 3 each; off-diagonal: 0
    assert (d.max_devi_v, d.min_devi_v) == (pytest.approx(3.0), 0.0)
    assert d.avg_devi_v == pytest.approx(np.sqrt(1.0 + 9.0 + 9.0) / 3)
    rel = model_deviation(fs, vs, 1, np.array([0.0, 4.0]), labels=labels, relative=1.0, relative_v=1.0,
                          magnitude="tensor")
    assert rel.max_devi_f == pytest.approx(np.sqrt(5.0) / (np.sqrt(8.0) + 1.0))
    assert rel.max_devi_v == pytest.approx(3.0 / (np.sqrt(27.0) + 1.0))
