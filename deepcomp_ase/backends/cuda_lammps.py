"""LAMMPS layouts on the CUDA backend: coordinates in, forces out, the step stays on the device.

LAMMPS hands over, per step, the positions of its local atoms followed by its ghost atoms
(explicit periodic images and atoms of neighbouring sub-domains), their types and ``nlocal``.
:class:`LammpsDevicePath` builds the neighbour list itself on the device with the cell-list
kernels of the CUDA backend over local + ghost atoms — non-periodically: the ghosts already are
the images — with only atoms ``< nlocal`` as centres, then runs the usual device pipeline.
Forces come back on local *and* ghost atoms (LAMMPS sums the ghost forces onto their owners,
newton pair on), with the energy and virial; per-atom energies and virials only when asked.

Per step only O(atoms) crosses between host and device: positions in, forces out, the types
when they changed (after each LAMMPS re-neighbouring), a few hundred bytes of cell-list
geometry, the energy and the virial. :attr:`LammpsDevicePath.bytes_in` / ``bytes_out`` count
every byte this module moves; :func:`expected_step_bytes` states the budget.

Device buffers persist across steps. ``nall`` changes at every re-neighbouring, so buffers are
allocated with headroom (:data:`HEADROOM`) and reused through views for any smaller count; they
are reallocated only when the atom count grows beyond the capacity.

Several models (model deviation): :class:`LammpsDeviceModels` runs them back to back on the
device, uploads first, kernels next, results last, with positions uploaded once for all.
"""

from __future__ import annotations

import numpy as np

from ..validate import MIN_DISTANCE
from .cuda_state import Workspace

MIN_R2 = MIN_DISTANCE * MIN_DISTANCE

#: capacity = HEADROOM x the atom counts that did not fit (nall fluctuates by a few % per re-neighbouring)
HEADROOM = 1.25
#: device -> host: the energy (one float64) and the 3x3 virial
_SCALAR_OUT = 8 + 9 * 8
#: host -> device per descriptor part per step: cell-list frame (12 float64), inverse (9 float64), grid (8 int32)
_GRID_IN = 12 * 8 + 9 * 8 + 8 * 4


def expected_step_bytes(nloc: int, nall: int, nparts: int, *, types_changed: bool, atom_energy: bool = False,
                        atomic_virial: bool = False) -> tuple[int, int]:
    """(bytes host -> device, bytes device -> host) of one :meth:`LammpsDevicePath.compute` call.

    In: positions (nall x 3 float64), cell-list geometry per part and, when the types changed,
    the types (nall int32) and the type-sorted row of every local atom (nloc int32). Out:
    forces (nall x 3 float64), energy and virial, per-atom energies (nloc float64) and virials
    (nall x 9 float64) when asked. Nothing depends on the number of neighbours. Not counted:
    the overflow counters (8 uint64 per part), read by ``DeepPotential.step_done`` every
    ``check_frequency`` steps.
    """
    bytes_in = 24 * nall + nparts * _GRID_IN + ((4 * nall + 4 * nloc) if types_changed else 0)
    bytes_out = 24 * nall + _SCALAR_OUT + (8 * nloc if atom_energy else 0) + (72 * nall if atomic_virial else 0)
    return bytes_in, bytes_out


class LammpsResults:
    """Host results of one LAMMPS-layout step (eV, Angstrom; DeePMD-kit virial convention)."""

    def __init__(self, energy, forces, virial, atom_energy=None, atom_virial=None):
        self.energy = energy  # float, sum over local atoms
        self.forces = forces  # (nall, 3), on local and ghost atoms
        self.virial = virial  # (3, 3)
        self.atom_energy = atom_energy  # (nlocal,) or None
        self.atom_virial = atom_virial  # (nall, 9) or None


class _View:
    """Workspace-shaped: the same attribute names as :class:`~.cuda_state.Workspace` (and
    ``PartWorkspace``), each a leading-dimension view of the larger one's array."""


# per-centre arrays of a PartWorkspace / Workspace, and arrays over all atoms
_PART_NLOC = ("nlist", "rij", "key", "nnbr", "em", "g_em", "g_r", "atom_flags", "t", "desc", "g_desc", "virial_rows")
_PART_NALL = ("pos_wrapped", "bin_of_atom")
_WS_NLOC = ("row_of_atom", "desc", "g_desc", "out_rows", "ones", "atom_energy")
_WS_NALL = ("atype", "force")
_WS_SHARED = ("fit_y", "fit_d", "fit_g", "fit_gin", "sums")  # flat buffers: per-layer rows [r0, r1) of any nloc


def _sliced(obj, names_nloc, names_nall, nloc: int, nall: int, into):
    for name in names_nloc:
        a = getattr(obj, name)
        setattr(into, name, None if a is None else a[:nloc])
    for name in names_nall:
        a = getattr(obj, name)
        setattr(into, name, None if a is None else a[:nall])
    return into


class GrowingWorkspace:
    """Work buffers with a capacity, handed out as views sized to the current step."""

    def __init__(self, ctx, dm):
        self.ctx, self.dm = ctx, dm
        self.cap_loc = self.cap_all = -1
        self.base: Workspace | None = None
        self.positions = None  # device (cap_all, 3) float64
        self.atom_virial = None  # device (cap_all, 9), allocated when first asked for
        self.allocations = 0
        self._view = None
        self._key = None
        self._types = None  # host copy of the model types of the current view
        self._tebd: dict = {}  # part index -> its type embedding on the device (se_atten_v2)

    def ensure(self, nloc: int, nall: int) -> bool:
        """Grow to hold ``nloc`` centres among ``nall`` atoms; True when buffers were reallocated."""
        if nloc <= self.cap_loc and nall <= self.cap_all:
            return False
        cap_loc = max(self.cap_loc, int(np.ceil(nloc * HEADROOM)), 1)
        cap_all = max(self.cap_all, int(np.ceil(nall * HEADROOM)), cap_loc)
        xp = self.ctx.xp
        # types are filled in per step; zeros make every buffer type-agnostic at allocation
        self.base = Workspace(self.ctx, self.dm, np.zeros(cap_all, dtype=np.int64), cap_loc)
        for pws in self.base.parts:
            pws.cell_buffers(self.ctx, cap_all)
        self.positions = xp.empty((cap_all, 3), dtype=np.float64)
        self.atom_virial = None
        self.cap_loc, self.cap_all = cap_loc, cap_all
        self.allocations += 1
        self._view = self._key = self._types = None
        return True

    def view(self, nloc: int, nall: int, atomic_virial: bool):
        """The Workspace-shaped view for this step (cached while nloc and nall stay the same)."""
        if self._key != (nloc, nall):
            base = self.base
            ws = _sliced(base, _WS_NLOC, _WS_NALL, nloc, nall, _View())
            for name in _WS_SHARED:
                setattr(ws, name, getattr(base, name))
            ws.parts = [_sliced(p, _PART_NLOC, _PART_NALL, nloc, nall, _View()) for p in base.parts]
            if len(base.parts) == 1:  # a single part writes straight into the model's descriptor
                ws.parts[0].desc, ws.parts[0].g_desc = ws.desc, ws.g_desc
            ws.nloc, ws.nall = nloc, nall
            ws.type_rows = []
            self._view, self._key, self._types = ws, (nloc, nall), None
        ws = self._view
        if atomic_virial and self.atom_virial is None:
            self.atom_virial = self.ctx.xp.zeros((self.cap_all, 9), dtype=np.float64)
        ws.atom_virial = self.atom_virial[:nall] if atomic_virial else None
        return ws

    def set_types(self, ws, mtype: np.ndarray, upload) -> bool:
        """Model types of all atoms into the view (only when they changed); True when uploaded."""
        if self._types is not None and np.array_equal(self._types, mtype):
            return False
        nloc, ctx = ws.nloc, self.ctx
        local = mtype[:nloc]
        order = np.argsort(local, kind="stable")
        row_of_atom = np.empty(nloc, dtype=np.int32)
        row_of_atom[order] = np.arange(nloc, dtype=np.int32)
        upload(ws.atype, mtype.astype(np.int32))
        upload(ws.row_of_atom, row_of_atom)
        counts = np.bincount(local, minlength=self.dm.ntypes) if nloc else np.zeros(self.dm.ntypes, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)])
        ws.type_rows = [(int(starts[t]), int(starts[t + 1])) for t in range(self.dm.ntypes)]
        # se_atten_v2 (concat_output_tebd): constant type-embedding columns of each row's type, a
        # device-side gather (the embedding is a model constant, uploaded once)
        for k, (part, pws) in enumerate(zip(self.dm.parts, ws.parts)):
            if part.tebd is not None:
                if k not in self._tebd:
                    self._tebd[k] = ctx.asarray(part.tebd, ctx.fp)
                sorted_types = ws.atype[:nloc][ws.row_of_atom.argsort()]
                pws.desc[:, part.ldd - part.tebd.shape[1]:] = self._tebd[k][sorted_types]
        self._types = np.array(mtype, copy=True)
        return True


class LammpsDevicePath:
    """One potential evaluated on LAMMPS layouts by a CUDA :class:`~.cupy_gpu.Backend`.

    ``compute(x, mtype, nlocal)``: ``x`` (nall, 3) host positions of local then ghost atoms,
    ``mtype`` (nall,) model types, ``nlocal`` centres. Every atom must have a model type (the
    bridge drops atoms of unmapped LAMMPS types before calling).
    """

    def __init__(self, backend, potential):
        self.backend = backend
        self.potential = potential
        self.ctx, self.xp = backend.ctx, backend.xp
        self.state = backend._entry(potential)
        self.dm = self.state["model"]
        self.work = GrowingWorkspace(self.ctx, self.dm)
        self.bytes_in = 0
        self.bytes_out = 0
        self.last_step_bytes = (0, 0)
        self.steps = 0

    # ---------------------------------------------------------------- counted transfers
    def _upload(self, dst, src) -> None:
        """Copy host ``src`` into the device array ``dst`` (same shape), counting the bytes."""
        src = np.ascontiguousarray(src, dtype=dst.dtype)
        if self.xp is np:
            dst[...] = src
        else:
            dst.set(src)
        self.bytes_in += src.nbytes

    def _up(self, host, dtype):
        a = self.ctx.asarray(host, dtype)
        self.bytes_in += a.nbytes
        return a

    def _down(self, dev) -> np.ndarray:
        out = np.array(self.ctx.to_host(dev))
        self.bytes_out += out.nbytes
        return out

    # ---------------------------------------------------------------- one step
    def compute(self, x, mtype, nlocal: int, *, atom_energy: bool = False,
                atomic_virial: bool = False) -> LammpsResults:
        return LammpsDeviceModels([self]).compute(x, [mtype], nlocal, atom_energy=atom_energy,
                                                  atomic_virial=atomic_virial)[0]

    # the three phases of a step; LammpsDeviceModels runs each for every model before the next
    def _prepare(self, x_host, mtype, nloc: int, nall: int, atomic_virial: bool):
        """Host -> device: types (when they changed) and the cell-list geometry of every part."""
        from .cupy_gpu import cell_grid

        work = self.work
        work.ensure(nloc, nall)
        ws = work.view(nloc, nall, atomic_virial)
        work.set_types(ws, mtype, self._upload)
        grids = []
        for part in self.dm.parts:
            frame, inv, grid_info, nbins = cell_grid(np.zeros((3, 3)), (False, False, False), part.select_rcut,
                                                     x_host, np)
            grids.append((self._up(frame, np.float64), self._up(inv, np.float64), self._up(grid_info, np.int32),
                          nbins))
        return ws, grids

    def _launch(self, ws, pos, grids, atomic_virial: bool):
        """Device only: the neighbour lists, then the model; results stay on the device."""
        self._neighbour_lists(ws, pos, grids)
        # the overflow counters stay on the device until DeepPotential.step_done reads them
        return self.backend._evaluate_padded(self.state, ws, atomic_virial)

    def _fetch(self, out, atom_energy: bool, atomic_virial: bool) -> LammpsResults:
        """Device -> host: forces, energy, virial, and the per-atom outputs asked for."""
        forces = self._down(out.forces)
        energy = float(self._down(out.energy))
        virial = self._down(out.virial).reshape(3, 3)
        return LammpsResults(energy, forces, virial,
                             atom_energy=self._down(out.atom_energy) if atom_energy else None,
                             atom_virial=self._down(out.atom_virial) if atomic_virial else None)

    def _neighbour_lists(self, ws, pos, grids) -> None:
        """Per descriptor part: non-periodic cell list over all atoms, centres ``< nloc``.

        The bins come from the host positions (``_prepare``, no device read-back); the search box
        spans the local and ghost atoms, so every pair LAMMPS would list within rcut is found.
        """
        ctx, xp = self.ctx, self.xp
        nall, nloc = ws.nall, ws.nloc
        for part, pws, (frame_d, inv_d, info_d, nbins) in zip(self.dm.parts, ws.parts, grids):
            ctx.launch("cell_bin", pos, frame_d, inv_d, info_d, pws.pos_wrapped, pws.bin_of_atom, nall)
            bins = pws.bin_of_atom
            order = xp.argsort(bins, kind="stable") if xp is np else xp.argsort(bins)
            bin_atoms = xp.ascontiguousarray(order.astype(np.int32))
            bin_start = xp.ascontiguousarray(
                xp.searchsorted(bins[order], xp.arange(nbins + 1, dtype=np.int32)).astype(np.int32))
            ctx.launch("build_nlist", pws.pos_wrapped, frame_d, info_d, bins, bin_start, bin_atoms, ws.atype,
                       part.sec, part.model_exclude, pws.nlist, pws.rij, pws.key, pws.nnbr, part.counters, nall,
                       nloc, part.nnei, part.ntypes, part.nsec, nbins, part.select_rcut ** 2, MIN_R2)


class LammpsDeviceModels:
    """Several potentials on the same LAMMPS layout, back to back on the device (model deviation).

    ``paths``: one :class:`LammpsDevicePath` per model, the first driving the dynamics. A step
    uploads everything first (positions once, shared by all models; each model's types when
    they changed and its cell-list geometry), then runs every model's neighbour lists and
    pipeline with no transfer in between, then copies the results back: the first model's
    outputs and, for the others, forces, energy and virial (what the deviation needs).
    """

    def __init__(self, paths):
        self.paths = list(paths)
        self.last_step_bytes = (0, 0)

    def compute(self, x, mtypes, nlocal: int, *, atom_energy: bool = False,
                atomic_virial: bool = False) -> list[LammpsResults]:
        """``mtypes``: model types of the atoms for the first ``len(mtypes)`` models (each maps the
        LAMMPS types through its own type_map). Per-atom outputs of the first model only."""
        x = np.ascontiguousarray(x, dtype=np.float64).reshape(-1, 3)
        nall, nloc = len(x), int(nlocal)
        mtypes = [np.asarray(m, dtype=np.int64) for m in mtypes]
        if not 1 <= len(mtypes) <= len(self.paths):
            raise ValueError(f"{len(mtypes)} type arrays for {len(self.paths)} models")
        if any(len(m) != nall for m in mtypes) or not 0 <= nloc <= nall:
            raise ValueError(f"LAMMPS layout: {nall} positions, {[len(m) for m in mtypes]} types, nlocal {nloc}")
        paths = self.paths[:len(mtypes)]
        start = [(p.bytes_in, p.bytes_out) for p in paths]
        first = paths[0]
        # 1. host -> device
        staged = [p._prepare(x, m, nloc, nall, atomic_virial and k == 0)
                  for k, (p, m) in enumerate(zip(paths, mtypes))]
        pos = first.work.positions[:nall]
        first._upload(pos, x)
        # 2. device only, model after model
        outs = [p._launch(ws, pos, grids, atomic_virial and k == 0) for k, (p, (ws, grids)) in
                enumerate(zip(paths, staged))]
        # two atoms at one place: the first model's neighbour-list kernel recorded the pair in its
        # counters; two words read once every model is queued (the forces come back next anyway),
        # so a NaN result is never used: the error comes first
        first.backend.check_close_pairs(first.potential)
        # 3. device -> host
        results = [p._fetch(out, atom_energy and k == 0, atomic_virial and k == 0) for k, (p, out) in
                   enumerate(zip(paths, outs))]
        for p, (b_in, b_out) in zip(paths, start):
            p.last_step_bytes = (p.bytes_in - b_in, p.bytes_out - b_out)
            p.steps += 1
        self.last_step_bytes = tuple(int(sum(p.last_step_bytes[i] for p in paths)) for i in range(2))
        return results


__all__ = ["HEADROOM", "GrowingWorkspace", "LammpsDeviceModels", "LammpsDevicePath", "LammpsResults",
           "expected_step_bytes"]
