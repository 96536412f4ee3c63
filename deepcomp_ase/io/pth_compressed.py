"""Frozen PyTorch models compressed by ``dp --pt compress``: DeePMD-kit's tables, read as they are.

``dp --pt compress`` sets the descriptor block's ``compress`` flag (``geo_compress`` and
``tebd_compress`` for se_atten_v2) and adds its tables to the state dict; unlike a compressed
TensorFlow graph, the embedding nets stay. The ordinary reader builds the tree from the nets;
this module adds each descriptor's ``compress`` block (:mod:`deepcomp_ase.compress.dp_tables`):

=====================================================  =========================================
state-dict entry (under the descriptor block)          ``compress`` field
=====================================================  =========================================
``compress_data.{i}`` (nspline, 6*ng)                  ``compress_data[i]`` (flat net order)
``compress_info.{i}`` (6,)                             ``compress_info[i]``
``type_embd_data`` (se_atten_v2)                       ``type_embd_data``
=====================================================  =========================================

Blocks: ``atomic_model.descriptor.`` followed by ``sea.`` (se_e2_a), nothing (se_e2_r), ``seat.``
(se_e3) or ``se_atten.`` (se_atten_v2); inside a hybrid ``descrpt_list.{k}.`` comes first. Every
entry of these kinds in the state dict must be used, or the file is refused.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError

_BLOCK = {"se_e2_a": "sea.", "se_r": "", "se_e2_r": "", "se_e3": "seat.", "se_atten_v2": "se_atten."}
_TABLE_ENTRY = re.compile(r"(^|\.)(compress_data\.\d+|compress_info\.\d+|type_embd_data)$")
ORIGIN = "dp compress (DeePMD-kit, PyTorch model)"


def _parts(tree: dict):
    d = tree["model"]["descriptor"]
    base = "atomic_model.descriptor."
    if d.get("type") == "hybrid":
        return [(f"{base}descrpt_list.{k}.", sub) for k, sub in enumerate(d["list"])]
    return [(base, d)]


def add_dp_tables(tree: dict, arrays: dict, path: Path, flag: str) -> dict:
    """Add DeePMD-kit's tables from the state dict ``arrays`` to the tree of a model whose
    ``flag`` (a module attribute path) says it was compressed."""
    used = set()
    for base, d in _parts(tree):
        kind = d.get("type")
        if kind not in _BLOCK:
            raise UnsupportedModelError(f"{path}: descriptor {kind!r} compressed by dp compress is not supported")
        block = base + _BLOCK[kind]
        n = len(d["embeddings"]["networks"])
        data, info = [], []
        for i in range(n):
            tab, inf = f"{block}compress_data.{i}", f"{block}compress_info.{i}"
            if tab not in arrays or inf not in arrays:
                break
            data.append(np.asarray(arrays[tab]))
            info.append(np.asarray(arrays[inf]))
            used.update((tab, inf))
        if not any(a.size for a in data):
            empty = f"{block}type_embd_data"
            if empty in arrays and np.asarray(arrays[empty]).size == 0:
                used.add(empty)
            continue  # not compressed: an uncompressed model's entries are empty
        if len(data) != n:
            raise ModelFormatError(f"{path}: '{block}compress_data' holds {len(data)} tables, the descriptor has "
                                   f"{n} nets; the file is damaged")
        d["compress"] = {"@variables": {"compress_data": data, "compress_info": info}, "origin": ORIGIN}
        if kind == "se_atten_v2":
            name = f"{block}type_embd_data"
            if name not in arrays:
                raise ModelFormatError(f"{path}: tensor '{name}' (se_atten_v2's tabulated type embedding) is missing")
            d["compress"]["@variables"]["type_embd_data"] = np.asarray(arrays[name])
            used.add(name)
    left = sorted(k for k in arrays if _TABLE_ENTRY.search(k) and k not in used)
    if left:
        raise ModelFormatError(f"{path}: table entries deepcomp does not use: {', '.join(left)}; the file does not "
                               "match its model definition, so it is refused")
    if not any("compress" in d for _, d in _parts(tree)):
        raise ModelFormatError(f"{path}: '{flag}' says the model was compressed, but its state dict holds no tables")
    return tree
