"""Turn a DeePMD-kit serialization tree into validated, typed model parameters.

Everything a later stage needs is checked here, once: unsupported features are refused with
an error that names the file, the field and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from .activations import TABULATABLE, check_activation
from .nets import Layer, Network

#: descriptor types this build evaluates and compresses
SUPPORTED_DESCRIPTORS = ("se_e2_a",)
#: newest serialization versions we know (newer files may change meaning: refuse them)
MAX_VERSION = {"Model": 2, "Descriptor": 3, "Fitting": 4, "NetworkCollection": 1}

_DESCRIPTOR_ALIASES = {"se_a": "se_e2_a", "se_e2_a": "se_e2_a"}


class _Ctx:
    """Carries the file name so every error can name it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, fieldname: str, found, fix: str, cls=UnsupportedModelError):
        return cls(f"{self.source}: field '{fieldname}' is {found!r}; {fix}")

    def get(self, tree: dict, key: str, where: str):
        if not isinstance(tree, dict) or key not in tree:
            raise ModelFormatError(f"{self.source}: missing field '{where}.{key}'; the model file is incomplete")
        return tree[key]

    def version(self, tree: dict, where: str) -> None:
        cls = tree.get("@class")
        ver = tree.get("@version")
        top = MAX_VERSION.get(cls)
        if top is not None and isinstance(ver, int) and ver > top:
            raise self.fail(
                f"{where}.@version", ver,
                f"this deepcomp reads {cls} versions up to {top}; upgrade deepcomp or save the model with "
                "DeePMD-kit 3.2",
            )


@dataclass(frozen=True)
class SeE2AParams:
    """se_e2_a (DeepPot-SE, two-body embedding with full radial+angular information)."""

    rcut: float
    rcut_smth: float
    sel: tuple[int, ...]
    axis_neuron: int
    type_one_side: bool
    exclude_types: frozenset
    env_protection: float
    davg: np.ndarray  # (ntypes, 4): statistics per centre type
    dstd: np.ndarray  # (ntypes, 4)
    embeddings: dict  # (centre, neighbour) or (neighbour,) -> Network
    neuron: tuple[int, ...]
    activation: str
    kind: str = field(default="se_e2_a")

    @property
    def ntypes(self) -> int:
        return len(self.sel)

    @property
    def nnei(self) -> int:
        return int(sum(self.sel))

    @property
    def ng(self) -> int:
        return self.neuron[-1]

    @property
    def dim_out(self) -> int:
        return self.ng * self.axis_neuron

    def net_key(self, ti: int, tj: int) -> tuple:
        return (tj,) if self.type_one_side else (ti, tj)

    def excluded(self, ti: int, tj: int) -> bool:
        return (ti, tj) in self.exclude_types


@dataclass(frozen=True)
class FittingParams:
    """Energy fitting: one net per atom type."""

    nets: tuple  # Network per type
    bias_atom_e: np.ndarray  # (ntypes,)
    exclude_types: frozenset


@dataclass(frozen=True)
class ModelParams:
    """A standard DeePMD-kit energy model."""

    type_map: tuple[str, ...]
    descriptor: SeE2AParams
    fitting: FittingParams
    out_bias: np.ndarray  # (ntypes,)
    atom_exclude_types: frozenset
    pair_exclude_types: frozenset
    min_nbor_dist: float | None
    source: str

    @property
    def ntypes(self) -> int:
        return len(self.type_map)

    @property
    def rcut(self) -> float:
        return self.descriptor.rcut


def _pairs(value) -> frozenset:
    """exclude_types [[a, b], ...] as a symmetric set of tuples."""
    out = set()
    for a, b in value or []:
        out.add((int(a), int(b)))
        out.add((int(b), int(a)))
    return frozenset(out)


def _layer(ctx: _Ctx, tree: dict, where: str, allow_idt: bool) -> Layer:
    var = ctx.get(tree, "@variables", where)
    w = np.asarray(ctx.get(var, "w", where + ".@variables"), dtype=np.float64)
    b = var.get("b")
    b = np.zeros(w.shape[1]) if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
    idt = var.get("idt")
    if idt is not None:
        if not allow_idt:
            raise ctx.fail(
                where + ".@variables.idt", "present (resnet_dt true)",
                "embedding nets with resnet_dt cannot be tabulated exactly; retrain with "
                "descriptor.resnet_dt false",
            )
        idt = np.asarray(idt, dtype=np.float64).reshape(-1)
    if w.ndim != 2 or b.shape != (w.shape[1],):
        raise ModelFormatError(f"{ctx.source}: {where}: weight shape {w.shape} and bias shape {b.shape} disagree")
    act = check_activation(tree.get("activation_function"), f"{ctx.source}: {where}")
    return Layer(w=w, b=b, idt=idt, activation=act, resnet=bool(tree.get("resnet", True)))


def _network(ctx: _Ctx, tree: dict, where: str, allow_idt: bool, tabulated: bool) -> Network:
    layers = ctx.get(tree, "layers", where)
    if tabulated:
        act = tree.get("activation_function")
        if check_activation(act, f"{ctx.source}: {where}") not in TABULATABLE:
            raise ctx.fail(
                where + ".activation_function", act,
                "embedding nets can be compressed with " + ", ".join(TABULATABLE),
            )
    return Network(tuple(_layer(ctx, lt, f"{where}.layers[{i}]", allow_idt) for i, lt in enumerate(layers)))


def _collection(ctx: _Ctx, tree: dict, where: str, allow_idt: bool, tabulated: bool) -> dict:
    """NetworkCollection -> {key tuple: Network}; flat index = sum(t_k * ntypes**k)."""
    ctx.version(tree, where)
    ndim = int(ctx.get(tree, "ndim", where))
    ntypes = int(ctx.get(tree, "ntypes", where))
    nets = ctx.get(tree, "networks", where)
    out = {}
    for flat, net in enumerate(nets):
        if net is None:
            continue
        key = tuple((flat // ntypes**k) % ntypes for k in range(ndim))
        out[key] = _network(ctx, net, f"{where}.networks[{flat}]", allow_idt, tabulated)
    return out


def _stat_per_type(ctx: _Ctx, arr, where: str, ncomp: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] != ncomp:
        raise ModelFormatError(f"{ctx.source}: {where} has shape {a.shape}, expected (ntypes, nnei, {ncomp})")
    if a.shape[1] and not np.all(a == a[:, :1, :]):
        raise ctx.fail(
            where, "different statistics per neighbour slot",
            "deepcomp assumes DeePMD-kit's statistics, equal for every slot",
        )
    return a[:, 0, :].copy()


def _descriptor(ctx: _Ctx, tree: dict, ntypes: int):
    where = "model.descriptor"
    ctx.version(tree, where)
    kind = tree.get("type")
    canon = _DESCRIPTOR_ALIASES.get(kind)
    if canon is None:
        raise ctx.fail(
            where + ".type", kind,
            "supported descriptors: " + ", ".join(SUPPORTED_DESCRIPTORS),
        )
    if tree.get("spin") is not None:
        raise ctx.fail(where + ".spin", tree.get("spin"), "spin models are not supported")
    env = tree.get("env_mat") or {}
    if env.get("use_exp_switch"):
        raise ctx.fail(where + ".env_mat.use_exp_switch", True, "only the polynomial switch is supported")
    if tree.get("resnet_dt"):
        raise ctx.fail(
            where + ".resnet_dt", True,
            "embedding nets with resnet_dt cannot be tabulated exactly; retrain with resnet_dt false",
        )
    sel = tuple(int(s) for s in ctx.get(tree, "sel", where))
    if len(sel) != ntypes:
        raise ctx.fail(where + ".sel", list(sel), f"expected one entry per type ({ntypes} types)", ModelFormatError)
    variables = ctx.get(tree, "@variables", where)
    tos = bool(tree.get("type_one_side", False))
    emb = _collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", False, True)
    neuron = tuple(int(n) for n in ctx.get(tree, "neuron", where))
    needed = [(t,) for t in range(ntypes)] if tos else [(a, b) for a in range(ntypes) for b in range(ntypes)]
    excl = _pairs(tree.get("exclude_types"))
    for key in needed:
        if key not in emb and not (len(key) == 2 and key in excl):
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings has no network for type key {key}")
    for key, net in emb.items():
        if net.n_in != 1:
            raise ModelFormatError(f"{ctx.source}: embedding net {key} has input width {net.n_in}, expected 1")
    return SeE2AParams(
        rcut=float(ctx.get(tree, "rcut", where)),
        rcut_smth=float(ctx.get(tree, "rcut_smth", where)),
        sel=sel,
        axis_neuron=int(ctx.get(tree, "axis_neuron", where)),
        type_one_side=tos,
        exclude_types=excl,
        env_protection=float(tree.get("env_protection", 0.0) or 0.0),
        davg=_stat_per_type(ctx, ctx.get(variables, "davg", where + ".@variables"), where + ".@variables.davg", 4),
        dstd=_stat_per_type(ctx, ctx.get(variables, "dstd", where + ".@variables"), where + ".@variables.dstd", 4),
        embeddings=emb,
        neuron=neuron,
        activation=check_activation(tree.get("activation_function"), f"{ctx.source}: {where}"),
    )


def _fitting(ctx: _Ctx, tree: dict, ntypes: int, dim_descrpt: int) -> FittingParams:
    where = "model.fitting"
    ctx.version(tree, where)
    if tree.get("type") != "ener":
        raise ctx.fail(where + ".type", tree.get("type"), "only energy ('ener') fitting is supported")
    for key in ("numb_fparam", "numb_aparam", "dim_case_embd"):
        if int(tree.get(key) or 0) != 0:
            raise ctx.fail(where + "." + key, tree.get(key), "frame/atomic parameters are not supported yet")
    if tree.get("mixed_types"):
        raise ctx.fail(where + ".mixed_types", True, "a shared fitting net is only used with se_atten descriptors")
    if int(tree.get("dim_out", 1)) != 1:
        raise ctx.fail(where + ".dim_out", tree.get("dim_out"), "energy fitting must have one output")
    nets = _collection(ctx, ctx.get(tree, "nets", where), where + ".nets", True, False)
    per_type = []
    for t in range(ntypes):
        net = nets.get((t,))
        if net is not None and net.n_in != dim_descrpt:
            raise ModelFormatError(
                f"{ctx.source}: fitting net of type {t} takes {net.n_in} inputs, descriptor gives {dim_descrpt}"
            )
        per_type.append(net)
    bias = np.asarray(ctx.get(tree, "@variables", where).get("bias_atom_e"), dtype=np.float64).reshape(ntypes, -1)
    return FittingParams(nets=tuple(per_type), bias_atom_e=bias[:, 0].copy(), exclude_types=frozenset(
        int(t) for t in tree.get("exclude_types") or []))


def parse_model(tree: dict, source: str = "<model>") -> ModelParams:
    """Validate a DeePMD-kit serialization tree and return :class:`ModelParams`."""
    ctx = _Ctx(str(source))
    model = ctx.get(tree, "model", "")
    ctx.version(model, "model")
    mtype = model.get("type", "standard")
    if mtype != "standard":
        raise ctx.fail("model.type", mtype, "only standard energy models are supported (no zbl, spin, multitask)")
    type_map = tuple(str(t) for t in ctx.get(model, "type_map", "model"))
    ntypes = len(type_map)
    descriptor = _descriptor(ctx, ctx.get(model, "descriptor", "model"), ntypes)
    fitting = _fitting(ctx, ctx.get(model, "fitting", "model"), ntypes, descriptor.dim_out)
    variables = model.get("@variables") or {}
    out_bias = variables.get("out_bias")
    out_bias = np.zeros(ntypes) if out_bias is None else np.asarray(out_bias, dtype=np.float64).reshape(-1, ntypes)[0]
    mnd = tree.get("min_nbor_dist")
    if mnd is None:
        mnd = (tree.get("@variables") or {}).get("min_nbor_dist")
    if mnd is None:
        mnd = (tree.get("constants") or {}).get("min_nbor_dist")
    mnd = None if mnd is None else float(np.asarray(mnd))
    if mnd is not None and mnd <= 0:
        mnd = None  # DeePMD-kit writes -1 for "unknown"
    return ModelParams(
        type_map=type_map,
        descriptor=descriptor,
        fitting=fitting,
        out_bias=out_bias,
        atom_exclude_types=frozenset(int(t) for t in model.get("atom_exclude_types") or []),
        pair_exclude_types=_pairs(model.get("pair_exclude_types")),
        min_nbor_dist=mnd,
        source=ctx.source,
    )
