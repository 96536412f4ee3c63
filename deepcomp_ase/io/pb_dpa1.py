"""DPA-1 (``se_atten``/``dpa1``, ``se_atten_v2``) of a frozen TensorFlow graph, as a ``dpa1`` tree.

Where the graph's constants go (DeePMD-kit 2.2 and 3.x TF name scopes):

=====================================================  =============================================
graph node                                             tree field
=====================================================  =============================================
``type_embed_net/matrix_{l}`` (+``bias_l``, ``idt_l``)  ``type_embedding.embedding`` layer l-1
``filter_type_all/matrix_{l}`` (+bias, idt)             ``embeddings`` (input s[, tebd_j[, tebd_i]])
``filter_type_all/matrix_{l}_two_side_ebd``             ``embeddings_strip`` (strip mode)
``attention_layer_{i}/c_query|c_key|c_value/matrix``    ``attention_layers[i].attention_layer.in_proj``
``attention_layer_{i}/c_out/matrix`` (+bias)            ``attention_layers[i].attention_layer.out_proj``
``attention_layer_{i}/layer_normalization*/gamma|beta`` ``attention_layers[i].attn_layer_norm``
=====================================================  =============================================

In a hybrid, part k's nodes carry the suffix ``_k`` (``filter_type_all_k``, ``attention_layer_i_k``,
``descrpt_attr_k``) and share ``type_embed_net`` (:func:`hybrid_with_dpa1`).

TensorFlow evaluates DPA-1 differently from DeePMD-kit's other backends, and the tree records it
in ``evaluation: {backend: tensorflow, ...}`` (a deepcomp field; model/params_dpa1.py reads it): the logits are not
scaled (temperature 1) and q, k, v are always normalised with a norm floor of 1e-6 (``l2_normalize``),
a padding slot has the padding type (the zero type embedding) rather than the first atom's, and the
smooth type embedding weighs with 1 - (1 - rcut_smth s)^3 rebuilt from s = w(r)/r instead of w(r), its
rcut_smth the script's double (``switch_rcut_smth``) where the environment op has float32 cut-offs.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from ..model.params_dpa1 import TF_EVALUATION  # the tree's marker of TensorFlow's evaluation
from .pb_settings import find_activation
from .tree import layer_record as _layer

#: DeePMD-kit's TF layer-norm eps when the script gives none (3.x: ln_eps null; 2.2: Keras' default)
TF_LN_EPS = 1e-3
_LN_NODE = r"^attention_layer_(\d+){}/(layer_normalization(?:_\d+)?)/gamma$"


def _pb():
    from . import pb  # one-way at import time: pb.py dispatches here

    return pb


def _disagree(graph, field: str, found, graph_says: str) -> ModelFormatError:
    return ModelFormatError(f"{graph.path}: field '{field}' is {found!r} but {graph_says}; the graph and its "
                            "training script contradict each other")


def _count(graph, pattern: str) -> int:
    n = 0
    while graph.has(pattern.format(n)):
        n += 1
    return n


def _type_embedding(graph, te: dict, ntypes: int, type_map, trainable) -> tuple[dict, int]:
    """``type_embed_net``: depth, widths and bias as the graph holds them (checked against the script's
    ``model.type_embedding``, which DeePMD-kit's older test graphs lack), the activation from the script
    or, without one, from the op the graph applies."""
    pb = _pb()
    nlayer = 0
    while graph.has(f"type_embed_net/matrix_{nlayer + 1}"):
        nlayer += 1
    if nlayer == 0:
        raise ModelFormatError(f"{graph.path}: graph node 'type_embed_net/matrix_1' is missing: a DPA-1 graph "
                               "holds its type embedding net there")
    widths = [int(graph.shape(f"type_embed_net/matrix_{l}")[-1]) for l in range(1, nlayer + 1)]
    neuron = list(te.get("neuron", widths))
    if len(neuron) != nlayer:
        first_odd = f"type_embed_net/matrix_{min(nlayer, len(neuron)) + 1}"
        raise _disagree(graph, "model.type_embedding.neuron", neuron, f"the graph holds {nlayer} type-embedding "
                        f"layers (graph node '{first_odd}' is {'missing' if nlayer < len(neuron) else 'extra'})")
    bias = graph.has("type_embed_net/bias_1")
    # DeePMD-kit 2.2 scripts have no use_tebd_bias key and its graphs always hold the bias
    if "use_tebd_bias" in te and bool(te["use_tebd_bias"]) != bias:
        raise _disagree(graph, "model.type_embedding.use_tebd_bias", te["use_tebd_bias"],
                        f"the graph {'holds' if bias else 'has no'} 'type_embed_net/bias_1'")
    if te.get("use_econf_tebd"):
        raise pb._unsupported(graph, "model.type_embedding.use_econf_tebd", True,
                              "electronic-configuration type embeddings are not supported")
    act = te.get("activation_function")
    if act is None:
        act = find_activation(graph, "type_embed_net/matrix_1") or _linear_type_embedding(graph, nlayer)
    resnet_dt = bool(te.get("resnet_dt", False))
    raw_prec = te.get("precision", "default")
    prec = pb._precision_name(graph, raw_prec)
    net = pb._embedding_net(graph, lambda k, l: f"type_embed_net/{k}_{l}", in_dim=ntypes, neuron=neuron,
                            activation=act, resnet_dt=resnet_dt, precision=prec, bias=bias)
    tree = {
        "@class": "TypeEmbedNet", "@version": 2, "ntypes": ntypes, "neuron": neuron, "resnet_dt": resnet_dt,
        "precision": raw_prec, "activation_function": act, "trainable": trainable, "padding": True,
        "use_econf_tebd": False, "use_tebd_bias": bias, "type_map": type_map, "embedding": net,
    }
    return tree, int(neuron[-1])


def _linear_type_embedding(graph, nlayer: int) -> str:
    """"linear" when one type-embedding layer feeds the padded table (``t_typeebd``) with no op but
    reshapes in between, as in DeePMD-kit's older graphs without a ``type_embedding`` section."""
    node = next((n for n in graph.consumers("type_embed_net/matrix_1/read") + graph.consumers("type_embed_net/matrix_1")
                 if n.op == "MatMul"), None)
    for _ in range(8 if node is not None and nlayer == 1 else 0):
        nxt = [n for n in graph.consumers(node.name) if n.op in ("BiasAdd", "Add", "AddV2", "Reshape", "ConcatV2",
                                                                    "Identity")]
        if len(nxt) != 1:
            break
        node = nxt[0]
        if node.name.startswith("t_typeebd"):
            return "linear"
    raise ModelFormatError(f"{graph.path}: the training script has no 'model.type_embedding' and the graph does "
                           "not show the type embedding's activation (the op after 'type_embed_net/matrix_1' is "
                           "no activation deepcomp knows)")


def _linear(graph, names: list[str], n_in: int, prec: str) -> dict:
    """One projection from the graph's ``matrix``/``bias`` pairs, side by side (q, k, v -> in_proj)."""
    ws, bs = [], []
    for name in names:
        w = graph.array(name + "/matrix")
        b = graph.array(name + "/bias")
        if w.ndim != 2 or w.shape[0] != n_in or b.shape != (w.shape[1],):
            raise ModelFormatError(f"{graph.path}: constants '{name}/matrix', '{name}/bias' have shapes {w.shape}, "
                                   f"{b.shape}; expected ({n_in}, n) and (n,)")
        ws.append(w)
        bs.append(b)
    return _layer(np.concatenate(ws, axis=1), np.concatenate(bs), None, activation="none", resnet=False,
                  precision=prec)


def _layer_norm_names(graph, nlayer: int, suffix: str) -> list[str]:
    """The scope of each layer's norm: ``layer_normalization`` (3.x), Keras' numbered names (2.2)."""
    found: dict[int, list[str]] = {}
    pattern = re.compile(_LN_NODE.format(re.escape(suffix)))
    for name in graph.nodes:
        m = pattern.match(name)
        if m and graph.has(name):
            found.setdefault(int(m.group(1)), []).append(f"attention_layer_{m.group(1)}{suffix}/{m.group(2)}")
    out = []
    for i in range(nlayer):
        scopes = found.get(i, [])
        if len(scopes) != 1:
            raise ModelFormatError(f"{graph.path}: attention layer {i} has {len(scopes)} layer norms "
                                   f"({', '.join(scopes) or 'none'}); expected one "
                                   f"'attention_layer_{i}{suffix}/layer_normalization*/gamma'")
        out.append(scopes[0])
    extra = sorted(set(found) - set(range(nlayer)))
    if extra:
        raise ModelFormatError(f"{graph.path}: the graph holds a layer norm of attention layer {extra[0]}, "
                               f"but only {nlayer} attention layers")
    return out


def _self_mask(graph, d: dict, where: str, nlayer: int, suffix: str) -> bool:
    """attn_mask: TF multiplies each layer's weights by 1 - I, built by tf.eye (node 'attention_layer_i/eye/diag')."""
    found = [f"attention_layer_{i}{suffix}/eye/diag" in graph.nodes for i in range(nlayer)]
    said = bool(d.get("attn_mask", False))
    if nlayer and found != [said] * nlayer:
        raise _disagree(graph, f"{where}.attn_mask", d.get("attn_mask", False), "the graph's attention layers "
                        f"{'lack' if said else 'have'} the diagonal mask ('attention_layer_i{suffix}/eye/diag': "
                        f"{found})")
    return said and nlayer > 0


def _attention(graph, *, nlayer: int, nnei: int, ng: int, hidden: int, dotr: bool, smooth: bool, mask: bool,
               trainable_ln: bool, ln_eps: float, raw_prec: str, prec: str, suffix: str) -> dict:
    base = {"nnei": nnei, "embed_dim": ng, "hidden_dim": hidden, "dotr": dotr, "do_mask": mask,
            "scaling_factor": 1.0, "normalize": True, "temperature": 1.0}
    layers = []
    for i, ln in enumerate(_layer_norm_names(graph, nlayer, suffix)):
        scope = f"attention_layer_{i}{suffix}"
        in_proj = _linear(graph, [f"{scope}/c_query", f"{scope}/c_key", f"{scope}/c_value"], ng, prec)
        if in_proj["@variables"]["w"].shape != (ng, 3 * hidden):
            raise ModelFormatError(f"{graph.path}: the query/key/value matrices of '{scope}' are not all "
                                   f"({ng}, {hidden})")
        out_proj = _linear(graph, [f"{scope}/c_out"], hidden, prec)
        if out_proj["@variables"]["w"].shape != (hidden, ng):
            raise ModelFormatError(f"{graph.path}: constant '{scope}/c_out/matrix' has shape "
                                   f"{out_proj['@variables']['w'].shape}, expected {(hidden, ng)}")
        w, b = graph.array(ln + "/gamma"), graph.array(ln + "/beta")
        if w.shape != (ng,) or b.shape != (ng,):
            raise ModelFormatError(f"{graph.path}: constants '{ln}/gamma', '{ln}/beta' have shapes {w.shape}, "
                                   f"{b.shape}; expected ({ng},)")
        layers.append({
            **base, "trainable_ln": trainable_ln, "ln_eps": ln_eps, "precision": raw_prec,
            "attention_layer": {**{k: base[k] for k in ("nnei", "embed_dim", "hidden_dim")}, "num_heads": 1,
                                **{k: v for k, v in base.items() if k not in ("nnei", "embed_dim", "hidden_dim")},
                                "bias": True, "smooth": smooth, "precision": raw_prec,
                                "in_proj": in_proj, "out_proj": out_proj},
            "attn_layer_norm": {"@class": "LayerNorm", "@version": 1, "eps": ln_eps, "trainable": trainable_ln,
                                "precision": raw_prec, "@variables": {"w": w, "b": b}},
        })
    return {"@class": "NeighborGatedAttention", "@version": 1, "layer_num": nlayer, **base,
            "trainable_ln": trainable_ln, "ln_eps": ln_eps, "precision": raw_prec, "attention_layers": layers}


def _fixed_settings(graph, d: dict, where: str) -> None:
    """Settings TensorFlow's DPA-1 cannot change: a script that says otherwise did not make this graph."""
    for key, tf_value in (("scaling_factor", 1.0), ("normalize", True), ("temperature", None),
                          ("concat_output_tebd", True), ("env_protection", 0.0)):
        if key in d and d[key] != tf_value:
            raise _disagree(graph, f"{where}.{key}", d[key], f"DeePMD-kit's TensorFlow backend computes with "
                            f"{tf_value!r} only")
    if d.get("use_econf_tebd"):
        raise _pb()._unsupported(graph, where + ".use_econf_tebd", True,
                                 "electronic-configuration type embeddings are not supported")


def _mode(graph, d: dict, where: str, scope: str) -> tuple[str, bool]:
    """tebd_input_mode (the graph decides: its strip net exists or not) and smooth_type_embedding."""
    v2 = d.get("type") == "se_atten_v2"
    if graph.has(f"{scope}/matrix_1_one_side_ebd"):
        raise UnsupportedModelError(f"{graph.path}: graph node '{scope}/matrix_1_one_side_ebd' (a one-side "
                                    "strip net) is not part of any DPA-1 graph DeePMD-kit's TensorFlow backend makes")
    strip = graph.has(f"{scope}/matrix_1_two_side_ebd")
    if v2:
        said, smooth = "strip", True
    else:
        legacy = d.get("stripped_type_embedding")
        said = ("strip" if legacy else "concat") if legacy is not None else d.get("tebd_input_mode", "concat")
        smooth = bool(d.get("smooth_type_embedding", False))
    if (said == "strip") != strip:
        raise _disagree(graph, f"{where}.tebd_input_mode", said, f"the graph {'holds' if strip else 'has no'} the "
                        f"strip net '{scope}/matrix_1_two_side_ebd'")
    return said, smooth


def _check_smooth_exclusion(graph, where: str, excl, davg: np.ndarray) -> None:
    """TF's smooth type embedding gives an excluded neighbour the row (davg_0, davg_0, davg_0, davg_0) of
    its centre type instead of zeros; deepcomp evaluates exclusions as zero rows."""
    centres = sorted({int(p[0]) for p in excl} | {int(p[1]) for p in excl})
    bad = [t for t in centres if np.any(davg[t, :, 0] != 0)]
    if bad:
        raise UnsupportedModelError(
            f"{graph.path}: field '{where}.exclude_types' is {excl} with smooth_type_embedding and a non-zero "
            f"davg (type {bad[0]}): DeePMD-kit's TensorFlow backend then fills an excluded neighbour's "
            "environment row with the centre's davg, which deepcomp does not reproduce; retrain with "
            "set_davg_zero true")


def descrpt_dpa1(graph, d: dict, ntypes: int, type_map, where: str, model_def: dict, suffix: str = "") -> dict:
    """The ``dpa1`` tree of a TF ``se_atten``/``dpa1``/``se_atten_v2`` descriptor (any attn_layer);
    ``suffix``: its node names' suffix in a hybrid (``_k`` for part k, :func:`hybrid_with_dpa1`)."""
    pb = _pb()
    scope = "filter_type_all" + suffix
    _fixed_settings(graph, d, where)
    mode, smooth = _mode(graph, d, where, scope)
    raw_prec = d.get("precision", "default")
    prec = pb._precision_name(graph, raw_prec)
    sel = pb._sel_list(graph, d, where)
    pb._check_descrpt_attrs(graph, suffix, sel, where, d)
    switch_rcut_smth = float(d["rcut_smth"])  # TF's smooth switch takes the double, the op float32
    d = pb._op_cutoffs(graph, suffix, d)
    nnei = sum(sel)
    neuron = list(d["neuron"])
    act = d.get("activation_function", "tanh")
    resnet_dt = bool(d.get("resnet_dt", False))
    trainable = d.get("trainable", True)
    te = model_def.get("type_embedding") or {}
    if not isinstance(te, dict):
        raise ModelFormatError(f"{graph.path}: field 'model.type_embedding' is {te!r}, expected a section")
    te_tree, tebd_dim = _type_embedding(graph, te, ntypes, type_map, trainable)

    if mode == "strip":
        one_side = False  # TF builds the two-side strip net whatever type_one_side says
        emb_in = 1
    else:
        first = graph.shape(f"{scope}/matrix_1") if graph.has(f"{scope}/matrix_1") else None
        one_side = bool(d.get("type_one_side", False))
        if first is not None and first[0] != (1 + tebd_dim if one_side else 1 + 2 * tebd_dim):
            raise _disagree(graph, f"{where}.type_one_side", one_side, f"'{scope}/matrix_1' takes {first[0]} "
                            f"inputs (type embedding width {tebd_dim})")
        emb_in = 1 + tebd_dim if one_side else 1 + 2 * tebd_dim
    net = dict(neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=prec)
    embeddings = pb._collection(0, ntypes, "embedding_network", {(): pb._embedding_net(
        graph, lambda k, l: f"{scope}/{k}_{l}", in_dim=emb_in, **net)})

    nlayer = _count(graph, "attention_layer_{}" + suffix + "/c_query/matrix")
    said = d.get("attn_layer", 2)
    if said != nlayer:
        raise _disagree(graph, f"{where}.attn_layer", said, f"the graph holds {nlayer} attention layers "
                        f"('attention_layer_*{suffix}/c_query/matrix')")
    hidden = int(d.get("attn", 128))
    q0 = f"attention_layer_0{suffix}/c_query/matrix"
    if nlayer and graph.shape(q0)[1] != hidden:
        raise _disagree(graph, f"{where}.attn", hidden, f"'{q0}' has {graph.shape(q0)[1]} columns")
    dotr = bool(d.get("attn_dotr", True))
    mask = _self_mask(graph, d, where, nlayer, suffix)
    trainable_ln = bool(d.get("trainable_ln", True))
    ln_eps = d.get("ln_eps")
    ln_eps = TF_LN_EPS if ln_eps is None else float(ln_eps)
    excl = d.get("exclude_types", [])
    stats = pb._stat(graph, suffix, ntypes, nnei, 4)
    if smooth and excl:
        _check_smooth_exclusion(graph, where, excl, stats["davg"])

    tree = {
        "@class": "Descriptor", "type": "dpa1", "@version": 2, "rcut": d["rcut"], "rcut_smth": d["rcut_smth"],
        "sel": sel, "ntypes": ntypes, "neuron": neuron, "axis_neuron": d.get("axis_neuron", 4),
        "tebd_dim": tebd_dim, "tebd_input_mode": mode, "set_davg_zero": d.get("set_davg_zero", not np.any(stats["davg"])),
        "attn": hidden, "attn_layer": nlayer, "attn_dotr": dotr, "attn_mask": mask, "activation_function": act,
        "resnet_dt": resnet_dt, "scaling_factor": 1.0, "normalize": True, "temperature": 1.0,
        "trainable_ln": trainable_ln, "ln_eps": ln_eps, "smooth_type_embedding": smooth, "type_one_side": one_side,
        "concat_output_tebd": True, "use_econf_tebd": False, "use_tebd_bias": te_tree["use_tebd_bias"],
        "type_map": type_map, "precision": prec, "embeddings": embeddings,
    }
    if mode == "strip":
        tree["embeddings_strip"] = pb._collection(0, ntypes, "embedding_network", {(): pb._embedding_net(
            graph, lambda k, l: f"{scope}/{k}_{l}_two_side_ebd", in_dim=2 * tebd_dim, **net)})
    tree.update({
        "attention_layers": _attention(graph, nlayer=nlayer, nnei=nnei, ng=neuron[-1], hidden=hidden, dotr=dotr,
                                       smooth=smooth, mask=mask, trainable_ln=trainable_ln, ln_eps=ln_eps,
                                       raw_prec=raw_prec, prec=prec, suffix=suffix),
        "env_mat": pb._env_mat(d),
        "type_embedding": te_tree,
        "exclude_types": excl,
        "env_protection": 0.0,
        "@variables": stats,
        "trainable": trainable,
        "spin": None,
        "evaluation": {"backend": TF_EVALUATION, "switch_rcut_smth": switch_rcut_smth},
    })
    return tree


def hybrid_with_dpa1(graph, d: dict, ntypes: int, type_map, model_def: dict) -> tuple[dict, np.ndarray]:
    """A TF hybrid with one DPA-1 part and se_e2_a parts: the ``hybrid`` tree and the row order that
    takes the fitting net's input from TF's layout to the tree's.

    TF builds part k with node suffix ``_k`` and its own cutoff, sel and neighbour list (the DPA-1
    part's sel nearest within its own rcut, padding beyond), all parts sharing the model's
    ``type_embed_net``; an se_e2_a part reads it too (its embedding net takes ``[s, T_j(, T_i)]``,
    folded into per-type nets by :mod:`.pb_tebd`). The one fitting net reads ``[D_0, D_1, ..., T(type)]``;
    the tree's DPA-1 part outputs ``[D_k, T(type)]`` itself (concat_output_tebd), so the type-embedding
    rows move behind part k.
    """
    from .pb_tebd import se_a_tebd_part, type_embedding_table

    pb = _pb()
    where = "model.descriptor"
    children = d.get("list")
    if not isinstance(children, list) or not children:
        raise ModelFormatError(f"{graph.path}: field '{where}.list' is {children!r}; expected a list of descriptors")
    kinds = [c.get("type", "se_e2_a") if isinstance(c, dict) else c for c in children]
    attn = [k for k, t in enumerate(kinds) if t in pb._ATTENTION_TYPES]
    for k, t in enumerate(kinds):
        if k not in attn[:1] and t not in ("se_e2_a", "se_a"):
            raise pb._unsupported(graph, f"{where}.list[{k}].type", t, "a TF hybrid with a DPA-1 part is read with "
                                  "one DPA-1 (se_atten, se_atten_v2, dpa1) part and se_e2_a parts only")
    te = model_def.get("type_embedding") or {}
    tebd = None
    out, tf_dims = [], []
    for k, child in enumerate(children):
        cwhere = f"{where}.list[{k}]"
        if k == attn[0]:
            # every DPA-1 graph is read by descrpt_dpa1 here (se_atten_v2 too): one tree kind per hybrid part
            tree = descrpt_dpa1(graph, child, ntypes, type_map, cwhere, model_def, suffix=f"_{k}")
            tf_dims.append(tree["neuron"][-1] * tree["axis_neuron"])
        else:
            if child.get("tebd_input_mode", "concat") != "concat" or child.get("stripped_type_embedding"):
                raise pb._unsupported(graph, cwhere + ".tebd_input_mode", child.get("tebd_input_mode", "strip"),
                                      "only se_e2_a's concat type embedding is supported")
            if tebd is None:
                tebd = type_embedding_table(graph, te, ntypes)
            tree = se_a_tebd_part(graph, child, tebd, ntypes, type_map, f"_{k}", cwhere)
            tf_dims.append(tree["neuron"][-1] * tree["axis_neuron"])
        out.append(tree)
    tebd_dim = out[attn[0]]["tebd_dim"]
    starts = np.cumsum([0, *tf_dims])
    rows = []
    for k in range(len(out)):
        rows.extend(range(starts[k], starts[k + 1]))
        if k == attn[0]:
            rows.extend(range(starts[-1], starts[-1] + tebd_dim))
    return {"@class": "Descriptor", "type": "hybrid", "@version": 1, "list": out}, np.asarray(rows)
