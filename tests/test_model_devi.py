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


# ---------------------------------------------------------------------------- against DeePMD-kit 3.2
# references: tests/data/make_model_devi_refs.py (dp model-devi on tests/data/model_devi/valid)
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
REFS = DATA / "model_devi"
MODELS = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid", "cuau_se_e3")


def dp_blocks(text: str) -> dict:
    """``dp model-devi`` output -> {system: (header lines, rows as arrays)} (dp's system order varies)."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("# ") and not line.startswith("# step"):
            name = line[2:]
            out[name] = ([line], [])
        elif line.startswith("#"):
            out[name][0].append(line)
        else:
            out[name][1].append([float(x) for x in line.split()])
    return {k: (h, np.array(r)) for k, (h, r) in out.items()}


def assert_printed_precision(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-6):
    """Equal to the 7 significant digits of %e (one unit of the last digit, plus a small slack)."""
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=1e-12)


@pytest.fixture(scope="module")
def compressed_se_e2_a(tmp_path_factory):
    from deepcomp_ase.compress.api import compress_model

    out = tmp_path_factory.mktemp("md_models") / "cuau_se_e2_a.dcz"
    compress_model(DATA / "models" / "cuau_se_e2_a.dp", out)
    return out


def mixed_models(compressed):
    """The first model compressed by deepcomp, the others uncompressed (.dp and .pb mixed)."""
    return [compressed, DATA / "models" / "cuau_se_e2_r.dp", DATA / "models" / "cuau_hybrid.pb",
            DATA / "models" / "cuau_se_e3.dp"]


@pytest.mark.slow
@pytest.mark.parametrize(("ref", "extra"), [("dp_plain.out", []), ("dp_rel_atomic.out", ["--relative", "1.0",
                                                                                          "--atomic"])])
def test_cli_equals_dp_model_devi(tmp_path, compressed_se_e2_a, ref, extra, monkeypatch, capsys):
    from deepcomp_ase.cli import main

    shutil.copytree(REFS / "valid", tmp_path / "valid")
    monkeypatch.chdir(tmp_path)
    models = [str(m) for m in mixed_models(compressed_se_e2_a)]
    rc = main(["model-devi", "-m", *models, "-s", "valid", "-o", "md.out",
               "-f", "10", "--backend", "numpy", *extra])
    assert rc == 0, capsys.readouterr().err
    ours = dp_blocks((tmp_path / "md.out").read_text())
    want = dp_blocks((REFS / ref).read_text())
    assert sorted(ours) == sorted(want)
    for name in want:
        assert ours[name][0] == want[name][0]  # header lines byte for byte
        assert_printed_precision(ours[name][1], want[name][1])
    # the row format byte for byte: re-printing dp's numbers with our writer gives dp's text
    from deepcomp_ase.model_devi import Deviation, dp_block

    for name, (_, rows) in want.items():
        devis = [Deviation(*r[1:8], atom_devi_f=r[8:]) for r in rows]
        text = dp_block(name, rows[:, 0], devis, atomic=bool(extra))
        block = (REFS / ref).read_text().split(f"# {name}\n", 1)[1]
        assert f"# {name}\n" + block[: len(text) - len(name) - 3] == text


def test_cli_errors(tmp_path, capsys):
    from deepcomp_ase.cli import main

    m = str(DATA / "models" / "cuau_se_e2_a.dp")
    assert main(["model-devi", "-m", m, m, "-s", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["model-devi", "-m", m, m, "-s", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 1
    assert "no DeePMD-kit system found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_npy_systems_recursive():
    from deepcomp_ase.systems import find_systems, read_npy_system

    found = find_systems(REFS)
    assert [p.name for p in found] == ["n108_x75", "n32_x25"]
    fr = read_npy_system(found[1], ("Cu", "Au"))
    assert fr.positions.shape == (5, 32, 3) and fr.cells.shape == (5, 3, 3) and fr.pbc == (True,) * 3
    types = np.loadtxt(found[1] / "type.raw", dtype=int)
    names = (found[1] / "type_map.raw").read_text().split()
    assert fr.symbols == [names[t] for t in types]


def test_mixed_type_system_reads_the_types_of_each_frame(tmp_path):
    """DeePMD-kit's mixed-type layout: set.*/real_atom_types.npy gives each frame's types (type.raw only
    counts the atoms); a row of it that swaps two types gives that frame the swapped elements."""
    import shutil

    from deepcomp_ase.errors import DeepCompError
    from deepcomp_ase.systems import read_npy_system

    src = REFS / "valid" / "n32_x25"
    ref = read_npy_system(src, ("Cu", "Au"))
    mixed = tmp_path / "mixed"
    shutil.copytree(src, mixed)
    names = (mixed / "type_map.raw").read_text().split()
    types = np.tile([names.index(s) for s in ref.symbols], (len(ref), 1))
    types[1, [0, -1]] = types[1, [-1, 0]] if types[1, 0] != types[1, -1] else 1 - types[1, [0, -1]]
    sets = sorted(mixed.glob("set.*"))
    assert len(sets) == 1
    np.save(sets[0] / "real_atom_types.npy", types)
    (mixed / "type.raw").write_text("0\n" * types.shape[1])
    fr = read_npy_system(mixed, ("Cu", "Au"))
    assert fr.symbols[0] == ref.symbols and fr.symbols[2] == ref.symbols
    assert fr.symbols[1] == [names[t] for t in types[1]] != ref.symbols
    np.testing.assert_array_equal(fr.positions, ref.positions)

    np.save(sets[0] / "real_atom_types.npy", np.where(types == 1, 2, types))
    with pytest.raises(DeepCompError, match="type index 2.*add the element to type_map.raw"):
        read_npy_system(mixed, ("Cu", "Au"))
    np.save(sets[0] / "real_atom_types.npy", types[:, :-1])
    with pytest.raises(DeepCompError, match="real_atom_types.npy"):
        read_npy_system(mixed, ("Cu", "Au"))
    np.save(sets[0] / "real_atom_types.npy", types + 0.5)
    with pytest.raises(DeepCompError, match="non-integer"):
        read_npy_system(mixed, ("Cu", "Au"))


def test_extxyz_and_lammps_dump_trajectories(tmp_path):
    """ASE-readable trajectories give the same frames as the npy system they were written from."""
    from ase import Atoms
    from ase.io import write

    from deepcomp_ase.systems import load_frames, read_npy_system

    ref = read_npy_system(REFS / "valid" / "n32_x25", ("Cu", "Au"))
    images = [Atoms(ref.symbols, positions=p, cell=c, pbc=True) for p, c in zip(ref.positions, ref.cells)]
    write(tmp_path / "t.extxyz", images)
    (fr,) = load_frames(tmp_path / "t.extxyz", None, ("Cu", "Au"))
    np.testing.assert_allclose(fr.positions, ref.positions, atol=1e-8)
    assert fr.symbols == ref.symbols
    # a LAMMPS dump: types, not elements
    lines = []
    for k, p in enumerate(ref.positions):
        lines += ["ITEM: TIMESTEP", str(10 * k), "ITEM: NUMBER OF ATOMS", str(len(p)),
                  "ITEM: BOX BOUNDS pp pp pp"] + ["-30.0 30.0"] * 3  # orthogonal: reading is what is tested
        lines += ["ITEM: ATOMS id type x y z"]
        lines += [f"{i + 1} {1 + ('Cu', 'Au').index(s)} {x:.10f} {y:.10f} {z:.10f}"
                  for i, (s, (x, y, z)) in enumerate(zip(ref.symbols, p))]
    (tmp_path / "t.dump").write_text("\n".join(lines) + "\n")
    from deepcomp_ase.errors import DeepCompError

    with pytest.raises(DeepCompError, match="--type-map"):
        load_frames(tmp_path / "t.dump", None, ("Cu", "Au"))
    (fr,) = load_frames(tmp_path / "t.dump", ["Cu", "Au"], ("Cu", "Au"))
    assert fr.symbols == ref.symbols
    np.testing.assert_allclose(fr.positions, ref.positions, atol=1e-8)


@pytest.mark.slow
def test_function_and_calculator_equal_dp(compressed_se_e2_a):
    """model_devi_frames and the ASE calculator reproduce dp model-devi on one system."""
    from ase import Atoms

    from deepcomp_ase.ensemble import ModelEnsemble, model_devi_frames
    from deepcomp_ase.ensemble_calculator import DeepCompEnsembleCalculator
    from deepcomp_ase.potential import DeepPotential
    from deepcomp_ase.systems import read_npy_system

    fr = read_npy_system(REFS / "valid" / "n32_x25", ("Cu", "Au"))
    want = dp_blocks((REFS / "dp_rel_atomic.out").read_text())["valid/n32_x25"][1]
    ens = ModelEnsemble(mixed_models(compressed_se_e2_a), backend="numpy")
    devis = model_devi_frames(ens, fr.positions, fr.symbols, fr.cells, True, relative=1.0, magnitude="tensor")
    got = np.array([[*d.row(), d.devi_e, *d.atom_devi_f] for d in devis])
    assert_printed_precision(got, want[:, 1:])

    calc = DeepCompEnsembleCalculator(ens.potentials, relative=1.0)
    atoms = Atoms(fr.symbols, positions=fr.positions[2], cell=fr.cells[2], pbc=True)
    atoms.calc = calc
    forces = atoms.get_forces()
    first = DeepPotential.from_file(compressed_se_e2_a, backend="numpy")
    alone = first.compute_atoms(atoms.positions, first.types_of(fr.symbols), atoms.cell.array, atoms.pbc)
    np.testing.assert_allclose(forces, alone.forces[: len(atoms)], atol=1e-10)
    assert atoms.get_potential_energy() == pytest.approx(alone.energy, abs=1e-9)
    devi = calc.get_model_devi()
    np.testing.assert_allclose(devi.atom_devi_f, want[2, 8:], rtol=1e-6)
    assert calc.get_property("model_devi_row", atoms) == pytest.approx(devi.row())
    # pair_style convention for relative_v: per component
    assert calc.relative_v is None and devi.max_devi_v == pytest.approx(want[2, 1], rel=1e-6)


def test_calculator_devi_every_and_first_model_drives():
    """devi_every=2: all models on calls 1, 3, ...; in between the first alone and the last deviation kept."""
    from ase import Atoms

    from deepcomp_ase.ensemble_calculator import DeepCompEnsembleCalculator
    from deepcomp_ase.systems import read_npy_system

    fr = read_npy_system(REFS / "valid" / "n32_x25", ("Cu", "Au"))
    models = [DATA / "models" / "cuau_se_e2_a.dp", DATA / "models" / "cuau_se_e2_r.dp"]
    calc = DeepCompEnsembleCalculator(models, backend="numpy", devi_every=2)
    with pytest.raises(Exception, match="no model deviation yet"):
        calc.get_model_devi()
    atoms = Atoms(fr.symbols, positions=fr.positions[0], cell=fr.cells[0], pbc=True)
    atoms.calc = calc
    atoms.get_forces()
    first = calc.get_model_devi()
    atoms.positions = fr.positions[1]
    f1 = atoms.get_forces()
    assert calc.get_model_devi() is first  # second call: first model only
    alone = calc.potential.compute_atoms(atoms.positions, calc.potential.types_of(fr.symbols), atoms.cell.array,
                                         atoms.pbc)
    np.testing.assert_allclose(f1, alone.forces[: len(atoms)], atol=1e-10)
    assert calc.get_model_devi(atoms) is not first  # asked for explicitly: computed now


@pytest.mark.slow  # four models (se_e3 among them) on 90 atoms with numpy; the ensemble test below shares too
def test_models_share_selections_with_the_same_signature(monkeypatch):
    """Several models on one pair list (LAMMPS's model deviation): each distinct (rcut, sel,
    selection kind, exclusions) is selected once, results are those of separate selections,
    and every model still counts its dropped pairs. The four acceptance models have five
    descriptor parts but two selection signatures."""
    from pathlib import Path

    from deepcomp_ase.backends import numpy_ref
    from deepcomp_ase.neighbors import neighbor_pairs_ase
    from deepcomp_ase.potential import DeepPotential

    models = Path(__file__).parent / "data" / "models"
    pots = [DeepPotential.from_file(models / f"{n}.dp", backend="numpy", check_frequency=-1)
            for n in ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid", "cuau_se_e3")]
    keys = {part.selection_key for pot in pots for part in pot.plan.parts}
    assert sum(len(pot.plan.parts) for pot in pots) == 5 and len(keys) == 2
    rng = np.random.default_rng(7)
    cell = np.eye(3) * 7.3
    n = 90  # dense enough that sel drops neighbours (counted per model)
    pos = rng.uniform(0, 7.3, size=(n, 3))
    atype = rng.integers(0, 2, size=n)
    rcut = max(pot.rcut for pot in pots)
    i, j, vec = neighbor_pairs_ase(pos, cell, np.ones(3, bool), rcut)
    i, j = i.astype(np.int64), j.astype(np.int64)

    calls = []
    original = numpy_ref.Backend.select
    monkeypatch.setattr(numpy_ref.Backend, "select",
                        lambda self, part, *a: calls.append(part.selection_key) or original(self, part, *a))
    alone = [pot.compute_pairs(atype, n, i, j, vec) for pot in pots]
    assert len(calls) == 5
    calls.clear()
    dropped_alone = [pot.tally.n_sel_dropped for pot in pots]
    assert min(dropped_alone) > 0
    shared: dict = {}
    together = [pot.compute_pairs(atype, n, i, j, vec, shared_selection=shared) for pot in pots]
    assert sorted(calls) == sorted(keys)  # once per signature
    for a, b in zip(alone, together):
        assert a.energy == b.energy
        np.testing.assert_array_equal(a.forces, b.forces)
        np.testing.assert_array_equal(a.virial, b.virial)
    assert [pot.tally.n_sel_dropped for pot in pots] == [2 * d for d in dropped_alone]
    # other model types (another type_map order) or other pair arrays: selected anew
    calls.clear()
    pots[0].compute_pairs(1 - atype, n, i, j, vec, shared_selection=shared)
    pots[0].compute_pairs(atype, n, i.copy(), j, vec, shared_selection=shared)
    assert len(calls) == 2


def test_ensemble_searches_pairs_once_and_shares_selections(monkeypatch):
    """ModelEnsemble on a host backend: one pair search at the largest cutoff, one selection per
    signature; each model's energy, forces and virial as when it runs alone."""
    from deepcomp_ase.backends import numpy_ref
    from deepcomp_ase.ensemble import ModelEnsemble
    from deepcomp_ase.systems import read_npy_system

    fr = read_npy_system(REFS / "valid" / "n32_x25", ("Cu", "Au"))
    names = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid")
    ens = ModelEnsemble([DATA / "models" / f"{n}.dp" for n in names], backend="numpy", check_frequency=-1)
    pos, cell = fr.positions[0], fr.cells[0]
    alone = [pot.compute_atoms(pos, pot.types_of(fr.symbols), cell, (True,) * 3) for pot in ens.potentials]
    counts = {"search": 0, "select": 0}
    search, select = numpy_ref.Backend.pairs_from_atoms, numpy_ref.Backend.select

    def counted(name, f):
        return lambda *a: counts.__setitem__(name, counts[name] + 1) or f(*a)

    monkeypatch.setattr(numpy_ref.Backend, "pairs_from_atoms", counted("search", search))
    monkeypatch.setattr(numpy_ref.Backend, "select", counted("select", select))
    res = ens.compute(pos, fr.symbols, cell, (True,) * 3)
    assert counts == {"search": 1, "select": 2}  # four parts, two signatures
    for k, a in enumerate(alone):
        assert res.energies[k] == pytest.approx(a.energy, rel=1e-13)
        np.testing.assert_allclose(res.forces[k], a.forces, rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.virials[k], a.virial, rtol=0, atol=1e-11)


def test_ensemble_calculator_overflow_names_the_model(compressed_model, caplog):
    """An overflow seen by one model of the ensemble is reported with that model's file."""
    import logging

    from ase import Atoms
    from conftest import Reference

    from deepcomp_ase.ensemble_calculator import DeepCompEnsembleCalculator

    ref = Reference("cuau_se_e2_a")
    coord, atype, box = ref.structure("overflow_0.30A")
    symbols = [ref.z["type_map"][t] for t in atype]
    compressed = compressed_model("cuau_se_e2_a")
    exact = DATA / "models" / "cuau_se_e2_r.dp"  # uncompressed: no tables, never overflows
    atoms = Atoms(symbols, positions=coord, cell=box, pbc=box is not None)
    atoms.calc = DeepCompEnsembleCalculator([exact, compressed], backend="numpy", check_frequency=1)
    with caplog.at_level(logging.WARNING, logger="deepcomp_ase"):
        atoms.get_forces()
    messages = [r.getMessage() for r in caplog.records if "overflow" in r.getMessage()]
    assert len(messages) == 1 and str(compressed) in messages[0] and "beyond it" in messages[0]
