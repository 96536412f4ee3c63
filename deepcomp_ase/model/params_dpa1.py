"""DPA-1 (``dpa1``, ``se_atten``, ``se_atten_v2``) with attention layers: typed parameters from the tree.

The tree is the one DeePMD-kit 3.x's backend-neutral ``DescrptDPA1`` / ``DescrptSeAttenV2`` write
(``.dp``, ``.yaml``; ``io/pth_dpa1.py`` rebuilds it from a PyTorch state dict). The geometric
embedding net sees one scalar s per neighbour and, in ``concat`` mode, the type embeddings of the
neighbour (and centre). Its first layer is linear in those inputs, so for a fixed type pair the
type part folds into the first bias: one scalar-input net per (centre, neighbour) type pair (per
neighbour type with ``type_one_side``), which deepcomp tabulates like any se_e2_a net. In
``strip`` mode (``se_atten_v2``) the net sees s alone and the type term is a constant per type pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ModelFormatError
from . import params as _params
from .activations import check_activation
from .nets import Layer, Network, fold_type_columns
from .params import SeAttenV2Params
from .tree_check import ignore

#: newest DPA-1 / attention serialization versions read here (4 adds ``lmax`` moment bases)
MAX_DESCRIPTOR_VERSION = 3
MAX_ATTENTION_VERSION = 1
#: DeePMD-kit's logit shift for the smooth attention (``attnw_shift``, fixed in its code)
ATTNW_SHIFT = 20.0
#: the tree field ``evaluation: {backend: tensorflow, switch_rcut_smth: ...}`` marks TensorFlow's evaluation
#: (written by io/pb_dpa1.py); its norm floor: tf.nn.l2_normalize divides by sqrt(max(|x|^2, 1e-12))
TF_EVALUATION = "tensorflow"
TF_UNIT_FLOOR = 1e-6


@dataclass(frozen=True)
class AttentionLayer:
    """One NeighborGatedAttentionLayer: X' = LN(X + (A (x) V) W_out + b_out), with q, k, v = X W_in + b_in."""

    w_in: np.ndarray  # (ng, 3 h)
    b_in: np.ndarray  # (3 h,)
    w_out: np.ndarray  # (h, ng)
    b_out: np.ndarray  # (ng,)
    ln_w: np.ndarray  # (ng,)
    ln_b: np.ndarray  # (ng,)
    ln_eps: float

    @property
    def hidden(self) -> int:
        return self.w_out.shape[0]


@dataclass(frozen=True)
class Dpa1Params:
    """DPA-1: type-embedded two-body embedding, gated self-attention over the neighbours, se_e2_a's D."""

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
    #: scalar-input nets: strip {(): G}; concat {(ti, tj): G} or {(tj,): G} (type part folded in)
    embeddings: dict
    type_embedding: np.ndarray  # (ntypes + 1, tebd_dim), last row = padding type (zeros)
    tebd_input_mode: str  # "concat" | "strip"
    type_pair_table: np.ndarray | None  # strip: strip-net output ((ntypes+1)**2 or ntypes+1, ng)
    smooth: bool  # smooth_type_embedding: switch-weighted type term and attention
    layers: tuple  # AttentionLayer per attention layer
    attn_dotr: bool
    normalize: bool
    scaling: float  # the factor of the logits: temperature, or (h * scaling_factor)**-0.5
    neuron: tuple[int, ...]
    activation: str
    #: selection cutoff when larger than rcut: in a hybrid, DeePMD-kit hands a DPA-1 part the sel nearest
    #: neighbours within the hybrid's cutoff; those beyond rcut keep their type and slot with zero
    #: environment rows and switch (they still enter the attention without the smooth type embedding)
    select_rcut: float | None = None
    #: TensorFlow's evaluation (a graph read by io/pb_dpa1.py; defaults: DeePMD-kit 3's other backends):
    #: the smooth type embedding weighs with 1 - (1 - rcut_smth s)^3 instead of the switch w(r)
    #: (descriptors/se_atten_v2.type_term_switch), vectors are normalised with the norm floored at
    #: unit_floor (l2_normalize's 1e-6) and a padding slot's first embedding row is pad_input[centre
    #: type] (the padding type's zero embedding) instead of coming from the frame's first atom's type
    tf_switch: bool = False
    #: the rcut_smth of that function: TF's Python double, where the environment op has rcut_smth in float32
    switch_rcut_smth: float | None = None
    unit_floor: float = 1e-12
    pad_input: np.ndarray | None = None  # (ntypes, ng)
    #: TensorFlow's attn_mask: every attention layer zeroes each slot's final weight on itself (no
    #: renormalisation); read from TF graphs only (DeePMD-kit 3's other backends refuse or ignore it)
    attn_mask: bool = False
    kind: str = field(default="dpa1")

    mixed_types = True  # descriptor properties: see params.SeE2AParams
    #: padding slots pass through the attention layers on their own (see descriptors/dpa1.py)
    padding = "attention"
    three_body = False
    #: descriptor exclude_types keep their neighbour slot (DeePMD-kit masks them after selection)
    exclusion_keeps_slot = True

    # shared with se_atten_v2 (same sel, type embedding and strip-table layout)
    ntypes = SeAttenV2Params.ntypes
    sel = SeAttenV2Params.sel
    nnei = SeAttenV2Params.nnei
    ng = SeAttenV2Params.ng
    tebd_dim = SeAttenV2Params.tebd_dim
    dim_out = SeAttenV2Params.dim_out
    excluded = SeAttenV2Params.excluded
    type_pair_row = SeAttenV2Params.type_pair_row

    def in_hybrid(self, hybrid_rcut: float) -> "Dpa1Params":
        # TensorFlow builds a hybrid's DPA-1 part its own neighbour list within its own rcut
        return replace(self, select_rcut=hybrid_rcut) if hybrid_rcut > self.rcut and not self.tf_switch else self

    def summary(self) -> str:
        """The settings `deepcomp info` shows."""
        parts = [f"tebd_dim {self.tebd_dim}, {self.tebd_input_mode} mode", f"attn_layer {len(self.layers)}"]
        if self.layers:
            parts.append(f"attn {self.layers[0].hidden}" + (", attn_dotr" if self.attn_dotr else "")
                         + (", normalize" if self.normalize else "") + f", logit scale {self.scaling:.6g}")
        if self.attn_mask:
            parts.append("attn_mask")
        if self.smooth:
            parts.append("smooth type embedding")
        if self.tf_switch:
            parts.append("evaluated as TensorFlow does")
        return ", ".join(parts)

    def net_key(self, ti: int, tj: int) -> tuple:
        if self.tebd_input_mode == "strip":
            return ()
        return (tj,) if self.type_one_side else (ti, tj)


def _layer_norm(ctx, tree: dict, where: str, width: int, eps: float):
    ctx.cls(tree, where, "LayerNorm")
    ctx.version(tree, where)
    ignore(tree, "trainable")
    dtypes = _params._precision(ctx, tree, where)
    var = ctx.get(tree, "@variables", where)
    w = _params._array(ctx, ctx.get(var, "w", where + ".@variables"), where + ".@variables.w", dtypes).reshape(-1)
    b = _params._array(ctx, ctx.get(var, "b", where + ".@variables"), where + ".@variables.b", dtypes).reshape(-1)
    if w.shape != (width,) or b.shape != (width,):
        raise ModelFormatError(f"{ctx.source}: {where}: weights of shape {w.shape}, {b.shape}, expected ({width},)")
    ctx.expect(tree, "eps", where, eps, "the descriptor's ln_eps")
    return w, b, float(eps)


def _linear(ctx, tree: dict, where: str, n_in: int, n_out: int, bias: bool):
    """A NativeLayer without activation, shortcut or timestep (the attention projections)."""
    layer = _params._layer(ctx, tree, where, False)
    if layer.w.shape != (n_in, n_out):
        raise ModelFormatError(f"{ctx.source}: {where}.@variables.w has shape {layer.w.shape}, expected "
                               f"{(n_in, n_out)}")
    if layer.activation != "none" or layer.resnet:
        raise ctx.fail(where + ".activation_function", tree.get("activation_function"),
                       "attention projections are linear, without shortcut, in DeePMD-kit; the file is not a "
                       "DPA-1 model it wrote")
    ctx.expect(tree, "bias", where, bias, "the attention layer's bias flag")
    return layer.w, layer.b


def _self_mask(ctx, tree: dict, where: str, key: str = "do_mask", tf_eval: bool = False) -> bool:
    """attn_mask (TensorFlow's zeroed attention diagonal): DeePMD-kit 3's PyTorch backend refuses it and its
    backend-neutral code ignores it, so only a TensorFlow graph's tree (``tf_eval``) may have it set."""
    value = ctx.get(tree, key, where)
    if value and not tf_eval:
        raise ctx.fail(f"{where}.{key}", value, "attention with attn_mask (a masked diagonal) is not "
                       "supported; retrain with attn_mask false")
    return bool(value)


def _mask_agrees(ctx, tree: dict, where: str, mask: bool, tf_eval: bool) -> None:
    """An attention section's do_mask: allowed as for the descriptor, and equal to its attn_mask."""
    if _self_mask(ctx, tree, where, "do_mask", tf_eval) != mask:
        ctx.expect(tree, "do_mask", where, mask, "the descriptor's attn_mask")


def _agree(ctx, tree: dict, where: str, expect: dict) -> None:
    """Each setting repeated in a sub-tree must equal the descriptor's."""
    for key, want in expect.items():
        ctx.expect(tree, key, where, want, "the descriptor's setting")


def _attention(ctx, tree: dict, where: str, *, attn_layer: int, nnei: int, ng: int, hidden: int, dotr: bool,
               normalize: bool, scaling_factor: float, temperature, smooth: bool, trainable_ln, ln_eps,
               mask: bool, tf_eval: bool):
    """The NeighborGatedAttention section: its layers, cross-checked against the descriptor's settings."""
    ctx.cls(tree, where, "NeighborGatedAttention")
    ctx.version(tree, where)
    layers_tree = ctx.get(tree, "attention_layers", where)
    expect = {"nnei": nnei, "embed_dim": ng, "hidden_dim": hidden, "dotr": dotr, "normalize": normalize,
              "scaling_factor": scaling_factor, "temperature": temperature}
    norm = {"trainable_ln": trainable_ln, "ln_eps": ln_eps}
    _agree(ctx, tree, where, dict(expect, layer_num=attn_layer, **norm))
    _mask_agrees(ctx, tree, where, mask, tf_eval)
    _params._precision(ctx, tree, where)
    if not isinstance(layers_tree, list) or len(layers_tree) != attn_layer:
        raise ModelFormatError(f"{ctx.source}: {where}.attention_layers has "
                               f"{len(layers_tree) if isinstance(layers_tree, list) else layers_tree!r} layers, "
                               f"attn_layer is {attn_layer}")
    out = []
    for n, lt in enumerate(layers_tree):
        lw = f"{where}.attention_layers[{n}]"
        _agree(ctx, lt, lw, dict(expect, **norm))
        _mask_agrees(ctx, lt, lw, mask, tf_eval)
        _params._precision(ctx, lt, lw)
        at = ctx.get(lt, "attention_layer", lw)
        aw = lw + ".attention_layer"
        heads = int(ctx.get(at, "num_heads", aw))
        if heads != 1:
            raise ctx.fail(aw + ".num_heads", heads, "DeePMD-kit's DPA-1 has one attention head; "
                           "multi-head attention layers are not supported")
        ctx.expect(at, "smooth", aw, smooth, "the descriptor's smooth type embedding")
        _agree(ctx, at, aw, expect)
        _mask_agrees(ctx, at, aw, mask, tf_eval)
        _params._precision(ctx, at, aw)
        bias = bool(ctx.get(at, "bias", aw))
        w_in, b_in = _linear(ctx, ctx.get(at, "in_proj", aw), aw + ".in_proj", ng, 3 * hidden, bias)
        w_out, b_out = _linear(ctx, ctx.get(at, "out_proj", aw), aw + ".out_proj", hidden, ng, bias)
        ln_w, ln_b, eps = _layer_norm(ctx, ctx.get(lt, "attn_layer_norm", lw), lw + ".attn_layer_norm", ng, ln_eps)
        out.append(AttentionLayer(w_in=w_in, b_in=b_in, w_out=w_out, b_out=b_out, ln_w=ln_w, ln_b=ln_b, ln_eps=eps))
    return tuple(out)


def _fold_concat(ctx, net: Network, where: str, te: np.ndarray, ntypes: int, one_side: bool) -> dict:
    """Scalar-input nets per type pair: the first layer's type-embedding columns become bias."""
    first = net.layers[0]
    tebd = te.shape[1]
    want = 1 + (tebd if one_side else 2 * tebd)
    if first.n_in != want:
        raise ModelFormatError(f"{ctx.source}: {where}.networks[0] takes {first.n_in} inputs; concat mode with "
                               f"tebd_dim {tebd}{' and type_one_side' if one_side else ''} gives {want}")
    if first.shortcut:
        raise ctx.fail(where + ".networks[0].layers[0]", "a residual first layer (neuron[0] equals its input width)",
                       "the type-embedding inputs would pass through the shortcut; such a net cannot be reduced "
                       "to one input and is not supported -- retrain with a different first neuron width")
    out = {}
    for key, w_s, b in fold_type_columns(first.w, first.b, te, ntypes, one_side):
        # no shortcut (refused above): with one input, a width of 1 or 2 would otherwise gain one
        layer = Layer(w=w_s, b=b, idt=first.idt, activation=first.activation, resnet=False)
        out[key] = Network((layer, *net.layers[1:]))
    return out


def _tf_evaluation(ctx, tree: dict, where: str, backend: str) -> float:
    """The ``evaluation`` marker of a TF graph's tree: its rcut_smth of the smooth type embedding's switch."""
    ew = where + ".evaluation"
    ev = tree["evaluation"]
    if not isinstance(ev, dict) or ev.get("backend") != TF_EVALUATION or backend.lower() != "tensorflow":
        raise ctx.fail(ew, ev, f"deepcomp's readers write {{backend: {TF_EVALUATION}, switch_rcut_smth: ...}} "
                       "there, in trees of TensorFlow graphs only", ModelFormatError)
    value = ctx.get(ev, "switch_rcut_smth", ew)
    rcut_smth = float(ctx.get(tree, "rcut_smth", where))
    if not isinstance(value, (int, float)) or abs(float(value) - rcut_smth) > 1e-6 * max(1.0, rcut_smth):
        raise ctx.fail(ew + ".switch_rcut_smth", value, f"expected the script's rcut_smth, {rcut_smth} within float32 "
                       "rounding", ModelFormatError)
    return float(value)


def _tf_padding_input(net: Network, geo: dict, te: np.ndarray, table, mode: str, smooth: bool,
                      ntypes: int) -> np.ndarray:
    """TensorFlow: a padding slot's first embedding row per centre type, from the stored net itself.

    The slot has the radial input -davg/dstd and the padding type (its type embedding is the zero last
    row of ``te``); in strip mode its type term is the (centre, padding) row of the strip table, which
    the smooth type embedding weighs with a switch of 0."""
    s = -geo["davg"][:, 0] / geo["dstd"][:, 0]
    pad = ntypes
    if mode == "strip":
        g = net(s[:, None])
        if smooth:
            return g
        rows = np.arange(ntypes) * (ntypes + 1) + pad
        return g * (1.0 + table[rows])
    tebd = te.shape[1]
    one_side = net.n_in == 1 + tebd
    x = [s[:, None], np.repeat(te[pad][None, :], ntypes, axis=0)]
    if not one_side:
        x.append(te[:ntypes])
    return net(np.concatenate(x, axis=1))


def parse_dpa1(ctx, tree: dict, where: str, type_map: tuple, backend: str = "") -> Dpa1Params:
    """A ``dpa1`` / ``se_atten`` / ``se_atten_v2`` descriptor tree (any attn_layer) as :class:`Dpa1Params`."""
    h = _params  # its shared readers: _common_checks, _geometry, _collection, _type_embedding, _pairs
    ntypes = len(type_map)
    kind = ctx.get(tree, "type", where)
    ver = tree.get("@version")
    if isinstance(ver, int) and ver > MAX_DESCRIPTOR_VERSION:
        raise ctx.fail(where + ".@version", ver, f"this deepcomp reads DPA-1 descriptor versions up to "
                       f"{MAX_DESCRIPTOR_VERSION} (version 4 adds higher moment bases, lmax); save the model with "
                       "lmax 1 or upgrade deepcomp")
    lmax = int(ctx.opt(tree, "lmax", 1, "3.2") or 1)
    if lmax != 1:
        raise ctx.fail(where + ".lmax", lmax, "only DPA-1 models with lmax 1 (DeePMD-kit's default) are supported")
    if tree.get("compress") is not None:
        raise ctx.fail(where + ".compress", "present", "this tree holds DeePMD-kit's own compression tables; "
                       "give deepcomp the uncompressed model (it tabulates the nets itself)")
    tf_eval = tree.get("evaluation") is not None
    switch_rcut_smth = _tf_evaluation(ctx, tree, where, backend) if tf_eval else None
    if backend.lower() == "tensorflow" and not tf_eval:
        raise ctx.fail(where + ".type", kind, "a DPA-1 tree converted from a TensorFlow graph is not supported: "
                       "TensorFlow's attention (always normalised, temperature 1, attn_mask, its own switch and "
                       "padding) is not what the tree describes; give deepcomp the .pb graph itself")
    h._common_checks(ctx, tree, where, type_map)
    if ctx.opt(tree, "use_econf_tebd", False, "3.0"):
        raise ctx.fail(where + ".use_econf_tebd", True, "electronic-configuration type embeddings are not supported")
    if kind == "se_atten_v2":
        mode, smooth = "strip", True
    else:
        mode = ctx.get(tree, "tebd_input_mode", where)
        smooth = bool(ctx.get(tree, "smooth_type_embedding", where))
    if mode not in ("concat", "strip"):
        raise ctx.fail(where + ".tebd_input_mode", mode, "DPA-1 type embeddings are 'concat' or 'strip'")
    sel = ctx.get(tree, "sel", where)
    if isinstance(sel, (list, tuple)) and len(sel) != 1:
        raise ctx.fail(where + ".sel", sel, "DPA-1 takes one sel for all types", ModelFormatError)
    nsel = int(sel[0] if isinstance(sel, (list, tuple)) else sel)
    geo = h._geometry(ctx, tree, where, 4)
    ng = geo["neuron"][-1]
    one_side = bool(ctx.get(tree, "type_one_side", where))
    mask = _self_mask(ctx, tree, where, "attn_mask", tf_eval)
    ctx.expect(tree, "ntypes", where, ntypes, "the number of types in type_map")

    te = h._type_embedding(ctx, tree, where, ntypes, type_map)
    ctx.expect(tree, "tebd_dim", where, te.shape[1], "the type embedding's width")

    emb = h._collection(ctx, ctx.get(tree, "embeddings", where), where + ".embeddings", ntypes, "embedding_network",
                        False, True)
    if list(emb) != [()]:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings must hold one network (ndim 0)")
    widths = tuple(l.n_out for l in emb[()].layers)
    if widths != geo["neuron"] or emb[()].layers[0].activation != geo["activation"]:
        raise ModelFormatError(f"{ctx.source}: {where}.embeddings: the net's widths {widths} and activation "
                               f"disagree with '{where}.neuron' {geo['neuron']} / activation_function")
    table = None
    if mode == "strip":
        if emb[()].n_in != 1:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings: the strip-mode net takes one input, "
                                   f"found {emb[()].n_in}")
        strip = h._collection(ctx, ctx.get(tree, "embeddings_strip", where), where + ".embeddings_strip", ntypes,
                              "embedding_network", False, False)
        if list(strip) != [()]:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip must hold one network")
        if strip[()].n_in != (1 if one_side else 2) * te.shape[1]:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip takes {strip[()].n_in} inputs; with "
                                   f"type_one_side {one_side} and tebd_dim {te.shape[1]} it takes "
                                   f"{(1 if one_side else 2) * te.shape[1]}")
        if one_side:
            table = strip[()](te)
        else:
            nt1 = ntypes + 1
            centre, nbr = np.divmod(np.arange(nt1 * nt1), nt1)
            table = strip[()](np.concatenate([te[nbr], te[centre]], axis=1))
        if table.shape[1] != ng:
            raise ModelFormatError(f"{ctx.source}: {where}: strip net width {table.shape[1]} differs from the "
                                   f"embedding net's {ng}")
        nets = emb
    else:
        if tree.get("embeddings_strip") is not None:
            raise ModelFormatError(f"{ctx.source}: {where}.embeddings_strip is present in concat mode; "
                                   "the file is inconsistent")
        nets = _fold_concat(ctx, emb[()], where + ".embeddings", te, ntypes, one_side)

    attn_layer = int(ctx.get(tree, "attn_layer", where))
    hidden = int(ctx.get(tree, "attn", where))
    dotr = bool(ctx.get(tree, "attn_dotr", where))
    normalize = bool(ctx.get(tree, "normalize", where))
    scaling_factor = float(ctx.get(tree, "scaling_factor", where))
    temperature = ctx.get(tree, "temperature", where)
    trainable_ln = ctx.get(tree, "trainable_ln", where)  # checked against each layer norm
    ln_eps = ctx.get(tree, "ln_eps", where)
    if attn_layer < 0:
        raise ctx.fail(where + ".attn_layer", attn_layer, "expected a number of layers >= 0", ModelFormatError)
    layers = _attention(ctx, ctx.get(tree, "attention_layers", where), where + ".attention_layers",
                        attn_layer=attn_layer, nnei=nsel, ng=ng, hidden=hidden, dotr=dotr, normalize=normalize,
                        scaling_factor=scaling_factor, temperature=temperature, smooth=smooth,
                        trainable_ln=trainable_ln, ln_eps=ln_eps, mask=mask, tf_eval=tf_eval)
    scaling = float(temperature) if temperature is not None else float((hidden * scaling_factor) ** -0.5)
    tf = {}
    if tf_eval:
        if not normalize or temperature != 1.0 or mode == "strip" and one_side:
            raise ctx.fail(where + ".evaluation", TF_EVALUATION, "TensorFlow's DPA-1 normalises, has temperature "
                           "1 and a two-side strip net; the tree says otherwise", ModelFormatError)
        tf = dict(tf_switch=True, switch_rcut_smth=switch_rcut_smth, unit_floor=TF_UNIT_FLOOR,
                  pad_input=_tf_padding_input(emb[()], geo, te, table, mode, smooth, ntypes))
    return Dpa1Params(
        rcut=geo["rcut"], rcut_smth=geo["rcut_smth"], nsel=nsel, ntypes_model=ntypes,
        axis_neuron=int(ctx.get(tree, "axis_neuron", where)), type_one_side=one_side,
        concat_output_tebd=bool(ctx.get(tree, "concat_output_tebd", where)),
        exclude_types=h._pairs(ctx.get(tree, "exclude_types", where)), env_protection=geo["env_protection"],
        davg=geo["davg"], dstd=geo["dstd"], embeddings=nets, type_embedding=te, tebd_input_mode=mode,
        type_pair_table=table, smooth=smooth, layers=layers, attn_dotr=dotr, normalize=normalize, scaling=scaling,
        neuron=geo["neuron"], activation=geo["activation"], kind="dpa1", attn_mask=mask, **tf,
    )
