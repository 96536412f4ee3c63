"""The DeePMD-kit v3 backend-neutral container: a JSON tree whose array leaves live elsewhere.

In a `.dp` file the tree is the JSON string in the root attribute ``json`` and every array
leaf is replaced by the path of an HDF5 dataset (``/variable_NNNN``). We use the same
container inside our compressed files, so this module both reads and writes it.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ..errors import ModelFormatError
from .untrusted import NodeBudget, h5_read


def _is_variable_path(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/variable_")


def resolve_variables(tree: Any, fetch, budget: NodeBudget | None = None, depth: int = 0, where: str = "") -> Any:
    """Replace every variable path string in ``tree`` by ``fetch(path)`` (nodes counted by ``budget``)."""
    if budget is not None:
        budget.tick(depth, where)
    if isinstance(tree, dict):
        return {k: resolve_variables(v, fetch, budget, depth + 1, f"{where}.{k}" if where else str(k))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve_variables(v, fetch, budget, depth + 1, f"{where}[{i}]") for i, v in enumerate(tree)]
    if _is_variable_path(tree):
        return fetch(tree)
    return tree


def parse_json_attr(text: Any, source: str, attr: str) -> Any:
    """The JSON text of an HDF5 attribute, with a one-line error for anything malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            raise ModelFormatError(f"{source}: attribute '{attr}' is not UTF-8 text") from None
    if not isinstance(text, str):
        raise ModelFormatError(f"{source}: attribute '{attr}' is {type(text).__name__}, expected JSON text")
    try:
        return json.loads(text)
    except RecursionError:
        raise ModelFormatError(f"{source}: attribute '{attr}' holds JSON nested too deep") from None
    except ValueError as exc:
        raise ModelFormatError(f"{source}: attribute '{attr}' is not valid JSON ({exc})") from None


def read_h5_tree(group, attr: str = "json", source: str | None = None) -> dict:
    """Read a JSON-with-variables tree stored in ``group.attrs[attr]``.

    Variables are read through :func:`~deepcomp_ase.io.untrusted.h5_read`: only datasets stored
    in this file, no larger than what it holds.
    """
    source = source or group.file.filename
    tree = parse_json_attr(group.attrs[attr], source, attr)
    if not isinstance(tree, dict):
        raise ModelFormatError(f"{source}: attribute '{attr}' holds a JSON {type(tree).__name__}, expected an object")

    # a variable named over and over would be read over and over: the bytes read are bounded by
    # what the file holds (plus a margin for small files)
    budget = [os.path.getsize(group.file.filename) + (16 << 20)]

    def fetch(path: str):
        arr = h5_read(group, path, source)
        budget[0] -= arr.nbytes
        if budget[0] < 0:
            raise ModelFormatError(f"{source}: the model tree names its variables (the last '{path}') more often "
                                   "than the file can hold; the file is damaged or hostile")
        return arr

    return resolve_variables(tree, fetch, NodeBudget(source, len(group.attrs[attr])))


def write_h5_tree(group, tree: dict, attr: str = "json") -> None:
    """Write ``tree`` into ``group``: arrays become datasets, the rest JSON in ``attrs[attr]``."""
    counter = [0]

    def store(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: store(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return [store(v) for v in node]
        if isinstance(node, np.ndarray):
            name = f"variable_{counter[0]:04d}"
            counter[0] += 1
            group.create_dataset(name, data=node)
            return "/" + name
        if isinstance(node, np.generic):
            return node.item()
        return node

    group.attrs[attr] = json.dumps(store(tree), separators=(",", ":"))


#: dtypes a YAML ndarray leaf may name (numbers only: no objects, strings or huge void types)
_YAML_DTYPES = frozenset(("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
                          "uint16", "uint8", "bool"))


def _yaml_array(node: dict, source: str, where: str) -> np.ndarray:
    dtype = node.get("dtype", "float64")
    if not isinstance(dtype, str) or dtype not in _YAML_DTYPES:
        raise ModelFormatError(f"{source}: field '{where}.dtype' is {dtype!r:.80}; expected one of "
                               f"{sorted(_YAML_DTYPES)}")
    try:
        arr = np.asarray(node["value"], dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ModelFormatError(f"{source}: field '{where}.value' is not a regular array of {dtype} ({exc}); "
                               "the file is damaged") from None
    shape = node.get("shape")
    if shape is not None and (not isinstance(shape, list) or list(arr.shape) != shape):
        raise ModelFormatError(f"{source}: field '{where}.value' has shape {list(arr.shape)}, its 'shape' says "
                               f"{shape!r:.80}")
    return arr


def yaml_arrays_to_numpy(tree: Any, source: str = "<yaml>", budget: NodeBudget | None = None, depth: int = 0,
                         where: str = "") -> Any:
    """Turn the ``{"@class": "np.ndarray", "value": ...}`` leaves of a DeePMD YAML model into arrays.

    ``budget`` counts the nodes visited (an alias visited twice counts twice), so that a tree of
    aliases referring to aliases stops before it is expanded.
    """
    if budget is None:
        budget = NodeBudget(source)
    budget.tick(depth, where)
    if isinstance(tree, dict):
        if tree.get("@class") == "np.ndarray" and "value" in tree:
            _count_leaves(tree["value"], budget, depth + 1, where)
            return _yaml_array(tree, source, where)
        return {k: yaml_arrays_to_numpy(v, source, budget, depth + 1, f"{where}.{k}" if where else str(k))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [yaml_arrays_to_numpy(v, source, budget, depth + 1, f"{where}[{i}]") for i, v in enumerate(tree)]
    return tree


def _count_leaves(value: Any, budget: NodeBudget, depth: int, where: str) -> None:
    """Tick the budget once per element of a nested list, before numpy expands it."""
    budget.tick(depth, where)
    if isinstance(value, list):
        if value and not isinstance(value[0], (list, dict)):
            budget.count += len(value) - 1
            budget.tick(depth, where)
            for v in value:
                if isinstance(v, (list, dict)):
                    _count_leaves(v, budget, depth + 1, where)
        else:
            for v in value:
                _count_leaves(v, budget, depth + 1, where)


def layer_record(w: np.ndarray, b: np.ndarray | None, idt: np.ndarray | None, *, activation: str,
                 resnet: bool, precision: str, trainable: bool = True) -> dict:
    """One dense layer as DeePMD-kit's serialization tree stores it (``@class: Layer``, version 2).

    Every reader that rebuilds a tree from raw weights (frozen TF graphs, PyTorch files) uses
    this, so their trees have the layout ``dp convert-backend`` writes.
    """
    return {
        "@class": "Layer",
        "@version": 2,
        "bias": b is not None,
        "use_timestep": idt is not None,
        "activation_function": activation,
        "resnet": resnet,
        "precision": precision,
        "trainable": trainable,
        "@variables": {"w": w, "b": b, "idt": None if idt is None else idt.ravel()},
    }


def embedding_net_record(in_dim: int, neuron, activation: str, resnet_dt: bool, bias: bool, precision: str,
                         layers: list[dict]) -> dict:
    """An embedding network (``@class: EmbeddingNetwork``, version 2) from its :func:`layer_record` layers."""
    return {
        "@class": "EmbeddingNetwork",
        "@version": 2,
        "in_dim": int(in_dim),
        "neuron": list(neuron),
        "activation_function": activation,
        "resnet_dt": resnet_dt,
        "bias": bias,
        "precision": precision,
        "layers": layers,
    }
