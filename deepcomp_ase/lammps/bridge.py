"""The Python side of ``pair_style deepcomp``: called by libdeepcomp_bridge.so.

Per LAMMPS step the plugin hands over, as memoryviews of LAMMPS's own arrays (valid during
the call only):

* ``x`` (nall, 3) positions of local then ghost atoms, ``type`` (nall,) LAMMPS types;
* when ``LammpsModel.needs_pairs`` (CPU backends, models without device kernels): the full
  neighbour list flattened to pairs ``(i, j)``, ``i < nlocal``, ``j < nall``, already cut at
  the model cutoff; the pair vector is ``x[j] - x[i]`` (ghosts are explicit periodic images: no
  minimum image convention). Otherwise (CUDA backend) the pair views are empty: the device
  builds the list itself from ``x`` (backends/cuda_lammps.py) and LAMMPS builds none;
* ``f`` (nall, 3): forces are *added*, on ghost atoms too; LAMMPS sums them onto their owners
  (reverse communication, newton pair on);
* ``eatom`` (nall,) / ``vatom`` (nall, 6) when per-atom energy / virial are wanted (added to,
  LAMMPS order xx yy zz xy xz yz, sign of sum r (x) f); ``cvatom`` (nall, 9) for
  ``compute centroid/stress/atom`` (xx yy zz xy xz yz yx zx zy).

Units: every array is in LAMMPS units. Positions are divided by ``length_scale`` (LAMMPS length
units per Angstrom) before the model sees them; energies and virials are multiplied by
``energy_scale`` (LAMMPS energy units per eV), forces by ``energy_scale / length_scale``.

``compute`` returns the energy of the local atoms and, when asked for, this rank's share of
the global virial in LAMMPS order (LAMMPS sums over ranks). The DeePMD-kit virial convention
``W[a, b] = sum_k F_k[a] r_k[b]`` maps to LAMMPS as xx=W00 yy=W11 zz=W22 xy=W10 xz=W20 yz=W21.
"""

from __future__ import annotations

import logging
import traceback

import numpy as np

from .. import config
from ..backends.numba_cpu import pair_vectors
from ..errors import (AtomsTooCloseError, BackendUnavailableError, DeepCompError, NonFiniteInputError,
                      TableOverflowError)
from ..validate import check_structure, too_close_error
from . import mpi
from .params import check_inputs

# DeePMD-kit row-major 3x3 (a, b) -> LAMMPS xx yy zz xy xz yz (then yx zx zy: centroid virial)
VIRIAL_TO_LAMMPS = np.array([0, 4, 8, 3, 6, 7])
VIRIAL_TO_LAMMPS_CENTROID = np.array([0, 4, 8, 3, 6, 7, 1, 2, 5])
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


def _backend_options(device: str, precision: str, comm, gpu_id: int = -1) -> tuple[dict, str]:
    """Keyword arguments of :class:`DeepPotential` for the ``device``/``precision`` keywords.

    ``device auto`` lets deepcomp_ase choose (a GPU if CuPy sees one, else numba if installed,
    else numpy); ``cpu`` never uses a GPU; ``cuda`` requires one. The GPU of this rank comes
    from :func:`deepcomp_ase.backends.cupy_gpu.select_device` (``gpu_id``, else the
    launcher's local rank mod the GPUs visible). Returns (kwargs, "cuda:N (why)" or "").
    """
    kwargs: dict = {"backend": {"auto": "auto", "cpu": "cpu", "cuda": "cuda"}[device],
                    "precision": {"double": "float64", "single": "float32"}[precision]}
    gpu = ""
    if device in ("auto", "cuda") and _visible_gpus() > 0:
        from ..backends.cupy_gpu import select_device

        index, why = select_device(comm=comm, gpu_id=gpu_id)
        gpu = f"cuda:{index} ({why})"
    return kwargs, gpu


class LammpsModel:
    """One ``pair_style deepcomp`` instance on one MPI rank."""

    def __init__(self, model_file: str, type_names, comm, options: dict, log_sink=None):
        from ..potential import DeepPotential

        self.comm = comm
        self.rank = comm.Get_rank()
        self.nprocs = comm.Get_size()
        self.model_file = model_file
        self._handler = _LammpsLogHandler(log_sink, self.rank) if log_sink is not None else None
        self._log_sink = log_sink
        with self._forwarding():
            config.apply_lammps_malloc_policy()  # logged through the forwarding to LAMMPS's log
            device = options.get("device", "auto")
            kwargs, gpu = _backend_options(device, options.get("precision", "double"), comm,
                                           int(options.get("gpu_id", -1)))
            files = list(options.get("model_files") or [model_file])
            try:
                self.potentials = [
                    DeepPotential.from_file(f, check_frequency=options.get("check_frequency"),
                                            overflow=options.get("overflow", "warn"), **kwargs) for f in files]
            except BackendUnavailableError as exc:
                raise BackendUnavailableError(f"pair_style deepcomp device {device}: {exc}") from exc
        self.model_files = files
        self.potential = self.potentials[0]
        type_names = self._positional_names(type_names)
        check_inputs(self.potentials, files, options.get("fparam_input"), options.get("aparam_input"))
        self.dim_fparam = self.potential.dim_fparam
        self.dim_aparam = self.potential.dim_aparam
        # each model maps the pair_coeff elements through its own type_map
        self.typemaps = [self._map_types(type_names, pot, f) for pot, f in zip(self.potentials, files)]
        self.typemap = self.typemaps[0]
        self.all_mapped = bool((self.typemap[1:] >= 0).all())
        # LAMMPS units per eV and per Angstrom (units metal: 1 and 1; real: kcal/mol per eV; si: J and m)
        self.energy_scale = float(options.get("energy_scale", 1.0))
        self.length_scale = float(options.get("length_scale", 1.0))
        self.force_scale = self.energy_scale / self.length_scale
        # one neighbour list with the largest cutoff; each model keeps the pairs within its own
        self.model_cutoff = max(float(p.rcut) for p in self.potentials)  # A
        self.cutoff = self.model_cutoff * self.length_scale  # LAMMPS length units (read by the plugin)
        self.reduce = mpi.make_reducer(comm)
        self.devi = _DeviationOutput(comm, {**(options.get("model_devi") or {}), "model_files": files},
                                     len(self.potentials), self.energy_scale, self.force_scale)
        backend = self.potential.backend.name
        self.device = f"{backend} on {gpu}" if gpu else f"{backend} on cpu"
        # CUDA backend with device kernels for this model: LAMMPS hands over x, type, nlocal and
        # nghost only; the device builds its own neighbour list (needs_pairs False: the plugin
        # then requests no neighbour list from LAMMPS and flattens nothing)
        self.device_models = _device_models(self.potentials)
        self.needs_pairs = self.device_models is None
        self._devices_logged = self.nprocs == 1  # several ranks: listed at the first step
        if self.rank == 0 and log_sink is not None:
            pot = self.potential
            freq = pot.check_frequency
            check = f"overflow check every {freq} steps ({pot.overflow})" if freq > 0 else "no periodic overflow check"
            log_sink(LOG_INFO,
                     f"deepcomp: {'compressed' if pot.compressed else 'uncompressed'} model {model_file}\n"
                     f"  type_map {' '.join(pot.type_map)}; LAMMPS types -> "
                     f"{' '.join(n if n is not None else 'NULL' for n in type_names)}; rcut {self.model_cutoff:g} A\n"
                     f"  {self.nprocs} MPI rank(s), backend "
                     f"{self.device if self.nprocs == 1 else '(per rank: at the first step)'}; {check}"
                     + ("; neighbour list built on the device from LAMMPS's local and ghost atoms"
                        if self.device_models is not None else "")
                     + (f"; converted to LAMMPS units: x {self.energy_scale:.10g} per eV, "
                        f"x {self.length_scale:.10g} per A" if (self.energy_scale, self.length_scale) != (1.0, 1.0)
                        else "")
                     + (f"\n  model deviation of {len(files)} models every {self.devi.out_freq} steps -> "
                        f"{self.devi.out_file}" + (" (per-atom force deviations too)" if self.devi.atomic else "")
                        + "; other models: " + ", ".join(files[1:]) if self.devi.active else ""))

    def _forwarding(self):
        if self._handler is None:
            import contextlib

            return contextlib.nullcontext()
        return _Forwarding(self._handler)

    def _positional_names(self, type_names) -> list:
        """Bare ``pair_coeff * *`` (every name ""): LAMMPS type k is element k of the first model's
        type_map, as pair_style deepmd maps it; a warning when the model has more elements. Types past
        the model's elements are left out (NULL), with a warning, as pair_style deepmd ignores them."""
        if not type_names or any(n != "" for n in type_names):
            return type_names
        type_map = list(self.potential.type_map)
        ntypes = len(type_names)
        warn = self.rank == 0 and self._log_sink is not None
        if ntypes > len(type_map):
            if warn:
                self._log_sink(LOG_WARNING, f"deepcomp: pair_coeff * *: the system has {ntypes} atom types but model "
                                            f"{self.model_file} only {len(type_map)} elements {type_map}: types "
                                            f"{len(type_map) + 1}-{ntypes} are NULL (their atoms get no force from "
                                            f"the model and are no neighbours), as pair_style deepmd ignores them; "
                                            f"name them (pair_coeff * * {' '.join(type_map)} NULL ...) to be explicit")
            return type_map + [None] * (ntypes - len(type_map))
        if ntypes < len(type_map) and warn:
            self._log_sink(LOG_WARNING, f"deepcomp: pair_coeff * * maps the {ntypes} atom types onto the first "
                                        f"{ntypes} of the model's elements {type_map}; name them "
                                        f"(pair_coeff * * {' '.join(type_map[:ntypes])}) to be sure of the mapping")
        return type_map[:ntypes]

    def _map_types(self, type_names, potential=None, model_file=None) -> np.ndarray:
        """Model type index of each LAMMPS type (index 0 unused), -1 for NULL."""
        from ..potential import type_indices

        potential = potential if potential is not None else self.potential
        model_file = model_file if model_file is not None else self.model_file
        type_map = potential.type_map
        extra = ("; the models of a model deviation must share the pair_coeff elements"
                 if potential is not self.potential else "")
        mapped = type_indices(type_map, list(type_names), lambda k, name: (
            f"pair_coeff: element {name!r} given for atom type {k + 1} is not in the type_map "
            f"{list(type_map)} of model {model_file}{extra}"))
        return np.concatenate([np.full(1, -1, dtype=np.int64), mapped])

    # ------------------------------------------------------------------ per step
    def compute(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step, tag=None,
                natoms=0, cvatom=None, fparam=None, aparam=None, dedfparam=None, probe=0):
        """One force call; ``tag`` (int per local and ghost atom): atom IDs, used for model
        deviation and to name atoms in errors. Input errors (NaN positions, two atoms at one
        place) are raised on the rank that sees them only (LAMMPS: error->one).

        ``fparam`` (dim_fparam doubles) and ``aparam`` (nlocal x dim_aparam) as the plugin read
        them this step, or None; ``dedfparam`` (dim_fparam doubles, or None) receives this rank's
        share of dE/dfparam (LAMMPS energy units). ``probe``: evaluate the first model only, for
        ``compute deepcomp/fparam/dedn`` (no forces written, no step counted, no deviation)."""
        self._tag = tag  # borrowed for this call only
        self._inputs = (None if fparam is None else np.frombuffer(fparam, dtype=np.float64).copy(),
                        None if aparam is None else np.frombuffer(aparam, dtype=np.float64).reshape(
                            int(nlocal), -1).copy(), dedfparam, bool(probe))
        if not self._devices_logged:
            # collective, hence here (every rank computes every step) and not in __init__, where
            # a rank that failed to load would leave the others waiting
            self._devices_logged = True
            devices = self.comm.allgather(self.device)
            if self.rank == 0 and self._log_sink is not None:
                self._log_sink(LOG_INFO, f"deepcomp: backend per MPI rank: {_ranks_text(devices)}")
        with self._forwarding():
            try:
                return self._compute(x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step,
                                     tag, natoms, cvatom)
            except TableOverflowError as exc:
                # raised by the periodic check on the globally reduced counts: every rank
                # raises it at the same step, so LAMMPS can stop with error->all
                exc.deepcomp_collective = True
                raise
            finally:
                self._tag = None
                self._inputs = None

    def _atom_namer(self, order, nlocal: int):
        """How an error names the atom at index k of the arrays given to the potential: by atom ID
        when LAMMPS passed them, else as local/ghost index of this rank."""
        tag = None if getattr(self, "_tag", None) is None else np.frombuffer(self._tag, dtype=np.intc)

        def name(k: int) -> str:
            k = int(k if order is None else order[k])
            if tag is not None:
                return f"atom ID {int(tag[k])}"
            return f"local atom {k}" if k < nlocal else f"ghost atom {k - nlocal}"

        return name

    def _compute(self, x, f, types, pair_i, pair_j, nlocal, nghost, eatom, vatom, need_virial, step, tag=None,
                 natoms=0, cvatom=None):
        nall = nlocal + nghost
        x = np.frombuffer(x, dtype=np.float64).reshape(nall, 3)
        x_lammps = x
        f = np.frombuffer(f, dtype=np.float64).reshape(nall, 3)
        ltype = np.frombuffer(types, dtype=np.intc)
        mtype = self.typemap[ltype]
        fparam, aparam, dedfparam, probe = getattr(self, "_inputs", None) or (None, None, None, False)
        devi_step = self.devi.due(step) and not probe
        want_atomic = vatom is not None or cvatom is not None
        # a NaN position drops out of LAMMPS's binning and of the pair list: refuse it by name
        if not np.isfinite(x).all():
            try:
                check_structure(x, names=self._atom_namer(None, nlocal))
            except NonFiniteInputError as exc:
                raise NonFiniteInputError(f"{exc} (step {int(step)}, MPI rank {self.rank})") from None
        if self.length_scale != 1.0:
            x = x / self.length_scale  # the model works in Angstrom
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
            mtype = mtype[order]
            nloc = len(loc)
            if aparam is not None:
                aparam = aparam[loc]
        self._step_inputs = {"fparam": fparam, "aparam": aparam}

        model_forces = model_virials = None
        if devi_step:
            # every model's forces (on local and ghost atoms) and virial, in eV
            model_forces = np.zeros((len(self.potentials), nall, 3))
            model_virials = np.zeros((len(self.potentials), 3, 3))
        if nloc > 0:
            # model types of the atoms handed to each model (each maps through its own type_map)
            mtypes = [mtype] + ([self.typemaps[k][ltype] if order is None else self.typemaps[k][ltype][order]
                                 for k in range(1, len(self.potentials))] if devi_step else [])
            try:
                if self.device_models is not None:
                    results = self._evaluate_device(x, order, mtypes, nloc, eatom is not None, want_atomic)
                else:
                    results = self._evaluate_pairs(x, order, mtypes, nloc, nall, pair_i, pair_j, want_atomic)
            except AtomsTooCloseError as exc:  # restated with LAMMPS atom IDs (or local/ghost indices)
                i, j = exc.atoms
                name = self._atom_namer(order, nlocal)
                err = too_close_error(i, j, exc.distance, names=name)
                pos_i = x_lammps[int(i if order is None else order[i])].tolist()
                raise type(err)(f"{err} (step {int(step)}, MPI rank {self.rank}, {name(i)} at {pos_i})",
                                atoms=err.atoms, distance=err.distance) from None
            res = results[0]
            if dedfparam is not None and res.dedfparam is not None:
                out = np.frombuffer(dedfparam, dtype=np.float64)
                out[:] = np.asarray(res.dedfparam) * self.energy_scale
            if probe:
                return float(res.energy) * self.energy_scale, None
            if devi_step:
                idx = slice(None) if order is None else order
                for k, rk in enumerate(results):
                    model_forces[k][idx] = rk.forces
                    model_virials[k] = rk.virial
            scale = self.energy_scale
            energy = float(res.energy) * scale
            virial = np.asarray(res.virial).reshape(3, 3) * scale
            idx = slice(None) if order is None else order
            f[idx] += res.forces * self.force_scale
            if eatom is not None:
                ea = np.frombuffer(eatom, dtype=np.float64)
                ea[slice(0, nloc) if order is None else order[:nloc]] += res.atom_energy * scale
            if vatom is not None:
                va = np.frombuffer(vatom, dtype=np.float64).reshape(nall, 6)
                va[idx] += res.atom_virial[:, VIRIAL_TO_LAMMPS] * scale
            if cvatom is not None:
                cva = np.frombuffer(cvatom, dtype=np.float64).reshape(nall, 9)
                cva[idx] += res.atom_virial[:, VIRIAL_TO_LAMMPS_CENTROID] * scale

        elif dedfparam is not None:  # no local atoms: no share of dE/dfparam
            np.frombuffer(dedfparam, dtype=np.float64)[:] = 0.0
        if probe:
            return 0.0, None
        if devi_step:  # collective: every rank reaches it on the same steps
            self.devi.write(int(step), model_forces, model_virials, tag, nall, int(natoms))
        # collective every check_frequency calls: every rank gets here every step
        self._step_done(int(step))
        return energy, (tuple(virial.reshape(9)[VIRIAL_TO_LAMMPS].tolist()) if need_virial else None)

    def _model_name(self, k: int):
        """Model k's file for overflow messages; None with one model (messages as before)."""
        return self.model_files[k] if len(self.potentials) > 1 else None

    def _step_done(self, step: int) -> None:
        """Count the step; on the driving model's check steps apply the overflow policy to every model.

        The other models run on deviation steps only, so their own step counts would check on
        another cadence (or never); they are checked with the first, each message naming its model.
        """
        first = self.potential
        first.step_done(step, reduce=self.reduce, model=self._model_name(0))
        if len(self.potentials) > 1 and first.check_due():
            for k in range(1, len(self.potentials)):
                self.potentials[k].check_overflow(step, self.reduce, self._model_name(k))

    def _evaluate_pairs(self, x, order, mtypes, nloc, nall, pair_i, pair_j, want_atomic):
        """CPU path: LAMMPS's pair list, one result per model in ``mtypes`` (eV)."""
        # int64 once: compute_pairs then keeps these very arrays, and models share selections on them
        pi = np.frombuffer(pair_i, dtype=np.intc).astype(np.int64)
        pj = np.frombuffer(pair_j, dtype=np.intc).astype(np.int64)
        pos = x
        if order is not None:
            new_index = np.full(nall, -1, dtype=np.int64)
            new_index[order] = np.arange(len(order))
            pi, pj = new_index[pi], new_index[pj]
            keep = (pi >= 0) & (pj >= 0)
            pi, pj = pi[keep], pj[keep]
            pos = x[order]
        vectors = pair_vectors(pos, pi, pj)
        within = {}  # the pairs within each distinct smaller cutoff, cut once per step
        selected = {}  # each distinct (rcut, sel, selection kind, exclusions) selected once per step
        out = []
        for k, tk in enumerate(mtypes):
            out.append(self.potentials[k].compute_pairs(tk, nloc, *self._pairs_within(k, pi, pj, vectors, within),
                                                        atomic_virial=want_atomic and k == 0,
                                                        shared_selection=selected, **self._step_inputs))
        return out

    def _evaluate_device(self, x, order, mtypes, nloc, atom_energy, want_atomic):
        """Device path: positions and types in, forces (local and ghost) out; the models of a
        deviation step back to back on the device (eV)."""
        pos = x if order is None else x[order]
        out = self.device_models.compute(pos, mtypes, nloc, atom_energy=atom_energy, atomic_virial=want_atomic)
        path = self.device_models.paths[0]
        if path.steps == 2 and self.rank == 0 and self._log_sink is not None:
            b_in, b_out = path.last_step_bytes
            self._log_sink(LOG_INFO, f"deepcomp: device step moved {b_in} B to and {b_out} B from the GPU on "
                                     f"rank 0 ({nloc} local + {len(pos) - nloc} ghost atoms, "
                                     f"{(b_in + b_out) / max(len(pos), 1):.1f} B per atom)")
        return out

    def finish(self) -> None:
        """End of a LAMMPS run or minimization (``Pair::finish``, every rank: collective).

        One summary line per model whose inputs left the fine tables since it was loaded
        (naming the model file when there are several), whatever the check frequency; not
        repeated for a model with nothing new since its last.
        """
        from ..overflow import run_totals, summary_line

        last = getattr(self, "_last_summary", None)
        if last is None:
            last = self._last_summary = {}
        with self._forwarding():
            for k, pot in enumerate(self.potentials):
                totals = run_totals(pot, self.reduce)  # collective: every rank, every model
                key = (totals.n_coarse, totals.n_beyond, totals.n_sel_dropped)
                line = summary_line(totals, pot.type_map, model=self._model_name(k))
                if line is None or key == last.get(k):
                    continue
                last[k] = key
                if self.rank == 0 and self._handler is not None:
                    self._handler.sink(LOG_INFO if pot.overflow == "ignore" else LOG_WARNING, line)

    def _pairs_within(self, k: int, pi, pj, vectors, cache: dict):
        """The pairs within model k's cutoff (the list is cut at the largest one)."""
        rc = float(self.potentials[k].rcut)
        if rc >= self.model_cutoff:
            return pi, pj, vectors
        if rc not in cache:
            if "r2" not in cache:
                cache["r2"] = np.einsum("ij,ij->i", vectors, vectors)
            keep = cache["r2"] < rc * rc
            cache[rc] = (pi[keep], pj[keep], vectors[keep])
        return cache[rc]

    def close(self) -> None:
        self._handler = None
        self._log_sink = None
        self.device_models = None
        self.potential = None
        self.potentials = []
        if getattr(self, "devi", None) is not None:
            self.devi.close()


class _DeviationOutput:
    """The model deviation file of ``pair_style deepcomp M1 M2 ... out_freq N out_file F`` (rank 0 writes).

    As pair_style deepmd: every ``out_freq`` steps (step 0 included) one row, the force deviation
    over all atoms of the system, the virial deviation of W/N; ``relative`` (a force) and
    ``relative_v`` (an energy) in LAMMPS units; numbers written in LAMMPS units; ``atomic`` adds
    eps_f of every atom by atom id.
    """

    def __init__(self, comm, options: dict, nmodels: int, energy_scale: float, force_scale: float | None = None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.nprocs = comm.Get_size()
        self.out_freq = int(options.get("out_freq", 100))
        self.out_file = str(options.get("out_file", "model_devi.out"))
        self.atomic = bool(options.get("atomic", 0))
        self.scale = float(energy_scale)  # eV -> LAMMPS energy
        self.force_scale = self.scale if force_scale is None else float(force_scale)  # eV/A -> LAMMPS force
        rel, relv = options.get("relative"), options.get("relative_v")
        self.relative = None if rel is None else float(rel) / self.force_scale
        self.relative_v = None if relv is None else float(relv) / self.scale
        self.active = nmodels > 1 and self.out_freq > 0
        self.fh = None
        if not self.active:
            return
        from ..model_devi import lammps_header

        why = ""
        if self.rank == 0:
            try:
                from ..output import check_output_path

                # the check every writer makes: no directory, device, FIFO or model file replaced
                check_output_path(self.out_file, inputs=list(options.get("model_files") or ()))
                self.fh = open(self.out_file, "a" if options.get("append") else "w")  # noqa: SIM115 - kept open
                if not options.get("append"):
                    self.fh.write(lammps_header(self.atomic))
                    self.fh.flush()
            except DeepCompError as exc:
                why = str(exc)
            except OSError as exc:
                why = f"{type(exc).__name__}: {exc}"
        if self.nprocs > 1:
            why = comm.bcast(why, root=0)
        if why:  # every rank fails with the same message: a clean error->all in LAMMPS
            raise DeepCompError(f"pair_style deepcomp: cannot write the model deviation file out_file "
                                f"{self.out_file!r} ({why}); choose a writable path")

    def due(self, step) -> bool:
        return self.active and int(step) % self.out_freq == 0

    def _sum_to_root(self, array: np.ndarray) -> np.ndarray:
        if self.nprocs == 1:
            return array
        from mpi4py import MPI

        out = np.zeros_like(array) if self.rank == 0 else None
        self.comm.Reduce(array, out, op=MPI.SUM, root=0)
        return out

    def write(self, step: int, forces: np.ndarray, virials: np.ndarray, tag, nall: int, natoms: int) -> None:
        """Reduce the models' forces (by atom id, ghosts summed onto their owners) and virials, write a row."""
        from ..model_devi import force_deviation, lammps_row, summarize_forces, summarize_virial, virial_deviation

        # a rank without atoms gets no id array: the checks below are collective
        ids = (np.frombuffer(tag, dtype=np.intc)[:nall].astype(np.int64) - 1 if tag is not None
               else np.zeros(0, dtype=np.int64))
        no_ids = int(tag is None and nall > 0)
        top = int(ids.max()) + 1 if ids.size else 0
        if self.nprocs > 1:
            from mpi4py import MPI

            both = np.zeros(2, dtype=np.int64)
            self.comm.Allreduce(np.array([no_ids, top], dtype=np.int64), both, op=MPI.MAX)
            no_ids, top = int(both[0]), int(both[1])
        why = ("the model deviation needs atom IDs (atom_modify id yes)" if no_ids else
               f"atom IDs go up to {top} for {natoms} atoms; the model deviation needs IDs 1..N (use reset_atoms id)"
               if top > natoms else "")
        if why:
            err = DeepCompError(f"pair_style deepcomp: {why}")
            err.deepcomp_collective = True  # every rank raises it at the same step
            raise err
        by_id = np.zeros((forces.shape[0], natoms, 3))
        for k in range(forces.shape[0]):
            for d in range(3):
                by_id[k, :, d] = np.bincount(ids, weights=forces[k, :, d], minlength=natoms)
        by_id = self._sum_to_root(by_id)
        vir = self._sum_to_root(np.ascontiguousarray(virials.reshape(-1, 9)))
        if self.rank != 0:
            return
        atom = force_deviation(by_id, self.relative)
        fmax, fmin, favg = summarize_forces(atom)
        vmax, vmin, vavg = summarize_virial(virial_deviation(vir, natoms, self.relative_v, "component"))
        s, fs = self.scale, self.force_scale
        row = (vmax * s, vmin * s, vavg * s, fmax * fs, fmin * fs, favg * fs)
        self.fh.write(lammps_row(step, row, atom * fs if self.atomic else None))
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _device_models(potentials):
    """A :class:`~deepcomp_ase.backends.cuda_lammps.LammpsDeviceModels` when every model runs on the
    CUDA backend with device kernels for it (compressed models), else None (LAMMPS's neighbour
    list then serves them all)."""
    for pot in potentials:
        backend = pot.backend
        if backend.name != "cuda" or not backend.supports(pot):
            return None
    from ..backends.cuda_lammps import LammpsDeviceModels, LammpsDevicePath

    return LammpsDeviceModels([LammpsDevicePath(pot.backend, pot) for pot in potentials])


def _ranks_text(devices) -> str:
    """'X' when every rank uses X, else 'rank 0: X, rank 1: Y, ...'."""
    if len(set(devices)) == 1:
        return devices[0]
    return ", ".join(f"rank {r}: {d}" for r, d in enumerate(devices))


def create(model_file: str, type_names, comm_f: int, rank: int, nprocs: int, options: dict, log_sink=None):
    """Entry point of the bridge: load the model for ``pair_style deepcomp`` on this rank."""
    comm = mpi.communicator(comm_f, nprocs) if nprocs > 1 else mpi.SerialComm()
    if comm.Get_rank() != rank:
        raise DeepCompError(f"MPI rank mismatch between LAMMPS ({rank}) and mpi4py ({comm.Get_rank()})")
    return LammpsModel(model_file, list(type_names), comm, dict(options), log_sink)
