"""The backend contract (backends/base.py) and the evaluation plan (plan.py), and the file format checks."""

from __future__ import annotations

import dataclasses
import shutil
import types

import h5py
import numpy as np
import pytest
from conftest import MODELS, Reference

from deepcomp_ase.backends import base, get_backend, numpy_ref
from deepcomp_ase.errors import TableFormatError
from deepcomp_ase.fileformat import FORMAT_VERSION, load_compressed
from deepcomp_ase.overflow import OverflowTally
from deepcomp_ase.potential import DeepPotential, type_indices


def _evaluable(pot):
    """Only what the contract lets a backend read: plan, tally, check_frequency."""
    return types.SimpleNamespace(plan=pot.plan, tally=OverflowTally(), check_frequency=-1)


def _structure():
    coord, atype, box = Reference("cuau_se_e2_a").structure("p32_0")
    return coord, atype, box, (box is not None,) * 3


@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_backend_sees_only_the_plan(compressed_model, name):
    """A backend given a bare Evaluable computes what it computes for the DeepPotential."""
    if name == "numba":
        pytest.importorskip("numba")
    pot = DeepPotential.from_file(compressed_model("cuau_se_e2_a"), backend=name, check_frequency=-1)
    coord, atype, box, pbc = _structure()
    want = pot.compute_atoms(coord, atype, box, pbc)
    model = _evaluable(pot)
    backend = get_backend(name)
    i, j, vec = backend.pairs_from_atoms(coord, box, np.asarray(pbc), pot.rcut)
    pairs = base.select_parts(backend, model.plan, i, j, vec, atype, len(coord), model.tally)
    got = backend.evaluate(model, pairs, atype, False)
    assert got.energy == want.energy and np.array_equal(got.forces, want.forces)
    assert model.tally.n_inputs > 0  # counted into the tally it was given


def test_backends_declare_their_capabilities():
    from deepcomp_ase.backends import cupy_gpu, numba_cpu

    for cls in (numpy_ref.Backend, numba_cpu.Backend, cupy_gpu.Backend):
        assert isinstance(cls.builds_neighbors, bool) and isinstance(cls.device_counters, bool)
        for method in ("pairs_from_atoms", "select", "evaluate"):
            assert callable(getattr(cls, method))
        if cls.builds_neighbors:
            assert callable(cls.compute_atoms)
        if cls.device_counters:
            assert callable(cls.flush_overflow)
    assert isinstance(numpy_ref.Backend(), base.Backend)


def test_results_importable_from_its_old_home():
    from deepcomp_ase.evaluate import Results

    assert Results is base.Results


def test_plan_is_frozen_and_describes_each_part():
    pot = DeepPotential.from_file(MODELS / "cuau_hybrid.dp", backend="numpy")
    plan = pot.plan
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.parts = ()
    kernels = [p.kernel for p in plan.parts]
    assert kernels == ["se_a", "se_r"] and [p.padding for p in plan.parts] == ["angular", "radial"]
    assert plan.dim_out == pot.params.descriptor.dim_out
    for part in plan.parts:
        assert not part.mixed_types and part.nsec == part.ntypes and part.pad_fold.shape == (2, 2, part.ng)
        d = part.descriptor
        for ti in range(2):
            for tj in range(2):
                want = -1 if d.excluded(ti, tj) else part.keys.index(d.net_key(ti, tj))
                assert part.net_index[ti, tj] == want


def test_plan_of_mixed_types_selection():
    pot = DeepPotential.from_file(MODELS / "cuau_se_atten_v2.pb", backend="numpy")
    (part,) = pot.plan.parts
    assert part.kernel == "se_atten" and part.mixed_types and part.nsec == 1
    assert (part.net_index == 0).all() and part.keys == ((),)
    # exclusions turn pairs into non-neighbours: all in the selection's set, none keeps a slot
    assert part.slot_exclude == frozenset()
    assert part.select_exclude == pot.params.pair_exclude_types | part.descriptor.exclude_types
    assert part.type_term is not None and part.type_term.rows.shape == (part.ntypes, part.ntypes)


def test_type_indices_names_the_missing_element():
    assert list(type_indices(("Cu", "Au"), ["Au", None, "Cu"], lambda k, n: n)) == [1, -1, 0]
    with pytest.raises(Exception, match="Ag at 1"):
        type_indices(("Cu", "Au"), ["Au", "Ag"], lambda k, n: f"{n} at {k}")


# ------------------------------------------------------------------ the compressed file
def _copy(compressed_model, tmp_path):
    path = tmp_path / "m.dcz"
    shutil.copy(compressed_model("cuau_se_e2_a"), path)
    return path


def test_written_version_is_current(compressed_model):
    with h5py.File(compressed_model("cuau_se_e2_a"), "r") as f:
        assert int(f.attrs["format_version"]) == FORMAT_VERSION == 2


def test_version_1_file_loads_with_defaults(compressed_model, tmp_path):
    path = _copy(compressed_model, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 1
        for g in f["tables"].values():
            del g.attrs["xmin"]
    content = load_compressed(path)
    assert all(t.xmin == t.lower and len(t.split_intervals) == 0 for t in content.tables.values())


def test_newer_version_is_refused(compressed_model, tmp_path):
    path = _copy(compressed_model, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(TableFormatError, match="compress the model again"):
        load_compressed(path)


@pytest.mark.parametrize("damage, message", [
    (lambda g: g.attrs.__setitem__("upper", -5.0), "not ordered"),
    (lambda g: g.attrs.__setitem__("stride0", 0.02), "intervals, its range implies"),
    (lambda g: (g.__delitem__("coeffs"), g.create_dataset("coeffs", data=np.zeros((4, 3)))), "expected"),
    (lambda g: g.create_dataset("split_intervals", data=np.array([1])), "need split_intervals, sub_start"),
])
def test_damaged_table_is_named(compressed_model, tmp_path, damage, message):
    path = _copy(compressed_model, tmp_path)
    with h5py.File(path, "r+") as f:
        damage(f["tables/descriptor:0-1"])
    with pytest.raises(TableFormatError, match=message) as err:
        load_compressed(path)
    assert "descriptor:0-1" in str(err.value)


def test_backend_sources_read_only_the_evaluable():
    """Static check of the contract: backends touch a potential only through plan, tally, check_frequency."""
    import re
    from pathlib import Path

    import deepcomp_ase.backends as pkg

    allowed = {"plan", "tally", "check_frequency"}
    found = set()
    for path in Path(pkg.__file__).parent.glob("*.py"):
        found |= set(re.findall(r"\bpotential\.([a-z_]+)", path.read_text()))
    assert found and found <= allowed, found - allowed
