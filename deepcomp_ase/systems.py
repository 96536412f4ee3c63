"""Frames for ``deepcomp model-devi``: DeePMD-kit npy systems and ASE-readable trajectories.

A DeePMD-kit system is a directory with ``type.raw`` (one type index per atom), optionally
``type_map.raw`` (the element of each index), ``nopbc`` (no periodicity) and ``set.*/coord.npy``
(n_frames x 3 natoms, A) with ``set.*/box.npy`` (n_frames x 9, rows = lattice vectors), and where
a model takes them ``set.*/fparam.npy`` (n_frames x numb_fparam) and ``set.*/aparam.npy``
(n_frames x natoms * numb_aparam), as ``dp model-devi`` reads them. A mixed-type system (DeePMD-kit's
layout for type-embedding models) holds the types of every frame in ``set.*/real_atom_types.npy``
(n_frames x natoms indices into ``type_map.raw``); its ``type.raw`` then only gives the atom count. As
``dp model-devi`` does, a path is searched recursively for directories holding ``type.raw``
(here in sorted order); the sets of a system are read in sorted order and their frames numbered
on. Without ``type_map.raw`` the type indices are those of the first model's type_map.

For the real error (``--real-error``) the labels are read too: ``set.*/energy.npy`` (eV),
``force.npy`` (eV/A) and ``virial.npy`` (eV, optional: without it the virial columns are NaN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DeepCompError
from .io.untrusted import check_regular_file


@dataclass
class Frames:
    """Frames of one system: ``positions`` (nf, natoms, 3), ``cells`` (nf, 3, 3) or None."""

    name: str  # as given / found (written in dp model-devi's header)
    positions: np.ndarray
    symbols: list  # natoms symbols, or one list per frame
    cells: np.ndarray | None
    pbc: tuple
    labels: dict | None = None  # "energy" (nf,), "force" (nf, natoms, 3), "virial" (nf, 9; NaN rows: none)
    fparam: np.ndarray | None = None  # (nf, numb_fparam) from set.*/fparam.npy
    aparam: np.ndarray | None = None  # (nf, natoms, numb_aparam) from set.*/aparam.npy

    def frame_labels(self, k: int) -> dict:
        """Labels of frame k for :func:`deepcomp_ase.model_devi.model_deviation` (virial None if absent)."""
        virial = self.labels["virial"][k]
        return {"energy": self.labels["energy"][k], "force": self.labels["force"][k],
                "virial": None if np.isnan(virial).any() else virial}

    def __len__(self) -> int:
        return len(self.positions)


def find_systems(root) -> list[Path]:
    """Directories at or below ``root`` that hold ``type.raw`` (sorted; ``root`` itself last, as dp)."""
    root = Path(root)
    found = sorted(d for d in root.rglob("*") if d.is_dir() and (d / "type.raw").is_file())
    if (root / "type.raw").is_file():
        found.append(root)
    return found


def _load_npy(path: Path) -> np.ndarray:
    """``np.load``, refusing a FIFO or device (which would block it) before opening; a missing file
    raises the OSError the callers report."""
    if path.exists():
        check_regular_file(path, "numpy file")
    return np.load(path)


def _read_raw(path: Path, kind: type) -> list:
    with open(path) as fh:
        return [kind(tok) for tok in fh.read().split()]


def _read_labels(sets: list[Path], counts: list[int], natoms: int) -> tuple[dict, list[Path]]:
    """energy, force and virial of every frame; (labels, the sets without virial.npy)."""
    def load(path: Path, per_frame: int, nframes: int):
        try:
            a = _load_npy(path)
        except OSError as exc:
            raise DeepCompError(f"{path}: cannot read ({exc}); the real error needs the labels of every set "
                                "(energy.npy, force.npy; virial.npy where known)") from exc
        if a.size != nframes * per_frame:
            raise DeepCompError(f"{path}: {a.size} numbers are not {nframes} frames x {per_frame} "
                                f"(coord.npy of that set has {nframes} frames of {natoms} atoms)")
        return a.reshape(nframes, per_frame).astype(np.float64)

    energy, force, virial, no_virial = [], [], [], []
    for s, nf in zip(sets, counts):
        energy.append(load(s / "energy.npy", 1, nf)[:, 0])
        force.append(load(s / "force.npy", 3 * natoms, nf).reshape(nf, natoms, 3))
        if (s / "virial.npy").exists():
            virial.append(load(s / "virial.npy", 9, nf))
        else:
            no_virial.append(s)
            virial.append(np.full((nf, 9), np.nan))
    return {"energy": np.concatenate(energy), "force": np.concatenate(force),
            "virial": np.concatenate(virial)}, no_virial


def read_npy_system(path, default_type_map, labels: bool = False) -> Frames:
    """All frames of one DeePMD-kit npy system (and their labels when ``labels``)."""
    path = Path(path)
    types = np.array(_read_raw(path / "type.raw", int), dtype=np.int64)
    if (path / "type_map.raw").is_file():
        names = _read_raw(path / "type_map.raw", str)
        source = f"{path / 'type_map.raw'}"
    else:
        names = list(default_type_map)
        source = "the first model's type_map (the system has no type_map.raw)"
    if types.size == 0:
        raise DeepCompError(f"{path / 'type.raw'}: no atoms")
    if types.min() < 0 or types.max() >= len(names):
        raise DeepCompError(f"{path / 'type.raw'}: type index {int(types.max())} has no element in {source} "
                            f"({names}); add the element to type_map.raw")
    sets = sorted(d for d in path.glob("set.*") if d.is_dir())
    if not sets:
        raise DeepCompError(f"{path}: no set.* directory with coord.npy")
    natoms = len(types)
    pbc = not (path / "nopbc").exists()
    coords, boxes = [], []
    for s in sets:
        try:
            c = _load_npy(s / "coord.npy")
        except OSError as exc:
            raise DeepCompError(f"{s / 'coord.npy'}: cannot read ({exc})") from exc
        if c.size % (natoms * 3):
            raise DeepCompError(f"{s / 'coord.npy'}: {c.size} numbers are not frames of {natoms} atoms x 3 "
                                f"(type.raw has {natoms} atoms)")
        c = c.reshape(-1, natoms, 3)
        coords.append(c)
        if pbc:
            try:
                b = _load_npy(s / "box.npy").reshape(-1, 3, 3)
            except (OSError, ValueError) as exc:
                raise DeepCompError(f"{s / 'box.npy'}: cannot read n_frames x 9 cells ({exc}); a system without "
                                    "periodicity needs a file named 'nopbc'") from exc
            if len(b) != len(c):
                raise DeepCompError(f"{s / 'box.npy'}: {len(b)} cells for {len(c)} frames of coord.npy")
            boxes.append(b)
    positions = np.concatenate(coords).astype(np.float64)
    cells = np.concatenate(boxes).astype(np.float64) if pbc else None
    mixed = _mixed_types(sets, coords, natoms, names, source)
    if mixed is None:
        symbols = [names[t] for t in types]
    else:  # DeePMD-kit's mixed-type layout (DPA-1 data): the types of each frame, type.raw only counts atoms
        symbols = [[names[t] for t in frame] for frame in mixed]
    fparam = _frame_values(sets, coords, "fparam.npy", 1)
    aparam = _frame_values(sets, coords, "aparam.npy", natoms)
    frames = Frames(str(path), positions, symbols, cells, (pbc,) * 3, fparam=fparam,
                    aparam=None if aparam is None else aparam.reshape(len(positions), natoms, -1))
    if labels:
        frames.labels, no_virial = _read_labels(sets, [len(c) for c in coords], natoms)
        if no_virial:
            import logging

            logging.getLogger("deepcomp_ase.model_devi").warning(
                f"{path}: no virial.npy in {', '.join(s.name for s in no_virial)}: the virial columns of those "
                "frames are written as nan (dp model-devi would compare with zeros)")
    return frames


def _mixed_types(sets, coords, natoms: int, names: list, source: str) -> np.ndarray | None:
    """The per-frame types of a mixed-type system (``set.*/real_atom_types.npy``, n_frames x natoms
    indices into type_map.raw), or None for a standard system."""
    values = _frame_values(sets, coords, "real_atom_types.npy", natoms)
    if values is None:
        return None
    if values.shape[1] != natoms:
        raise DeepCompError(f"{sets[0].parent}: real_atom_types.npy has {values.shape[1]} types per frame for "
                            f"{natoms} atoms (type.raw); it holds one type index per atom of each frame")
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        raise DeepCompError(f"{sets[0].parent}: real_atom_types.npy holds non-integer types; each entry is the "
                            "type index (into type_map.raw) of one atom of one frame")
    types = values.reshape(-1, natoms).astype(np.int64)
    if types.min() < 0 or types.max() >= len(names):
        bad = int(types.min()) if types.min() < 0 else int(types.max())
        raise DeepCompError(f"{sets[0].parent}: real_atom_types.npy has the type index {bad}, which has no "
                            f"element in {source} ({names}); add the element to type_map.raw")
    return types


def _frame_values(sets, coords, name: str, rows: int) -> np.ndarray | None:
    """``name`` of every set (n_frames x rows * k), or None where no set has it; some sets only: an error."""
    have = [(s / name).is_file() for s in sets]
    if not any(have):
        return None
    if not all(have):
        missing = [str(s / name) for s, h in zip(sets, have) if not h]
        raise DeepCompError(f"{missing[0]}: missing, while other sets of the system have {name}; "
                            "give it in every set or in none")
    out = []
    for s, c in zip(sets, coords):
        try:
            v = _load_npy(s / name)
        except (OSError, ValueError) as exc:
            raise DeepCompError(f"{s / name}: cannot read ({exc})") from exc
        if v.size == 0 or v.size % (len(c) * rows):
            raise DeepCompError(f"{s / name}: {v.size} numbers are not {len(c)} frames x {rows} x k "
                                f"(coord.npy has {len(c)} frames)")
        out.append(np.asarray(v, dtype=np.float64).reshape(len(c), -1))
    widths = {o.shape[1] for o in out}
    if len(widths) > 1:
        raise DeepCompError(f"{sets[0].parent}: the sets' {name} differ in width ({sorted(widths)})")
    return np.concatenate(out)


def read_trajectory(path, type_map=None, fmt: str | None = None) -> Frames:
    """Every frame of a file ASE can read (extxyz, LAMMPS dumps, ...).

    LAMMPS dumps hold type numbers, not elements: ``type_map`` names the element of type 1, 2, ...
    """
    from ase.io import read
    from ase.io.formats import filetype

    path = Path(path)
    try:
        fmt = fmt or filetype(str(path), guess=False)
    except Exception:  # noqa: BLE001 - let ase.io.read report what it cannot read
        fmt = None
    kwargs = {}
    if fmt and fmt.startswith("lammps-dump"):
        if not type_map:
            raise DeepCompError(f"{path}: a LAMMPS dump names atom types, not elements; give --type-map "
                                "with the element of type 1, 2, ...")
        kwargs["specorder"] = list(type_map)
    try:
        images = read(str(path), index=":", format=fmt, **kwargs)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds
        raise DeepCompError(f"{path}: ASE cannot read it as a trajectory ({type(exc).__name__}: {exc})") from exc
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DeepCompError(f"{path}: no frames")
    same_atoms = all(len(a) == len(images[0]) for a in images)
    pbc = tuple(bool(p) for p in images[0].pbc)
    if not same_atoms:
        raise DeepCompError(f"{path}: the number of atoms changes between frames; split the trajectory")
    positions = np.array([a.positions for a in images], dtype=np.float64)
    symbols0 = images[0].get_chemical_symbols()
    per_frame = any(a.get_chemical_symbols() != symbols0 for a in images[1:])
    symbols = [a.get_chemical_symbols() for a in images] if per_frame else symbols0
    cells = np.array([a.cell.array for a in images], dtype=np.float64) if any(pbc) else None
    return Frames(str(path), positions, symbols, cells, pbc)


def load_frames(source, type_map, default_type_map, fmt: str | None = None, labels: bool = False) -> list[Frames]:
    """``source``: a directory (npy systems, searched recursively) or a trajectory file;
    ``labels``: read the energy, force and virial labels too (npy systems only)."""
    p = Path(source)
    if p.is_dir():
        systems = find_systems(p)
        if not systems:
            raise DeepCompError(f"{p}: no DeePMD-kit system found (no directory with type.raw at or below it)")
        # the path as dp writes it: below the directory as given
        out = []
        for s in systems:
            fr = read_npy_system(s, type_map or default_type_map, labels)
            fr.name = str(p / s.relative_to(p)) if s != p else str(source)
            out.append(fr)
        return out
    if p.exists():
        check_regular_file(p, "trajectory file")  # a FIFO or a device would block ASE's reader
        if labels:
            raise DeepCompError(f"{source}: the real error reads its labels from DeePMD-kit npy systems "
                                "(set.*/energy.npy, force.npy, virial.npy), as dp model-devi does; convert the "
                                "trajectory with dpdata or leave out --real-error")
        return [read_trajectory(p, type_map, fmt)]
    raise DeepCompError(f"{source}: no such file or directory")
