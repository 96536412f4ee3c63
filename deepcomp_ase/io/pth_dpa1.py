"""DPA-1 descriptors (``dpa1``/``se_atten``, ``se_atten_v2`` with attention layers) of a PyTorch model.

Rebuilds, from the model definition and the state dict, the descriptor tree ``dp convert-backend``
writes (DeePMD-kit 3.2's ``DescrptDPA1.serialize`` / ``DescrptSeAttenV2.serialize``, key order
included), so that model/params_dpa1.py reads .pth/.pt files and .dp files alike.
"""

from __future__ import annotations

from ..errors import ModelFormatError


def _pth():
    from . import pth  # one-way at import time: pth.py dispatches here

    return pth


def _linear(st, name: str, precision: str, trainable: bool) -> dict:
    """An attention projection (a bias-carrying linear layer: ``.matrix``, ``.bias``)."""
    return _pth()._layer(st, name, activation="none", resnet=False, precision=precision, trainable=trainable)


def _layer_norm(st, name: str, eps: float, trainable: bool, raw_prec: str, width: int) -> dict:
    w = st.get(name + ".matrix")
    b = st.get(name + ".bias")
    if w.shape != (width,) or b.shape != (width,):
        raise ModelFormatError(f"{st.path}: tensors '{st.key(name)}.matrix/.bias' have shapes {w.shape}, {b.shape}; "
                               f"expected ({width},)")
    return {"@class": "LayerNorm", "@version": 1, "eps": eps, "trainable": trainable, "precision": raw_prec,
            "@variables": {"w": w, "b": b}}


def _attention(st, block: str, *, nlayer: int, nnei: int, ng: int, hidden: int, dotr: bool, do_mask: bool,
               scaling_factor: float, normalize: bool, temperature, trainable_ln: bool, ln_eps: float, smooth: bool,
               raw_prec: str, prec: str, trainable: bool) -> dict:
    base = {"nnei": nnei, "embed_dim": ng, "hidden_dim": hidden, "dotr": dotr, "do_mask": do_mask,
            "scaling_factor": scaling_factor, "normalize": normalize, "temperature": temperature}
    layers = []
    for n in range(nlayer):
        name = f"{block}dpa1_attention.attention_layers.{n}."
        at = name + "attention_layer."
        layers.append({
            **base, "trainable_ln": trainable_ln, "ln_eps": ln_eps, "precision": raw_prec,
            "attention_layer": {
                **base, "bias": True, "smooth": smooth, "precision": raw_prec,
                "in_proj": _linear(st, at + "in_proj", prec, trainable),
                "out_proj": _linear(st, at + "out_proj", prec, trainable),
            },
            "attn_layer_norm": _layer_norm(st, name + "attn_layer_norm", ln_eps, trainable_ln, raw_prec, ng),
        })
        # num_heads sits after hidden_dim in DeePMD-kit's layout
        inner = layers[-1]["attention_layer"]
        layers[-1]["attention_layer"] = {k: inner[k] for k in ("nnei", "embed_dim", "hidden_dim")} | {
            "num_heads": 1} | {k: v for k, v in inner.items() if k not in ("nnei", "embed_dim", "hidden_dim")}
    if st.has(f"{block}dpa1_attention.attention_layers.{nlayer}.attn_layer_norm.matrix"):
        raise ModelFormatError(f"{st.path}: the state dict holds more than attn_layer = {nlayer} attention layers")
    return {"@class": "NeighborGatedAttention", "@version": 1, "layer_num": nlayer, **base,
            "trainable_ln": trainable_ln, "ln_eps": ln_eps, "precision": raw_prec, "attention_layers": layers}


def _type_embedding(st, name: str, *, ntypes: int, tebd_dim: int, raw_prec: str, prec: str, trainable: bool,
                    use_tebd_bias: bool, type_map) -> dict:
    pth = _pth()
    w = st.get(name + ".layers.0.matrix")
    if w.shape != (ntypes, tebd_dim) or st.has(name + ".layers.1.matrix"):
        raise ModelFormatError(f"{st.path}: tensor '{st.key(name)}.layers.0.matrix' has shape {w.shape}; "
                               f"expected one linear layer of shape {(ntypes, tebd_dim)}")
    return {
        "@class": "TypeEmbedNet", "@version": 2, "ntypes": ntypes, "neuron": [tebd_dim], "resnet_dt": False,
        "precision": raw_prec, "activation_function": "Linear", "trainable": trainable, "padding": True,
        "use_econf_tebd": False, "use_tebd_bias": use_tebd_bias, "type_map": type_map,
        "embedding": pth._embedding_net(st, name, neuron=[tebd_dim], activation="Linear", resnet_dt=False,
                                        precision=prec, trainable=trainable, bias=use_tebd_bias),
    }


def descrpt_dpa1(path, d, ntypes, type_map, st, block, where) -> dict:
    """The tree of a ``dpa1``/``se_atten`` descriptor, or of an ``se_atten_v2`` one with attention layers."""
    pth = _pth()
    v2 = d.get("type") == "se_atten_v2"
    sel, neuron, act, resnet_dt, prec = pth._common(path, d, where)
    raw_prec = d.get("precision", "default")
    if d.get("use_econf_tebd"):
        raise pth._unsupported(path, where + ".use_econf_tebd", True,
                               "electronic-configuration type embeddings are not supported")
    if int(d.get("lmax", 1) or 1) != 1:
        raise pth._unsupported(path, where + ".lmax", d.get("lmax"),
                               "only DPA-1 models with lmax 1 (DeePMD-kit's default) are supported")
    if v2:
        mode, smooth = "strip", True
    else:
        mode = d.get("tebd_input_mode", "concat")
        legacy = d.get("stripped_type_embedding")
        if legacy is not None:  # DeePMD-kit 2.x's switch, mapped as its argument check does
            mode = "strip" if legacy else "concat"
        smooth = bool(d.get("smooth_type_embedding", False))
    tebd_dim = int(d.get("tebd_dim", 8))
    use_tebd_bias = bool(d.get("use_tebd_bias", False))
    trainable = d.get("trainable", True)
    ln_eps = d.get("ln_eps")
    ln_eps = 1e-5 if ln_eps is None else ln_eps
    nnei = sum(sel)
    atten = block + "se_atten."
    st.check_mask(atten + "emask.type_mask", pth._pair_mask(ntypes, d.get("exclude_types")), f"{where}.exclude_types")
    net = dict(neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=prec, trainable=trainable)
    attn_layer = int(d.get("attn_layer", 2))
    hidden = int(d.get("attn", 128))
    dotr = bool(d.get("attn_dotr", True))
    scaling_factor = d.get("scaling_factor", 1.0)
    normalize = d.get("normalize", True)
    temperature = d.get("temperature")
    trainable_ln = d.get("trainable_ln", True)
    embeddings = pth._collection(st, atten + "filter_layers", 0, ntypes, "embedding_network",
                                 lambda k: pth._embedding_net(st, k, **net))
    strip = None
    if mode == "strip":
        strip = pth._collection(st, atten + "filter_layers_strip", 0, ntypes, "embedding_network",
                                lambda k: pth._embedding_net(st, k, **net))
    head = {
        "@class": "Descriptor", "type": "se_atten_v2" if v2 else "dpa1", "@version": 2,
        "rcut": d["rcut"], "rcut_smth": d["rcut_smth"], "sel": sel, "ntypes": ntypes, "neuron": neuron,
        "axis_neuron": d.get("axis_neuron", 4), "tebd_dim": tebd_dim,
    }
    if not v2:
        head["tebd_input_mode"] = mode
    head.update({
        "set_davg_zero": d.get("set_davg_zero", not v2), "attn": hidden, "attn_layer": attn_layer,
        "attn_dotr": dotr, "attn_mask": False, "activation_function": act, "resnet_dt": resnet_dt,
        "scaling_factor": scaling_factor, "normalize": normalize, "temperature": temperature,
        "trainable_ln": trainable_ln, "ln_eps": ln_eps,
    })
    if not v2:
        head["smooth_type_embedding"] = smooth
    head.update({
        "type_one_side": bool(d.get("type_one_side", False)), "concat_output_tebd": d.get("concat_output_tebd", True),
        "use_econf_tebd": False, "use_tebd_bias": use_tebd_bias, "type_map": type_map, "precision": prec,
        "embeddings": embeddings,
    })
    if v2:
        head["embeddings_strip"] = strip
    head.update({
        "attention_layers": _attention(
            st, atten, nlayer=attn_layer, nnei=nnei, ng=neuron[-1], hidden=hidden, dotr=dotr,
            do_mask=bool(d.get("attn_mask", False)), scaling_factor=scaling_factor, normalize=normalize,
            temperature=temperature, trainable_ln=trainable_ln, ln_eps=ln_eps, smooth=smooth, raw_prec=raw_prec,
            prec=prec, trainable=trainable),
        "env_mat": pth._env_mat(d, protection=not v2),  # DeePMD-kit's se_atten_v2 leaves protection out
        "type_embedding": _type_embedding(st, block + "type_embedding.embedding.embedding_net", ntypes=ntypes,
                                          tebd_dim=tebd_dim, raw_prec=raw_prec, prec=prec, trainable=trainable,
                                          use_tebd_bias=use_tebd_bias, type_map=type_map),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "@variables": pth._stats(st, atten, ntypes, nnei, 4),
        "trainable": trainable,
        "spin": None,
    })
    if not v2 and strip is not None:
        head["embeddings_strip"] = strip
    return head
