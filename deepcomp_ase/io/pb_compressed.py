"""Frozen TensorFlow graphs compressed by ``dp compress``: DeePMD-kit's tables, read as they are.

``dp compress`` replaces every tabulated embedding net of the graph by one ``TabulateFusion*`` op
whose first two inputs are constants: the table (``nspline x 6*ng``) and its info vector
(``filter_type_*/TabulateFusion*/table_info``). The nets' weights are gone; se_atten_v2's strip
net becomes a constant per type pair (``filter_type_all/embedding_lookup/params_0``). Everything
else (statistics, fitting nets, biases, the training script) is as in the uncompressed graph.

The tree is built by the ordinary graph reader from a view of the graph in which the missing
embedding weights read as zeros; those nets are then dropped (``networks`` entries ``None``, as
``dp convert-backend`` writes them for such a graph) and each descriptor gets DeePMD-kit's tables
in the ``compress`` block of :mod:`deepcomp_ase.compress.dp_tables`.

Which net a table belongs to is read from the op's name scope, as DeePMD-kit's TF descriptors
create them (``{s}`` = ``""`` or ``_<k>`` for the k-th part of a hybrid):

===============================================  =============================================
op                                               net
===============================================  =============================================
``filter_type_{i}{s}/TabulateFusionSe{A,R}[_n]``  se_e2_a/se_e2_r (centre i, neighbour j): the n-th op
                                                 of the scope is the n-th neighbour type not excluded
``filter_type_all{s}/TabulateFusionSe{A,R}[_n]``  type_one_side: neighbour type n
``filter_type_all{s}/TabulateFusionSeT[_n]``      se_e3: the n-th pair (i, j), i <= j, in row order
``filter_type_all/TabulateFusionSeAtten``         se_atten_v2's one geometric net
===============================================  =============================================

Every floating-point constant of the graph is accounted for: read into the tree, a table, the
exclusion mask a ``type_one_side`` descriptor derives from ``exclude_types`` (checked against it),
or on :data:`IRRELEVANT` (graph arithmetic that carries no weight).
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from .pb_nodes import check_all_read

#: forward tabulation ops by descriptor type of the training script
_OPS = {"se_e2_a": "TabulateFusionSeA", "se_a": "TabulateFusionSeA", "se_e2_r": "TabulateFusionSeR",
        "se_r": "TabulateFusionSeR", "se_e3": "TabulateFusionSeT", "se_at": "TabulateFusionSeT",
        "se_a_3be": "TabulateFusionSeT", "se_t": "TabulateFusionSeT", "se_atten_v2": "TabulateFusionSeAtten"}

#: floating-point constants that are graph arithmetic, not weights (scalars only): operands of
#: element-wise ops (``mul/y``, ``truediv/y`` = sum(sel), ``clip_by_value/y``), the gradient seed,
#: one-hot values, unnamed scalars
IRRELEVANT = re.compile(r"^(?:.*/[xy]|gradients(?:_\d+)?/.*|one_hot/(?:on|off)_value|Const(?:_\d+)?)$")
#: and the zero row DeePMD-kit appends to the type embedding (checked to be zero)
ZERO_ROW = "zeros"

_TYPE_TABLE = "filter_type_all/embedding_lookup/params_0"


def _descriptor_parts(model_def: dict) -> list[tuple[str, dict]]:
    """(scope suffix, descriptor section) of every non-hybrid part."""
    d = model_def.get("descriptor") or {}
    if d.get("type") == "hybrid":
        return [(f"_{k}", sub) for k, sub in enumerate(d.get("list") or [])]
    return [("", d)]


def _excluded(d: dict) -> set:
    pairs = {tuple(p) for p in d.get("exclude_types") or []}
    return pairs | {p[::-1] for p in pairs}


def _net_shapes(neuron, in_dim: int) -> list[tuple[int, int]]:
    shapes, n_in = [], in_dim
    for n_out in neuron:
        shapes.append((n_in, n_out))
        n_in = n_out
    return shapes


def _missing_weights(graph, model_def: dict, ntypes: int) -> dict[str, tuple]:
    """{node name: shape} of the embedding weights ``dp compress`` removed (the reader asks for them)."""
    out: dict[str, tuple] = {}

    def add(prefix: str, neuron, in_dim: int = 1, tail: str = "") -> None:
        for l, (n_in, n_out) in enumerate(_net_shapes(neuron, in_dim), start=1):
            out[f"{prefix}/matrix_{l}{tail}"] = (n_in, n_out)
            out[f"{prefix}/bias_{l}{tail}"] = (n_out,)

    for s, d in _descriptor_parts(model_def):
        kind, neuron = d.get("type", "se_e2_a"), list(d.get("neuron") or [])
        if kind in ("se_e3", "se_at", "se_a_3be", "se_t"):
            for ti in range(ntypes):
                for tj in range(ti, ntypes):
                    add(f"filter_type_all{s}", neuron, tail=f"_{ti}_{tj}")
        elif kind == "se_atten_v2":
            add("filter_type_all", neuron)
            tebd = graph.optional("type_embed_net/matrix_1")
            tebd_dim = int(tebd.shape[1]) if tebd is not None and tebd.ndim == 2 else int(d.get("tebd_dim", 8))
            one = bool(d.get("type_one_side", False))
            add("filter_type_all", neuron, tebd_dim if one else 2 * tebd_dim,
                "_one_side_ebd" if one else "_two_side_ebd")
        elif d.get("type_one_side", False):
            for tj in range(ntypes):
                add(f"filter_type_all{s}", neuron, tail=f"_{tj}")
        else:
            excluded = _excluded(d)
            for ti in range(ntypes):
                for tj in range(ntypes):
                    if (ti, tj) not in excluded:
                        add(f"filter_type_{ti}{s}", neuron, tail=f"_{tj}")
    return {name: shape for name, shape in out.items() if name not in graph.nodes}


def _view(graph, missing: dict):
    """The graph as the ordinary reader sees it: removed embedding weights read as zeros; every
    constant read is recorded in ``view.read``."""
    base = type(graph)

    class _Netless(base):
        def __init__(self):
            self.__dict__.update(graph.__dict__)
            self.read = set()

        def has(self, name):
            return name in missing or base.has(self, name)

        def array(self, name):
            if name in missing:
                return np.zeros(missing[name])
            self.read.add(name)
            return base.array(self, name)

    return _Netless()


def _op_index(name: str, scope: str, op: str) -> int | None:
    m = re.fullmatch(re.escape(f"{scope}/{op}") + r"(?:_(\d+))?", name)
    return None if m is None else int(m.group(1) or 0)


def _const_input(graph, node, k: int, what: str) -> str:
    if len(node.inputs) <= k:
        raise ModelFormatError(f"{graph.path}: op '{node.name}' has no input {k} ({what})")
    name = node.inputs[k].lstrip("^").split(":")[0]
    # a float32 descriptor casts DeePMD-kit's table on the way in
    while name in graph.nodes and graph.nodes[name].op in ("Cast", "Identity") and graph.nodes[name].inputs:
        name = graph.nodes[name].inputs[0].lstrip("^").split(":")[0]
    if not graph.has(name):
        raise ModelFormatError(f"{graph.path}: input {k} ({what}) of op '{node.name}' is '{name}', not a constant")
    return name


def _part_tables(graph, d: dict, s: str, ntypes: int, used: set) -> dict:
    """The ``compress`` block of one descriptor part: its ops' tables in flat net order."""
    kind = d.get("type", "se_e2_a")
    op = _OPS.get(kind)
    if op is None:
        raise UnsupportedModelError(f"{graph.path}: descriptor type {kind!r} compressed by dp compress is not "
                                    "supported (se_e2_a, se_e2_r, se_e3, se_atten_v2 with attn_layer 0, hybrid)")
    # the nets of each scope, in the order DeePMD-kit creates their ops
    if kind == "se_atten_v2":
        keys_of, ndim = {"filter_type_all": [()]}, 0
    elif op == "TabulateFusionSeT":
        keys_of, ndim = {f"filter_type_all{s}": [(ti, tj) for ti in range(ntypes) for tj in range(ti, ntypes)]}, 2
    elif d.get("type_one_side", False):
        keys_of, ndim = {f"filter_type_all{s}": [(tj,) for tj in range(ntypes)]}, 1
    else:
        excluded = _excluded(d)
        keys_of = {f"filter_type_{ti}{s}": [(ti, tj) for tj in range(ntypes) if (ti, tj) not in excluded]
                   for ti in range(ntypes)}
        ndim = 2
    found: dict[str, list] = {scope: [] for scope in keys_of}
    for node in graph.nodes.values():
        if node.op == op:
            for scope in keys_of:
                n = _op_index(node.name, scope, op)
                if n is not None:
                    found[scope].append((n, node))
    nflat = ntypes**ndim
    data: list = [np.zeros(0)] * nflat
    info: list = [np.zeros(0)] * nflat
    for scope, keys in keys_of.items():
        ops = [node for _, node in sorted(found[scope], key=lambda t: t[0])]
        if len(ops) != len(keys):
            raise ModelFormatError(
                f"{graph.path}: scope '{scope}' has {len(ops)} {op} ops, the training script implies {len(keys)} "
                "tabulated nets; the graph does not match its training script")
        for key, node in zip(keys, ops):
            tab, inf = _const_input(graph, node, 0, "table"), _const_input(graph, node, 1, "table info")
            flat = sum(k * ntypes**i for i, k in enumerate(key))
            data[flat], info[flat] = graph.array(tab), graph.array(inf)
            used.update((tab, inf))
    block = {"@variables": {"compress_data": data, "compress_info": info},
             "origin": "dp compress (DeePMD-kit, TensorFlow graph)"}
    if kind == "se_atten_v2":
        if not graph.has(_TYPE_TABLE):
            raise ModelFormatError(f"{graph.path}: graph node '{_TYPE_TABLE}' (se_atten_v2's tabulated type "
                                   "embedding) is missing")
        block["@variables"]["type_embd_data"] = graph.array(_TYPE_TABLE)
        used.add(_TYPE_TABLE)
    return block


def _descriptor_trees(tree: dict) -> list[dict]:
    d = tree["model"]["descriptor"]
    return list(d["list"]) if d.get("type") == "hybrid" else [d]


def read_compressed_graph(graph, reason: str, build_tree) -> dict:
    """The tree of a graph compressed by ``dp compress`` (``reason`` says how it was recognised);
    ``build_tree(graph)`` is the ordinary reader's tree builder."""
    from .pb import _training_script

    model_def = _training_script(graph)["model"]
    type_map = model_def.get("type_map") or []
    ntypes = len(type_map) if isinstance(type_map, list) and type_map else int(graph.array("descrpt_attr/ntypes"))
    for _, d in _descriptor_parts(model_def):
        if d.get("type", "se_e2_a") not in _OPS:
            raise UnsupportedModelError(
                f"{graph.path}: this graph was compressed by `dp compress` ({reason}) and its descriptor "
                f"{d.get('type')!r} is not one deepcomp reads compressed (se_e2_a, se_e2_r, se_e3, se_atten_v2 "
                "with attn_layer 0, hybrid of these); pass the uncompressed graph instead")
    view = _view(graph, _missing_weights(graph, model_def, ntypes))
    tree = build_tree(view, check_nodes=False)
    used = set(view.read)
    for (s, d), part in zip(_descriptor_parts(model_def), _descriptor_trees(tree)):
        part["compress"] = _part_tables(graph, d, s, ntypes, used)
        nets = part["embeddings"]["networks"]
        part["embeddings"]["networks"] = [None] * len(nets)  # dp compress removed them
        if part.get("type") == "se_atten_v2":
            strip = part["embeddings_strip"]
            strip["networks"] = [None] * len(strip["networks"])
    used |= _exclusion_masks(graph, model_def, ntypes, used)
    _check_all_used(graph, used)  # every floating-point constant
    view.read |= used
    check_all_read(view)  # and every model-state node of any type (io/pb_nodes.py)
    return tree


def _exclusion_masks(graph, model_def: dict, ntypes: int, used: set) -> set:
    """The (ntypes, ntypes) keep-masks a type_one_side descriptor with exclude_types builds from its
    training script (1 = pair kept); accounted for when equal to what exclude_types implies."""
    masks = []
    for _, d in _descriptor_parts(model_def):
        if d.get("type_one_side", False) and d.get("exclude_types"):
            keep = np.ones((ntypes, ntypes))
            for a, b in _excluded(d):
                keep[a, b] = 0.0
            masks.append(keep)
    found = set()
    for name, node in graph.nodes.items():
        if not masks or node.op != "Const" or name in used or not re.fullmatch(r"Const(_\d+)?", name):
            continue
        value = node.tensor().to_numpy() if node.tensor() is not None else None
        if value is not None and value.dtype.kind == "f" and any(
                value.shape == m.shape and np.array_equal(value, m) for m in masks):
            found.add(name)
    return found


def _check_all_used(graph, used: set) -> None:
    """Every floating-point constant is in the tree, a table, or graph arithmetic (IRRELEVANT)."""
    left = []
    for name, node in graph.nodes.items():
        if node.op != "Const" or name in used:
            continue
        tensor = node.tensor()
        if tensor is None:
            continue
        value = tensor.to_numpy()
        if value.dtype.kind != "f":
            continue  # shapes, indices, strings: graph plumbing
        if (value.size <= 1 and IRRELEVANT.match(name)) or (name == ZERO_ROW and not value.any()):
            continue
        left.append(f"'{name}' {value.shape}")
    if left:
        raise ModelFormatError(
            f"{graph.path}: the compressed graph holds weights deepcomp does not use: {', '.join(sorted(left))}; "
            "the graph does not match its training script (deepcomp would give wrong numbers), so it is refused")
