"""Rebuild a model's settings from a frozen graph that carries no training script.

Graphs frozen before DeePMD-kit 2.0, the outputs of ``dp convert-from`` and many of DeePMD-kit's
own test graphs have no ``train_attr/training_script``. Everything the evaluation needs is in the
graph all the same; this module reads it back into a ``model`` section shaped like a training
script, which the reader then treats like any other:

=============================  ==============================================================
setting                        where the graph holds it
=============================  ==============================================================
type_map                       ``model_attr/tmap`` (space separated)
descriptor type                the environment-matrix op: ``ProdEnvMatA`` (se_e2_a, or se_e3
                               when the nets are ``filter_type_all/matrix_l_i_j``),
                               ``ProdEnvMatR`` (se_e2_r); one op per sub-descriptor of a
                               hybrid, whose suffix ``_k`` is that of the statistics
                               (``descrpt_attr_k/t_avg``) the op takes
rcut, rcut_smth, sel           that op's attributes (``rcut_r``/``rcut_r_smth``/``sel_a`` or
                               ``rcut``/``rcut_smth``/``sel``)
neuron                         the column counts of the embedding matrices, layer by layer
type_one_side                  ``filter_type_all/matrix_l_j`` (one side) or
                               ``filter_type_i/matrix_l_j`` (two sides)
exclude_types                  the type pairs without an embedding net
resnet_dt                      whether any ``idt`` node exists (TF keeps one only where the
                               layer has a skip connection, the only place it acts)
activation_function            the op applied to the first layer's ``MatMul + bias``
precision                      the dtype of the matrices
axis_neuron                    fitting input width / last embedding width
fitting neuron                 ``layer_l_type_0/matrix`` column counts
numb_fparam, numb_aparam       ``fitting_attr/dfparam``, ``fitting_attr/daparam``
=============================  ==============================================================

A graph that this table does not cover (attention descriptors, several se_e2_a in one hybrid)
is refused by name.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ModelFormatError, UnsupportedModelError
from .protobuf_wire import WireError, attr_int_list

# TF op type -> DeePMD-kit activation name
_ACTIVATION_OPS = {"Tanh": "tanh", "Relu": "relu", "Relu6": "relu6", "Softplus": "softplus",
                   "Sigmoid": "sigmoid", "GeluCustom": "gelu"}
# ops passed through between a MatMul and its activation
_PASS_OPS = {"Add", "AddV2", "BiasAdd", "Reshape", "Identity", "Cast"}


def _refuse(graph, what: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{graph.path}: the graph has no 'train_attr/training_script' and {what}, so its settings cannot "
        "be rebuilt from the graph alone (deepcomp does so for se_e2_a, se_e2_r, se_e3 and their hybrids); "
        "a graph frozen by DeePMD-kit >= 2.0 (`dp freeze`) carries its training script"
    )


_ENV_OPS = ("ProdEnvMatA", "ProdEnvMatR", "ProdEnvMatAMix", "DescrptSeA", "DescrptSeR")
_STAT_INPUT = re.compile(r"^descrpt_attr(_\d+)?/t_avg")


def _env_ops(graph) -> list[tuple[str, Any]]:
    """(name suffix, op) of each environment-matrix op; a hybrid has one per sub-descriptor,
    told apart by the statistics it takes (``descrpt_attr_<k>/t_avg``)."""
    found = []
    for node in graph.nodes.values():
        if node.op not in _ENV_OPS:
            continue
        suffixes = {m.group(1) or "" for m in (_STAT_INPUT.match(i) for i in node.inputs) if m}
        if len(suffixes) != 1:
            raise _refuse(graph, f"op '{node.name}' ({node.op}) takes no 'descrpt_attr*/t_avg' statistics")
        found.append((suffixes.pop(), node))
    if not found:
        raise _refuse(graph, f"it holds no environment-matrix op ({', '.join(_ENV_OPS)})")
    if len(found) > 1 and any(not sfx for sfx, _ in found):
        raise _refuse(graph, "it mixes a plain descriptor with sub-descriptors")
    return sorted(found, key=lambda item: int(item[0][1:] or 0))


def env_op_settings(graph, op) -> tuple[float, float, list[int]]:
    """rcut, rcut_smth and sel as the environment-matrix op holds them (cut-offs in float32)."""
    if op.op in ("ProdEnvMatA", "ProdEnvMatAMix"):
        if any(_attr(graph, op, "sel_r", "list")):
            raise UnsupportedModelError(f"{graph.path}: op '{op.name}' has a non-zero 'sel_r'")
        return _attr(graph, op, "rcut_r", "f"), _attr(graph, op, "rcut_r_smth", "f"), _attr(graph, op, "sel_a", "list")
    return _attr(graph, op, "rcut", "f"), _attr(graph, op, "rcut_smth", "f"), _attr(graph, op, "sel", "list")


def env_op_for(graph, suffix: str):
    """The environment-matrix op of the (sub-)descriptor whose statistics are ``descrpt_attr{suffix}``."""
    for node in graph.nodes.values():
        if node.op in _ENV_OPS and any((m := _STAT_INPUT.match(i)) and (m.group(1) or "") == suffix
                                       for i in node.inputs):
            return node
    return None


def _attr(graph, node, key: str, kind: str):
    attr = node.attr.get(key)
    if attr is None or attr.kind != kind:
        raise ModelFormatError(f"{graph.path}: op '{node.name}' ({node.op}) has no {kind} attribute '{key}'")
    if kind == "list":
        try:
            return attr_int_list(attr)
        except WireError as exc:
            raise ModelFormatError(f"{graph.path}: attribute '{key}' of op '{node.name}' is damaged ({exc})") from None
    return attr.value


def _widths(graph, name) -> list[int]:
    """Output widths of the layers ``name(l)``, l = 1, 2, ... while the matrix node exists."""
    out = []
    layer = 1
    while graph.has(name(layer)):
        shape = graph.shape(name(layer))
        if shape is None or len(shape) != 2:
            raise ModelFormatError(f"{graph.path}: constant '{name(layer)}' has shape {shape}, expected a matrix")
        out.append(int(shape[1]))
        layer += 1
    return out


def find_activation(graph, matrix: str) -> str | None:
    """The activation TF applies after ``x @ matrix + bias``, found by walking the forward graph;
    None when no ``MatMul`` uses the matrix or the op after it is no activation this module knows
    (a linear layer, or an activation TF composes of several ops)."""
    frontier = [matrix]
    seen = set()
    matmul = None
    while frontier and matmul is None:
        name = frontier.pop()
        for node in graph.consumers(name):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op == "MatMul":
                matmul = node
                break
            if node.op in ("Identity", "Cast"):
                frontier.append(node.name)
    node = matmul
    for _ in range(8 if matmul is not None else 0):
        nxt = graph.consumers(node.name)
        acts = [n for n in nxt if n.op in _ACTIVATION_OPS]
        if acts:
            return _ACTIVATION_OPS[acts[0].op]
        passing = [n for n in nxt if n.op in _PASS_OPS]
        if len(passing) != 1:
            break
        node = passing[0]
    return None


def activation_of(graph, matrix: str) -> str:
    found = find_activation(graph, matrix)
    if found is None:
        raise _refuse(graph, f"the op after the MatMul of '{matrix}' is not an activation it knows "
                             f"({', '.join(sorted(_ACTIVATION_OPS))})")
    return found


def _precision(graph, name: str) -> str:
    dtype = graph.dtype(name)
    if dtype not in ("float64", "float32"):
        raise ModelFormatError(f"{graph.path}: constant '{name}' is {dtype}, expected float64 or float32")
    return dtype


def _descriptor(graph, ntypes: int, suffix: str, op) -> dict:
    """One (sub-)descriptor section from its environment-matrix op and nets named ``...{suffix}/``."""
    if op.op in ("DescrptSeA", "DescrptSeR", "ProdEnvMatAMix"):
        raise _refuse(graph, f"its descriptor op is '{op.op}' (a graph older than DeePMD-kit 1.3 that "
                             "`dp convert-from` has not upgraded, or an attention descriptor)")
    rcut, rcut_smth, sel = env_op_settings(graph, op)
    if op.op == "ProdEnvMatA":
        kind = "se_e3" if graph.has(f"filter_type_all{suffix}/matrix_1_0_0") else "se_e2_a"
    else:
        kind = "se_e2_r"
    if len(sel) != ntypes:
        raise ModelFormatError(f"{graph.path}: op '{op.name}' selects {len(sel)} neighbor types, the graph "
                               f"has {ntypes} types")
    if not suffix:  # the graph's own double-precision cutoff (the op attribute is a float32)
        rcut = float(graph.array("descrpt_attr/rcut"))
    d: dict[str, Any] = {"type": kind, "sel": sel, "rcut": float(rcut), "rcut_smth": float(rcut_smth)}
    one_side = f"filter_type_all{suffix}"
    if kind == "se_e3":
        first = f"{one_side}/matrix_1_0_0"
        d["neuron"] = _widths(graph, lambda l: f"{one_side}/matrix_{l}_0_0")
        prefixes = [one_side + "/"]
    elif graph.has(f"{one_side}/matrix_1_0"):
        first = f"{one_side}/matrix_1_0"
        d["neuron"] = _widths(graph, lambda l: f"{one_side}/matrix_{l}_0")
        d["type_one_side"] = True
        prefixes = [one_side + "/"]
    else:
        pairs = [(i, j) for i in range(ntypes) for j in range(ntypes)
                 if graph.has(f"filter_type_{i}{suffix}/matrix_1_{j}")]
        if not pairs:
            raise _refuse(graph, f"it holds no embedding net (filter_type_*{suffix}/matrix_1_*)")
        i0, j0 = pairs[0]
        first = f"filter_type_{i0}{suffix}/matrix_1_{j0}"
        d["neuron"] = _widths(graph, lambda l: f"filter_type_{i0}{suffix}/matrix_{l}_{j0}")
        d["type_one_side"] = False
        missing = [[i, j] for i in range(ntypes) for j in range(ntypes) if (i, j) not in pairs]
        if missing:
            d["exclude_types"] = missing
        prefixes = [f"filter_type_{i}{suffix}/" for i in range(ntypes)]
    d["resnet_dt"] = any(n.startswith(p + "idt_") for n in graph.nodes for p in prefixes)
    d["activation_function"] = activation_of(graph, first)
    d["precision"] = _precision(graph, first)
    return d


def _set_axis_neuron(graph, descriptors: list[dict], in_dim: int) -> None:
    """se_e2_a's axis_neuron: what is left of the fitting input width over its last embedding width."""
    angular = [d for d in descriptors if d["type"] == "se_e2_a"]
    if not angular:
        return
    if len(angular) > 1:
        raise _refuse(graph, "it has several se_e2_a sub-descriptors, whose axis_neuron the widths do not tell")
    rest = in_dim - sum(d["neuron"][-1] for d in descriptors if d["type"] != "se_e2_a")
    last = angular[0]["neuron"][-1]
    if rest <= 0 or rest % last:
        raise ModelFormatError(f"{graph.path}: the fitting net takes {in_dim} descriptor values, which do not "
                               f"leave a multiple of the last se_e2_a embedding width {last}")
    angular[0]["axis_neuron"] = rest // last


def _fitting(graph, ntypes: int) -> dict:
    scope = "layer_{}_type_0" if graph.has("layer_0_type_0/matrix") else "layer_{}"
    if not graph.has(scope.format(0) + "/matrix"):
        raise _refuse(graph, "it holds no fitting net ('layer_0_type_0/matrix')")
    neuron = []
    layer = 0
    while graph.has(scope.format(layer) + "/matrix"):
        neuron.append(int(graph.shape(scope.format(layer) + "/matrix")[1]))
        layer += 1
    first = scope.format(0) + "/matrix"
    prefix = scope.split("{}")[0]
    f = {
        "type": "ener",
        "neuron": neuron,
        "resnet_dt": any(n.startswith(prefix) and n.endswith("/idt") for n in graph.nodes),
        "activation_function": activation_of(graph, first),
        "precision": _precision(graph, first),
        "numb_fparam": int(graph.array("fitting_attr/dfparam")) if graph.has("fitting_attr/dfparam") else 0,
        "numb_aparam": int(graph.array("fitting_attr/daparam")) if graph.has("fitting_attr/daparam") else 0,
    }
    return f


def model_from_graph(graph) -> dict:
    """The ``model`` section of a training script, rebuilt from the graph's nodes."""
    if not graph.has("model_attr/tmap"):
        raise _refuse(graph, "has no 'model_attr/tmap' (the element of each type)")
    type_map = graph.string("model_attr/tmap").split()
    if not type_map:
        raise UnsupportedModelError(
            f"{graph.path}: graph node 'model_attr/tmap' is empty: the graph does not say which element each "
            "atom type is (as in graphs frozen by DeePMD-kit 0.12; `dp convert-from` does not add one), and "
            "deepcomp assigns atom types by element, so it cannot evaluate this graph"
        )
    ntypes = int(graph.array("descrpt_attr/ntypes"))
    if len(type_map) != ntypes:
        raise ModelFormatError(f"{graph.path}: 'model_attr/tmap' names {len(type_map)} types, "
                               f"'descrpt_attr/ntypes' is {ntypes}")
    children = [_descriptor(graph, ntypes, suffix, op) for suffix, op in _env_ops(graph)]
    fitting = _fitting(graph, ntypes)
    in_dim = int(graph.shape(("layer_0_type_0" if graph.has("layer_0_type_0/matrix") else "layer_0") + "/matrix")[0])
    _set_axis_neuron(graph, children, in_dim - fitting["numb_fparam"] - fitting["numb_aparam"])
    descriptor = children[0] if len(children) == 1 else {"type": "hybrid", "list": children}
    return {"type_map": type_map, "descriptor": descriptor, "fitting_net": fitting}
