"""Account for every field and array of a DeePMD-kit serialization tree.

A model file is untrusted: a field or weight that no parser looks at may change what the model
computes (a bias the reader does not know about, a setting of a newer DeePMD-kit), so a tree
with one is refused. :func:`track` wraps the tree so that the parser's reads are recorded;
:func:`unread` lists what was never read. Fields that do not change what a trained model
computes are read on purpose through :func:`ignore`, and only those listed in
:data:`IRRELEVANT` (with the reason) can be.
"""

from __future__ import annotations

from typing import Any

#: field name -> why DeePMD-kit's evaluation of a trained model does not depend on it
IRRELEVANT: dict[str, str] = {
    # records of the conversion, not of the model
    "software": "name of the program that wrote the file",
    "version": "version of the program that wrote the file",
    "time": "when the file was written",
    "tf_version": "TensorFlow version of the writer",
    "pt_version": "PyTorch version of the writer",
    "jax_version": "JAX version of the writer",
    "model_def_script": "the training input as the user gave it: DeePMD-kit rebuilds the model from the "
                        "'model' section and does not read it when deserializing",
    # training-only settings
    "trainable": "training only: whether the optimiser updates these weights",
    "seed": "training only: seed of the random initialisation",
    "rcond": "training only: regularisation of the least-squares fit of the energy bias",
    "tot_ener_zero": "training only: shifts the energy bias fit",
    "preset_out_bias": "training only: bias given before the statistics are computed",
    "out_std": "training statistic: DeePMD-kit adds out_bias to the energy and never applies out_std",
    # attention-block hyper-parameters of se_atten descriptors: no effect without attention layers
    "attn": "attention width; unused when attn_layer is 0",
    "attn_dotr": "attention gating by r.r; unused when attn_layer is 0",
    "attn_mask": "attention self-masking; unused when attn_layer is 0",
    "scaling_factor": "attention scaling; unused when attn_layer is 0",
    "normalize": "attention normalisation; unused when attn_layer is 0",
    "temperature": "attention temperature; unused when attn_layer is 0",
    "trainable_ln": "attention layer norm; unused when attn_layer is 0",
    "ln_eps": "attention layer-norm epsilon; unused when attn_layer is 0",
}


class Tracked(dict):
    """A tree dict that records which keys were read (``[]`` and ``get``; ``in`` is no read)."""

    __slots__ = ("read", "ignored", "skipped")

    def __init__(self, items) -> None:
        super().__init__(items)
        self.read: set = set()
        self.ignored: set = set()  # read on purpose and not entered (fields of IRRELEVANT)
        self.skipped: str | None = None

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.read.add(key)
        return value

    def get(self, key, default=None):
        if key in self:
            return self[key]
        return default


def track(tree: Any) -> Any:
    """A copy of ``tree`` whose dicts are :class:`Tracked` (arrays and scalars are shared).

    A tree that is tracked already is returned as it is, so a caller can inspect the reads.
    """
    if isinstance(tree, Tracked):
        return tree
    if isinstance(tree, dict):
        return Tracked((k, track(v)) for k, v in tree.items())
    if isinstance(tree, (list, tuple)):
        return [track(v) for v in tree]
    return tree


def ignore(node: Any, *keys: str) -> None:
    """Mark fields known not to matter (each must be in :data:`IRRELEVANT`) as read."""
    for key in keys:
        if key not in IRRELEVANT:
            raise KeyError(f"{key!r} is not in tree_check.IRRELEVANT")
        if isinstance(node, Tracked) and key in node:
            node.read.add(key)
            node.ignored.add(key)


def skip(node: Any, reason: str) -> None:
    """Accept a whole subtree unread (``reason`` says why DeePMD-kit never evaluates it)."""
    if isinstance(node, Tracked):
        node.skipped = reason


def describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unread(tree: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every field of ``tree`` never read, in tree order.

    A read dict or list is entered: reading ``embeddings`` does not account for the networks in it.
    """
    out: list[tuple[str, Any]] = []
    if isinstance(tree, Tracked):
        if tree.skipped is not None:
            return out
        for key, value in dict.items(tree):
            where = f"{path}.{key}" if path else str(key)
            if key not in tree.read:
                out.append((where, value))
            elif key not in tree.ignored and isinstance(value, (dict, list)):
                out.extend(unread(value, where))
    elif isinstance(tree, list):
        for k, value in enumerate(tree):
            out.extend(unread(value, f"{path}[{k}]"))
    return out
