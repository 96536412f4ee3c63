"""Descriptor parts and the names of their tables: shared by the compressor and the runtime.

A model's descriptor is either one descriptor or a hybrid of several; every non-hybrid part
has its own embedding nets, tables and neighbour selection. Tables are stored under
``<prefix>:<net key>`` (``descriptor:0-1`` = centre type 0, neighbour type 1;
``descriptor.1:all`` = the only net of the second hybrid part).
"""

from __future__ import annotations


def table_name(prefix: str, key: tuple) -> str:
    """Name of a table in the file: 'descriptor:0-1' = centre type 0, neighbour type 1."""
    return f"{prefix}:{'-'.join(str(k) for k in key) if key else 'all'}"


def descriptor_parts(model) -> list[tuple[str, object]]:
    """(table-name prefix, descriptor params) of every non-hybrid part of a ModelParams."""
    from .params import HybridParams

    d = model.descriptor
    if isinstance(d, HybridParams):
        return [(f"descriptor.{k}", part) for k, part in enumerate(d.parts)]
    return [("descriptor", d)]


def embedding_tables_for(part, prefix: str, tables: dict) -> dict:
    """Map the file's table names back to one descriptor part's net keys (missing ones left out)."""
    out = {}
    for key in part.embeddings:
        name = table_name(prefix, key)
        if name in tables:
            out[key] = tables[name]
    return out
