"""The evaluation plan: everything a backend needs about a model, built once at load time.

:func:`build_plan` turns validated model parameters (and the compressed file's tables) into a
frozen :class:`ModelPlan` with one :class:`PartPlan` per descriptor part. Backends read the plan
only (see :mod:`deepcomp_ase.backends.base`); the decisions that depend on which descriptor a
part is are taken here, from the descriptor's properties, so that no backend switches on a
descriptor name:

* ``kernel``: which family of compiled kernels evaluates the part ("se_a", "se_atten", "se_r",
  "se_e3");
* ``net_index``: the table (and exact net) index of every (centre type, neighbour type);
* the exclusion sets and masks of the neighbour selection;
* the padding fold (the constant contribution of padding slots);
* ``tables``: one :class:`TableSpec` per net, in ``keys`` order, shared by numba and CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .descriptors import make_evaluator
from .descriptors.se_atten_v2 import type_pair_rows
from .descriptors.se_e2_a import padding_fold
from .descriptors.se_e2_r import RESCALE as SE_R_RESCALE
from .embedding import ExactEmbedding, TabulatedEmbedding
from .errors import DeepCompError, TableFormatError
from .model.parts import descriptor_parts, embedding_tables_for, table_name
from .overflow import OverflowTally

#: kernel family of each descriptor kind (the only place a backend-facing choice uses ``kind``)
_KERNELS = {"se_e2_a": "se_a", "se_atten_v2": "se_atten", "se_e2_r": "se_r", "se_e3": "se_e3", "dpa1": "dpa1"}


@dataclass(frozen=True)
class TableSpec:
    """One embedding-net table, by name (the layout of :class:`compress.tables.Table`).

    Intervals: ``n_low`` of width ``stride1`` from ``xmin``, ``first_stride`` of width
    ``stride0`` from ``lower``, the rest of width ``stride1`` from ``upper`` up to ``xmax``;
    ``split_intervals`` are evaluated on the host (relu kinks). ``table`` evaluates on the host.
    """

    key: tuple
    lower: float
    upper: float
    xmax: float
    xmin: float
    stride0: float
    stride1: float
    nspline: int
    first_stride: int
    n_low: int
    ng: int
    split_intervals: np.ndarray  # int64 interval indices
    table: object  # compress.tables.Table

    @classmethod
    def of(cls, key: tuple, t) -> TableSpec:
        return cls(key=tuple(key), lower=float(t.lower), upper=float(t.upper), xmax=float(t.xmax),
                   xmin=float(t.xmin), stride0=float(t.stride0), stride1=float(t.stride1), nspline=int(t.nspline),
                   first_stride=int(t.first_stride), n_low=int(t.n_low), ng=int(t.ng),
                   split_intervals=np.asarray(t.split_intervals, dtype=np.int64), table=t)

    @property
    def coeffs(self) -> np.ndarray:
        """(nspline, ng, 6) float64 (DeePMD-kit's layout)."""
        return self.table.coeffs

    @property
    def sub_start(self) -> np.ndarray:
        """Ascending start of every linear sub-piece of the relu-split intervals."""
        return self.table.sub_start

    @property
    def sub_coeffs(self) -> np.ndarray:
        """(n, ng, 6) coefficients of the sub-pieces (the layout of ``coeffs``)."""
        return self.table.sub_coeffs


@dataclass(frozen=True)
class TypeTerm:
    """se_atten_v2's strip-net type-pair term and the type embedding appended to the descriptor."""

    table: np.ndarray  # (rows, ng): strip net output per type pair
    rows: np.ndarray  # (ntypes, ntypes) int64: row of every (centre type, neighbour type)
    tf_switch: bool  # TensorFlow's smoothing of the term (descriptors/se_atten_v2.py)
    tebd: np.ndarray  # (ntypes, tebd_dim) appended columns (tebd_dim 0 when not concatenated)


@dataclass(frozen=True)
class PartPlan:
    """One non-hybrid descriptor part, ready for any backend."""

    index: int  # position among the model's parts (their descriptors are concatenated in order)
    prefix: str  # table-name prefix in the compressed file
    descriptor: object  # the part's parameters (model/params.py), read-only
    kernel: str  # "se_a", "se_atten", "se_r" or "se_e3"
    mixed_types: bool  # one selection over all types (nsec == 1)
    padding: str  # "angular", "radial" or "none" (descriptor property)
    ntypes: int
    nsec: int  # neighbour sections: 1 when mixed_types, else ntypes
    sel: np.ndarray  # (nsec,) int64
    nnei: int
    ng: int  # embedding width
    m2: int  # axis_neuron (1 for descriptors without one)
    dim_out: int  # descriptor columns of this part
    scale: float  # factor of the descriptor sum: 1/nnei, se_e2_r's 0.2/nnei
    rcut: float
    rcut_smth: float
    env_protection: float
    davg: np.ndarray
    dstd: np.ndarray
    select_rcut: float  # cutoff of the neighbour selection (a DPA-1 part of a hybrid: the hybrid's)
    keys: tuple  # net keys, sorted: the order of nets, tables and table indices
    net_index: np.ndarray  # (ntypes, ntypes) int64: net of (centre type, neighbour type), -1 none
    section_index: np.ndarray  # (ntypes, nsec) int32: net of (centre type, section), -1 when off
    e3_index: np.ndarray  # (nsec, nsec) int32: se_e3's net of a section pair (-1 elsewhere)
    select_exclude: frozenset  # type pairs the selection drops (they leave no slot)
    slot_exclude: frozenset  # type pairs that keep their slot but contribute nothing
    select_exclude_mask: np.ndarray  # (ntypes, ntypes) bool
    slot_exclude_mask: np.ndarray  # (ntypes, ntypes) bool
    pad: dict  # {(centre type, section): (x_pad, G(x_pad))}
    pad_fold: np.ndarray  # (ntypes, nsec, ng): padding contribution per padding slot
    nets: tuple  # exact embedding nets in ``keys`` order
    tables: tuple | None  # TableSpec per key, None for the uncompressed model
    type_term: TypeTerm | None  # se_atten_v2 only
    evaluator: object  # the numpy reference's descriptor evaluator
    embed: object  # embedding provider of the evaluator (exact nets or tables)

    @property
    def compressed(self) -> bool:
        return self.tables is not None

    @property
    def tebd_dim(self) -> int:
        return 0 if self.type_term is None else self.type_term.tebd.shape[1]

    @property
    def selection_key(self) -> tuple:
        """What DeePMD-kit's neighbour selection of this part depends on besides the atoms:
        parts (of any models) with equal keys select the same pairs from the same input."""
        return (float(self.select_rcut), tuple(int(s) for s in self.sel), bool(self.mixed_types), self.slot_exclude,
                self.select_exclude)


@dataclass(frozen=True)
class ModelPlan:
    """A whole model: its parts, and the parameters of the fitting stage."""

    params: object  # ModelParams (fitting nets, out_bias, atom exclusions, type_map)
    parts: tuple  # PartPlan per descriptor part
    compressed: bool
    block_atoms: int | None  # numpy reference: centre atoms per block (None: the descriptors' own)

    @property
    def rcut(self) -> float:
        return self.params.rcut

    @property
    def ntypes(self) -> int:
        return self.parts[0].ntypes

    @property
    def dim_out(self) -> int:
        return sum(p.dim_out for p in self.parts)


def _mask(pairs, nt: int) -> np.ndarray:
    out = np.zeros((nt, nt), dtype=np.bool_)
    for a, b in pairs:
        out[a, b] = True
    return out


def _part_plan(k: int, prefix: str, d, params, tables: dict | None, scratch: OverflowTally) -> PartPlan:
    if tables is None:
        embed = ExactEmbedding(d.embeddings)
    else:
        part_tables = embedding_tables_for(d, prefix, tables)
        missing = [key for key in d.embeddings if key not in part_tables]
        if missing:
            raise DeepCompError(f"{params.source}: no table for the {prefix} embedding nets {missing}; the file "
                                "does not match its model, compress the original model again")
        for key, t in part_tables.items():
            if t.ng != d.ng:
                raise TableFormatError(f"{params.source}: table {table_name(prefix, key)} has {t.ng} outputs, the "
                                       f"embedding net {d.ng}; the file is damaged, compress the model again")
        embed = TabulatedEmbedding(part_tables, d.embeddings, scratch)
    evaluator = make_evaluator(d, embed)
    kernel = _KERNELS[d.kind]
    nt = d.ntypes
    nsec = 1 if d.mixed_types else nt
    keys = tuple(sorted(d.embeddings))
    index = {key: n for n, key in enumerate(keys)}
    three_body = d.three_body  # se_e3: nets belong to pairs of neighbour sections
    net_index = np.full((nt, nt), -1, dtype=np.int64)
    section_index = np.full((nt, nsec), -1, dtype=np.int32)
    e3_index = np.full((nsec, nsec), -1, dtype=np.int32)
    for ti in range(nt):
        for tj in range(nt):
            if not three_body and (d.mixed_types or not d.excluded(ti, tj)):
                net_index[ti, tj] = index.get(d.net_key(ti, tj), -1)
        for t in range(nsec):
            if d.sel[t] <= 0:
                continue
            if three_body:  # sections only switch on
                section_index[ti, t] = 0 if not d.excluded(ti, t) else -1
            else:
                section_index[ti, t] = net_index[ti, t]
    if three_body:
        for (t1, t2), n in index.items():
            e3_index[t1, t2] = e3_index[t2, t1] = n
    # se_atten turns excluded pairs into non-neighbours (model-level semantics); the others keep the slot
    model_excl = frozenset(params.pair_exclude_types)
    keeps_slot = getattr(d, "exclusion_keeps_slot", not d.mixed_types)
    select_exclude = model_excl if keeps_slot else (model_excl | d.exclude_types)
    slot_exclude = frozenset(d.exclude_types) if keeps_slot else frozenset()
    pad = evaluator.pad if d.padding != "none" else {}
    type_term = None
    if kernel == "se_atten":
        tebd = (np.asarray(d.type_embedding[:nt], dtype=np.float64) if d.concat_output_tebd
                else np.zeros((nt, 0)))
        type_term = TypeTerm(table=np.asarray(d.type_pair_table, dtype=np.float64), rows=type_pair_rows(d),
                             tf_switch=bool(d.tf_switch), tebd=tebd)
    scale = (SE_R_RESCALE if d.padding == "radial" else 1.0) / d.nnei
    return PartPlan(
        index=k, prefix=prefix, descriptor=d, kernel=kernel, mixed_types=bool(d.mixed_types), padding=d.padding,
        ntypes=nt, nsec=nsec, sel=np.asarray(d.sel, dtype=np.int64), nnei=int(d.nnei), ng=int(d.ng),
        m2=int(getattr(d, "axis_neuron", 1)), dim_out=int(d.dim_out), scale=scale, rcut=float(d.rcut),
        rcut_smth=float(d.rcut_smth), env_protection=float(d.env_protection),
        davg=np.ascontiguousarray(d.davg, dtype=np.float64), dstd=np.ascontiguousarray(d.dstd, dtype=np.float64),
        select_rcut=float(getattr(d, "select_rcut", None) or d.rcut),
        keys=keys, net_index=net_index, section_index=section_index, e3_index=e3_index,
        select_exclude=select_exclude, slot_exclude=slot_exclude, select_exclude_mask=_mask(select_exclude, nt),
        slot_exclude_mask=_mask(slot_exclude, nt), pad=pad,
        pad_fold=padding_fold(pad, d.padding == "radial", (nt, nsec, d.ng)),
        nets=tuple(d.embeddings[key] for key in keys),
        tables=None if tables is None else tuple(TableSpec.of(key, embed.tables[key]) for key in keys),
        type_term=type_term, evaluator=evaluator, embed=embed)


def build_plan(params, tables: dict | None = None, tally: OverflowTally | None = None,
               block_atoms: int | None = None) -> ModelPlan:
    """The plan of a model; ``tables`` by file name (None: the exact nets).

    Table lookups of the numpy evaluators are counted into ``tally``; the padding rows, evaluated
    once here, are not.
    """
    scratch = OverflowTally()
    parts = tuple(_part_plan(k, prefix, d, params, tables, scratch)
                  for k, (prefix, d) in enumerate(descriptor_parts(params)))
    if tally is not None:
        for part in parts:
            if part.compressed:
                part.embed.tally = tally
    return ModelPlan(params=params, parts=parts, compressed=tables is not None, block_atoms=block_atoms)
