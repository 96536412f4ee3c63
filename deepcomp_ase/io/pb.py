"""Read a frozen DeePMD-kit TensorFlow graph (``.pb``) without TensorFlow.

The result is the same serialization tree that ``dp convert-backend model.pb model.dp``
(DeePMD-kit 3.2) stores in a ``.dp`` file: hyper-parameters come from the training script
embedded in the graph (``train_attr/training_script``; rebuilt from the graph by
:mod:`.pb_settings` when there is none), arrays from the graph's ``Const`` nodes (a frozen graph
holds every variable as a constant). Wherever the graph itself says something (which nets exist,
which ``idt``/bias nodes, op attributes), the graph decides or is checked against the script, and
every weight it holds must end up in the tree (:mod:`.pb_nodes`).

Where the graph's constants come from (TF name scopes; ``{s}`` is ``""`` or, inside a hybrid
descriptor, ``_<k>`` for the k-th sub-descriptor):

=======================================================  ===========================================
graph node                                               tree field
=======================================================  ===========================================
``train_attr/training_script`` (JSON)                    ``model_def_script`` and every hyper-parameter
``train_attr/min_nbor_dist``                             ``@variables/min_nbor_dist``
``model_attr/t_out_bias``, ``model_attr/t_out_std``      ``model/@variables/out_bias``, ``out_std``
``descrpt_attr{s}/t_avg``, ``t_std`` (ntypes, nnei*k)    ``descriptor/@variables/davg``, ``dstd`` (ntypes, nnei, k)
``filter_type_{i}{s}/matrix_{l}_{j}`` (+bias, idt)       se_e2_a/se_e2_r embeddings, network (i, j), layer l-1
``filter_type_all{s}/matrix_{l}_{j}``                    same, ``type_one_side`` (network j)
``filter_type_all{s}/matrix_{l}_{i}_{j}``                se_e3 embeddings, network (i, j), i <= j
``filter_type_all/matrix_{l}``                           se_atten_v2 ``embeddings`` (radial part)
``filter_type_all/matrix_{l}_two_side_ebd``              se_atten_v2 ``embeddings_strip``
``type_embed_net/matrix_1`` (+``bias_1``)                se_atten_v2 ``type_embedding``
``attention_layer_{i}/...``, strip/concat DPA-1 nets     a ``dpa1`` tree: see :mod:`.pb_dpa1`
``layer_{l}_type_{t}/matrix`` (+bias, idt)               fitting network t, layer l
``final_layer_type_{t}/matrix``, ``bias``                fitting network t, output layer
``layer_{l}/...``, ``final_layer/...``                   the single fitting network (mixed types)
``fitting_attr/t_bias_atom_e`` (ntypes,)                 ``fitting/@variables/bias_atom_e`` (ntypes, 1)
``fitting_attr/t_fparam_avg``, ``t_fparam_istd``, ...    ``fitting/@variables/fparam_avg``, ...
=======================================================  ===========================================
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from .tree import embedding_net_record
from .tree import layer_record as _layer
from .pb_nodes import check_all_read
from .pb_settings import env_op_for, env_op_settings, find_activation, model_from_graph
from .protobuf_wire import DT_DOUBLE, DTYPE_NAMES, NodeDef, WireError, parse_graph_def

# The DeePMD-kit release whose `.dp` layout this reader reproduces.
TREE_SOFTWARE = "deepmd-kit"
TREE_VERSION = "3.2.0"

_TABULATE_OP = re.compile(r"^TabulateFusion")


class _Graph:
    """The ``Const`` nodes of a GraphDef by name, with helpers that raise useful errors.

    Every constant handed out by :meth:`array` is recorded in ``read``, so that the reader can
    prove at the end that no weight of the graph was left out (:func:`_check_all_read`).
    """

    def __init__(self, path: Path, nodes: list[NodeDef]) -> None:
        self.path = path
        self.nodes = {n.name: n for n in nodes}
        self.ops = {n.op for n in nodes}
        self.read: set[str] = set()
        self._consumers: dict[str, list[NodeDef]] | None = None

    def has(self, name: str) -> bool:
        node = self.nodes.get(name)
        return node is not None and node.op == "Const"

    def _tensor(self, name: str):
        node = self.nodes.get(name)
        tensor = node.tensor() if node is not None else None
        if tensor is None:
            raise ModelFormatError(f"{self.path}: graph node '{name}' is missing or not a constant")
        return tensor

    def shape(self, name: str) -> tuple[int, ...] | None:
        """A constant's shape, without reading (or counting as read) its values."""
        return self._tensor(name).shape

    def dtype(self, name: str) -> str:
        return DTYPE_NAMES.get(self._tensor(name).dtype, "unknown")

    def consumers(self, name: str) -> list[NodeDef]:
        """The forward (non-gradient) nodes that take ``name``'s output as an input."""
        if self._consumers is None:
            self._consumers = {}
            for node in self.nodes.values():
                if node.name.startswith("gradients"):
                    continue
                for inp in node.inputs:
                    self._consumers.setdefault(inp.lstrip("^").split(":")[0], []).append(node)
        return self._consumers.get(name, [])

    def array(self, name: str) -> np.ndarray:
        node = self.nodes.get(name)
        if node is None:
            raise ModelFormatError(
                f"{self.path}: graph node '{name}' is missing: the graph's other nodes or its training "
                "script imply it. The graph is damaged or edited, or has a layout deepcomp does not know; "
                "if it came unchanged from `dp freeze`, report it with the DeePMD-kit version that froze it"
            )
        self.read.add(name)
        tensor = node.tensor()
        if node.op != "Const" or tensor is None:
            raise ModelFormatError(
                f"{self.path}: graph node '{name}' is a '{node.op}' op, expected a constant; "
                "was the graph frozen (`dp freeze`)?"
            )
        try:
            return tensor.to_numpy()
        except WireError as exc:
            raise ModelFormatError(f"{self.path}: constant '{name}' is damaged ({exc})") from None

    def string(self, name: str) -> str:
        value = self.array(name)
        if value.dtype != object or value.size != 1:
            raise ModelFormatError(
                f"{self.path}: graph node '{name}' holds a {value.dtype} array of shape {value.shape}, "
                "expected one string"
            )
        try:
            return value.item().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelFormatError(f"{self.path}: graph node '{name}' is not UTF-8 text ({exc})") from None

    def optional(self, name: str) -> np.ndarray | None:
        return self.array(name) if self.has(name) else None


# --------------------------------------------------------------------------- entry point


def read_pb(path) -> dict:
    """Return the DeePMD-kit serialization tree of the frozen graph at ``path``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc})") from exc
    try:
        nodes = parse_graph_def(data)
    except WireError as exc:
        raise ModelFormatError(
            f"{path}: not a frozen TensorFlow graph (GraphDef protobuf): {exc}; expected the output of "
            "`dp freeze` (a .pb file), or pass a DeePMD-kit .dp/.yaml model instead"
        ) from None
    graph = _Graph(path, nodes)
    reason = _compressed_reason(graph)
    if reason:  # `dp compress` output: DeePMD-kit's tables in place of the embedding nets
        from .pb_compressed import read_compressed_graph

        return read_compressed_graph(graph, reason, _tree_from_graph)
    return _tree_from_graph(graph)


def _tree_from_graph(graph: _Graph, check_nodes: bool = True) -> dict:
    """The serialization tree of a parsed graph (every weight read through ``graph.array``).

    ``check_nodes=False`` leaves the unread-node check to the caller (a compressed graph's reader
    reads its tables after the tree is built)."""
    _check_version(graph)
    script = _training_script(graph)
    model_def = script["model"] if script is not None else model_from_graph(graph)

    tree: dict[str, Any] = {
        "software": TREE_SOFTWARE,
        "version": TREE_VERSION,
        "time": str(datetime.now(timezone.utc)),
        "backend": "TensorFlow",
        "model": _model(graph, model_def),
        "model_def_script": model_def,
    }
    min_nbor = graph.optional("train_attr/min_nbor_dist")
    if min_nbor is not None:
        tree["@variables"] = {"min_nbor_dist": min_nbor}
    if check_nodes:
        check_all_read(graph)
    return tree


# --------------------------------------------------------------------------- refusals


def _compressed_reason(graph: _Graph) -> str | None:
    """Why the graph counts as compressed by `dp compress` (None when it does not)."""
    reason = None
    if graph.has("model_type") and graph.string("model_type") == "compressed_model":
        reason = "node 'model_type' is 'compressed_model'"
    else:
        tab = sorted(op for op in graph.ops if _TABULATE_OP.match(op))
        if tab:
            reason = f"it contains tabulation ops ({', '.join(tab)})"
        else:
            info = [n for n in graph.nodes if n.endswith("table_info")]
            if info:
                reason = f"it contains table constants ('{info[0]}')"
    return reason


def _old_version_hint(graph: _Graph) -> str:
    """The ``dp convert-from`` version for a graph frozen before DeePMD-kit 2.0."""
    if graph.has("fitting_attr/dfparam") and not graph.has("fitting_attr/daparam"):
        return "1.0"
    for node in graph.nodes.values():
        if node.op == "DescrptSeA":
            dtype = node.attr.get("T")
            if dtype is not None and dtype.kind == "type" and dtype.value == DT_DOUBLE:
                return "1.3"
            return "1.2"
    return "1.2"


def _check_version(graph: _Graph) -> None:
    name = "model_attr/model_version"
    found: str | None = graph.string(name) if graph.has(name) else None
    too_old = found is None
    if found is not None:
        try:
            too_old = tuple(int(p) for p in found.split(".")[:2]) < (1, 0)
        except ValueError:
            raise ModelFormatError(
                f"{graph.path}: graph node '{name}' is {found!r}, expected a version like '1.1'"
            ) from None
    if too_old:
        what = "is missing" if found is None else f"is {found!r}"
        tmap = graph.string("model_attr/tmap").strip() if graph.has("model_attr/tmap") else ""
        if not tmap or "DescrptNorot" in graph.ops:
            # 0.12 graphs: `dp convert-from` upgrades the ops but cannot invent the element names
            raise UnsupportedModelError(
                f"{graph.path}: graph node '{name}' {what} and the graph names no element per atom type "
                "(no 'model_attr/tmap'), as graphs frozen by DeePMD-kit 0.12 do; deepcomp assigns atom "
                "types by element and cannot evaluate it"
            )
        hint = _old_version_hint(graph)
        raise UnsupportedModelError(
            f"{graph.path}: graph node '{name}' {what}, so the model was frozen by DeePMD-kit older "
            f"than 2.0. Upgrade it first with `dp convert-from {hint} -i {graph.path.name} -o "
            f"{graph.path.stem}-v2.pb` (use the DeePMD-kit version that froze it: 1.0, 1.1, "
            "1.2 or 1.3), then read the new .pb"
        )


def _training_script(graph: _Graph) -> dict | None:
    """The graph's training script; None when it has none (its settings come from the graph)."""
    name = "train_attr/training_script"
    if not graph.has(name):
        return None
    text = graph.string(name)
    try:
        script = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{graph.path}: graph node '{name}' is not valid JSON ({exc})") from None
    if not isinstance(script, dict) or not isinstance(script.get("model"), dict):
        raise ModelFormatError(f"{graph.path}: graph node '{name}' has no 'model' section")
    return script


def _unsupported(graph: _Graph, field: str, found: Any, fix: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{graph.path}: field '{field}' is {found!r}; {fix}")


# --------------------------------------------------------------------------- networks


def _precision_name(graph: _Graph, precision: str | None) -> str:
    """TF resolves ``default`` to the global float precision (the dtype of ``descrpt_attr/rcut``)."""
    if precision in (None, "default"):
        rcut = graph.optional("descrpt_attr/rcut")
        return rcut.dtype.name if rcut is not None else "float64"
    return {"float64": "float64", "double": "float64", "float32": "float32", "single": "float32",
            "float16": "float16", "half": "float16", "bfloat16": "bfloat16"}.get(precision, precision)


def _wants_timestep(resnet_dt: bool, n_in: int, n_out: int) -> bool:
    """A layer carries a time step only where its skip connection exists."""
    return resnet_dt and (n_out == n_in or n_out == 2 * n_in)


def _check_activation(graph: _Graph, matrix: str, activation: str) -> None:
    """The script's activation is the one the graph applies after ``matrix`` (where the graph says)."""
    found = find_activation(graph, matrix)
    if found is not None and found != str(activation).lower():
        raise ModelFormatError(f"{graph.path}: the training script gives activation {activation!r}, but the "
                               f"graph applies '{found}' after constant '{matrix}'")


def _embedding_net(graph: _Graph, names, *, in_dim: int, neuron: list[int], activation: str,
                   resnet_dt: bool, precision: str, bias: bool = True) -> dict:
    """An ``EmbeddingNetwork``; ``names(kind, l)`` gives the node of ``matrix``/``bias``/``idt`` of layer l (1-based)."""
    _check_activation(graph, names("matrix", 1), activation)
    layers = []
    n_in = in_dim
    for l, n_out in enumerate(neuron, start=1):
        w = graph.array(names("matrix", l))
        if w.shape != (n_in, n_out):
            raise ModelFormatError(
                f"{graph.path}: constant '{names('matrix', l)}' has shape {w.shape}, the training script "
                f"implies ({n_in}, {n_out})"
            )
        b = graph.array(names("bias", l)) if bias else None
        idt = graph.array(names("idt", l)) if _wants_timestep(resnet_dt, n_in, n_out) else None
        layers.append(_layer(w, b, idt, activation=activation, resnet=True, precision=precision))
        n_in = n_out
    return embedding_net_record(in_dim, neuron, activation, resnet_dt, bias, precision, layers)


def _zero_embedding_net(in_dim: int, neuron: list[int], activation: str, resnet_dt: bool,
                        precision: str) -> dict:
    """The all-zero network DeePMD-kit writes for a type pair the graph has no network for."""
    dtype = np.dtype(precision)
    layers = []
    n_in = in_dim
    for n_out in neuron:
        idt = np.zeros(n_out, dtype) if _wants_timestep(resnet_dt, n_in, n_out) else None
        layers.append(_layer(np.zeros((n_in, n_out), dtype), np.zeros(n_out, dtype), idt,
                             activation=activation, resnet=True, precision=precision))
        n_in = n_out
    return embedding_net_record(in_dim, neuron, activation, resnet_dt, True, precision, layers)


def _collection(ndim: int, ntypes: int, network_type: str, networks: dict[tuple, dict]) -> dict:
    """A ``NetworkCollection``: network (k0, k1, ...) sits at index k0 + k1*ntypes + ..."""
    flat: list[dict | None] = [None] * (ntypes**ndim)
    for key, net in networks.items():
        flat[sum(k * ntypes**i for i, k in enumerate(key))] = net
    return {
        "@class": "NetworkCollection",
        "@version": 1,
        "ndim": ndim,
        "ntypes": ntypes,
        "network_type": network_type,
        "networks": flat,
    }


def _env_mat(d: dict) -> dict:
    return {
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "protection": d.get("env_protection", 0.0),
        "use_exp_switch": d.get("use_exp_switch", False),
    }


def _stat(graph: _Graph, suffix: str, ntypes: int, nnei: int, width: int) -> dict:
    out = {}
    for key, node in (("davg", "t_avg"), ("dstd", "t_std")):
        name = f"descrpt_attr{suffix}/{node}"
        arr = graph.array(name)
        if arr.size != ntypes * nnei * width:
            raise ModelFormatError(
                f"{graph.path}: constant '{name}' has shape {arr.shape}, expected {ntypes} x {nnei * width} "
                f"(ntypes x sum(sel)*{width})"
            )
        out[key] = arr.reshape(ntypes, nnei, width)
    return out


def _sel_list(graph: _Graph, d: dict, where: str) -> list[int]:
    sel = d.get("sel")
    if isinstance(sel, int):
        return [sel]
    if isinstance(sel, list) and all(isinstance(s, int) for s in sel):
        return list(sel)
    raise ModelFormatError(f"{graph.path}: field '{where}.sel' is {sel!r}; expected a list of integers")


# --------------------------------------------------------------------------- descriptors


def _pair_networks(graph: _Graph, d: dict, ntypes: int, suffix: str, precision: str) -> dict:
    """Embedding networks of se_e2_a / se_e2_r: one per (center, neighbor) or per neighbor type."""
    neuron = list(d["neuron"])
    act = d.get("activation_function", "tanh")
    resnet_dt = bool(d.get("resnet_dt", False))
    networks: dict[tuple, dict] = {}
    if _type_one_side(graph, suffix, ntypes):
        for tj in range(ntypes):
            networks[(tj,)] = _embedding_net(
                graph, lambda k, l, tj=tj: f"filter_type_all{suffix}/{k}_{l}_{tj}",
                in_dim=1, neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=precision)
        return _collection(1, ntypes, "embedding_network", networks)
    excluded = {tuple(p) for p in d.get("exclude_types", [])} | {tuple(p[::-1]) for p in d.get("exclude_types", [])}
    for ti in range(ntypes):
        for tj in range(ntypes):
            if (ti, tj) in excluded and not graph.has(f"filter_type_{ti}{suffix}/matrix_1_{tj}"):
                networks[(ti, tj)] = _zero_embedding_net(1, neuron, act, resnet_dt, precision)
                continue
            networks[(ti, tj)] = _embedding_net(
                graph, lambda k, l, ti=ti, tj=tj: f"filter_type_{ti}{suffix}/{k}_{l}_{tj}",
                in_dim=1, neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=precision)
    return _collection(2, ntypes, "embedding_network", networks)


def _type_one_side(graph: _Graph, suffix: str, ntypes: int) -> bool:
    """Read from the graph which nets it holds: one per neighbor type (``filter_type_all{s}/matrix_1_j``)
    or one per type pair (``filter_type_i{s}/matrix_1_j``). The training script may not say: TF's
    default is false, but a graph made by ``dp convert-backend`` from a PyTorch or .dp model has
    one-side nets and no key."""
    one = any(graph.has(f"filter_type_all{suffix}/matrix_1_{j}") for j in range(ntypes))
    two = any(graph.has(f"filter_type_{i}{suffix}/matrix_1_{j}") for i in range(ntypes) for j in range(ntypes))
    if one == two:
        raise ModelFormatError(
            f"{graph.path}: graph holds {'both' if one else 'neither'} 'filter_type_all{suffix}/matrix_1_*' "
            f"{'and' if one else 'nor'} 'filter_type_<i>{suffix}/matrix_1_*' embedding nets; expected one kind"
        )
    return one


def _check_descrpt_attrs(graph: _Graph, suffix: str, sel: list[int], where: str, d: dict | None = None) -> None:
    """The graph's own record of sel (and, given the script's section ``d``, of the cut-offs that its
    environment-matrix op holds in float32) agrees with the settings in use."""
    op = env_op_for(graph, suffix) if d is not None else None
    if op is not None:
        rcut, rcut_smth, op_sel = env_op_settings(graph, op)
        for key, got in (("rcut", rcut), ("rcut_smth", rcut_smth)):
            if np.float32(d[key]) != np.float32(got):
                raise ModelFormatError(f"{graph.path}: field '{where}.{key}' is {d[key]} but op '{op.name}' "
                                       f"({op.op}) computes with {got}")
        if list(op_sel) != list(sel):
            raise ModelFormatError(f"{graph.path}: field '{where}.sel' is {sel} but op '{op.name}' ({op.op}) "
                                   f"selects {op_sel}")
    name = f"descrpt_attr{suffix}/sel"
    if graph.has(name):
        got = [int(v) for v in graph.array(name).ravel()]
        if got != list(sel):
            raise ModelFormatError(f"{graph.path}: graph node '{name}' is {got} but '{where}.sel' is {sel}")
    name = f"descrpt_attr{suffix}/original_sel"
    if graph.has(name):
        got = [int(v) for v in graph.array(name).ravel()]
        if got != list(sel):
            raise UnsupportedModelError(
                f"{graph.path}: graph node '{name}' is {got} but the graph selects {sel} neighbors: the model "
                "was trained with one sel and frozen with another, and DeePMD-kit then averages over the "
                "original neighbor count. deepcomp does not; freeze the model with its original sel"
            )


def _op_cutoffs(graph: _Graph, suffix: str, d: dict) -> dict:
    """``d`` with the cut-offs the environment-matrix op computes with.

    TF keeps them as float32 attributes, and DeePMD-kit's switch takes ``u = (r - rmin) / (rmax -
    rmin)`` with ``rmin``, ``rmax`` and their difference in float32: for rcut 4.3, rcut_smth 0.3 it
    switches from 0.30000001192 over a width of exactly 4.0. The tree gets those values (rcut_smth =
    rmin, rcut = rmin + width); the script's doubles would move energies by ~1e-10 eV/atom and forces
    by ~1e-9 eV/A. Cut-offs exact in float32 (6.0, 0.5, ...) are unchanged."""
    op = env_op_for(graph, suffix)
    if op is None:
        return d
    rcut, rcut_smth, _ = env_op_settings(graph, op)
    rmin = np.float32(rcut_smth)
    width = np.float32(np.float32(rcut) - rmin)
    return {**d, "rcut": float(rmin) + float(width), "rcut_smth": float(rmin)}


def _descrpt_pairwise(graph, d, ntypes, suffix, type_map, where, kind: str):
    """se_e2_a and se_r trees: the same fields, except se_e2_a's axis_neuron and 4 statistics columns."""
    precision = _precision_name(graph, d.get("precision"))
    sel = _sel_list(graph, d, where)
    _check_descrpt_attrs(graph, suffix, sel, where, d)
    d = _op_cutoffs(graph, suffix, d)
    angular = kind == "se_e2_a"
    out = {
        "@class": "Descriptor",
        "type": kind,
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "neuron": list(d["neuron"]),
    }
    if angular:
        out["axis_neuron"] = d.get("axis_neuron", 4)
    out.update({
        "resnet_dt": d.get("resnet_dt", False),
        "trainable": d.get("trainable", True),
        "type_one_side": _type_one_side(graph, suffix, ntypes),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "set_davg_zero": d.get("set_davg_zero", False),
        "activation_function": d.get("activation_function", "tanh"),
        "precision": precision,
        "embeddings": _pair_networks(graph, d, ntypes, suffix, precision),
        "env_mat": _env_mat(d),
        "@variables": _stat(graph, suffix, ntypes, sum(sel), 4 if angular else 1),
        "type_map": type_map,
        "spin": None,
    })
    return out


def _descrpt_se_a(graph, d, ntypes, suffix, type_map, where):
    return _descrpt_pairwise(graph, d, ntypes, suffix, type_map, where, "se_e2_a")


def _descrpt_se_r(graph, d, ntypes, suffix, type_map, where):
    return _descrpt_pairwise(graph, d, ntypes, suffix, type_map, where, "se_r")


def _descrpt_se_e3(graph, d, ntypes, suffix, type_map, where):
    precision = _precision_name(graph, d.get("precision"))
    sel = _sel_list(graph, d, where)
    _check_descrpt_attrs(graph, suffix, sel, where, d)
    d = _op_cutoffs(graph, suffix, d)
    neuron = list(d["neuron"])
    act = d.get("activation_function", "tanh")
    resnet_dt = bool(d.get("resnet_dt", False))
    networks: dict[tuple, dict] = {}
    # The graph has one network per unordered type pair (i <= j); DeePMD-kit's tree also lists
    # the (j, i) slots, filled with zeros (they are never used).
    for ti in range(ntypes):
        for tj in range(ntypes):
            if ti <= tj:
                networks[(ti, tj)] = _embedding_net(
                    graph, lambda k, l, ti=ti, tj=tj: f"filter_type_all{suffix}/{k}_{l}_{ti}_{tj}",
                    in_dim=1, neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=precision)
            else:
                networks[(ti, tj)] = _zero_embedding_net(1, neuron, act, resnet_dt, precision)
    return {
        "@class": "Descriptor",
        "type": "se_e3",
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "neuron": neuron,
        "resnet_dt": d.get("resnet_dt", False),
        "set_davg_zero": d.get("set_davg_zero", False),
        "activation_function": act,
        "precision": precision,
        "embeddings": _collection(2, ntypes, "embedding_network", networks),
        "env_mat": _env_mat(d),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "@variables": _stat(graph, suffix, ntypes, sum(sel), 4),
        "type_map": type_map,
        "trainable": d.get("trainable", True),
    }


def _descrpt_hybrid(graph, d, ntypes, suffix, type_map, where):
    if suffix:
        raise _unsupported(graph, where + ".type", "hybrid", "nested hybrid descriptors are not supported")
    children = d.get("list")
    if not isinstance(children, list) or not children:
        raise ModelFormatError(f"{graph.path}: field '{where}.list' is {children!r}; expected a list of descriptors")
    out = []
    for k, child in enumerate(children):
        ctype = child.get("type", "se_e2_a")
        # a hybrid with a DPA-1 part never comes here (_model: pb_dpa1.hybrid_with_dpa1)
        if ctype in _ATTENTION_TYPES or ctype == "hybrid":
            raise _unsupported(graph, f"{where}.list[{k}].type", ctype,
                               "only se_e2_a, se_e2_r and se_e3, or one DPA-1 part beside se_e2_a parts, are "
                               "supported inside a hybrid descriptor")
        # TF builds the sub-descriptors without a type map
        out.append(_descriptor(graph, child, ntypes, f"_{k}", None, f"{where}.list[{k}]"))
    return {"@class": "Descriptor", "type": "hybrid", "@version": 1, "list": out}


def _plain_se_atten_v2(graph: _Graph, d: dict, model_def: dict) -> bool:
    """An se_atten_v2 graph that maps onto the se_atten_v2 tree (no attention layers or excluded pairs,
    one linear type-embedding layer); every other DPA-1 graph becomes a ``dpa1`` tree (:mod:`.pb_dpa1`)."""
    te = model_def.get("type_embedding") or {}
    linear_tebd = not list(te.get("neuron", [8]))[1:] and te.get("activation_function") in (
        None, "linear", "Linear", "none") and not graph.has("type_embed_net/matrix_2")
    return (d.get("type") == "se_atten_v2" and d.get("attn_layer", 2) == 0 and not d.get("exclude_types")
            and linear_tebd)


def _descrpt_se_atten_v2(graph, d, ntypes, suffix, type_map, where, model_def):
    """TF ``se_atten_v2`` (strip type embedding, smooth) as dpmodel's ``se_atten_v2`` tree.

    DeePMD-kit refuses to convert this descriptor; the tree follows the layout the dpmodel/JAX
    backends write for it (a ``se_atten_v2`` tree implies ``tebd_input_mode='strip'`` and
    ``smooth_type_embedding=True``; those keys are not stored, as in DeePMD-kit).
    """
    # only graphs that _plain_se_atten_v2 accepts come here (attn_layer 0, no exclusions, one linear
    # type-embedding layer); the others are read as DPA-1 (pb_dpa1.py)
    precision_raw = d.get("precision", "default")
    precision = _precision_name(graph, precision_raw)
    sel = _sel_list(graph, d, where)
    _check_descrpt_attrs(graph, suffix, sel, where, d)
    d = _op_cutoffs(graph, suffix, d)
    nnei = sum(sel)
    neuron = list(d["neuron"])
    act = d.get("activation_function", "tanh")
    resnet_dt = bool(d.get("resnet_dt", False))
    # TF (2.2 and 3.2) always builds the two-side strip net (``*_two_side_ebd``), whatever the
    # script's type_one_side says: the graph decides
    type_one_side = (graph.has("filter_type_all/matrix_1_one_side_ebd")
                     and not graph.has("filter_type_all/matrix_1_two_side_ebd"))
    # DeePMD-kit 2.2 scripts have no use_tebd_bias key, yet its graphs always hold the bias: the
    # graph decides (a script that asks for a bias the graph lacks fails on the missing node).
    use_tebd_bias = graph.has("type_embed_net/bias_1") or bool(d.get("use_tebd_bias", False))

    tebd_w = graph.array("type_embed_net/matrix_1")
    if tebd_w.ndim != 2 or tebd_w.shape[0] != ntypes:
        raise ModelFormatError(f"{graph.path}: constant 'type_embed_net/matrix_1' has shape {tebd_w.shape}, "
                               f"expected ({ntypes}, tebd_dim)")
    tebd_dim = int(tebd_w.shape[1])
    if d.get("tebd_dim", tebd_dim) != tebd_dim:
        raise ModelFormatError(f"{graph.path}: field '{where}.tebd_dim' is {d.get('tebd_dim')!r} but "
                               f"'type_embed_net/matrix_1' has {tebd_dim} columns")
    tebd_b = graph.array("type_embed_net/bias_1") if use_tebd_bias else None
    tebd_layer = _layer(tebd_w, tebd_b, None, activation="Linear", resnet=True, precision=precision)
    type_embedding = {
        "@class": "TypeEmbedNet",
        "@version": 2,
        "ntypes": ntypes,
        "neuron": [tebd_dim],
        "resnet_dt": False,
        "precision": precision_raw,
        "activation_function": "Linear",
        "trainable": d.get("trainable", True),
        "padding": True,
        "use_econf_tebd": d.get("use_econf_tebd", False),
        "use_tebd_bias": use_tebd_bias,
        "type_map": type_map,
        "embedding": embedding_net_record(ntypes, [tebd_dim], "Linear", False, use_tebd_bias, precision,
                                          [tebd_layer]),
    }
    radial = _embedding_net(graph, lambda k, l: f"filter_type_all/{k}_{l}", in_dim=1, neuron=neuron,
                            activation=act, resnet_dt=resnet_dt, precision=precision)
    side = "one_side_ebd" if type_one_side else "two_side_ebd"
    strip = _embedding_net(graph, lambda k, l: f"filter_type_all/{k}_{l}_{side}",
                           in_dim=tebd_dim if type_one_side else 2 * tebd_dim, neuron=neuron,
                           activation=act, resnet_dt=resnet_dt, precision=precision)
    ln_eps = d.get("ln_eps")
    ln_eps = 1e-5 if ln_eps is None else ln_eps
    attention = {
        "@class": "NeighborGatedAttention",
        "@version": 1,
        "layer_num": 0,
        "nnei": nnei,
        "embed_dim": neuron[-1],
        "hidden_dim": d.get("attn", 128),
        "dotr": d.get("attn_dotr", True),
        "do_mask": d.get("attn_mask", False),
        "scaling_factor": d.get("scaling_factor", 1.0),
        "normalize": d.get("normalize", True),
        "temperature": d.get("temperature"),
        "trainable_ln": d.get("trainable_ln", True),
        "ln_eps": ln_eps,
        "precision": precision_raw,
        "attention_layers": [],
    }
    return {
        "@class": "Descriptor",
        "type": "se_atten_v2",
        "@version": 2,
        "rcut": d["rcut"],
        "rcut_smth": d["rcut_smth"],
        "sel": sel,
        "ntypes": ntypes,
        "neuron": neuron,
        "axis_neuron": d.get("axis_neuron", 4),
        "tebd_dim": tebd_dim,
        "set_davg_zero": d.get("set_davg_zero", False),
        "attn": d.get("attn", 128),
        "attn_layer": 0,
        "attn_dotr": d.get("attn_dotr", True),
        "attn_mask": False,
        "activation_function": act,
        "resnet_dt": resnet_dt,
        "scaling_factor": d.get("scaling_factor", 1.0),
        "normalize": d.get("normalize", True),
        "temperature": d.get("temperature"),
        "trainable_ln": d.get("trainable_ln", True),
        "ln_eps": ln_eps,
        "type_one_side": type_one_side,
        "concat_output_tebd": d.get("concat_output_tebd", True),
        "use_econf_tebd": d.get("use_econf_tebd", False),
        "use_tebd_bias": use_tebd_bias,
        "type_map": type_map,
        "precision": precision,
        "embeddings": _collection(0, ntypes, "embedding_network", {(): radial}),
        "embeddings_strip": _collection(0, ntypes, "embedding_network", {(): strip}),
        "attention_layers": attention,
        "env_mat": _env_mat(d),
        "type_embedding": type_embedding,
        "exclude_types": [],
        "env_protection": d.get("env_protection", 0.0),
        "@variables": _stat(graph, suffix, ntypes, nnei, 4),
        "trainable": d.get("trainable", True),
        "spin": None,
    }


_DESCRIPTORS = {
    "se_e2_a": _descrpt_se_a, "se_a": _descrpt_se_a,
    "se_e2_r": _descrpt_se_r, "se_r": _descrpt_se_r,
    "se_e3": _descrpt_se_e3, "se_t": _descrpt_se_e3, "se_at": _descrpt_se_e3, "se_a_3be": _descrpt_se_e3,
    "hybrid": _descrpt_hybrid,
}
_ATTENTION_TYPES = {"se_atten_v2", "se_atten", "dpa1"}


def _descriptor(graph: _Graph, d: dict, ntypes: int, suffix: str, type_map, where: str) -> dict:
    dtype = d.get("type", "se_e2_a")
    builder = _DESCRIPTORS.get(dtype)
    if builder is None:
        raise _unsupported(graph, where + ".type", dtype,
                           "the descriptors read from a TF graph are se_e2_a, se_e2_r, se_e3, their hybrids "
                           "and DPA-1 (se_atten, dpa1, se_atten_v2)")
    for key in ("stripped_type_embedding",):
        if d.get(key):
            raise _unsupported(graph, f"{where}.{key}", d[key], "this option is not supported")
    return builder(graph, d, ntypes, suffix, type_map, where)


def _descriptor_dim(desc: dict) -> int:
    t = desc["type"]
    if t == "se_e2_a":
        return desc["neuron"][-1] * desc["axis_neuron"]
    if t in ("se_r", "se_e3"):
        return desc["neuron"][-1]
    if t == "hybrid":
        return sum(_descriptor_dim(c) for c in desc["list"])
    if t in ("se_atten_v2", "dpa1"):
        out = desc["neuron"][-1] * desc["axis_neuron"]
        return out + desc["tebd_dim"] if desc["concat_output_tebd"] else out
    raise AssertionError(t)


# --------------------------------------------------------------------------- fitting and model


def _fitting_skip(neuron: list[int], l: int) -> bool:
    """TF fitting nets (DeePMD-kit 2.x and 3.x alike): hidden layer ``l`` has a skip connection, and
    an ``idt`` when resnet_dt, only from the second layer on and only when its width equals the
    previous layer's. Unlike embedding nets, a doubled width never gets one."""
    return l >= 1 and neuron[l] == neuron[l - 1]


def _fitting_resnet_flag(skip: bool, n_in: int, n_out: int) -> bool:
    """The layer's ``resnet`` flag in the tree, for the evaluation that adds a shortcut to a
    ``resnet`` layer whenever n_out is n_in or 2*n_in (dpmodel's rule, model/nets.py).

    DeePMD-kit's own conversion writes ``resnet: true`` on every hidden layer, which is wrong
    wherever that rule adds a shortcut TF never had (the first layer as wide as the descriptor, a
    doubled width): there the flag is false. Elsewhere it stays true, as DeePMD-kit writes it.
    """
    return skip or not (n_out == n_in or n_out == 2 * n_in)


def _fitting(graph: _Graph, f: dict, ntypes: int, dim_descrpt: int, mixed_types: bool, type_map) -> dict:
    where = "model.fitting_net"
    ftype = f.get("type", "ener")
    if ftype != "ener":
        raise _unsupported(graph, where + ".type", ftype, "only energy (ener) fitting networks are supported")
    for key in ("dim_case_embd",):
        if f.get(key, 0):
            raise _unsupported(graph, f"{where}.{key}", f[key], "case embeddings are not supported")
    if any(name is not None for name in (f.get("layer_name") or [])):
        raise _unsupported(graph, f"{where}.layer_name", f["layer_name"],
                           "fitting layers shared between models (share_* nodes) are not supported")
    precision = _precision_name(graph, f.get("precision"))
    neuron = list(f.get("neuron", [120, 120, 120]))
    act = f.get("activation_function", "tanh")
    resnet_dt = bool(f.get("resnet_dt", True))
    nfp = int(f.get("numb_fparam", 0))
    nap = int(f.get("numb_aparam", 0))
    mask = bool(f.get("use_aparam_as_mask", False))  # the nets then do not read aparam
    in_dim = dim_descrpt + nfp + (0 if mask else nap)
    for node, n, key in (("fitting_attr/dfparam", nfp, "numb_fparam"), ("fitting_attr/daparam", nap, "numb_aparam")):
        if graph.has(node) and int(graph.array(node)) != n:
            raise ModelFormatError(f"{graph.path}: graph node '{node}' is {int(graph.array(node))} but "
                                   f"'{where}.{key}' is {n}")
    trainable = f.get("trainable", True)
    if isinstance(trainable, bool):
        trainable = [trainable] * (len(neuron) + 1)
    else:
        trainable = list(trainable)
    dim_out = 1

    def network(tag: str) -> dict:
        layers = []
        n_in = in_dim
        _check_activation(graph, f"layer_0{tag}/matrix", act)
        for l, n_out in enumerate(neuron):
            scope = f"layer_{l}{tag}"
            w = graph.array(scope + "/matrix")
            if w.shape != (n_in, n_out):
                raise ModelFormatError(
                    f"{graph.path}: constant '{scope}/matrix' has shape {w.shape}, the training script "
                    f"implies ({n_in}, {n_out})"
                )
            skip = _fitting_skip(neuron, l)
            idt = graph.array(scope + "/idt") if skip and resnet_dt else None
            layers.append(_layer(w, graph.array(scope + "/bias"), idt, activation=act,
                                 resnet=_fitting_resnet_flag(skip, n_in, n_out),
                                 precision=precision, trainable=trainable[l]))
            n_in = n_out
        scope = f"final_layer{tag}"
        layers.append(_layer(graph.array(scope + "/matrix"), graph.array(scope + "/bias"), None,
                             activation="none", resnet=False, precision=precision, trainable=trainable[-1]))
        return {
            "@class": "FittingNetwork",
            "@version": 1,
            "in_dim": in_dim,
            "out_dim": dim_out,
            "neuron": neuron,
            "activation_function": act,
            "resnet_dt": resnet_dt,
            "precision": precision,
            "bias_out": True,
            "layers": layers,
        }

    if mixed_types:
        nets = _collection(0, ntypes, "fitting_network", {(): network("")})
    else:
        nets = _collection(1, ntypes, "fitting_network", {(t,): network(f"_type_{t}") for t in range(ntypes)})

    # graphs frozen before DeePMD-kit 2.1 have no separate bias: it is folded into final_layer*/bias
    bias = graph.array("fitting_attr/t_bias_atom_e") if graph.has("fitting_attr/t_bias_atom_e") else \
        np.zeros(ntypes, np.dtype(precision) if precision != "bfloat16" else np.float32)
    if bias.size != ntypes * dim_out:
        raise ModelFormatError(f"{graph.path}: constant 'fitting_attr/t_bias_atom_e' has shape {bias.shape}, "
                               f"expected ({ntypes},)")

    def stat(name: str, n: int):
        return graph.array(f"fitting_attr/{name}") if n > 0 else None

    return {
        "@class": "Fitting",
        "type": "ener",
        "@version": 4,
        "var_name": "energy",
        "ntypes": ntypes,
        "dim_descrpt": dim_descrpt,
        "mixed_types": mixed_types,
        "dim_out": dim_out,
        "neuron": neuron,
        "resnet_dt": resnet_dt,
        "numb_fparam": nfp,
        "numb_aparam": nap,
        "dim_case_embd": 0,
        "default_fparam": f.get("default_fparam"),
        "rcond": f.get("rcond"),
        "tot_ener_zero": f.get("tot_ener_zero", False),
        "trainable": trainable,
        "atom_ener": f.get("atom_ener", []),
        "activation_function": act,
        "precision": precision,
        "layer_name": f.get("layer_name"),
        "use_aparam_as_mask": f.get("use_aparam_as_mask", False),
        "spin": None,
        "exclude_types": [],
        "nets": nets,
        "@variables": {
            "bias_atom_e": bias.reshape(ntypes, dim_out),
            "fparam_avg": stat("t_fparam_avg", nfp),
            "fparam_inv_std": stat("t_fparam_istd", nfp),
            "aparam_avg": stat("t_aparam_avg", 0 if mask else nap),
            "aparam_inv_std": stat("t_aparam_istd", 0 if mask else nap),
            "case_embd": None,
        },
        "type_map": type_map,
    }


def _model(graph: _Graph, m: dict) -> dict:
    mtype = m.get("type", "standard")
    if mtype != "standard":
        raise _unsupported(graph, "model.type", mtype, "only standard (descriptor + fitting) models are supported")
    for key, what in (("spin", "spin models"), ("use_srtab", "tabulated pair potentials (use_srtab)"),
                      ("atom_exclude_types", "atom exclusions"), ("pair_exclude_types", "model-level pair exclusions")):
        if m.get(key):
            raise _unsupported(graph, f"model.{key}", m[key], f"{what} are not supported")
    if graph.has("model_attr/model_type") and graph.string("model_attr/model_type") != "ener":
        raise UnsupportedModelError(
            f"{graph.path}: graph node 'model_attr/model_type' is {graph.string('model_attr/model_type')!r}; "
            "only energy models ('ener') are supported"
        )
    type_map = m.get("type_map")
    tmap = graph.string("model_attr/tmap").split() if graph.has("model_attr/tmap") else None
    if not isinstance(type_map, list) or not type_map:
        if tmap is None:
            raise ModelFormatError(f"{graph.path}: field 'model.type_map' is missing and so is node 'model_attr/tmap'")
        type_map = tmap
    elif tmap and tmap != type_map:  # some graphs hold an empty tmap (DeePMD-kit's fparam_aparam.pbtxt)
        raise ModelFormatError(f"{graph.path}: graph node 'model_attr/tmap' is {tmap} but 'model.type_map' is "
                               f"{type_map}")
    ntypes = len(type_map)
    if graph.has("descrpt_attr/ntypes"):
        nt_graph = int(graph.array("descrpt_attr/ntypes"))
        if nt_graph != ntypes:
            raise ModelFormatError(f"{graph.path}: graph node 'descrpt_attr/ntypes' is {nt_graph} but "
                                   f"'model.type_map' names {ntypes} types")
    d = m.get("descriptor")
    if not isinstance(d, dict):
        raise ModelFormatError(f"{graph.path}: field 'model.descriptor' is missing from the training script")
    tebd = None
    fit_rows = None  # a hybrid with a DPA-1 part: the fitting input's rows in the tree's order
    if d.get("type") == "hybrid" and any(isinstance(c, dict) and c.get("type") in _ATTENTION_TYPES
                                         for c in d.get("list") or []):
        from .pb_dpa1 import hybrid_with_dpa1

        descriptor, fit_rows = hybrid_with_dpa1(graph, d, ntypes, type_map, m)
        mixed_types = True
    elif d.get("type") not in _ATTENTION_TYPES and (m.get("type_embedding") or graph.has("type_embed_net/matrix_1")):
        from .pb_tebd import se_a_tebd_descriptor  # se_e2_a with a type embedding: folded into se_e2_a

        descriptor, tebd = se_a_tebd_descriptor(graph, m, ntypes, type_map)
        mixed_types = True  # until fold_fitting: TF's one fitting net reads [D, tebd(type)]
    elif d.get("type") in _ATTENTION_TYPES:
        if _plain_se_atten_v2(graph, d, m):
            descriptor = _descrpt_se_atten_v2(graph, d, ntypes, "", type_map, "model.descriptor", m)
        else:  # attention layers, concat mode or excluded pairs: DPA-1's own path
            from .pb_dpa1 import descrpt_dpa1

            descriptor = descrpt_dpa1(graph, d, ntypes, type_map, "model.descriptor", m)
        mixed_types = True
    else:
        descriptor = _descriptor(graph, d, ntypes, "", type_map, "model.descriptor")
        mixed_types = False
    rcut = _tree_rcut(descriptor)  # as the ops compute, see _op_cutoffs: within float32 rounding
    if graph.has("descrpt_attr/rcut") and abs(float(graph.array("descrpt_attr/rcut")) - rcut) > 1e-6 * rcut:
        raise ModelFormatError(f"{graph.path}: graph node 'descrpt_attr/rcut' is "
                               f"{float(graph.array('descrpt_attr/rcut'))} but the descriptor's rcut is {rcut}")
    f = m.get("fitting_net")
    if not isinstance(f, dict):
        raise ModelFormatError(f"{graph.path}: field 'model.fitting_net' is missing from the training script")
    fitting = _fitting(graph, f, ntypes, _descriptor_dim(descriptor) + (0 if tebd is None else tebd.shape[1]),
                       mixed_types, type_map)
    if fit_rows is not None:
        first = fitting["nets"]["networks"][0]["layers"][0]["@variables"]
        first["w"] = np.concatenate([first["w"][fit_rows], first["w"][len(fit_rows):]])
    if tebd is not None:
        from .pb_tebd import fold_fitting

        fitting = fold_fitting(graph, fitting, tebd, _descriptor_dim(descriptor))

    shape = (1, ntypes, 1)
    out_bias = _first(graph, "model_attr/t_out_bias", "model_attr/model_attr/t_out_bias")
    out_std = _first(graph, "model_attr/t_out_std", "model_attr/model_attr/t_out_std")
    dtype = np.dtype(fitting["precision"]) if fitting["precision"] != "bfloat16" else np.float32
    out_bias = np.zeros(shape, dtype) if out_bias is None else out_bias.reshape(shape)
    out_std = np.ones(shape, dtype) if out_std is None else out_std.reshape(shape)
    return {
        "@class": "Model",
        "type": "standard",
        "@version": 2,
        "type_map": type_map,
        "descriptor": descriptor,
        "fitting": fitting,
        "atom_exclude_types": [],
        "pair_exclude_types": [],
        "rcond": None,
        "preset_out_bias": None,
        "@variables": {"out_bias": out_bias, "out_std": out_std},
    }


def _tree_rcut(desc: dict) -> float:
    if desc["type"] == "hybrid":
        return max(_tree_rcut(c) for c in desc["list"])
    return float(desc["rcut"])


def _first(graph: _Graph, *names: str) -> np.ndarray | None:
    for name in names:
        if graph.has(name):
            return graph.array(name)
    return None
