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
SUPPORTED_DESCRIPTORS = ("se_e2_a", "se_e2_r", "se_e3", "se_atten_v2", "dpa1", "se_atten", "hybrid")
#: newest serialization versions we know (newer files may change meaning: refuse them)
MAX_VERSION = {"Model": 2, "Descriptor": 3, "Fitting": 4, "NetworkCollection": 1}

_DESCRIPTOR_ALIASES = {
    "se_a": "se_e2_a", "se_e2_a": "se_e2_a",
    "se_r": "se_e2_r", "se_e2_r": "se_e2_r",
    "se_e3": "se_e3", "se_at": "se_e3", "se_a_3be": "se_e3", "se_t": "se_e3",
    "se_atten_v2": "se_atten_v2",
    "dpa1": "dpa1", "se_atten": "dpa1",
    "hybrid": "hybrid",
}


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

    # descriptor properties (DeePMD-kit's descriptor interface: mixed_types(), get_dim_out()):
    # backends and the evaluation plan read these instead of switching on ``kind``.
    #: neighbours of every type share one selection of the sel nearest (False: sel[t] per type)
    mixed_types = False
    #: what padding slots (fewer neighbours than sel) contribute: "angular" (n_pad G(x_pad) x_pad
    #: in column 0 of T), "radial" (n_pad G(x_pad) added to D) or "none"
    padding = "angular"
    #: embedding nets of neighbour-pair angles e_jk (se_e3; tables reach below lower) instead of s_ij
    three_body = False

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
class SeE2RParams:
    """se_e2_r: radial-only two-body embedding, D = (1/5N) sum_j G(s_j)."""

    rcut: float
    rcut_smth: float
    sel: tuple[int, ...]
    type_one_side: bool
    exclude_types: frozenset
    env_protection: float
    davg: np.ndarray  # (ntypes, 1)
    dstd: np.ndarray  # (ntypes, 1)
    embeddings: dict
    neuron: tuple[int, ...]
    activation: str
    kind: str = field(default="se_e2_r")

    mixed_types = False  # descriptor properties: see SeE2AParams
    padding = "radial"
    three_body = False

    ntypes = SeE2AParams.ntypes
    nnei = SeE2AParams.nnei
    ng = SeE2AParams.ng
    net_key = SeE2AParams.net_key
    excluded = SeE2AParams.excluded

    @property
    def dim_out(self) -> int:
        return self.ng


@dataclass(frozen=True)
class SeE3Params:
    """se_e3: three-body embedding of the angular products e_jk = rho_j . rho_k."""

    rcut: float
    rcut_smth: float
    sel: tuple[int, ...]
    exclude_types: frozenset
    env_protection: float
    davg: np.ndarray  # (ntypes, 4)
    dstd: np.ndarray  # (ntypes, 4)
    embeddings: dict  # (t1, t2) with t1 <= t2 (neighbour types) -> Network
    neuron: tuple[int, ...]
    activation: str
    kind: str = field(default="se_e3")

    mixed_types = False  # descriptor properties: see SeE2AParams
    padding = "none"
    three_body = True

    ntypes = SeE2AParams.ntypes
    nnei = SeE2AParams.nnei
    ng = SeE2AParams.ng
    excluded = SeE2AParams.excluded
    type_one_side = False

    @property
    def dim_out(self) -> int:
        return self.ng


@dataclass(frozen=True)
class SeAttenV2Params:
    """se_atten_v2 (DPA-1, strip mode, smooth type embedding) without attention layers."""

    rcut: float
    rcut_smth: float
    nsel: int
    ntypes_model: int
    axis_neuron: int
    type_one_side: bool
    concat_output_tebd: bool
    exclude_types: frozenset
    env_protection: float
    davg: np.ndarray  # (ntypes, 4)
    dstd: np.ndarray  # (ntypes, 4)
    embeddings: dict  # {(): Network} geometric net
    type_embedding: np.ndarray  # (ntypes + 1, tebd_dim), last row = padding type (zeros)
    type_pair_table: np.ndarray  # strip net output: ((ntypes+1)**2 or ntypes+1, ng)
    neuron: tuple[int, ...]
    activation: str
    tf_switch: bool = False  # TensorFlow's se_atten_v2 smooths the type term differently (see se_atten_v2.py)
    kind: str = field(default="se_atten_v2")

    mixed_types = True  # descriptor properties: see SeE2AParams
    padding = "angular"
    three_body = False

    @property
    def ntypes(self) -> int:
        return self.ntypes_model

    @property
    def sel(self) -> tuple[int, ...]:
        return (self.nsel,)

    @property
    def nnei(self) -> int:
        return self.nsel

    @property
    def ng(self) -> int:
        return self.neuron[-1]

    @property
    def tebd_dim(self) -> int:
        return self.type_embedding.shape[1]

    @property
    def dim_out(self) -> int:
        return self.ng * self.axis_neuron + (self.tebd_dim if self.concat_output_tebd else 0)

    def excluded(self, ti: int, tj: int) -> bool:
        return (ti, tj) in self.exclude_types

    def net_key(self, ti: int, tj: int) -> tuple:
        """One geometric net for every type pair (the type dependence is the strip term)."""
        return ()

    def type_pair_row(self, ti, tj):
        """Row of the strip-net table for centre ti and neighbour tj (arrays allowed)."""
        if self.type_one_side:
            return tj
        return ti * (self.ntypes + 1) + tj


@dataclass(frozen=True)
class HybridParams:
    """Concatenation of several descriptors, each with its own rcut and sel."""

    parts: tuple
    kind: str = field(default="hybrid")

    @property
    def rcut(self) -> float:
        return max(p.rcut for p in self.parts)

    @property
    def dim_out(self) -> int:
        return sum(p.dim_out for p in self.parts)


@dataclass(frozen=True)
class FittingParams:
    """Energy fitting: one net per atom type."""

    nets: tuple  # Network per type (None where the type has no net)
    shared: Network | None  # one net for all types (mixed_types, se_atten)
    bias_atom_e: np.ndarray  # (ntypes,)
    exclude_types: frozenset


@dataclass(frozen=True)
class ModelParams:
    """A standard DeePMD-kit energy model."""

    type_map: tuple[str, ...]
    descriptor: SeE2AParams | SeE2RParams | SeE3Params | SeAttenV2Params | HybridParams
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


def _common_checks(ctx: _Ctx, tree: dict, where: str) -> None:
    ctx.version(tree, where)
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


def _sel(ctx: _Ctx, tree: dict, where: str, ntypes: int) -> tuple[int, ...]:
    sel = tuple(int(v) for v in ctx.get(tree, "sel", where))
    if len(sel) != ntypes:
        raise ctx.fail(where + ".sel", list(sel), f"expected one entry per type ({ntypes} types)", ModelFormatError)
    return sel


def _embeddings(ctx: _Ctx, tree: dict, where: str, needed) -> dict:
    emb = _collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", False, True)
    for key in needed:
        if key not in emb:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings has no network for type key {key}")
    for key, net in emb.items():
        if net.n_in != 1:
            raise ModelFormatError(f"{ctx.source}: embedding net {key} has input width {net.n_in}, expected 1")
    return emb


def _geometry(ctx: _Ctx, tree: dict, where: str, ncomp: int) -> dict:
    variables = ctx.get(tree, "@variables", where)
    return dict(
        rcut=float(ctx.get(tree, "rcut", where)),
        rcut_smth=float(ctx.get(tree, "rcut_smth", where)),
        env_protection=float(tree.get("env_protection", 0.0) or 0.0),
        davg=_stat_per_type(ctx, ctx.get(variables, "davg", where + ".@variables"), where + ".@variables.davg", ncomp),
        dstd=_stat_per_type(ctx, ctx.get(variables, "dstd", where + ".@variables"), where + ".@variables.dstd", ncomp),
        neuron=tuple(int(n) for n in ctx.get(tree, "neuron", where)),
        activation=check_activation(tree.get("activation_function"), f"{ctx.source}: {where}"),
    )


def _se_e2_a(ctx: _Ctx, tree: dict, where: str, ntypes: int) -> SeE2AParams:
    tos = bool(tree.get("type_one_side", False))
    excl = _pairs(tree.get("exclude_types"))
    needed = [(t,) for t in range(ntypes)] if tos else [
        (a, b) for a in range(ntypes) for b in range(ntypes) if (a, b) not in excl]
    return SeE2AParams(
        sel=_sel(ctx, tree, where, ntypes), axis_neuron=int(ctx.get(tree, "axis_neuron", where)),
        type_one_side=tos, exclude_types=excl, embeddings=_embeddings(ctx, tree, where, needed),
        **_geometry(ctx, tree, where, 4),
    )


def _se_e2_r(ctx: _Ctx, tree: dict, where: str, ntypes: int) -> SeE2RParams:
    tos = bool(tree.get("type_one_side", False))
    excl = _pairs(tree.get("exclude_types"))
    needed = [(t,) for t in range(ntypes)] if tos else [
        (a, b) for a in range(ntypes) for b in range(ntypes) if (a, b) not in excl]
    return SeE2RParams(
        sel=_sel(ctx, tree, where, ntypes), type_one_side=tos, exclude_types=excl,
        embeddings=_embeddings(ctx, tree, where, needed), **_geometry(ctx, tree, where, 1),
    )


def _se_e3(ctx: _Ctx, tree: dict, where: str, ntypes: int) -> SeE3Params:
    excl = _pairs(tree.get("exclude_types"))
    needed = [(a, b) for a in range(ntypes) for b in range(a, ntypes)]
    emb = _embeddings(ctx, tree, where, needed)
    # only t1 <= t2 nets are used (DeePMD-kit stores zero nets in the other slots)
    emb = {k: v for k, v in emb.items() if k[0] <= k[1]}
    return SeE3Params(sel=_sel(ctx, tree, where, ntypes), exclude_types=excl, embeddings=emb,
                      **_geometry(ctx, tree, where, 4))


def _se_atten_v2(ctx: _Ctx, tree: dict, where: str, ntypes: int, backend: str = "") -> SeAttenV2Params:
    attn_layer = int(tree.get("attn_layer", 0) or 0)
    if attn_layer != 0:
        raise ctx.fail(
            where + ".attn_layer", attn_layer,
            "only se_atten_v2 models without attention layers (attn_layer 0) can be tabulated: with attention "
            "the embedding is no longer a function of one scalar per neighbour. Retrain with attn_layer 0",
        )
    if tree.get("use_econf_tebd"):
        raise ctx.fail(where + ".use_econf_tebd", True, "electronic-configuration type embeddings are not supported")
    sel = ctx.get(tree, "sel", where)
    nsel = int(sel[0] if isinstance(sel, (list, tuple)) else sel)
    if isinstance(sel, (list, tuple)) and len(sel) != 1:
        raise ctx.fail(where + ".sel", sel, "se_atten_v2 takes one sel for all types", ModelFormatError)
    geo = _geometry(ctx, tree, where, 4)
    emb = _collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", False, True)
    if () not in emb or emb[()].n_in != 1:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings must hold one scalar-input network")
    strip = _collection(ctx, ctx.get(tree, "embeddings_strip", where), where + ".embeddings_strip", False, False)
    if () not in strip:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip must hold one network")
    te_tree = ctx.get(tree, "type_embedding", where)
    te_net = _network(ctx, ctx.get(te_tree, "embedding", where + ".type_embedding"), where + ".type_embedding.embedding",
                      False, False)
    if te_net.n_in != ntypes:
        raise ctx.fail(where + ".type_embedding.embedding.in_dim", te_net.n_in,
                       f"expected a one-hot input of {ntypes} types")
    te = te_net(np.eye(ntypes))
    if te_tree.get("padding", True):
        te = np.concatenate([te, np.zeros((1, te.shape[1]))])
    else:
        raise ctx.fail(where + ".type_embedding.padding", False, "a padded type embedding is expected")
    tos = bool(tree.get("type_one_side", False))
    if tos:
        table = strip[()](te)
    else:
        nt1 = ntypes + 1
        centre, nbr = np.divmod(np.arange(nt1 * nt1), nt1)
        table = strip[()](np.concatenate([te[nbr], te[centre]], axis=1))
    if table.shape[1] != geo["neuron"][-1]:
        raise ModelFormatError(f"{ctx.source}: {where}: strip net width {table.shape[1]} differs from the embedding net")
    return SeAttenV2Params(
        nsel=nsel, ntypes_model=ntypes, axis_neuron=int(ctx.get(tree, "axis_neuron", where)), type_one_side=tos,
        concat_output_tebd=bool(tree.get("concat_output_tebd", True)), exclude_types=_pairs(tree.get("exclude_types")),
        embeddings=emb, type_embedding=te, type_pair_table=table, tf_switch=backend.lower() == "tensorflow", **geo,
    )


_PARSERS = {"se_e2_a": _se_e2_a, "se_e2_r": _se_e2_r, "se_e3": _se_e3, "se_atten_v2": _se_atten_v2}


def _descriptor(ctx: _Ctx, tree: dict, ntypes: int, where: str = "model.descriptor", backend: str = ""):
    kind = tree.get("type") if isinstance(tree, dict) else None
    canon = _DESCRIPTOR_ALIASES.get(kind)
    if canon is None:
        raise ctx.fail(
            where + ".type", kind,
            "supported descriptors: " + ", ".join(SUPPORTED_DESCRIPTORS),
        )
    if canon == "hybrid":
        ctx.version(tree, where)
        parts = ctx.get(tree, "list", where)
        if not parts:
            raise ctx.fail(where + ".list", parts, "a hybrid descriptor needs at least one part", ModelFormatError)
        out = []
        for k, sub in enumerate(parts):
            if isinstance(sub, dict) and sub.get("type") == "hybrid":
                raise ctx.fail(f"{where}.list[{k}].type", "hybrid", "nested hybrid descriptors are not supported")
            out.append(_descriptor(ctx, sub, ntypes, f"{where}.list[{k}]", backend))
        top = max(p.rcut for p in out)
        # a DPA-1 part selects its neighbours within the hybrid's cutoff (params_dpa1.Dpa1Params.select_rcut)
        return HybridParams(parts=tuple(p.in_hybrid(top) if hasattr(p, "in_hybrid") else p for p in out))
    _common_checks(ctx, tree, where)
    if canon == "dpa1" or (canon == "se_atten_v2" and int(tree.get("attn_layer", 0) or 0) != 0):
        from .params_dpa1 import parse_dpa1  # DPA-1 with attention layers (its own module; imports this one)

        return parse_dpa1(ctx, tree, where, ntypes)
    if canon == "se_atten_v2":
        return _se_atten_v2(ctx, tree, where, ntypes, backend)
    return _PARSERS[canon](ctx, tree, where, ntypes)


def _fitting(ctx: _Ctx, tree: dict, ntypes: int, dim_descrpt: int) -> FittingParams:
    where = "model.fitting"
    ctx.version(tree, where)
    if tree.get("type") != "ener":
        raise ctx.fail(where + ".type", tree.get("type"), "only energy ('ener') fitting is supported")
    for key in ("numb_fparam", "numb_aparam", "dim_case_embd"):
        if int(tree.get(key) or 0) != 0:
            raise ctx.fail(where + "." + key, tree.get(key), "frame/atomic parameters are not supported yet")
    if int(tree.get("dim_out", 1)) != 1:
        raise ctx.fail(where + ".dim_out", tree.get("dim_out"), "energy fitting must have one output")
    nets = _collection(ctx, ctx.get(tree, "nets", where), where + ".nets", True, False)
    shared = nets.get(())
    if shared is not None and shared.n_in != dim_descrpt:
        raise ModelFormatError(
            f"{ctx.source}: the shared fitting net takes {shared.n_in} inputs, descriptor gives {dim_descrpt}")
    per_type = []
    for t in range(ntypes):
        net = nets.get((t,))
        if net is not None and net.n_in != dim_descrpt:
            raise ModelFormatError(
                f"{ctx.source}: fitting net of type {t} takes {net.n_in} inputs, descriptor gives {dim_descrpt}"
            )
        per_type.append(net)
    bias = np.asarray(ctx.get(tree, "@variables", where).get("bias_atom_e"), dtype=np.float64).reshape(ntypes, -1)
    if shared is None and all(n is None for n in per_type):
        raise ModelFormatError(f"{ctx.source}: {where}.nets holds no fitting network")
    return FittingParams(nets=tuple(per_type), shared=shared, bias_atom_e=bias[:, 0].copy(), exclude_types=frozenset(
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
    descriptor = _descriptor(ctx, ctx.get(model, "descriptor", "model"), ntypes,
                             backend=str(tree.get("backend") or ""))
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
