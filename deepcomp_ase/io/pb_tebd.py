"""se_e2_a with a model-level ``type_embedding`` in a frozen TensorFlow graph, as a plain se_e2_a tree.

What DeePMD-kit's TF backend (2.2 and 3.x alike) computes for such a model:

* the type embedding ``T = N_t(onehot(type))`` is an ordinary embedding net over the one-hot type
  vectors (``type_embed_net/matrix_l``, ``bias_l`` -- 3.x's ``use_tebd_bias``, always present in 2.2
  -- and ``idt_l``), shortcuts included; no padding row;
* the neighbour list is se_e2_a's: ``sel[t]`` slots per neighbour type, in type order, so every slot
  has a fixed neighbour type (the graph holds that list, ``filter_type_all/Const``);
* one embedding net (``filter_type_all/matrix_l``) reads ``[s, T(neighbour type)]`` with
  ``type_one_side``, ``[s, T(neighbour type), T(centre type)]`` without; excluded type pairs are
  zeroed in the environment matrix (padding slots included), as for TF's se_e2_a;
* one fitting net (``layer_l``, ``final_layer``) reads ``[D, T(centre type), fparam, aparam]``.

The first layer of each net is linear in the type-embedding columns, so for a fixed type (pair)
they are a constant added to its bias. Folded in, the embedding net becomes one scalar-input net per
neighbour type (``type_one_side``) or per (centre, neighbour) pair, and the fitting net one net per
type: exactly an se_e2_a model, which every deepcomp path (tables, kernels, LAMMPS) evaluates.
DeePMD-kit itself cannot serialize these models (``dp convert-backend`` refuses them), so the tree
built here has no DeePMD-kit counterpart; its ``model_def_script`` keeps the ``type_embedding``
section, which ``deepcomp info`` reports.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from ..model.activations import check_activation
from ..model.nets import Layer, Network, fold_type_columns
from . import pb as _pb
from .tree import embedding_net_record, layer_record

TEBD_SCOPE = "type_embed_net"
EMBED_SCOPE = "filter_type_all"


def _fail(graph, field: str, found, fix: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{graph.path}: field '{field}' is {found!r}; {fix}")


def type_embedding_table(graph, te: dict, ntypes: int) -> np.ndarray:
    """The (ntypes, dim) type embedding the graph's ``type_embed_net`` computes from one-hot types."""
    where = "model.type_embedding"
    if te.get("use_econf_tebd"):
        raise _fail(graph, where + ".use_econf_tebd", True,
                    "electronic-configuration type embeddings are not supported")
    neuron = te.get("neuron", [8])
    if not isinstance(neuron, list) or not neuron or not all(isinstance(n, int) and n > 0 for n in neuron):
        raise ModelFormatError(f"{graph.path}: field '{where}.neuron' is {neuron!r}; expected a list of widths")
    if graph.has(f"{TEBD_SCOPE}/matrix_{len(neuron) + 1}"):
        raise ModelFormatError(f"{graph.path}: graph node '{TEBD_SCOPE}/matrix_{len(neuron) + 1}' exists but "
                               f"'{where}.neuron' is {neuron} ({len(neuron)} layers)")
    act_name = te.get("activation_function", "tanh")
    act = check_activation(act_name, f"{graph.path}: {where}")
    if act != "none":  # a linear layer has no activation op to check
        _pb._check_activation(graph, f"{TEBD_SCOPE}/matrix_1", act_name)
    resnet_dt = bool(te.get("resnet_dt", False))
    # 2.2 scripts have no use_tebd_bias key and its graphs always hold the bias: the graph decides (a
    # script that asks for a bias the graph lacks fails on the missing node)
    bias = graph.has(f"{TEBD_SCOPE}/bias_1") or bool(te.get("use_tebd_bias", False))
    layers = []
    n_in = ntypes
    for l, n_out in enumerate(neuron, start=1):
        name = f"{TEBD_SCOPE}/matrix_{l}"
        w = graph.array(name)
        if w.shape != (n_in, n_out):
            raise ModelFormatError(f"{graph.path}: constant '{name}' has shape {w.shape}, the training script "
                                   f"implies ({n_in}, {n_out}) ({ntypes} types, '{where}.neuron' {neuron})")
        b = graph.array(f"{TEBD_SCOPE}/bias_{l}") if bias else np.zeros(n_out, w.dtype)
        idt = graph.array(f"{TEBD_SCOPE}/idt_{l}").ravel() if _pb._wants_timestep(resnet_dt, n_in, n_out) else None
        layers.append(Layer(w=w, b=b.ravel(), idt=idt, activation=act, resnet=True))
        n_in = n_out
    onehot = np.eye(ntypes, dtype=layers[0].w.dtype)
    return np.asarray(Network(tuple(layers))(onehot), dtype=np.float64)


def _check_neighbour_types(graph, sel: list[int], scope: str) -> None:
    """The graph's per-slot neighbour types (the embedding-lookup index) are se_e2_a's type-sorted slots."""
    want = np.repeat(np.arange(len(sel)), sel)
    found = [n for n in graph.nodes if n.startswith(scope + "/Const") and n.count("/") == 1 and graph.has(n)]
    if len(found) != 1:
        raise ModelFormatError(f"{graph.path}: expected one neighbour-type constant '{scope}/Const' in the "
                               f"se_e2_a type-embedding graph, found {found or 'none'}")
    got = graph.array(found[0]).ravel()
    if got.shape != want.shape or not np.array_equal(got, want):
        raise UnsupportedModelError(
            f"{graph.path}: graph node '{found[0]}' gives the neighbour slots the types {got.tolist()[:12]}..., not "
            f"sel {sel} slots in type order; deepcomp reads only DeePMD-kit's type-sorted neighbour list")


def _fold_embedding(graph, net: dict, tebd: np.ndarray, ntypes: int, one_side: bool, where: str) -> dict:
    """Per neighbour type (one-side) or per (centre, neighbour) pair: scalar-input nets, the type
    columns of the first layer moved into its bias."""
    first = net["layers"][0]
    w, b = first["@variables"]["w"], first["@variables"]["b"]
    n_out = w.shape[1]
    if n_out in (w.shape[0], 2 * w.shape[0], 1, 2):
        raise _fail(graph, where + ".neuron", net["neuron"],
                    f"a first embedding layer of width {n_out} has a shortcut in DeePMD-kit (input width "
                    f"{w.shape[0]}) or would gain one once the type embedding is folded in (input width 1); "
                    "such a net cannot be reduced to one scalar input -- retrain with another first width")
    b = np.zeros(n_out, w.dtype) if b is None else b
    nets = {}
    for key, w_s, bias in fold_type_columns(w, b, tebd, ntypes, one_side):
        layer = dict(first, bias=True, **{"@variables": {"w": w_s, "b": bias.astype(w.dtype), "idt": None}})
        nets[key] = embedding_net_record(1, net["neuron"], net["activation_function"], net["resnet_dt"], True,
                                         net["precision"], [layer, *net["layers"][1:]])
    return _pb._collection(1 if one_side else 2, ntypes, "embedding_network", nets)


def se_a_tebd_descriptor(graph, m: dict, ntypes: int, type_map) -> tuple[dict, np.ndarray]:
    """The se_e2_a tree (type embedding folded into per-type nets) and the type-embedding table."""
    where = "model.descriptor"
    d = m["descriptor"]
    kind = d.get("type", "se_e2_a")
    if kind not in ("se_e2_a", "se_a"):
        raise _fail(graph, where + ".type", kind,
                    "of the descriptors with a model-level type_embedding only se_e2_a is supported")
    if d.get("tebd_input_mode", "concat") != "concat" or d.get("stripped_type_embedding"):
        raise _fail(graph, where + ".tebd_input_mode", d.get("tebd_input_mode", "strip"),
                    "only se_e2_a's concat type embedding is supported")
    te = m.get("type_embedding")
    if not isinstance(te, dict) or not graph.has(f"{TEBD_SCOPE}/matrix_1"):
        raise ModelFormatError(
            f"{graph.path}: the training script's 'model.type_embedding' is {te!r} and graph node "
            f"'{TEBD_SCOPE}/matrix_1' is {'present' if graph.has(TEBD_SCOPE + '/matrix_1') else 'missing'}; a "
            "type-embedding model has both (a graph without its training script cannot be read this way)")
    tebd = type_embedding_table(graph, te, ntypes)
    return se_a_tebd_part(graph, d, tebd, ntypes, type_map, "", where), tebd


def se_a_tebd_part(graph, d: dict, tebd: np.ndarray, ntypes: int, type_map, suffix: str, where: str) -> dict:
    """The se_e2_a tree of the descriptor whose nodes carry ``suffix`` (``_k``: part k of a hybrid,
    which TF builds with the model's type embedding ``tebd`` like a lone se_e2_a)."""
    dim = tebd.shape[1]
    scope = EMBED_SCOPE + suffix
    precision = _pb._precision_name(graph, d.get("precision"))
    sel = _pb._sel_list(graph, d, where)
    _pb._check_descrpt_attrs(graph, suffix, sel, where, d)
    _check_neighbour_types(graph, sel, scope)
    d = _pb._op_cutoffs(graph, suffix, d)
    neuron = list(d["neuron"])
    act = d.get("activation_function", "tanh")
    resnet_dt = bool(d.get("resnet_dt", False))
    shape = graph.shape(f"{scope}/matrix_1")
    if shape is None or len(shape) != 2 or shape[0] not in (1 + dim, 1 + 2 * dim):
        raise ModelFormatError(f"{graph.path}: constant '{scope}/matrix_1' has shape {shape}; with a "
                               f"type embedding of width {dim} the embedding net reads {1 + dim} (type_one_side) "
                               f"or {1 + 2 * dim} inputs")
    one_side = shape[0] == 1 + dim
    if bool(d.get("type_one_side", False)) != one_side:
        raise ModelFormatError(f"{graph.path}: field '{where}.type_one_side' is {d.get('type_one_side', False)} but "
                               f"'{scope}/matrix_1' reads {shape[0]} inputs (type embedding width {dim})")
    net = _pb._embedding_net(graph, lambda k, l: f"{scope}/{k}_{l}", in_dim=shape[0], neuron=neuron,
                             activation=act, resnet_dt=resnet_dt, precision=precision)
    return {
        "@class": "Descriptor",
        "type": "se_e2_a",
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "neuron": neuron,
        "axis_neuron": d.get("axis_neuron", 4),
        "resnet_dt": resnet_dt,
        "trainable": d.get("trainable", True),
        "type_one_side": one_side,
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "set_davg_zero": d.get("set_davg_zero", False),
        "activation_function": act,
        "precision": precision,
        "embeddings": _fold_embedding(graph, net, tebd, ntypes, one_side, where),
        "env_mat": _pb._env_mat(d),
        "@variables": _pb._stat(graph, suffix, ntypes, sum(sel), 4),
        "type_map": type_map,
        "spin": None,
    }


def fold_fitting(graph, fitting: dict, tebd: np.ndarray, dim_descrpt: int) -> dict:
    """The shared fitting net on ``[D, T(type), fparam, aparam]`` as one net per type on ``[D, fparam, aparam]``."""
    ntypes, dim = tebd.shape
    shared = fitting["nets"]["networks"][0]
    first = shared["layers"][0]
    w, b = first["@variables"]["w"], first["@variables"]["b"]
    if w.shape[0] != shared["in_dim"] or w.shape[0] < dim_descrpt + dim:
        raise ModelFormatError(f"{graph.path}: constant 'layer_0/matrix' has shape {w.shape}; the fitting net "
                               f"reads the descriptor ({dim_descrpt}) and the type embedding ({dim})")
    keep = np.r_[0:dim_descrpt, dim_descrpt + dim:w.shape[0]]
    w_kept, w_type = w[keep], w[dim_descrpt:dim_descrpt + dim]
    in_dim = len(keep)
    # a fitting net without hidden layers folds into its linear output layer (no shortcut)
    output_only = len(shared["layers"]) == 1
    resnet = first["resnet"] if output_only else _pb._fitting_resnet_flag(False, in_dim, w.shape[1])
    nets = {}
    for t in range(ntypes):
        layer = layer_record(w_kept.copy(), (b + tebd[t] @ w_type).astype(b.dtype), first["@variables"]["idt"],
                             activation=first["activation_function"],
                             resnet=resnet,
                             precision=first["precision"], trainable=first["trainable"])
        nets[(t,)] = dict(shared, in_dim=in_dim, layers=[layer, *shared["layers"][1:]])
    return dict(fitting, dim_descrpt=dim_descrpt, mixed_types=False,
                nets=_pb._collection(1, ntypes, "fitting_network", nets))
