"""The Python side of ``pair_style deepcomp``: called by libdeepcomp_bridge.so.

Per LAMMPS step the plugin hands over, as memoryviews of LAMMPS's own arrays (valid during
the call only):

* ``x`` (nall, 3) positions of local then ghost atoms, ``type`` (nall,) LAMMPS types;
* the full neighbour list flattened to pairs ``(i, j)``, ``i < nlocal``, ``j < nall``, already
  cut at the model cutoff; the pair vector is ``x[j] - x[i]`` (ghosts are explicit periodic
  images: no minimum image convention);
* ``f`` (nall, 3): forces are *added*, on ghost atoms too; LAMMPS sums them onto their owners
  (reverse communication, newton pair on);
* ``eatom`` (nall,) / ``vatom`` (nall, 6) when per-atom energy / virial are wanted (added to,
  LAMMPS order xx yy zz xy xz yz, sign of sum r (x) f).

``compute`` returns the energy of the local atoms and, when asked for, this rank's share of
the global virial in LAMMPS order (LAMMPS sums over ranks). The DeePMD-kit virial convention
``W[a, b] = sum_k F_k[a] r_k[b]`` maps to LAMMPS as xx=W00 yy=W11 zz=W22 xy=W10 xz=W20 yz=W21.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np

from ..backends.numba_cpu import pair_vectors
from ..errors import BackendUnavailableError, DeepCompError, TableOverflowError
from . import mpi

# DeePMD-kit row-major 3x3 (a, b) -> LAMMPS xx yy zz xy xz yz
VIRIAL_TO_LAMMPS = np.array([0, 4, 8, 3, 6, 7])
LOG_INFO, LOG_WARNING = 0, 1


def format_error(exc: BaseException) -> str:
    """Message for LAMMPS's ERROR line: short for deepcomp's own errors, a traceback otherwise."""
    head = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DeepCompError):
        return head
    # the summary first: LAMMPS may cut long messages
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
    return f"{head}\n(Python traceback follows)\n{tb}"


class _LammpsLogHandler(logging.Handler):
    """Sends deepcomp log records to LAMMPS's screen and log file (rank 0 prints them).

    The overflow summary is global (reduced over ranks), so only rank 0 passes it on; other
    records from other ranks go to stderr, since LAMMPS prints nothing from those ranks.
    """

    def __init__(self, sink, rank: int):
        super().__init__(logging.INFO)
        self.sink = sink
        self.rank = rank

    def emit(self, record):
        try:
            if self.rank != 0:
                if record.name.startswith("deepcomp_ase.overflow"):
                    return
                logging.lastResort.handle(record)
                return
            level = LOG_WARNING if record.levelno >= logging.WARNING else LOG_INFO
            message = record.getMessage()
            if not message.startswith("deepcomp"):
                message = "deepcomp: " + message
            self.sink(level, message)
        except Exception:  # noqa: BLE001 - logging must not break the step
            self.handleError(record)


class _Forwarding:
    """Attach the LAMMPS log handler to the ``deepcomp_ase`` logger for the duration of a call."""

    def __init__(self, handler):
        self.handler = handler
        self.logger = logging.getLogger("deepcomp_ase")

    def __enter__(self):
        self.logger.addHandler(self.handler)

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        return False


def _visible_gpus() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - no CuPy, no driver or no GPU
        return 0


def _use_gpu_of_rank(comm) -> str:
    """Bind this rank to GPU ``local_rank % visible GPUs`` (before any CuPy allocation)."""
    from ..backends.cupy_gpu import select_device

    return f"cuda:{select_device(comm=comm)}"


def _backend_options(device: str, precision: str, comm) -> tuple[dict, str]:
    """Keyword arguments of :class:`DeepPotential` for the ``device``/``precision`` keywords.

    ``device auto`` lets deepcomp_ase choose (a GPU if CuPy sees one, else numba if installed,
    else numpy); ``cpu`` never uses a GPU; ``cuda`` requires one. With several ranks per node,
    each rank takes GPU ``local rank % GPUs visible``. Returns (kwargs, GPU chosen or "").
    """
    kwargs: dict = {"backend": {"auto": "auto", "cpu": "cpu", "cuda": "cuda"}[device],
                    "precision": {"double": "float64", "single": "float32"}[precision]}
    gpu = ""
    if device in ("auto", "cuda") and _visible_gpus() > 0:
        gpu = _use_gpu_of_rank(comm)
    return kwargs, gpu


def _scaled(res, factor: float):
    """Results with energies, forces and virials converted from eV to the LAMMPS energy unit."""
    import dataclasses

    return dataclasses.replace(
        res, energy=res.energy * factor, atom_energy=res.atom_energy * factor, forces=res.forces * factor,
        virial=res.virial * factor, atom_virial=None if res.atom_virial is None else res.atom_virial * factor)


class LammpsModel:
    """One ``pair_style deepcomp`` instance on one MPI rank."""

    def __init__(self, model_file: str, type_names, comm, options: dict, log_sink=None):
        from ..potential import DeepPotential

        self.comm = comm
        self.rank = comm.Get_rank()
        self.nprocs = comm.Get_size()
        self.model_file = model_file
        self._handler = _LammpsLogHandler(log_sink, self.rank) if log_sink is not None else None
        with self._forwarding():
            device = options.get("device", "auto")
            kwargs, gpu = _backend_options(device, options.get("precision", "double"), comm)
            try:
                self.potential = DeepPotential.from_file(model_file, check_frequency=options.get("check_frequency"),
                                                         overflow=options.get("overflow", "warn"), **kwargs)
            except BackendUnavailableError as exc:
                raise BackendUnavailableError(f"pair_style deepcomp device {device}: {exc}") from exc
        self.typemap = self._map_types(type_names)
        self.all_mapped = bool((self.typemap[1:] >= 0).all())
        self.cutoff = float(self.potential.rcut)
        # LAMMPS energy unit per eV: 1 for units metal, kcal/mol per eV for units real
        self.energy_scale = float(options.get("energy_scale", 1.0))
        self.reduce = mpi.make_reducer(comm)
        backend = self.potential.backend.name
        self.device = f"{backend} on {gpu}" if gpu else f"{backend} on cpu"
        if self.rank == 0 and log_sink is not None:
            pot = self.potential
            freq = pot.check_frequency
            check = f"overflow check every {freq} steps ({pot.overflow})" if freq > 0 else "no periodic overflow check"
            log_sink(LOG_INFO,
                     f"deepcomp: {'compressed' if pot.compressed else 'uncompressed'} model {model_file}\n"
                     f"  type_map {' '.join(pot.type_map)}; LAMMPS types -> "
                     f"{' '.join(n if n is not None else 'NULL' for n in type_names)}; rcut {self.cutoff:g} A\n"
                     f"  {self.nprocs} MPI rank(s), backend {self.device}; {check}"
                     + (f"; energies converted to LAMMPS units (x {self.energy_scale:.8g} per eV)"
                        if self.energy_scale != 1.0 else ""))

    def _forwarding(self):
        if self._handler is None:
            import contextlib

            return contextlib.nullcontext()
        return _Forwarding(self._handler)

    def _map_types(self, type_names) -> np.ndarray:
        """Model type index of each LAMMPS type (index 0 unused), -1 for NULL."""
        from ..potential import type_indices

        type_map = self.potential.type_map
        mapped = type_indices(type_map, list(type_names), lambda k, name: (
            f"pair_coeff: element {name!r} given for atom type {k + 1} is not in the type_map "
            f"{list(type_map)} of model {self.model_file}"))
        return np.concatenate([np.full(1, -1, dtype=np.int64), mapped])

    # ------------------------------------------------------------------ per step
    def compute(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step):
        with self._forwarding():
            try:
                return self._compute(x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step)
            except TableOverflowError as exc:
                # raised by the periodic check on the globally reduced counts: every rank
                # raises it at the same step, so LAMMPS can stop with error->all
                exc.deepcomp_collective = True
                raise

    def _compute(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step):
        nall = nlocal + nghost
        x = np.frombuffer(x, dtype=np.float64).reshape(nall, 3)
        f = np.frombuffer(f, dtype=np.float64).reshape(nall, 3)
        mtype = self.typemap[np.frombuffer(types, dtype=np.intc)]
        pi = np.frombuffer(pair_i, dtype=np.intc)
        pj = np.frombuffer(pair_j, dtype=np.intc)
        want_atomic = vatom is not None
        energy = 0.0
        virial = np.zeros((3, 3))

        if self.all_mapped:
            order = None
            nloc = nlocal
        else:
            # hybrid styles: keep only atoms of mapped types, locals first
            used = mtype >= 0
            loc = np.flatnonzero(used[:nlocal])
            order = np.concatenate([loc, nlocal + np.flatnonzero(used[nlocal:])])
            new_index = np.full(nall, -1, dtype=np.int64)
            new_index[order] = np.arange(len(order))
            pi, pj = new_index[pi], new_index[pj]
            keep = (pi >= 0) & (pj >= 0)
            pi, pj = pi[keep], pj[keep]
            mtype = mtype[order]
            nloc = len(loc)

        if nloc > 0:
            pos = x if order is None else x[order]
            vec = pair_vectors(pos, pi, pj)
            res = self.potential.compute_pairs(mtype, nloc, pi, pj, vec, atomic_virial=want_atomic)
            if self.energy_scale != 1.0:
                res = _scaled(res, self.energy_scale)
            energy = float(res.energy)
            virial = res.virial
            if order is None:
                f += res.forces
                if eatom is not None:
                    np.frombuffer(eatom, dtype=np.float64)[:nlocal] += res.atom_energy
                if want_atomic:
                    va = np.frombuffer(vatom, dtype=np.float64).reshape(nall, 6)
                    va += res.atom_virial[:, VIRIAL_TO_LAMMPS]
            else:
                f[order] += res.forces
                if eatom is not None:
                    np.frombuffer(eatom, dtype=np.float64)[order[:nloc]] += res.atom_energy
                if want_atomic:
                    va = np.frombuffer(vatom, dtype=np.float64).reshape(nall, 6)
                    va[order] += res.atom_virial[:, VIRIAL_TO_LAMMPS]

        # collective every check_frequency calls: every rank gets here every step
        self.potential.step_done(int(step), reduce=self.reduce)
        return energy, (tuple(virial.reshape(9)[VIRIAL_TO_LAMMPS].tolist()) if need_virial else None)

    def finish(self) -> None:
        """End of a LAMMPS run or minimization (``Pair::finish``, every rank: collective).

        One summary line when any input left the fine tables since the model was loaded,
        whatever the check frequency; not repeated when nothing new overflowed since the last.
        """
        from ..overflow import run_totals, summary_line

        with self._forwarding():
            totals = run_totals(self.potential, self.reduce)
            key = (totals.n_coarse, totals.n_beyond, totals.n_sel_dropped)
            line = summary_line(totals, self.potential.type_map)
            if line is None or key == getattr(self, "_last_summary", None):
                return
            self._last_summary = key
            if self.rank == 0 and self._handler is not None:
                level = LOG_INFO if self.potential.overflow == "ignore" else LOG_WARNING
                self._handler.sink(level, line)

    def close(self) -> None:
        self._handler = None
        self.potential = None


def create(model_file: str, type_names, comm_f: int, rank: int, nprocs: int, options: dict, log_sink=None):
    """Entry point of the bridge: load the model for ``pair_style deepcomp`` on this rank."""
    comm = mpi.communicator(comm_f, nprocs) if nprocs > 1 else mpi.SerialComm()
    if comm.Get_rank() != rank:
        raise DeepCompError(f"MPI rank mismatch between LAMMPS ({rank}) and mpi4py ({comm.Get_rank()})")
    return LammpsModel(model_file, list(type_names), comm, dict(options), log_sink)
