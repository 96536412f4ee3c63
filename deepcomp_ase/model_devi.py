"""Model deviation as DeePMD-kit 3.2 defines and writes it (pure functions, no I/O but the writers).

An ensemble of ``n_m`` models (same training data, different seeds) is evaluated on the same
configuration; where they disagree, the configuration is new to them. With ``<.>`` the mean over
the models and population standard deviations (divide by ``n_m``):

* force deviation of atom i: ``eps_f[i] = sqrt(< |F_i - <F_i>|^2 >)``, the norm over x, y, z of
  the per-component standard deviations; ``max/min/avg_devi_f`` are the max, min and mean over
  all atoms of the system;
* virial deviation: the standard deviation of each of the 9 components of ``W / N`` (virial in
  eV divided by the number of atoms); ``max/min_devi_v`` over the 9 components and
  ``avg_devi_v = sqrt(sum eps_v^2 / 9)`` (the norm divided by 3, *not* the mean);
* ``relative l`` divides ``eps_f[i]`` by ``|<F_i>| + l``; ``relative_v l`` divides ``eps_v`` by a
  magnitude of the mean virial ``W / N`` plus ``l``: per component ``|<W_ab>| / N`` in
  ``pair_style deepmd`` (``magnitude="component"``), the norm of the whole 9-vector in
  ``dp model-devi`` (``magnitude="tensor"``);
* ``devi_e`` (``dp model-devi`` only): the standard deviation of the energy per atom.

Real error (``dp model-devi --real_error``): the same columns, each spread measured around the
system's labels instead of the ensemble mean, ``sqrt(<(X - X_label)^2>)`` over the models (the
RMS error of the models); ``relative``/``relative_v`` then divide by the magnitude of the label.

File formats: :func:`lammps_header`/:func:`lammps_row` are byte-identical to the
``model_devi.out`` of ``pair_style deepmd`` (C++ iostream ``scientific``, step in 12 columns,
every value after one space in 18 columns); :func:`dp_block` to one system's block of
``dp model-devi -o``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEVI_COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")


@dataclass
class Deviation:
    """Model deviation of one frame (units: eV/A for forces, eV for virials per atom)."""

    max_devi_v: float
    min_devi_v: float
    avg_devi_v: float
    max_devi_f: float
    min_devi_f: float
    avg_devi_f: float
    devi_e: float | None = None
    atom_devi_f: np.ndarray | None = None  # (natoms,) eps_f of every atom

    def row(self) -> tuple[float, ...]:
        return tuple(getattr(self, k) for k in DEVI_COLUMNS)


# ---------------------------------------------------------------------------- definitions
def _spread(values: np.ndarray, reference) -> tuple[np.ndarray, np.ndarray]:
    """(spread over the models (axis 0), centre): the population standard deviation around the
    mean, or with ``reference`` (the labels) the RMS difference from it."""
    if reference is None:
        return np.std(values, axis=0), np.mean(values, axis=0)
    ref = np.asarray(reference, dtype=np.float64)
    return np.sqrt(np.mean(np.square(values - ref), axis=0)), ref


def force_deviation(forces, relative: float | None = None, reference=None) -> np.ndarray:
    """Per-atom force deviation ``eps_f`` of ``forces`` shaped (n_models, ..., natoms, 3);
    ``reference`` (..., natoms, 3): the real error against these forces instead."""
    fs = np.asarray(forces, dtype=np.float64)
    if fs.shape[0] < 1 or fs.shape[-1] != 3:
        raise ValueError(f"forces must be shaped (n_models, ..., natoms, 3), got {fs.shape}")
    spread, centre = _spread(fs, reference)
    devi = np.linalg.norm(spread, axis=-1)
    if relative is not None:
        devi = devi / (np.linalg.norm(centre, axis=-1) + float(relative))
    return devi


def _nine(virials, what: str) -> np.ndarray:
    vs = np.asarray(virials, dtype=np.float64)
    if vs.shape[-2:] == (3, 3):
        vs = vs.reshape(vs.shape[:-2] + (9,))
    if vs.shape[-1] != 9:
        raise ValueError(f"{what} must be shaped (..., 9) or (..., 3, 3), got {vs.shape}")
    return vs


def virial_deviation(virials, natoms: int, relative_v: float | None = None,
                     magnitude: str = "component", reference=None) -> np.ndarray:
    """Deviation of the 9 components of ``virial / natoms``; ``virials`` (n_models, ..., 9 or 3x3);
    ``reference`` (..., 9 or 3x3): the real error against this virial instead.

    ``magnitude``: what ``relative_v`` divides by, ``"component"`` (``pair_style deepmd``:
    ``|<W_ab>|/N + l`` component by component) or ``"tensor"`` (``dp model-devi``: the norm of
    the 9 components of ``<W>/N``, plus ``l``); ``<W>`` is the label with ``reference``.
    """
    vs = _nine(virials, "virials (with the models first)") / float(natoms)
    ref = None if reference is None else _nine(reference, "reference virials") / float(natoms)
    devi, mean = _spread(vs, ref)
    if relative_v is not None:
        if magnitude == "component":
            scale = np.abs(mean)
        elif magnitude == "tensor":
            scale = np.linalg.norm(mean, axis=-1, keepdims=True)
        else:
            raise ValueError(f"magnitude must be 'component' or 'tensor', got {magnitude!r}")
        devi = devi / (scale + float(relative_v))
    return devi


def energy_deviation(energies, natoms: int, reference=None) -> np.ndarray:
    """``devi_e``: standard deviation over the models of the energy per atom; (n_models, ...);
    ``reference``: the RMS error against this energy instead."""
    ref = None if reference is None else np.asarray(reference, dtype=np.float64) / float(natoms)
    return _spread(np.asarray(energies, dtype=np.float64) / float(natoms), ref)[0]


def summarize_forces(atom_devi: np.ndarray) -> tuple:
    """max, min and mean of ``eps_f`` over the atoms (last axis)."""
    return np.max(atom_devi, axis=-1), np.min(atom_devi, axis=-1), np.mean(atom_devi, axis=-1)


def summarize_virial(devi_v: np.ndarray) -> tuple:
    """max, min and ``avg = |eps_v| / 3`` over the 9 components (last axis)."""
    return np.max(devi_v, axis=-1), np.min(devi_v, axis=-1), np.linalg.norm(devi_v, axis=-1) / 3.0


def model_deviation(forces, virials, natoms: int | None = None, energies=None, *, relative: float | None = None,
                    relative_v: float | None = None, magnitude: str = "component", labels=None) -> Deviation:
    """Deviation of one frame from every model's forces (n_models, natoms, 3) and virials
    (n_models, 9 or 3x3) in eV and eV/A; ``energies`` (n_models,) adds ``devi_e``.

    ``labels``: the real error instead, against the frame's ``{"energy", "force", "virial"}``;
    a label that is None (a system without virial.npy) gives NaN in its columns.
    """
    fs = np.asarray(forces, dtype=np.float64)
    if fs.ndim != 3:
        raise ValueError(f"forces of one frame must be shaped (n_models, natoms, 3), got {fs.shape}")
    n = fs.shape[1] if natoms is None else int(natoms)
    real = labels is not None
    if real and any(labels.get(k) is None for k in ("energy", "force")):
        raise ValueError("the real error needs the frame's energy and force labels")
    atom = force_deviation(fs, relative, labels["force"] if real else None)
    fmax, fmin, favg = summarize_forces(atom)
    if real and labels.get("virial") is None:
        vmax = vmin = vavg = float("nan")
    else:
        vmax, vmin, vavg = summarize_virial(virial_deviation(virials, n, relative_v, magnitude,
                                                             labels["virial"] if real else None))
    de = None if energies is None else float(energy_deviation(energies, n, labels["energy"] if real else None))
    return Deviation(float(vmax), float(vmin), float(vavg), float(fmax), float(fmin), float(favg), de, atom)


# ---------------------------------------------------------------------------- file formats
def lammps_header(atomic: bool = False) -> str:
    """First line of ``pair_style deepmd``'s ``model_devi.out`` (with its newline)."""
    head = "#" + f"{'step':>11s}" + "".join(f"{c:>19s}" for c in DEVI_COLUMNS)
    if atomic:
        head += f"{'atm_devi_f(N)':>19s}"
    return head + "\n"


def lammps_row(step: int, devi: Deviation | tuple, atom_devi_f=None) -> str:
    """One row of ``pair_style deepmd``'s ``model_devi.out`` (with its newline)."""
    values = devi.row() if isinstance(devi, Deviation) else tuple(devi)
    line = f"{int(step):12d}" + "".join(f" {v:18.6e}" for v in values)
    if atom_devi_f is not None:
        line += "".join(f" {v:18.6e}" for v in np.asarray(atom_devi_f, dtype=np.float64).ravel())
    return line + "\n"


def dp_header(system: str, atomic: bool = False) -> str:
    """The two header lines ``dp model-devi`` writes before each system's rows."""
    cols = "".join(f"{c:19s}" for c in DEVI_COLUMNS[:3]) + "".join(f"{c:19s}" for c in DEVI_COLUMNS[3:])
    line = f"{'step':10s}" + cols + f"{'devi_e':19s}"
    if atomic:
        line += f"{'atm_devi_f(N)':19s}"
    return f"# {system}\n# {line}\n"


def dp_block(system: str, steps, devis: list[Deviation], atomic: bool = False) -> str:
    """One system's block of ``dp model-devi -o``: the header, then one row per frame
    (step in 12 columns, every value in 19 columns, devi_e last but for the atomic values)."""
    out = [dp_header(system, atomic)]
    for step, d in zip(steps, devis):
        values = d.row() + (float("nan") if d.devi_e is None else d.devi_e,)
        line = f"{int(step):12d}" + "".join(f"{v:19.6e}" for v in values)
        if atomic:
            line += "".join(f"{v:19.6e}" for v in np.asarray(d.atom_devi_f).ravel())
        out.append(line + "\n")
    return "".join(out)


def read_model_devi_text(text: str) -> np.ndarray:
    """The numbers of a model_devi.out (LAMMPS or ``dp``), one row per line; '#' lines skipped."""
    rows = [[float(x) for x in ln.split()] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return np.array(rows, dtype=np.float64)


def read_model_devi(path) -> np.ndarray:
    """:func:`read_model_devi_text` of a file."""
    with open(path) as fh:
        return read_model_devi_text(fh.read())
