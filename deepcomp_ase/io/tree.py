"""The DeePMD-kit v3 backend-neutral container: a JSON tree whose array leaves live elsewhere.

In a `.dp` file the tree is the JSON string in the root attribute ``json`` and every array
leaf is replaced by the path of an HDF5 dataset (``/variable_NNNN``). We use the same
container inside our compressed files, so this module both reads and writes it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def _is_variable_path(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("/variable_")


def resolve_variables(tree: Any, fetch) -> Any:
    """Replace every variable path string in ``tree`` by ``fetch(path)``."""
    if isinstance(tree, dict):
        return {k: resolve_variables(v, fetch) for k, v in tree.items()}
    if isinstance(tree, list):
        return [resolve_variables(v, fetch) for v in tree]
    if _is_variable_path(tree):
        return fetch(tree)
    return tree


def read_h5_tree(group, attr: str = "json") -> dict:
    """Read a JSON-with-variables tree stored in ``group.attrs[attr]``."""
    text = group.attrs[attr]
    if isinstance(text, bytes):
        text = text.decode()
    tree = json.loads(text)

    def fetch(path: str):
        return np.asarray(group[path.lstrip("/")][()])

    return resolve_variables(tree, fetch)


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


def yaml_arrays_to_numpy(tree: Any) -> Any:
    """Turn the ``{"@class": "np.ndarray", "value": ...}`` leaves of a DeePMD YAML model into arrays."""
    if isinstance(tree, dict):
        if tree.get("@class") == "np.ndarray" and "value" in tree:
            return np.asarray(tree["value"], dtype=tree.get("dtype", "float64"))
        return {k: yaml_arrays_to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [yaml_arrays_to_numpy(v) for v in tree]
    return tree


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
