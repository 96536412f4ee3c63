"""``DeepPotential``: a loaded model (compressed or not) that evaluates pair lists.

This is the one object the ASE calculator and the LAMMPS bridge talk to. It owns the overflow
tally and the "check every N steps" bookkeeping; the physics lives in :mod:`evaluate`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .backends import get_backend
from .compress.dp_tables import BEYOND_EXTRAPOLATED, dp_tables, dp_tables_meta
from .backends.base import Results, select_parts
from .errors import DeepCompError, TypeMapError
from .fitting_inputs import fitting_columns
from .fileformat import is_compressed_file, load_compressed
from .io import read_model_tree
from .model.params import ModelParams, parse_model
from .overflow import OverflowTally, check_and_report
from .plan import build_plan
from .validate import check_cell, check_pair_vectors, check_structure

log = logging.getLogger(__name__)

OVERFLOW_POLICIES = ("warn", "error", "ignore")


class DeepPotential:
    """A Deep Potential ready to evaluate.

    Parameters
    ----------
    params
        Validated model parameters.
    tables
        The compressed file's tables by name, or None for the exact nets.
    check_frequency
        Check the overflow counts every this many calls of :meth:`step_done` (<= 0: never).
    overflow
        'warn' (log a warning), 'error' (raise TableOverflowError) or 'ignore'.
    backend
        'auto' (default: GPU if CuPy sees one, else numba if installed, else numpy), 'cpu',
        'numpy', 'numba' or 'cuda'.
    precision
        'float64' (default) or 'float32' (compiled backends only; docs/performance.md gives the
        measured error).
    """

    def __init__(self, params: ModelParams, tables: dict | None = None, *, check_frequency: int = -1,
                 overflow: str = "warn", meta: dict | None = None, block_atoms: int | None = None,
                 backend: str = "auto", precision: str = "float64"):
        if overflow not in OVERFLOW_POLICIES:
            raise DeepCompError(f"overflow policy {overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}")
        self.params = params
        self.meta = meta or {}
        beyond = self.meta.get("beyond_tables")  # what happens past DeePMD-kit's tables, when no net is stored
        self.tally = OverflowTally(beyond=beyond) if beyond else OverflowTally()  # since the last check
        self.total = OverflowTally(beyond=beyond) if beyond else OverflowTally()  # since loading
        self.check_frequency = int(check_frequency)
        self.overflow = overflow
        self.block_atoms = block_atoms
        self.steps = 0
        self.backend = get_backend(backend, precision)
        #: what backends read (backends/base.py): built once, frozen
        self.plan = build_plan(params, tables, self.tally, block_atoms)
        # the descriptor parts, their embedding providers and numpy evaluators (for inspection)
        self.parts = [p.descriptor for p in self.plan.parts]
        self.embedders = [p.embed for p in self.plan.parts]
        self.evaluators = [p.evaluator for p in self.plan.parts]
        if self.takes_parameters and hasattr(self.backend, "unsupported_reason"):  # the CUDA backend
            log.warning("%s: the %s backend evaluates this model on the host (numpy reference): %s", params.source,
                        self.backend.name, self.backend.unsupported_reason(self))

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path, *, check_frequency: int | None = None, overflow: str = "warn",
                  **kwargs) -> DeepPotential:
        """Load a deepcomp compressed file or an uncompressed DeePMD-kit model (.dp, .yaml, .pb)."""
        path = Path(path)
        if not path.exists():
            raise DeepCompError(f"{path}: model file not found")
        if is_compressed_file(path):
            content = load_compressed(path)
            params = parse_model(content.tree, str(path))
            tables = content.tables
            if content.meta.get("tables_from"):  # DeePMD-kit's tables converted by `deepcomp compress`
                log.warning("%s: tables from %s; inputs beyond them are %s", path, content.meta["tables_from"],
                            content.meta.get("beyond_tables", BEYOND_EXTRAPOLATED))
            freq = content.meta.get("options", {}).get("frequency", -1)
            if check_frequency is None:
                check_frequency = int(freq)
            return cls(params, tables, check_frequency=check_frequency, overflow=overflow, meta=content.meta,
                       **kwargs)
        tree = read_model_tree(path)
        params = parse_model(tree, str(path))
        tables = dp_tables(tree, str(path))  # a model compressed by DeePMD-kit: its own tables, as they are
        meta = {} if tables is None else dp_tables_meta(tree, path)
        return cls(params, tables, check_frequency=-1 if check_frequency is None else check_frequency,
                   overflow=overflow, meta=meta, **kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def type_map(self) -> tuple[str, ...]:
        return self.params.type_map

    @property
    def rcut(self) -> float:
        return self.params.rcut

    @property
    def compressed(self) -> bool:
        return self.plan.compressed

    def types_of(self, symbols) -> np.ndarray:
        """Model type index of each chemical symbol, with a clear error for unknown ones."""
        return type_indices(self.type_map, symbols, lambda _, s: (
            f"element {s!r} is not in the model's type_map {list(self.type_map)} ({self.params.source}); "
            "use a model trained for it"))

    # ------------------------------------------------------------------ evaluation
    def compute_pairs(self, atype_all, nloc: int, centers, neighbors, vectors, *,
                      atomic_virial: bool = False, shared_selection: dict | None = None, fparam=None,
                      aparam=None) -> Results:
        """Evaluate on a raw pair list (any order; pairs beyond rcut are ignored).

        Non-finite vectors and pairs closer than :data:`validate.MIN_DISTANCE` raise
        :class:`~deepcomp_ase.errors.NonFiniteInputError` / :class:`~deepcomp_ase.errors.AtomsTooCloseError`.

        ``atype_all`` holds model types of all atoms (local first); ``centers < nloc``,
        ``neighbors < len(atype_all)``; ``vectors = r_neighbor - r_center``.
        ``shared_selection``: a dict shared by several models on the same pairs (model deviation):
        a selection is made once per distinct ``PartPlan.selection_key`` (``backends.base.select_parts``).
        ``fparam`` / ``aparam``: the frame and atomic parameters of a model that takes them
        (:func:`~deepcomp_ase.fitting_inputs.fitting_columns`; ``aparam`` rows are the local atoms);
        the result's ``dedfparam`` is then dE/dfparam.
        """
        atype_all = np.asarray(atype_all, dtype=np.int64)
        extra = self.fitting_columns(int(nloc), fparam, aparam)
        centers = np.asarray(centers, dtype=np.int64)
        neighbors = np.asarray(neighbors, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float64).reshape(-1, 3)
        check_pair_vectors(centers, neighbors, vectors)  # NaN/inf, two atoms at one place: a named error
        pair_lists = select_parts(self.backend, self.plan, centers, neighbors, vectors, atype_all, nloc, self.tally,
                                  shared_selection)
        if extra is None:
            return self.backend.evaluate(self, pair_lists, atype_all, atomic_virial)
        return self.backend.evaluate(self, pair_lists, atype_all, atomic_virial, extra=extra)

    def compute_atoms(self, positions, atype, cell=None, pbc=(False, False, False), *,
                      atomic_virial: bool = False, fparam=None, aparam=None) -> Results:
        """Evaluate a structure (ASE conventions: cell rows are lattice vectors).

        NaN or inf in positions or cell raise :class:`~deepcomp_ase.errors.NonFiniteInputError`
        naming the atom (or cell vector); two atoms at one place :class:`~deepcomp_ase.errors.AtomsTooCloseError`.
        ``fparam`` / ``aparam`` as in :meth:`compute_pairs`.
        """
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        check_structure(positions, cell)  # a NaN position would drop out of the neighbour search
        check_cell(positions, cell, pbc, self.rcut)  # a nearly flat cell: images without end
        if self.backend.builds_neighbors and not self.takes_parameters:  # e.g. the GPU backend: on the device
            return self.backend.compute_atoms(self, positions, np.asarray(atype), cell, np.asarray(pbc, dtype=bool),
                                              atomic_virial=atomic_virial)
        i, j, vec = self.backend.pairs_from_atoms(positions, cell, np.asarray(pbc, dtype=bool), self.rcut)
        return self.compute_pairs(atype, len(positions), i, j, vec, atomic_virial=atomic_virial, fparam=fparam,
                                  aparam=aparam)

    # ------------------------------------------------------------------ frame / atomic parameters
    @property
    def dim_fparam(self) -> int:
        """Number of frame parameters the model takes (DeePMD-kit's ``get_dim_fparam``)."""
        return self.params.fitting.numb_fparam

    @property
    def dim_aparam(self) -> int:
        """Number of atomic parameters per atom the model takes (``get_dim_aparam``)."""
        return self.params.fitting.numb_aparam

    @property
    def has_default_fparam(self) -> bool:
        return self.params.fitting.default_fparam is not None

    @property
    def takes_parameters(self) -> bool:
        return self.dim_fparam > 0 or self.dim_aparam > 0

    def fitting_columns(self, nloc: int, fparam=None, aparam=None):
        """The fitting net's parameter columns (None for a model without parameters); errors name the model."""
        if fparam is None and aparam is None and not self.takes_parameters:
            return None
        return fitting_columns(self.params.fitting, nloc, fparam, aparam, self.params.source)

    # ------------------------------------------------------------------ overflow check
    def step_done(self, step: int | None = None, reduce=None, model=None) -> bool:
        """Count a step; every ``check_frequency`` steps apply the overflow policy.

        ``reduce`` (optional) combines the tally across MPI ranks before the check; ``model``
        (a file name) is named in the warning or error. Returns True when a check ran and found
        an overflow.
        """
        self.steps += 1
        if not self.check_due():
            return False
        return self.check_overflow(step if step is not None else self.steps, reduce, model)

    def check_due(self) -> bool:
        """True when the step just counted is a periodic overflow check step."""
        return self.check_frequency > 0 and self.steps % self.check_frequency == 0

    def check_overflow(self, step=None, reduce=None, model=None) -> bool:
        if self.backend.device_counters:  # device-side counters are read only here
            self.backend.flush_overflow(self)
        if reduce is not None:
            reduce(self.tally)
        self.total.merge(self.tally)
        return check_and_report(self.tally, self.overflow, self.type_map, step, model)


def type_indices(type_map, names, message) -> np.ndarray:
    """Model type index of each name in ``names`` (``None`` -> -1); TypeMapError(message(k, name)) for
    a name not in ``type_map``. Shared by the ASE side and the LAMMPS bridge."""
    index = {name: i for i, name in enumerate(type_map)}
    out = np.empty(len(names), dtype=np.int64)
    for k, name in enumerate(names):
        if name is None:
            out[k] = -1
        elif name in index:
            out[k] = index[name]
        else:
            raise TypeMapError(message(k, name))
    return out
