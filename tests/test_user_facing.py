"""What a user meets from outside (issue 13): any -s, -e/-t/-f limits, output paths, calculator
keywords, deepcomp md, end-of-run overflow summary."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from conftest import MODELS, TRAINING_SCRIPT, Reference, evaluate

from deepcomp_ase import DeepCompCalculator
from deepcomp_ase.cli import main
from deepcomp_ase.compress.api import compress_model, tabulate_model
from deepcomp_ase.compress.tabulate import build_table, table_grid, whole_intervals
from deepcomp_ase.errors import DeepCompError
from deepcomp_ase.fileformat import load_compressed
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.potential import DeepPotential

REPO = Path(__file__).resolve().parents[1]
TANH = MODELS / "cu_se_e2_a_tanh.dp"


def run_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "deepcomp_ase", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=cwd)


def assert_clean_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------- -s: any step
@pytest.fixture(scope="module")
def model():
    return parse_model(read_model_tree(MODELS / "cuau_se_e2_a.dp"))


def test_whole_intervals_tolerates_round_off():
    assert whole_intervals(-1.0, 7.0, 0.01) == 800  # (7 - -1) / 0.01 is not exactly 800 in floating point
    assert whole_intervals(0.0, 0.3, 0.1) == 3  # 0.3 / 0.1 = 2.9999999999999996
    assert whole_intervals(-1.0, 7.0, 0.03) == 267  # 266.67 -> extended
    assert whole_intervals(7.0, 7.0, 0.1) == 0


@pytest.mark.parametrize("step", [0.01, 0.02, 0.1, 0.003, 0.03, 0.07, 0.37, 3.0, 11.0])
def test_every_positive_step_gives_a_consistent_grid(step):
    for lower, upper, low in ((-1.0, 7.0, False), (-2.0, 8.0, False), (-134.0, 134.0, True)):
        g = table_grid(lower, upper, step, 10 * step, 5, low)
        assert g.lower == lower and g.upper >= upper and g.xmax >= 5 * upper
        assert g.upper - upper < step * (1 + 1e-9) and g.xmax - 5 * upper < 10 * step * (1 + 1e-9)
        if low:
            assert g.xmin <= 5 * lower and 5 * lower - g.xmin < 10 * step * (1 + 1e-9)
        # bounds stay exactly DeePMD-kit's when the step divides the range
        if abs((upper - lower) / step - round((upper - lower) / step)) < 1e-9:
            assert g.upper == upper
        net = parse_model(read_model_tree(MODELS / "cu_se_e2_a_tanh.dp")).descriptor.embeddings[(0, 0)]
        t = build_table(net, lower, upper, step, 10 * step, 5, low)
        assert t.nspline == g.nspline and t.first_stride == g.n_fine and t.n_low == g.n_low
        starts = t.interval_starts()
        assert starts[0] == t.xmin and starts[t.n_low + t.first_stride] == t.upper
        np.testing.assert_allclose(starts[-1] + t.stride1, t.xmax, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("step", [0.03, 0.007])
def test_steps_that_do_not_divide_are_accurate(model, step):
    """Tables with an extended range still reproduce the net, the extension included."""
    net = model.descriptor.embeddings[(0, 1)]
    table = build_table(net, -1.0, 7.0, step, 10 * step, 5)
    assert table.upper > 7.0
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1.0, table.upper, 4000), rng.uniform(7.0, table.upper, 200)])
    idx, t, region = table.locate(x)
    assert np.all(region == 0)
    v, d = table.evaluate(idx, t)
    ve, de = net.value_and_first_derivative(x)
    # quintic Hermite error grows as width**6: the 0.01 table is good to 1e-12
    tol = 1e-12 * (step / 0.01) ** 6
    assert np.abs(v - ve).max() < tol
    assert np.abs(d - de).max() < 100 * tol


@pytest.mark.slow
def test_non_dividing_step_matches_deepmd_uncompressed(tmp_path):
    """End to end on DeePMD-kit's uncompressed outputs (the refsuite oracle), numpy backend."""
    out = tmp_path / "s003.dcz"
    compress_model(MODELS / "cuau_se_e2_a.dp", out, step=0.03)
    ext = load_compressed(out).meta["options"]["extended_ranges"]
    assert ext and all(v["upper"][1] > v["upper"][0] for v in ext.values())
    pot = DeepPotential.from_file(out, backend="numpy")
    ref = Reference("cuau_se_e2_a")
    for conf in ("p32_0", "p108_1"):
        res = evaluate(pot, ref, conf, atomic_virial=False)
        o = ref.output(conf, "pb")
        assert abs(res.energy - float(o["energy"])) / len(res.forces) < 1e-7
        assert np.abs(res.forces - o["force"]).max() < 1e-6


def test_info_says_which_ranges_were_extended(tmp_path):
    out = tmp_path / "m.dcz"
    proc = run_cli("compress", "-i", TANH, "-o", out, "-s", "0.03", "-v", "WARNING")
    assert proc.returncode == 0, proc.stderr
    info = run_cli("info", out)
    assert info.returncode == 0
    assert "step 0.03 does not divide" in info.stdout
    # cu_se_e2_a_tanh: fine [-1, 5) holds 200 steps of 0.03, [5, 25) no whole number of 0.3
    assert "descriptor:0-0       xmax 25 -> 25.1" in info.stdout


def test_dividing_step_records_no_extension(tmp_path):
    content = compress_model(TANH, tmp_path / "m.dcz", step=0.02)
    assert "extended_ranges" not in content.meta["options"]


def test_non_positive_step_is_a_clean_cli_error(tmp_path):
    proc = run_cli("compress", "-i", TANH, "-o", tmp_path / "m.dcz", "-s", "0")
    assert_clean_error(proc, "must be a positive number")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------- -e: size limit
def test_huge_extrapolate_is_refused_before_building(tmp_path):
    out = tmp_path / "m.dcz"
    proc = run_cli("compress", "-i", TANH, "-o", out, "-e", "100000")
    assert_clean_error(proc, "MiB", "--max-table-size", "above the limit of 1,024 MiB")
    assert not list(tmp_path.iterdir())


def test_size_estimate_equals_what_is_built(model):
    from deepcomp_ase.compress.api import estimate_table_bytes

    for step, e in ((0.01, 5), (0.03, 3)):
        tables = tabulate_model(model, model.min_nbor_dist, step, e)
        assert estimate_table_bytes(model, model.min_nbor_dist, step, e) == sum(t.coeffs.nbytes for t in tables.values())


def test_size_limit_can_be_lifted(tmp_path):
    with pytest.raises(DeepCompError, match="--max-table-size"):
        compress_model(TANH, tmp_path / "a.dcz", extrapolate=20, max_table_mib=1)
    compress_model(TANH, tmp_path / "a.dcz", extrapolate=20, max_table_mib=0)
    assert (tmp_path / "a.dcz").exists()


# ---------------------------------------------------------------------------------------- -t, -f 0
def test_missing_training_script_is_an_error_even_when_not_needed(tmp_path):
    proc = run_cli("compress", "-i", TANH, "-o", tmp_path / "m.dcz", "-t", tmp_path / "nope.json")
    assert_clean_error(proc, "nope.json: training script (-t) not found")
    assert not list(tmp_path.iterdir())


def test_existing_training_script_is_accepted_when_model_has_min_nbor_dist(tmp_path):
    content = compress_model(TANH, tmp_path / "m.dcz", training_script=TRAINING_SCRIPT)
    assert content.meta["options"]["min_nbor_dist_origin"] == "model file"


@pytest.fixture(scope="module")
def overflowing():
    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure("overflow_0.30A")
    return Atoms([str(ref.z["type_map"][t]) for t in atype], positions=coord, cell=box, pbc=True)


@pytest.fixture(scope="module")
def f0_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("f0") / "f0.dcz"
    assert main(["compress", "-i", str(MODELS / "cuau_se_e2_a.dp"), "-o", str(out), "-f", "0", "-v", "ERROR"]) == 0
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_frequency_zero_means_never(f0_model, overflowing, backend, caplog):
    assert load_compressed(f0_model).meta["options"]["frequency"] == 0
    for calc in (DeepCompCalculator(f0_model, backend=backend),
                 DeepCompCalculator(f0_model, backend=backend, check_frequency=0, overflow="error")):
        atoms = overflowing.copy()
        atoms.calc = calc
        for k in range(3):
            atoms.positions[0, 0] += 1e-4
            atoms.get_potential_energy()  # never checked: no warning, no error
        assert calc.overflow_counts["beyond_table"] > 0 and calc.overflow_total["beyond_table"] == 0
    assert not [r for r in caplog.records if "overflow" in r.getMessage()]


# ---------------------------------------------------------------------------------------- output path
@pytest.mark.parametrize("case", ["missing dir", "a directory", "parent is a file"])
def test_output_path_checked_first(tmp_path, case):
    (tmp_path / "isadir.dcz").mkdir()
    (tmp_path / "afile").write_text("x")
    out = {"missing dir": tmp_path / "nodir" / "out.dcz", "a directory": tmp_path / "isadir.dcz",
           "parent is a file": tmp_path / "afile" / "out.dcz"}[case]
    proc = run_cli("compress", "-i", TANH, "-o", out, "-v", "INFO")
    assert_clean_error(proc, f"{out}:")
    assert ".part" not in proc.stderr
    assert "compressing" not in proc.stderr  # refused before reading the model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "isadir.dcz"]
    assert not list((tmp_path / "isadir.dcz").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_checked_first(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        proc = run_cli("compress", "-i", TANH, "-o", d / "m.dcz")
        assert_clean_error(proc, "permission denied")
    finally:
        d.chmod(0o755)


def test_unwritable_directory_message(tmp_path, monkeypatch):
    """The same check without needing a non-root user: os.access says no."""
    from deepcomp_ase import fileformat

    monkeypatch.setattr(fileformat.os, "access", lambda *a, **k: False)
    with pytest.raises(DeepCompError, match=r"m\.dcz: cannot create files in directory .* \(permission denied\)"):
        compress_model(TANH, tmp_path / "m.dcz")


def test_output_honours_umask(tmp_path):
    out = tmp_path / "m.dcz"
    old = os.umask(0o022)
    try:
        compress_model(TANH, out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o007)
        compress_model(TANH, out)
        assert stat.S_IMODE(out.stat().st_mode) == 0o660
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcz"]


# ---------------------------------------------------------------------------------------- ASE calculator
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_calculator_unknown_keyword(backend):
    with pytest.raises(DeepCompError, match="unknown keyword 'overflw' \\(did you mean 'overflow'\\?\\)"):
        DeepCompCalculator(TANH, backend=backend, overflw="error")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_calculator_parameters_are_the_settings_in_use(f0_model, backend):
    calc = DeepCompCalculator(f0_model, backend=backend)
    p = calc.parameters
    assert p["model"] == str(f0_model) and p["backend"] == backend and p["precision"] == "float64"
    assert p["check_frequency"] == 0  # from the file, not the default None
    assert p["overflow"] == "warn"
    d = calc.todict()
    assert d["check_frequency"] == 0 and d["backend"] == backend and "overflow" not in d  # default skipped
    assert calc.set(overflow="error") == {"overflow": "error"} and calc.potential.overflow == "error"
    assert calc.todict()["overflow"] == "error"
    with pytest.raises(DeepCompError, match="backend cannot change"):
        calc.set(backend="cuda")
    with pytest.raises(DeepCompError, match="unknown keyword"):
        calc.set(chek_frequency=3)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_loaded_potential_with_conflicting_settings(backend):
    pot = DeepPotential.from_file(TANH, backend=backend)
    for kwargs, what in (({"overflow": "error"}, "overflow='error'"),
                         ({"backend": "cuda"}, "backend='cuda'"),
                         ({"precision": "float32"}, "precision='float32'")):
        with pytest.raises(DeepCompError, match=what):
            DeepCompCalculator(pot, **kwargs)
    # agreeing settings are fine, check_frequency is applied
    calc = DeepCompCalculator(pot, overflow="warn", backend=backend, precision="float64", check_frequency=7)
    assert pot.check_frequency == 7 and calc.parameters["check_frequency"] == 7
    assert calc.parameters["backend"] == backend


# ---------------------------------------------------------------------------------------- deepcomp md
def test_md_help():
    proc = run_cli("md", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--mpi-log" not in text and "-m " not in text
    for flag, default in (("--steps", "100"), ("--log-every", "10"), ("--seed", "1")):
        i = text.rindex(flag + " ")  # the option list, after the usage line
        assert f"(default: {default})" in text[i:i + 200]


def test_md_missing_structure(tmp_path):
    proc = run_cli("md", MODELS / "cu_se_e2_a_tanh.dp", "--structure", tmp_path / "missing.xyz", "--backend", "numpy")
    assert_clean_error(proc, "missing.xyz: structure file not found")
    assert "Errno" not in proc.stderr


def test_md_unreadable_structure(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("this is not\nan xyz file\n")
    proc = run_cli("md", MODELS / "cu_se_e2_a_tanh.dp", "--structure", bad, "--backend", "numpy")
    assert_clean_error(proc, "bad.xyz: cannot read the structure")


def test_md_missing_model(tmp_path):
    proc = run_cli("md", tmp_path / "nope.dcz", "--backend", "numpy")
    assert_clean_error(proc, "nope.dcz: model file not found")


def test_unexpected_exception_keeps_its_traceback(monkeypatch, capsys):
    """A bug is not a user error: the CLI prints its traceback (issue 14), then the promised
    ``internal error:`` line (issue 23); with -v DEBUG the exception itself propagates."""
    import deepcomp_ase.info as info

    def boom(path, head=None):
        raise KeyError("bug")

    monkeypatch.setattr(info, "describe", boom)
    assert main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in boom" in err
    assert err.splitlines()[-1].startswith("deepcomp info: internal error: KeyError: 'bug'")
    with pytest.raises(KeyError):
        main(["info", "x", "-v", "DEBUG"])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_md_prints_overflow_summary_without_check_frequency(f0_model, overflowing, tmp_path, backend):
    structure = tmp_path / "overflow.extxyz"
    write(structure, overflowing)
    proc = run_cli("md", f0_model, "--structure", structure, "--steps", "2", "--log-every", "1",
                   "--timestep", "0.01", "--temperature", "10", "--backend", backend, "-v", "WARNING")
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if "overflow summary" in ln]
    assert len(lines) == 1 and "beyond it" in lines[0] and "over 2 steps" in lines[0]
    assert "WARNING" not in proc.stderr  # no periodic check ran (-f 0)


def test_md_says_when_nothing_overflowed(capsys):
    assert main(["md", str(MODELS / "cu_se_e2_a_tanh.dp"), "--steps", "2", "--repeat", "2", "--backend", "numpy",
                 "-v", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "overflow summary" not in out and "table overflow: none" in out


def test_log_path_in_missing_directory(tmp_path):
    proc = run_cli("compress", "-i", TANH, "-o", tmp_path / "m.dcz", "-l", tmp_path / "nodir" / "log.txt")
    assert_clean_error(proc, "log.txt: cannot open the log file")
    assert not list(tmp_path.iterdir())
