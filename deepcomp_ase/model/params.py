"""Turn a DeePMD-kit serialization tree into validated, typed model parameters.

Everything a later stage needs is checked here, once: unsupported features are refused with
an error that names the file, the field and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from ..compress.dp_tables import (EXTRAPOLATION_FLAG, descriptor_tables, table_prefix, type_embd_table,
                                  with_table_networks)
from .activations import TABULATABLE, check_activation
from .nets import Layer, Network
from ..io.untrusted import one_line_errors
from .ranges import check_model_ranges
from .tree_check import describe, ignore, skip, track, unread

#: descriptor types this build evaluates and compresses
SUPPORTED_DESCRIPTORS = ("se_e2_a", "se_e2_r", "se_e3", "se_atten_v2", "dpa1", "se_atten", "hybrid")
#: newest serialization versions we know (newer files may change meaning: refuse them)
MAX_VERSION = {"Model": 2, "Descriptor": 3, "Fitting": 4, "NetworkCollection": 1, "EmbeddingNetwork": 2,
               "FittingNetwork": 1, "Layer": 2, "TypeEmbedNet": 2, "NeighborGatedAttention": 1}

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
            raise ModelFormatError(f"{self.source}: missing field '{_join(where, key)}'; the model file is incomplete")
        return tree[key]

    def opt(self, tree: dict, key: str, default, absent_before: str):
        """A field that trees of older DeePMD-kit versions (before ``absent_before``) lack; they meant ``default``."""
        return tree[key] if key in tree else default

    def expect(self, tree: dict, key: str, where: str, wanted, what: str) -> None:
        """A recorded setting that must agree with what the arrays (or another field) say."""
        found = self.get(tree, key, where)
        if found != wanted:
            raise ModelFormatError(
                f"{self.source}: field '{_join(where, key)}' is {found!r}, which contradicts {what} (consistent "
                f"value: {wanted!r}); the file was edited or damaged and cannot be read safely"
            )

    def cls(self, tree: dict, where: str, *names: str) -> None:
        found = self.get(tree, "@class", where)
        if found not in names:
            raise ModelFormatError(
                f"{self.source}: field '{where}.@class' is {found!r}, expected {' or '.join(map(repr, names))}; "
                "the model tree does not have DeePMD-kit's layout"
            )

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


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


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
    #: padding slots of an excluded type pair still go through the pair's net (PyTorch, dpmodel, JAX
    #: mask only real neighbours); TensorFlow zeroes the whole block
    pad_excluded: bool = False
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
    #: padding slots of an excluded type pair still go through the pair's net (PyTorch, dpmodel, JAX
    #: mask only real neighbours); TensorFlow zeroes the whole block
    pad_excluded: bool = False
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
    """Energy fitting: one net per atom type.

    The nets read ``[descriptor, (fparam - fparam_avg) * fparam_inv_std, (aparam - aparam_avg) *
    aparam_inv_std]`` (DeePMD-kit's order); with ``use_aparam_as_mask`` the model takes
    ``numb_aparam`` atomic parameters but its nets do not read them.
    """

    nets: tuple  # Network per type (None where the type has no net)
    shared: Network | None  # one net for all types (mixed_types, se_atten)
    bias_atom_e: np.ndarray  # (ntypes,)
    exclude_types: frozenset
    numb_fparam: int = 0
    numb_aparam: int = 0
    fparam_avg: np.ndarray | None = None  # (numb_fparam,)
    fparam_inv_std: np.ndarray | None = None
    aparam_avg: np.ndarray | None = None  # (numb_aparam,), None with use_aparam_as_mask
    aparam_inv_std: np.ndarray | None = None
    default_fparam: np.ndarray | None = None  # used when the caller gives no fparam
    use_aparam_as_mask: bool = False

    @property
    def aparam_in_net(self) -> int:
        """Number of atomic-parameter columns the nets read."""
        return 0 if self.use_aparam_as_mask else self.numb_aparam

    @property
    def n_extra(self) -> int:
        """Columns the nets read after the descriptor."""
        return self.numb_fparam + self.aparam_in_net


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


#: DeePMD-kit's precision names -> the dtype its arrays are stored in ("default": float64, the
#: global precision DeePMD-kit uses unless built for single precision)
_PRECISION_DTYPES = {"float64": ("float64",), "double": ("float64",), "float32": ("float32",),
                     "single": ("float32",), "float16": ("float16",), "half": ("float16",),
                     "bfloat16": ("float32",), "default": ("float64", "float32")}


def _precision(ctx: _Ctx, tree: dict, where: str) -> tuple[str, ...]:
    prec = ctx.get(tree, "precision", where)
    if prec not in _PRECISION_DTYPES:
        raise ctx.fail(_join(where, "precision"), prec, "expected one of " + ", ".join(_PRECISION_DTYPES),
                       ModelFormatError)
    return _PRECISION_DTYPES[prec]


def _array(ctx: _Ctx, value, where: str, dtypes: tuple[str, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise ModelFormatError(f"{ctx.source}: '{where}' is {describe(value)}, expected an array")
    if value.dtype.name not in dtypes:
        raise ModelFormatError(
            f"{ctx.source}: '{where}' holds {value.dtype.name} numbers, but the layer's precision is "
            f"{' or '.join(dtypes)}; the file contradicts itself"
        )
    return np.asarray(value, dtype=np.float64)


def _presence(value) -> str:
    return "absent" if value is None else "present"


def _layer(ctx: _Ctx, tree: dict, where: str, allow_idt: bool) -> Layer:
    """A dense layer; ``bias``/``use_timestep`` must agree with the arrays the layer holds."""
    ctx.cls(tree, where, "Layer")
    ctx.version(tree, where)
    ignore(tree, "trainable")
    dtypes = _precision(ctx, tree, where)
    var = ctx.get(tree, "@variables", where)
    vw = where + ".@variables"
    w = _array(ctx, ctx.get(var, "w", vw), vw + ".w", dtypes)
    if w.ndim != 2:
        raise ModelFormatError(f"{ctx.source}: '{vw}.w' has shape {w.shape}, expected a matrix")
    b = var.get("b")
    ctx.expect(tree, "bias", where, b is not None, f"'{vw}.b' ({_presence(b)})")
    b = np.zeros(w.shape[1]) if b is None else _array(ctx, b, vw + ".b", dtypes).reshape(-1)
    idt = var.get("idt")
    if idt is not None and not allow_idt:
        raise ctx.fail(
            vw + ".idt", "present (resnet_dt true)",
            "embedding nets with resnet_dt cannot be tabulated exactly; retrain with "
            "descriptor.resnet_dt false",
        )
    ctx.expect(tree, "use_timestep", where, idt is not None, f"'{vw}.idt' ({_presence(idt)})")
    if idt is not None:
        idt = _array(ctx, idt, vw + ".idt", dtypes).reshape(-1)
        if idt.shape != (w.shape[1],):
            raise ModelFormatError(f"{ctx.source}: {where}: idt shape {idt.shape} differs from the width {w.shape[1]}")
    if b.shape != (w.shape[1],):
        raise ModelFormatError(f"{ctx.source}: {where}: weight shape {w.shape} and bias shape {b.shape} disagree")
    act = check_activation(ctx.get(tree, "activation_function", where), f"{ctx.source}: {where}")
    resnet = ctx.get(tree, "resnet", where)
    if not isinstance(resnet, bool):
        raise ctx.fail(where + ".resnet", resnet, "expected true or false", ModelFormatError)
    return Layer(w=w, b=b, idt=idt, activation=act, resnet=resnet)


def _net_common(ctx: _Ctx, tree: dict, where: str, layers: list[Layer], hidden: int) -> None:
    """Fields every DeePMD-kit network records about its layers, checked against them."""
    ctx.version(tree, where)
    ctx.expect(tree, "in_dim", where, layers[0].n_in, "the first layer's input width")
    ctx.expect(tree, "neuron", where, [l.n_out for l in layers[:hidden]], "the layers' widths")
    acts = {l.activation for l in layers[:hidden]}
    act = check_activation(ctx.get(tree, "activation_function", where), f"{ctx.source}: {where}")
    if acts and acts != {act}:
        raise ctx.fail(where + ".activation_function", act, f"its layers use {sorted(acts)}; the file contradicts "
                       "itself", ModelFormatError)
    resnet_dt = ctx.get(tree, "resnet_dt", where)
    if not resnet_dt and any(l.idt is not None for l in layers):
        raise ctx.fail(where + ".resnet_dt", resnet_dt, "but a layer holds an idt array; the file contradicts itself",
                       ModelFormatError)
    dtypes = set(_precision(ctx, tree, where))  # "default" admits either
    for k, layer_tree in enumerate(tree["layers"]):
        if not set(_PRECISION_DTYPES[layer_tree["precision"]]) <= dtypes:
            raise ctx.fail(where + ".precision", tree["precision"], f"its layer {k} is {layer_tree['precision']!r}; "
                           "the file contradicts itself", ModelFormatError)


def _extrapolation_network(ctx: _Ctx, tree: dict, where: str, layers: list[Layer]) -> Network:
    """DeePMD-kit's linear continuation of a table whose net a compressed graph lost
    (compress/dp_tables.extrapolation_network): one relu layer and a linear output, no shortcut."""
    kinds = [(l.activation, l.resnet, l.idt is None) for l in layers]
    if kinds != [("relu", False, True), ("none", False, True)] or layers[0].n_in != 1:
        raise ModelFormatError(f"{ctx.source}: {where} is flagged '{EXTRAPOLATION_FLAG}' but is not one relu layer on a "
                               "scalar input followed by a linear output; the file was edited or damaged")
    ctx.version(tree, where)
    ctx.expect(tree, "in_dim", where, 1, "the first layer's input width")
    ctx.expect(tree, "neuron", where, [l.n_out for l in layers], "the layers' widths")
    for key in ("activation_function", "resnet_dt", "bias", "precision"):
        ctx.get(tree, key, where)  # written by deepcomp with fixed values; the layers decide the arithmetic
    return Network(tuple(layers))


def _network(ctx: _Ctx, tree: dict, where: str, allow_idt: bool, tabulated: bool) -> Network:
    """An EmbeddingNetwork (all layers resnet, one ``bias`` flag) or a FittingNetwork (plus a linear output)."""
    ctx.cls(tree, where, "EmbeddingNetwork", "FittingNetwork")
    fitting = tree["@class"] == "FittingNetwork"
    layer_trees = ctx.get(tree, "layers", where)
    if not isinstance(layer_trees, list) or not layer_trees:
        raise ctx.fail(where + ".layers", layer_trees, "expected a non-empty list of layers", ModelFormatError)
    layers = [_layer(ctx, lt, f"{where}.layers[{i}]", allow_idt) for i, lt in enumerate(layer_trees)]
    if not fitting and tree.get(EXTRAPOLATION_FLAG):
        return _extrapolation_network(ctx, tree, where, layers)
    hidden = len(layers) - 1 if fitting else len(layers)
    _net_common(ctx, tree, where, layers, hidden)
    if fitting:
        out = layers[-1]
        ctx.expect(tree, "out_dim", where, out.n_out, "the output layer's width")
        ctx.expect(tree, "bias_out", where, tree["layers"][-1]["bias"], "the output layer's bias flag")
        if out.activation != "none" or out.resnet or out.idt is not None:
            raise ModelFormatError(f"{ctx.source}: {where}: the output layer must be linear, without shortcut or idt")
    else:
        ctx.expect(tree, "bias", where, layer_trees[0]["bias"], "the layers' bias flag")
        for i, (lt, layer) in enumerate(zip(layer_trees, layers)):
            if lt["bias"] != tree["bias"] or not layer.resnet:
                raise ModelFormatError(f"{ctx.source}: {where}.layers[{i}]: embedding-net layers share the net's "
                                       "bias flag and all take the resnet shortcut")
    if tabulated and layers[0].activation not in TABULATABLE:
        raise ctx.fail(where + ".activation_function", tree.get("activation_function"),
                       "embedding nets can be compressed with " + ", ".join(TABULATABLE))
    return Network(tuple(layers))


def _collection(ctx: _Ctx, tree: dict, where: str, ntypes: int, network_type: str, allow_idt: bool,
                tabulated: bool, wanted=None) -> dict:
    """NetworkCollection -> {key tuple: Network}; flat index = sum(t_k * ntypes**k).

    ``wanted(key)`` False: a slot DeePMD-kit never evaluates (excluded type pair, se_e3's t1 > t2);
    its arrays are accepted unread.
    """
    ctx.cls(tree, where, "NetworkCollection")
    ctx.version(tree, where)
    ndim = int(ctx.get(tree, "ndim", where))
    ctx.expect(tree, "ntypes", where, ntypes, "the number of types in type_map")
    ctx.expect(tree, "network_type", where, network_type, "the kind of network this collection holds")
    nets = ctx.get(tree, "networks", where)
    if not isinstance(nets, list) or len(nets) != ntypes**ndim:
        raise ModelFormatError(
            f"{ctx.source}: '{where}.networks' holds {len(nets) if isinstance(nets, list) else nets!r} networks; "
            f"a collection of ndim {ndim} over {ntypes} types has {ntypes**ndim}")
    out = {}
    for flat, net in enumerate(nets):
        if net is None:
            continue
        key = tuple((flat // ntypes**k) % ntypes for k in range(ndim))
        if wanted is not None and not wanted(key):
            skip(net, "never evaluated by DeePMD-kit")
            continue
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


def _common_checks(ctx: _Ctx, tree: dict, where: str, type_map: tuple) -> None:
    """Fields every se_* descriptor records that deepcomp does not model: each must be neutral."""
    ctx.cls(tree, where, "Descriptor")
    ctx.version(tree, where)
    ignore(tree, "trainable")
    if tree.get("spin") is not None:
        raise ctx.fail(where + ".spin", tree.get("spin"), "spin models are not supported")
    if ctx.opt(tree, "type_map", None, "3.0") not in (None, list(type_map)):
        raise ctx.fail(where + ".type_map", tree["type_map"], f"the model's type_map is {list(type_map)}",
                       ModelFormatError)
    _env_mat(ctx, tree, where)
    if ctx.get(tree, "resnet_dt", where):
        raise ctx.fail(
            where + ".resnet_dt", True,
            "embedding nets with resnet_dt cannot be tabulated exactly; retrain with resnet_dt false",
        )
    _precision(ctx, tree, where)


def _env_mat(ctx: _Ctx, tree: dict, where: str) -> None:
    """The environment-matrix helper's own record: DeePMD-kit rebuilds it from the descriptor's fields
    when it deserializes, so it must agree with them (its protection is env_protection, or 0 where the
    helper is built without it: se_e2_r, se_atten_v2)."""
    env = ctx.get(tree, "env_mat", where)
    ew = where + ".env_mat"
    if ctx.opt(env, "use_exp_switch", False, "3.1"):
        raise ctx.fail(ew + ".use_exp_switch", True, "only the polynomial switch is supported")
    for key in ("rcut", "rcut_smth"):
        ctx.expect(env, key, ew, ctx.get(tree, key, where), f"'{where}.{key}'")
    protection = ctx.opt(env, "protection", 0.0, "3.0")
    if protection not in (0.0, ctx.opt(tree, "env_protection", 0.0, "3.0")):
        raise ctx.fail(ew + ".protection", protection, f"but '{where}.env_protection' is "
                       f"{tree.get('env_protection')!r}; the file contradicts itself", ModelFormatError)


def _sel(ctx: _Ctx, tree: dict, where: str, ntypes: int) -> tuple[int, ...]:
    sel = tuple(int(v) for v in ctx.get(tree, "sel", where))
    if len(sel) != ntypes:
        raise ctx.fail(where + ".sel", list(sel), f"expected one entry per type ({ntypes} types)", ModelFormatError)
    return sel


def _type_one_side(ctx: _Ctx, tree: dict, where: str, ndim: int) -> bool:
    """One net per neighbour type (ndim 1) or per type pair (ndim 2): the collection says which.

    The field's default differs by backend (true in PyTorch/dpmodel, false in TensorFlow), so a tree
    without it is read from the networks it holds; one with it must agree with them.
    """
    if ndim not in (1, 2):
        raise ctx.fail(where + ".embeddings.ndim", ndim, "expected 1 (type_one_side) or 2", ModelFormatError)
    tos = ndim == 1
    if "type_one_side" in tree:
        ctx.expect(tree, "type_one_side", where, tos, f"'{where}.embeddings.ndim' ({ndim})")
    return tos


def _embeddings(ctx: _Ctx, tree: dict, where: str, ntypes: int, wanted) -> dict:
    emb = _collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", ntypes, "embedding_network",
                      False, True, wanted)
    for key, net in emb.items():
        if net.n_in != 1:
            raise ModelFormatError(f"{ctx.source}: embedding net {key} has input width {net.n_in}, expected 1")
    return emb


def _need_nets(ctx: _Ctx, emb: dict, where: str, needed) -> None:
    for key in needed:
        if key not in emb:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings has no network for type key {key}")


def _geometry(ctx: _Ctx, tree: dict, where: str, ncomp: int) -> dict:
    variables = ctx.get(tree, "@variables", where)
    vw = where + ".@variables"
    davg = _stat_per_type(ctx, ctx.get(variables, "davg", vw), vw + ".davg", ncomp)
    if ctx.get(tree, "set_davg_zero", where) and np.any(davg != 0):
        raise ctx.fail(where + ".set_davg_zero", True, "but davg is not zero; the file contradicts itself",
                       ModelFormatError)
    return dict(
        rcut=float(ctx.get(tree, "rcut", where)),
        rcut_smth=float(ctx.get(tree, "rcut_smth", where)),
        env_protection=float(ctx.opt(tree, "env_protection", 0.0, "3.0") or 0.0),
        davg=davg,
        dstd=_stat_per_type(ctx, ctx.get(variables, "dstd", vw), vw + ".dstd", ncomp),
        neuron=tuple(int(n) for n in ctx.get(tree, "neuron", where)),
        activation=check_activation(ctx.get(tree, "activation_function", where), f"{ctx.source}: {where}"),
    )


def _check_nets_match(ctx: _Ctx, emb: dict, where: str, geo: dict) -> None:
    for key, net in emb.items():
        widths = tuple(l.n_out for l in net.layers)
        if net.layers[-1].activation == "none":  # an _extrapolation_network: only its output width is fixed
            if widths[-1] != geo["neuron"][-1]:
                raise ModelFormatError(f"{ctx.source}: {where}.embeddings: the table continuation for type key {key} "
                                       f"has {widths[-1]} outputs; the descriptor says {geo['neuron'][-1]}")
            continue
        if widths != geo["neuron"] or net.layers[0].activation != geo["activation"]:
            raise ModelFormatError(
                f"{ctx.source}: {where}.embeddings: the net for type key {key} has widths {widths} and activation "
                f"{net.layers[0].activation!r}; the descriptor says {geo['neuron']} and {geo['activation']!r}")


def _se_two_body(ctx: _Ctx, tree: dict, where: str, ntypes: int, backend: str):
    """Embeddings, exclusions and type_one_side of se_e2_a / se_e2_r.

    An excluded pair's real neighbours contribute nothing, but in PyTorch/dpmodel/JAX its padding
    slots still go through the pair's net (the exclusion mask only covers real neighbours), so the
    net is read; TensorFlow zeroes the whole block (its trees hold empty nets there).
    """
    excl = _pairs(ctx.get(tree, "exclude_types", where))
    emb_tree = ctx.get(tree, "embeddings", where)
    tos = _type_one_side(ctx, tree, where, int(ctx.get(emb_tree, "ndim", where + ".embeddings")))
    pad_excluded = bool(excl) and backend.lower() != "tensorflow"
    emb = _embeddings(ctx, tree, where, ntypes, None)
    needed = [(t,) for t in range(ntypes)] if tos else [
        (a, b) for a in range(ntypes) for b in range(ntypes) if pad_excluded or (a, b) not in excl]
    _need_nets(ctx, emb, where, needed)
    return tos, excl, emb, pad_excluded


def _se_e2_a(ctx: _Ctx, tree: dict, where: str, ntypes: int, backend: str) -> SeE2AParams:
    tos, excl, emb, pad_excluded = _se_two_body(ctx, tree, where, ntypes, backend)
    geo = _geometry(ctx, tree, where, 4)
    _check_nets_match(ctx, emb, where, geo)
    return SeE2AParams(
        sel=_sel(ctx, tree, where, ntypes), axis_neuron=int(ctx.get(tree, "axis_neuron", where)),
        type_one_side=tos, exclude_types=excl, embeddings=emb, pad_excluded=pad_excluded, **geo,
    )


def _se_e2_r(ctx: _Ctx, tree: dict, where: str, ntypes: int, backend: str) -> SeE2RParams:
    tos, excl, emb, pad_excluded = _se_two_body(ctx, tree, where, ntypes, backend)
    geo = _geometry(ctx, tree, where, 1)
    _check_nets_match(ctx, emb, where, geo)
    return SeE2RParams(sel=_sel(ctx, tree, where, ntypes), type_one_side=tos, exclude_types=excl, embeddings=emb,
                       pad_excluded=pad_excluded, **geo)


def _se_e3(ctx: _Ctx, tree: dict, where: str, ntypes: int, backend: str) -> SeE3Params:
    excl = _pairs(ctx.get(tree, "exclude_types", where))
    # DeePMD-kit evaluates only the t1 <= t2 nets of its ntypes x ntypes collection
    emb = _embeddings(ctx, tree, where, ntypes, lambda k: k[0] <= k[1])
    _need_nets(ctx, emb, where, [(a, b) for a in range(ntypes) for b in range(a, ntypes)])
    geo = _geometry(ctx, tree, where, 4)
    _check_nets_match(ctx, emb, where, geo)
    return SeE3Params(sel=_sel(ctx, tree, where, ntypes), exclude_types=excl, embeddings=emb, **geo)


def _no_attention(ctx: _Ctx, tree: dict, where: str) -> None:
    """se_atten_v2 without attention layers: the attention block holds no weights, its settings do nothing."""
    attn_layer = int(ctx.get(tree, "attn_layer", where))
    if attn_layer != 0:
        raise ctx.fail(
            where + ".attn_layer", attn_layer,
            "only se_atten_v2 models without attention layers (attn_layer 0) can be tabulated: with attention "
            "the embedding is no longer a function of one scalar per neighbour. Retrain with attn_layer 0",
        )
    ignore(tree, "attn", "attn_dotr", "attn_mask", "scaling_factor", "normalize", "temperature", "trainable_ln",
           "ln_eps")
    block = tree.get("attention_layers")
    if block is not None:
        bw = where + ".attention_layers"
        ctx.cls(block, bw, "NeighborGatedAttention")
        ctx.version(block, bw)
        ctx.expect(block, "layer_num", bw, 0, f"'{where}.attn_layer'")
        ctx.expect(block, "attention_layers", bw, [], "an attention block of 0 layers")
        skip(block, "an attention block without layers holds only unused settings")


def _type_embedding(ctx: _Ctx, tree: dict, where: str, ntypes: int, type_map: tuple) -> np.ndarray:
    """TypeEmbedNet -> the padded embedding table (ntypes + 1, tebd_dim), last row zeros."""
    tw = where + ".type_embedding"
    te_tree = ctx.get(tree, "type_embedding", where)
    ctx.cls(te_tree, tw, "TypeEmbedNet")
    ctx.version(te_tree, tw)
    ignore(te_tree, "trainable")
    ctx.expect(te_tree, "ntypes", tw, ntypes, "the number of types in type_map")
    if ctx.opt(te_tree, "type_map", None, "3.0") not in (None, list(type_map)):
        raise ctx.fail(tw + ".type_map", te_tree["type_map"], f"the model's type_map is {list(type_map)}",
                       ModelFormatError)
    if ctx.opt(te_tree, "use_econf_tebd", False, "3.0"):
        raise ctx.fail(tw + ".use_econf_tebd", True, "electronic-configuration type embeddings are not supported")
    if not ctx.get(te_tree, "padding", tw):
        raise ctx.fail(tw + ".padding", False, "a padded type embedding is expected")
    _precision(ctx, te_tree, tw)
    te_net = _network(ctx, ctx.get(te_tree, "embedding", tw), tw + ".embedding", False, False)
    ctx.expect(te_tree, "neuron", tw, [l.n_out for l in te_net.layers], "its network's widths")
    ctx.expect(te_tree, "resnet_dt", tw, te_tree["embedding"]["resnet_dt"], "its network's resnet_dt")
    ctx.expect(te_tree, "activation_function", tw, te_tree["embedding"]["activation_function"],
               "its network's activation")
    has_bias = te_tree["embedding"]["bias"]
    ctx.expect(te_tree, "use_tebd_bias", tw, has_bias, f"'{tw}.embedding.bias'")
    ctx.expect(tree, "use_tebd_bias", where, has_bias, f"'{tw}.embedding.bias'")
    if te_net.n_in != ntypes:
        raise ctx.fail(tw + ".embedding.in_dim", te_net.n_in, f"expected a one-hot input of {ntypes} types")
    te = te_net(np.eye(ntypes))
    return np.concatenate([te, np.zeros((1, te.shape[1]))])


def _se_atten_v2(ctx: _Ctx, tree: dict, where: str, ntypes: int, type_map: tuple,
                 backend: str = "") -> SeAttenV2Params:
    _no_attention(ctx, tree, where)
    if ctx.opt(tree, "use_econf_tebd", False, "3.0"):
        raise ctx.fail(where + ".use_econf_tebd", True, "electronic-configuration type embeddings are not supported")
    ctx.expect(tree, "ntypes", where, ntypes, "the number of types in type_map")
    sel = ctx.get(tree, "sel", where)
    nsel = int(sel[0] if isinstance(sel, (list, tuple)) else sel)
    if isinstance(sel, (list, tuple)) and len(sel) != 1:
        raise ctx.fail(where + ".sel", sel, "se_atten_v2 takes one sel for all types", ModelFormatError)
    geo = _geometry(ctx, tree, where, 4)
    emb = _collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", ntypes, "embedding_network",
                      False, True)
    if () not in emb or emb[()].n_in != 1:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings must hold one scalar-input network")
    _check_nets_match(ctx, emb, where, geo)
    te = _type_embedding(ctx, tree, where, ntypes, type_map)
    tebd_dim = te.shape[1]
    ctx.expect(tree, "tebd_dim", where, tebd_dim, "the type embedding's width")
    dp_type_table = type_embd_table(tree)  # DeePMD-kit's tabulated strip net (dp compress)
    strip_tree = ctx.get(tree, "embeddings_strip", where)
    # a graph compressed by DeePMD-kit keeps only the strip net's table: its collection holds nulls
    strip_lost = dp_type_table is not None and all(n is None for n in strip_tree.get("networks") or [])
    strip = {} if strip_lost else _collection(ctx, strip_tree, where + ".embeddings_strip", ntypes,
                                              "embedding_network", False, False)
    if not strip_lost and () not in strip:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip must hold one network")
    if strip:
        # the strip net reads the neighbour's embedding (type_one_side) or [neighbour, centre]
        if strip[()].n_in not in (tebd_dim, 2 * tebd_dim):
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip takes {strip[()].n_in} inputs; expected "
                                   f"{tebd_dim} or {2 * tebd_dim} (type embedding width {tebd_dim})")
        tos = strip[()].n_in == tebd_dim
        if "type_one_side" in tree:
            ctx.expect(tree, "type_one_side", where, tos, f"the strip net's input width {strip[()].n_in}")
    else:  # a graph compressed by DeePMD-kit lost the strip net: its table's rows tell
        for key in ("@class", "@version", "ndim", "ntypes", "network_type", "networks"):
            strip_tree.get(key)  # an empty collection (every network null), as dp convert-backend writes it
        rows = dp_type_table.shape[0]
        if rows not in (ntypes + 1, (ntypes + 1) ** 2):
            raise ModelFormatError(f"{ctx.source}: {where}.compress.@variables.type_embd_data has {rows} rows, expected "
                                   f"{ntypes + 1} or {(ntypes + 1) ** 2} (one per type or type pair, padding included)")
        tos = rows == ntypes + 1
        if "type_one_side" in tree:
            ctx.expect(tree, "type_one_side", where, tos, f"the rows of '{where}.compress.@variables.type_embd_data'")
    if dp_type_table is not None:
        # DeePMD-kit evaluates its stored table, not the net: use it as it is
        table = dp_type_table
        rows = ntypes + 1 if tos else (ntypes + 1) ** 2
        if table.shape != (rows, geo["neuron"][-1]):
            raise ModelFormatError(f"{ctx.source}: {where}.compress.@variables.type_embd_data has shape {table.shape}, "
                                   f"expected {(rows, geo['neuron'][-1])}")
    elif tos:
        table = strip[()](te)
    else:
        nt1 = ntypes + 1
        centre, nbr = np.divmod(np.arange(nt1 * nt1), nt1)
        table = strip[()](np.concatenate([te[nbr], te[centre]], axis=1))
    if table.shape[1] != geo["neuron"][-1]:
        raise ModelFormatError(f"{ctx.source}: {where}: strip net width {table.shape[1]} differs from the embedding net")
    return SeAttenV2Params(
        nsel=nsel, ntypes_model=ntypes, axis_neuron=int(ctx.get(tree, "axis_neuron", where)), type_one_side=tos,
        concat_output_tebd=bool(ctx.get(tree, "concat_output_tebd", where)),
        exclude_types=_pairs(ctx.get(tree, "exclude_types", where)),
        embeddings=emb, type_embedding=te, type_pair_table=table, tf_switch=backend.lower() == "tensorflow", **geo,
    )


_PARSERS = {"se_e2_a": _se_e2_a, "se_e2_r": _se_e2_r, "se_e3": _se_e3}


def _dp_tables_block(ctx: _Ctx, tree: dict, where: str) -> None:
    """DeePMD-kit's tables (``dp compress``): checked here against the nets, then used as they are
    by the potential (compress/dp_tables.py); se_atten_v2's ``type_embd_data`` is read by its parser."""
    block = ctx.get(tree, "compress", where)
    if "compress_data" in (block.get("@variables") or {}):  # a .dcz keeps the tables in its own section
        descriptor_tables(tree, table_prefix(where), ctx.source)  # reads and checks compress_data, compress_info
    block.get("origin")  # where the tables came from (written by deepcomp's readers)
    block.get("geo_compress")  # dp --dp compress: whether the geometric net was tabulated (its tables tell)


def _descriptor(ctx: _Ctx, tree: dict, type_map: tuple, where: str = "model.descriptor", backend: str = ""):
    ntypes = len(type_map)
    kind = tree.get("type") if isinstance(tree, dict) else None
    canon = _DESCRIPTOR_ALIASES.get(kind)
    if canon is None:
        raise ctx.fail(
            where + ".type", kind,
            "supported descriptors: " + ", ".join(SUPPORTED_DESCRIPTORS),
        )
    if canon == "hybrid":
        ctx.cls(tree, where, "Descriptor")
        ctx.version(tree, where)
        parts = ctx.get(tree, "list", where)
        if not parts:
            raise ctx.fail(where + ".list", parts, "a hybrid descriptor needs at least one part", ModelFormatError)
        out = []
        for k, sub in enumerate(parts):
            if isinstance(sub, dict) and sub.get("type") == "hybrid":
                raise ctx.fail(f"{where}.list[{k}].type", "hybrid", "nested hybrid descriptors are not supported")
            out.append(_descriptor(ctx, sub, type_map, f"{where}.list[{k}]", backend))
        top = max(p.rcut for p in out)
        # a DPA-1 part selects its neighbours within the hybrid's cutoff (params_dpa1.Dpa1Params.select_rcut)
        return HybridParams(parts=tuple(p.in_hybrid(top) if hasattr(p, "in_hybrid") else p for p in out))
    # DPA-1 with attention layers has its own module (it imports this one). se_atten_v2 with excluded
    # pairs goes there too: DeePMD-kit keeps an excluded neighbour's slot and zeroes its row, which
    # the DPA-1 path does and the se_atten_v2 kernels (excluded pairs as padding) do not
    if canon == "dpa1" or (canon == "se_atten_v2" and (int(tree.get("attn_layer", 0) or 0) != 0
                                                       or (tree.get("exclude_types") and "compress" not in tree))):
        from .params_dpa1 import parse_dpa1

        return parse_dpa1(ctx, tree, where, type_map, backend)
    if "compress" in tree:
        _dp_tables_block(ctx, tree, where)
    # a model compressed by DeePMD-kit: its tables stand in for the nets a TensorFlow graph lost
    filled = with_table_networks(tree, ctx.source, where)
    if filled is not tree:  # replaced inside the tracked copy, so that the reads stay recorded
        tree["embeddings"]["networks"][:] = track(filled["embeddings"]["networks"])
    _common_checks(ctx, tree, where, type_map)
    if canon == "se_atten_v2":
        return _se_atten_v2(ctx, tree, where, ntypes, type_map, backend)
    return _PARSERS[canon](ctx, tree, where, ntypes, backend)


def _stat(ctx: _Ctx, variables: dict, key: str, n: int, where: str) -> np.ndarray:
    """A (n,) finite statistic of the fitting's frame/atomic parameters."""
    value = variables.get(key)
    if value is None:
        raise ModelFormatError(f"{ctx.source}: missing field '{where}.@variables.{key}'; the model file is incomplete")
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        arr = np.full(0, np.nan)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ctx.fail(f"{where}.@variables.{key}", describe(value), f"expected {n} finite numbers", ModelFormatError)
    return arr


def _fitting_inputs(ctx: _Ctx, tree: dict, where: str) -> dict:
    """Frame/atomic parameters: numb_fparam / numb_aparam, their statistics, default_fparam and
    use_aparam_as_mask (FittingParams keywords). Case embeddings are refused; a statistic for
    parameters the fitting does not take contradicts the file."""
    dim_case = ctx.opt(tree, "dim_case_embd", 0, "3.1")
    if int(dim_case or 0) != 0:
        raise ctx.fail(where + ".dim_case_embd", dim_case, "case embeddings are not supported")
    counts = {}
    for key in ("numb_fparam", "numb_aparam"):
        value = ctx.get(tree, key, where) or 0
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ctx.fail(f"{where}.{key}", value, "expected a count >= 0", ModelFormatError)
        counts[key] = int(value)
    nfp, nap = counts["numb_fparam"], counts["numb_aparam"]
    mask = ctx.get(tree, "use_aparam_as_mask", where)
    if not isinstance(mask, (bool, np.bool_)):
        raise ctx.fail(f"{where}.use_aparam_as_mask", mask, "expected true or false", ModelFormatError)
    variables = ctx.get(tree, "@variables", where)
    out = dict(numb_fparam=nfp, numb_aparam=nap, use_aparam_as_mask=bool(mask))
    for name, n, used in (("fparam", nfp, nfp > 0), ("aparam", nap, nap > 0 and not mask)):
        if used:
            out[name + "_avg"] = _stat(ctx, variables, name + "_avg", n, where)
            out[name + "_inv_std"] = _stat(ctx, variables, name + "_inv_std", n, where)
        elif n == 0:
            for key in (name + "_avg", name + "_inv_std"):
                if variables.get(key) is not None:
                    raise ModelFormatError(f"{ctx.source}: '{where}.@variables.{key}' holds {describe(variables[key])} "
                                           "but the fitting takes no such input; the file contradicts itself")
        else:  # use_aparam_as_mask: DeePMD-kit keeps (and never reads) the statistics; read, not used
            variables.get(name + "_avg"), variables.get(name + "_inv_std")
    if variables.get("case_embd") is not None:
        raise ModelFormatError(f"{ctx.source}: '{where}.@variables.case_embd' holds {describe(variables['case_embd'])} "
                               "but the fitting takes no such input; the file contradicts itself")
    default = ctx.opt(tree, "default_fparam", None, "3.1")
    if default is not None:
        try:
            arr = np.asarray(default, dtype=np.float64).reshape(-1) if nfp else None
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (nfp,) or not np.all(np.isfinite(arr)):
            raise ctx.fail(f"{where}.default_fparam", default, f"expected {nfp} finite numbers (numb_fparam)",
                           ModelFormatError)
        out["default_fparam"] = arr
    return out


def _fitting(ctx: _Ctx, tree: dict, type_map: tuple, dim_descrpt: int) -> FittingParams:
    where = "model.fitting"
    ntypes = len(type_map)
    ctx.cls(tree, where, "Fitting")
    ctx.version(tree, where)
    if ctx.get(tree, "type", where) != "ener":
        raise ctx.fail(where + ".type", tree.get("type"), "only energy ('ener') fitting is supported")
    ctx.expect(tree, "var_name", where, "energy", "the output of an energy fitting")
    ignore(tree, "trainable", "rcond", "tot_ener_zero")
    extra = _fitting_inputs(ctx, tree, where)
    n_in = dim_descrpt + extra["numb_fparam"] + (0 if extra["use_aparam_as_mask"] else extra["numb_aparam"])
    if int(ctx.get(tree, "dim_out", where)) != 1:
        raise ctx.fail(where + ".dim_out", tree.get("dim_out"), "energy fitting must have one output")
    if tree.get("spin") is not None:
        raise ctx.fail(where + ".spin", tree.get("spin"), "spin models are not supported")
    if tree.get("layer_name") is not None:
        raise ctx.fail(where + ".layer_name", tree.get("layer_name"), "fitting layers shared between models "
                       "(layer_name) are not supported")
    atom_ener = ctx.opt(tree, "atom_ener", None, "3.0")
    if any(e is not None for e in atom_ener or []):
        raise ctx.fail(where + ".atom_ener", atom_ener, "removing the vacuum contribution (atom_ener) is not "
                       "supported")
    ctx.expect(tree, "ntypes", where, ntypes, "the number of types in type_map")
    if ctx.opt(tree, "type_map", None, "3.0") not in (None, list(type_map)):
        raise ctx.fail(where + ".type_map", tree["type_map"], f"the model's type_map is {list(type_map)}",
                       ModelFormatError)
    _precision(ctx, tree, where)
    nets = _collection(ctx, ctx.get(tree, "nets", where), where + ".nets", ntypes, "fitting_network", True, False)
    ctx.expect(tree, "mixed_types", where, tree["nets"]["ndim"] == 0, f"'{where}.nets.ndim'")
    ctx.expect(tree, "dim_descrpt", where, dim_descrpt, "the descriptor's output width")
    for k, net_tree in enumerate(tree["nets"]["networks"]):
        for key in ("neuron", "resnet_dt", "activation_function"):
            if net_tree is not None:
                ctx.expect(tree, key, where, net_tree.get(key), f"'{where}.nets.networks[{k}].{key}'")
    shared = nets.get(())
    if shared is not None and shared.n_in != n_in:
        raise ModelFormatError(
            f"{ctx.source}: the shared fitting net takes {shared.n_in} inputs, descriptor and parameters give {n_in}")
    per_type = []
    for t in range(ntypes):
        net = nets.get((t,))
        if net is not None and net.n_in != n_in:
            raise ModelFormatError(
                f"{ctx.source}: fitting net of type {t} takes {net.n_in} inputs, descriptor and parameters give {n_in}"
            )
        per_type.append(net)
    bias = np.asarray(ctx.get(ctx.get(tree, "@variables", where), "bias_atom_e", where + ".@variables"),
                      dtype=np.float64)
    if bias.shape != (ntypes, 1):
        raise ModelFormatError(f"{ctx.source}: '{where}.@variables.bias_atom_e' has shape {bias.shape}, expected "
                               f"{(ntypes, 1)}")
    if shared is None and all(n is None for n in per_type):
        raise ModelFormatError(f"{ctx.source}: {where}.nets holds no fitting network")
    return FittingParams(nets=tuple(per_type), shared=shared, bias_atom_e=bias[:, 0].copy(), exclude_types=frozenset(
        int(t) for t in ctx.get(tree, "exclude_types", where) or []), **extra)


def _min_nbor_dist(tree: dict) -> float | None:
    # `dp compress` outputs carry it twice (top level and @variables): both are read
    top, stored = tree.get("min_nbor_dist"), (tree.get("@variables") or {}).get("min_nbor_dist")
    mnd = stored if top is None else top
    mnd = None if mnd is None else float(np.asarray(mnd))
    if mnd is not None and mnd <= 0:
        mnd = None  # DeePMD-kit writes -1 for "unknown"
    return mnd


def _refuse_unread(ctx: _Ctx, tree) -> None:
    left = unread(tree)
    if left:
        path, value = left[0]
        more = f" (and {len(left) - 1} more: {', '.join(p for p, _ in left[1:4])}{', ...' if len(left) > 4 else ''})" \
            if len(left) > 1 else ""
        raise UnsupportedModelError(
            f"{ctx.source}: '{path}' ({describe(value)}) is not part of any model deepcomp knows{more}. An unknown "
            "field or weight may change what the model computes, so the file is refused rather than read "
            "without it. deepcomp reads models as DeePMD-kit 2.2-3.2 write them; a file edited by hand or "
            "written by a newer DeePMD-kit cannot be read by this version"
        )


@one_line_errors(source_arg=1)
def parse_model(tree: dict, source: str = "<model>") -> ModelParams:
    """Validate a DeePMD-kit serialization tree and return :class:`ModelParams`.

    Every field and array of the tree must be read (or be one of the fields listed in
    :data:`.tree_check.IRRELEVANT`); anything left over is refused, naming its path.
    """
    ctx = _Ctx(str(source))
    tree = track(tree)
    ignore(tree, "software", "version", "time", "tf_version", "pt_version", "jax_version", "model_def_script")
    model = ctx.get(tree, "model", "")
    ctx.cls(model, "model", "Model")
    ctx.version(model, "model")
    mtype = ctx.get(model, "type", "model")
    if mtype != "standard":
        raise ctx.fail("model.type", mtype, "only standard energy models are supported (no zbl, spin, multitask)")
    ignore(model, "rcond", "preset_out_bias")
    type_map = tuple(str(t) for t in ctx.get(model, "type_map", "model"))
    ntypes = len(type_map)
    descriptor = _descriptor(ctx, ctx.get(model, "descriptor", "model"), type_map,
                             backend=str(tree.get("backend") or ""))
    fitting = _fitting(ctx, ctx.get(model, "fitting", "model"), type_map, descriptor.dim_out)
    variables = ctx.get(model, "@variables", "model")
    ignore(variables, "out_std")
    out_bias = np.asarray(ctx.get(variables, "out_bias", "model.@variables"), dtype=np.float64)
    if out_bias.shape != (1, ntypes, 1):
        raise ModelFormatError(f"{ctx.source}: 'model.@variables.out_bias' has shape {out_bias.shape}, expected "
                               f"{(1, ntypes, 1)} (one energy bias per type)")
    mnd = _min_nbor_dist(tree)
    params = ModelParams(
        type_map=type_map,
        descriptor=descriptor,
        fitting=fitting,
        out_bias=out_bias[0, :, 0].copy(),
        atom_exclude_types=frozenset(int(t) for t in ctx.get(model, "atom_exclude_types", "model") or []),
        pair_exclude_types=_pairs(ctx.get(model, "pair_exclude_types", "model")),
        min_nbor_dist=mnd,
        source=ctx.source,
    )
    _refuse_unread(ctx, tree)
    check_model_ranges(params, tree, ctx.source)  # physical ranges, finite weights (model/ranges.py)
    return params
