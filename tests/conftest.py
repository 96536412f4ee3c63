"""Shared fixtures: the refsuite models and references copied into tests/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
MODELS = DATA / "models"
REFS = DATA / "refs"

IN_DIST = ("p32_0", "p32_1", "p32_2", "p108_0", "p108_1", "p108_2", "p256", "cluster")
SE_E2_A_MODELS = ("cuau_se_e2_a", "cu_se_e2_a_tanh", "cu_se_e2_a_gelu", "cu_se_e2_a_softplus", "cu_se_e2_a_relu")
TRAINING_SCRIPT = DATA / "training" / "input.json"


class ModelCase:
    """A refsuite model: where it comes from and how our results relate to DeePMD-kit's."""

    def __init__(self, name, source=".dp", reference="pb", same_tables=True, needs_training_script=False):
        self.name = name
        self.source = MODELS / f"{name}{source}"
        self.reference = reference  # DeePMD-kit variant holding the uncompressed outputs
        # True: our tables are built as DeePMD-kit's TF backend builds them -> compare with its compressed
        # outputs; False: we deliberately differ (se_e3 widths, relu kinks) -> compare with our exact model
        self.same_tables = same_tables
        self.training_script = TRAINING_SCRIPT if needs_training_script else None

    def __repr__(self):
        return self.name


MODEL_CASES = {c.name: c for c in (
    ModelCase("cuau_se_e2_a"),
    ModelCase("cu_se_e2_a_tanh"),
    ModelCase("cu_se_e2_a_gelu"),
    ModelCase("cu_se_e2_a_softplus"),
    ModelCase("cu_se_e2_a_relu", same_tables=False),
    ModelCase("cuau_se_e2_r"),
    ModelCase("cuau_se_e2_r_tos"),
    ModelCase("cuau_hybrid"),
    ModelCase("cuau_se_e3", same_tables=False),
    ModelCase("cuau_se_atten_v2", source=".pb"),
    ModelCase("cuau_se_atten_v2_jax", reference="dp_jax", same_tables=False, needs_training_script=True),
)}


class Reference:
    """The references of one refsuite model (DeePMD-kit 3.2 outputs)."""

    def __init__(self, name: str):
        self.name = name
        self.z = np.load(REFS / f"{name}.npz")
        self.names = [str(n) for n in self.z["names"]]

    def kind(self, conf: str) -> str:
        if conf.startswith("stretched"):
            return "stretched"
        if conf.startswith("overflow"):
            return "overflow"
        return "in_dist"

    def confs(self, kind: str):
        return [c for c in self.names if self.kind(c) == kind]

    def structure(self, conf: str):
        z = self.z
        box = z[f"{conf}/box"] if f"{conf}/box" in z else None
        return z[f"{conf}/coord"], z[f"{conf}/atype"], box

    def has(self, conf: str, variant: str) -> bool:
        return f"{conf}/{variant}/energy" in self.z

    def output(self, conf: str, variant: str) -> dict:
        return {k: self.z[f"{conf}/{variant}/{k}"] for k in ("energy", "force", "virial", "atom_energy", "atom_virial")}


def evaluate(potential, ref: Reference, conf: str, atomic_virial=True):
    coord, atype, box = ref.structure(conf)
    pbc = [box is not None] * 3
    return potential.compute_atoms(coord, atype, box, pbc, atomic_virial=atomic_virial)


def assert_within_table_error(exact, tab, ref: Reference, confs) -> None:
    """A compressed model against its uncompressed one: the table error (<= 1e-7 eV/A) on ``confs``."""
    for conf in confs:
        a, b = evaluate(exact, ref, conf), evaluate(tab, ref, conf)
        n = len(a.atom_energy)
        assert abs(a.energy - b.energy) / n <= 1e-8, conf
        assert np.abs(a.forces - b.forces).max() <= 1e-7, conf
        assert np.abs(a.virial - b.virial).max() / n <= 1e-7, conf


def deviations(res, out: dict, natoms: int) -> dict:
    return {
        "e_per_atom": abs(res.energy - float(out["energy"])) / natoms,
        "force": float(np.abs(res.forces - out["force"]).max()),
        "virial_per_atom": float(np.abs(res.virial - out["virial"]).max()) / natoms,
        "atom_energy": float(np.abs(res.atom_energy - out["atom_energy"]).max()),
    }


@pytest.fixture(scope="session")
def compressed_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("compressed")


_CACHE: dict = {}


@pytest.fixture(scope="session")
def compressed_model(compressed_dir):
    """compressed_model(name, step=0.01, extrapolate=5) -> path of a deepcomp file (made once)."""
    from deepcomp_ase.compress.api import compress_model

    def make(name: str, step: float = 0.01, extrapolate: int = 5) -> Path:
        key = (name, step, extrapolate)
        if key not in _CACHE:
            case = MODEL_CASES[name]
            out = compressed_dir / f"{name}-s{step}-e{extrapolate}.dcz"
            compress_model(case.source, out, step=step, extrapolate=extrapolate,
                           training_script=case.training_script)
            _CACHE[key] = out
        return _CACHE[key]

    return make


def central_difference_virial(potential, coord, atype, box, h=1e-6):
    """-dE/d(strain) for homogeneous deformations of cell and positions (DeePMD-kit's virial)."""
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            e = [potential.compute_atoms(coord @ (np.eye(3) + s * eps), atype, box @ (np.eye(3) + s * eps),
                                         [True] * 3).energy for s in (1, -1)]
            fd[a, b] = -(e[0] - e[1]) / (2 * h)
    return fd


def central_difference_force(potential, coord, atype, box, atom, axis, h=1e-5):
    pbc = [box is not None] * 3
    e = []
    for s in (1, -1):
        moved = coord.copy()
        moved[atom, axis] += s * h
        e.append(potential.compute_atoms(moved, atype, box, pbc).energy)
    return -(e[0] - e[1]) / (2 * h)


def with_ghost_atoms(coord, atype, cell, rcut):
    """LAMMPS's view of a periodic cell: local atoms, ghost copies of every periodic image within
    rcut, and the pair list over local + ghost atoms. Returns atype_all, centers, neighbors,
    vectors and each ghost's owner."""
    from ase.neighborlist import primitive_neighbor_list

    i, j, shift, vec = primitive_neighbor_list("ijSD", [True] * 3, cell, coord, rcut, self_interaction=False)
    ghosts: dict = {}
    neighbors = j.copy()
    for p in np.flatnonzero(np.any(shift != 0, axis=1)):
        key = (int(j[p]), *map(int, shift[p]))
        neighbors[p] = ghosts.setdefault(key, len(coord) + len(ghosts))
    owner = np.array([k[0] for k in sorted(ghosts, key=ghosts.get)], dtype=np.int64)
    return np.concatenate([atype, atype[owner]]), i.astype(np.int64), neighbors.astype(np.int64), vec, owner


def assert_ghost_atoms_agree(pot, coord, atype, box):
    """LAMMPS's local + ghost atoms (:func:`with_ghost_atoms`) give the periodic result of ``pot``."""
    cell = np.asarray(box, dtype=np.float64).reshape(3, 3)
    want = pot.compute_atoms(coord, atype, cell, [True] * 3)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, pot.rcut)
    got = pot.compute_pairs(atype_all, len(coord), centers, neighbors, vectors)
    forces = got.forces[:len(coord)].copy()
    np.add.at(forces, owner, got.forces[len(coord):])
    assert abs(got.energy - want.energy) <= 1e-10 * len(coord)
    assert np.abs(forces - want.forces).max() <= 1e-9
    assert np.abs(got.virial - want.virial).max() <= 1e-9 * len(coord)


def write_dp(tree, path):
    """Write a serialization tree as a DeePMD-kit .dp file (tests that edit real models)."""
    import h5py

    from deepcomp_ase.io.tree import write_h5_tree

    with h5py.File(path, "w") as f:
        write_h5_tree(f, tree)
    return path


def edited(tree, edit):
    """A deep copy of ``tree`` changed by ``edit(copy)``."""
    import copy

    t = copy.deepcopy(tree)
    edit(t)
    return t
