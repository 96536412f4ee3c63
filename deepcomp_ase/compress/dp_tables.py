"""DeePMD-kit's own tables, from models compressed by ``dp compress``, used as they are.

The readers of compressed ``.pb``/``.pth`` files put DeePMD-kit's tables into the tree in the
layout DeePMD-kit's ``.dp`` files use for compressed descriptors: every non-hybrid descriptor
gets ::

    "compress": {"@variables": {"compress_data": [table per net, flat NetworkCollection order],
                                "compress_info": [6 numbers per net],
                                "type_embd_data": se_atten_v2's strip-net table (or absent)},
                 "origin": "what wrote the tables"}

A table is ``(nspline, 6*ng)`` (the six quintic coefficients of output 0 first) and its info
``[lower, upper, extrapolate*upper, stride0, stride1, check_frequency]``: the layout of
:class:`~deepcomp_ase.compress.tables.Table`, so the tables are read, never rebuilt. se_e3 tables
also cover ``[-extrapolate*upper, lower)`` (DeePMD-kit's ``min = -max``).

Outside its tables DeePMD-kit 3.2 continues each table linearly from its end point (value and
slope of the first interval below ``lower``/``min``, of the last interval's end above ``max``).
A TensorFlow graph compressed by ``dp compress`` no longer holds its embedding nets, so there is
no exact value to fall back on: :func:`extrapolation_network` writes that linear continuation as
a tiny exact relu network, which stands in for the missing embedding net everywhere an exact net
is evaluated (the numpy reference, the compiled kernels' outside-the-table path). Such inputs are
counted as overflow like any other.
"""

from __future__ import annotations

import numpy as np

#: marks a network record that deepcomp wrote for a table whose net the file lost
EXTRAPOLATION_FLAG = "deepcomp_extrapolation_of_dp_table"

from ..errors import ModelFormatError, TableFormatError
from .tables import Table

#: descriptor types whose tables reach below ``lower`` (DeePMD-kit's "T" layout)
THREE_BODY = ("se_e3", "se_at", "se_a_3be", "se_t")

#: what the overflow report says of inputs beyond DeePMD-kit's tables when no net is stored
BEYOND_EXTRAPOLATED = "continued linearly from the table's ends as DeePMD-kit 3.2 does: the file holds no net"


#: tables whose misalignment was already reported (once per table and process)
_MISALIGNED_SAID: set = set()


def has_dp_tables(tree: dict) -> bool:
    """True when some descriptor of the tree carries DeePMD-kit's tables."""
    return any("compress" in d for _, d in _descriptor_trees(tree))


def tables_origin(tree: dict) -> str | None:
    """What wrote the tables (the first descriptor's ``compress.origin``), or None."""
    for _, d in _descriptor_trees(tree):
        if "compress" in d:
            return str(d["compress"].get("origin", "dp compress"))
    return None


def nets_stored(tree: dict) -> bool:
    """False when a tabulated descriptor lacks its embedding nets (a compressed TensorFlow graph)."""
    for _, d in _descriptor_trees(tree):
        if "compress" in d and any(n is None for n in _networks(d)):
            return False
    return True


def _descriptor_trees(tree: dict):
    """(table-name prefix, descriptor tree) of every non-hybrid part (model/parts.py's names)."""
    d = ((tree or {}).get("model") or {}).get("descriptor") or {}
    if d.get("type") == "hybrid":
        return [(f"descriptor.{k}", sub) for k, sub in enumerate(d.get("list") or [])]
    return [("descriptor", d)]


def _networks(d: dict) -> list:
    return list(((d.get("embeddings") or {}).get("networks")) or [])


def table_from_dp(data, info, three_body: bool, where: str) -> Table:
    """One DeePMD-kit table as a :class:`Table`, checked against its info vector."""
    data = np.asarray(data, dtype=np.float64)
    info = np.asarray(info, dtype=np.float64).reshape(-1)

    def bad(what: str) -> TableFormatError:
        return TableFormatError(f"{where}: {what}; the file is damaged or was not written by dp compress")

    if info.shape != (6,) or not np.all(np.isfinite(info)):
        raise bad(f"table info {info.tolist()} is not 6 finite numbers")
    if data.ndim != 2 or data.shape[0] < 1 or data.shape[1] < 6 or data.shape[1] % 6:
        raise bad(f"table has shape {data.shape}, expected (intervals, 6 x outputs)")
    if not np.all(np.isfinite(data)):
        raise bad("table holds non-finite coefficients")
    lower, upper, xmax, s0, s1 = (float(v) for v in info[:5])
    xmin = -xmax if three_body else lower
    if not (xmin <= lower < upper <= xmax) or s0 <= 0 or s1 <= 0:
        raise bad(f"table info {info[:5].tolist()} is not ordered lower < upper <= max with positive strides")
    # DeePMD-kit locates inputs with truncated interval counts (tabulate.cc): kept as they are, so that a
    # range that is not a whole number of intervals is evaluated as DeePMD-kit does, misaligned or not
    n_low = int((lower - xmin) / s1) if three_body else 0
    first = int((upper - lower) / s0)
    coarse = (xmax - upper) / s1
    expected = int((upper - lower) / s0 + (2 if three_body else 1) * coarse)  # DeePMD-kit's nspline
    if data.shape[0] != expected:
        raise bad(f"table has {data.shape[0]} intervals, its info implies {expected}")
    last = n_low + first + int((np.nextafter(xmax, lower) - upper) / s1)  # DeePMD-kit's index for x >= max
    if first < 1 or last != data.shape[0] - 1:
        raise TableFormatError(
            f"{where}: for inputs past its end DeePMD-kit would use interval {last} of this table, whose last is "
            f"{data.shape[0] - 1} (its step does not fit its range); deepcomp cannot reproduce that, pass the "
            "original, uncompressed model")
    exact = all(abs(r - round(r)) <= 1e-9 * max(1.0, abs(r)) for r in
                ((upper - lower) / s0, coarse) + (((lower - xmin) / s1,) if three_body else ()))
    if not exact and where not in _MISALIGNED_SAID:
        import logging

        _MISALIGNED_SAID.add(where)
        logging.getLogger("deepcomp_ase").warning(
            "%s: its step does not divide its range, so DeePMD-kit's table is misaligned (DeePMD-kit evaluates "
            "some inputs with the polynomial of a neighbouring interval); deepcomp evaluates it the same way to "
            "match DeePMD-kit. Compress the original model for correct tables", where)
    ng = data.shape[1] // 6
    coeffs = np.ascontiguousarray(data.reshape(data.shape[0], ng, 6))
    return Table(lower=lower, upper=upper, xmax=xmax, stride0=s0, stride1=s1, coeffs=coeffs, xmin=xmin,
                 index_counts=(n_low, first))


def descriptor_tables(d: dict, prefix: str, source: str) -> dict:
    """{table name: Table} of one descriptor tree's ``compress`` block (empty when it has none)."""
    from ..model.parts import table_name

    block = d.get("compress")
    if block is None:
        return {}
    variables = block.get("@variables") or {}
    data, info = variables.get("compress_data"), variables.get("compress_info")
    where = f"{source}: {prefix}.compress"
    if not isinstance(data, (list, tuple)) or not isinstance(info, (list, tuple)) or len(data) != len(info):
        raise ModelFormatError(f"{where}: compress_data and compress_info must be lists of equal length")
    emb = d.get("embeddings") or {}
    ndim, ntypes = int(emb.get("ndim", 0)), int(emb.get("ntypes", 1))
    if len(data) != max(ntypes**ndim, 1):
        raise ModelFormatError(f"{where}: {len(data)} tables, the descriptor has {ntypes**ndim} nets")
    three_body = d.get("type") in THREE_BODY
    out = {}
    for flat, (tab, inf) in enumerate(zip(data, info)):
        if tab is None or np.asarray(tab).size == 0:
            continue  # DeePMD-kit leaves excluded (and se_e3's t1 > t2) slots empty
        key = tuple((flat // ntypes**k) % ntypes for k in range(ndim))
        name = table_name(prefix, key)
        out[name] = table_from_dp(tab, inf, three_body, f"{source}: table {name}")
    return out


def dp_tables(tree: dict, source: str) -> dict | None:
    """All DeePMD-kit tables of a tree by deepcomp table name, or None when it has none."""
    if not has_dp_tables(tree):
        return None
    out = {}
    for prefix, d in _descriptor_trees(tree):
        if "compress" not in d:
            raise ModelFormatError(f"{source}: {prefix} has no DeePMD-kit tables while another descriptor has")
        out.update(descriptor_tables(d, prefix, source))
    return out


def type_embd_table(d: dict) -> np.ndarray | None:
    """se_atten_v2's strip-net output per type pair as DeePMD-kit stored it (None if not stored)."""
    value = ((d.get("compress") or {}).get("@variables") or {}).get("type_embd_data")
    return None if value is None else np.asarray(value, dtype=np.float64)


# ------------------------------------------------------------------ outside the tables


def _ends(table: Table):
    """Value and slope where DeePMD-kit continues the table: at xmin (first interval, t = 0) and
    at xmax (last interval, t = xmax - its start)."""
    last = table.nspline - 1
    start = table.upper + (last - table.n_low - table.first_stride) * table.stride1
    idx = np.array([0, last])
    t = np.array([0.0, table.xmax - start])
    val, der = table.evaluate(idx, t)
    return val[0], der[0], val[1], der[1]


def extrapolation_network(table: Table) -> dict:
    """A network record (DeePMD-kit's tree layout) equal to DeePMD-kit's continuation of ``table``
    outside [xmin, xmax):

    * x < xmin:  G(xmin) + G'(xmin) (x - xmin)
    * x >= xmax: G(xmax) + G'(xmax) (x - xmax)

    written as ``c + a1 relu(xmin - x) + a2 relu(x - xmin) + a3 relu(x - mid)`` (mid between xmin
    and xmax, so that no kink lies outside the table).
    """
    from ..io.tree import layer_record

    c_lo, s_lo, c_hi, s_hi = _ends(table)
    xmin, xmax = float(table.xmin), float(table.xmax)
    mid = 0.5 * (xmin + xmax)
    # above xmax: c_lo + a2 (x - xmin) + a3 (x - mid) = c_hi + s_hi (x - xmax)
    a2 = (c_hi - c_lo - s_hi * (xmax - mid)) / (mid - xmin)
    a3 = s_hi - a2
    a1 = -s_lo
    w1 = np.array([[-1.0, 1.0, 1.0]])
    b1 = np.array([xmin, -xmin, -mid])
    w2 = np.stack([a1, a2, a3])  # (3, ng)
    layers = [layer_record(w1, b1, None, activation="relu", resnet=False, precision="float64"),
              layer_record(w2, np.asarray(c_lo, dtype=np.float64), None, activation="none", resnet=False,
                           precision="float64")]
    return {
        "@class": "EmbeddingNetwork", "@version": 2, "in_dim": 1, "neuron": [3, int(w2.shape[1])],
        "activation_function": "relu", "resnet_dt": False, "bias": True, "precision": "float64",
        "layers": layers, EXTRAPOLATION_FLAG: True,
    }


def table_prefix(where: str) -> str:
    """The table-name prefix (model/parts.py) of the descriptor at tree path ``where``:
    "model.descriptor.list[1]" -> "descriptor.1"."""
    import re

    return re.sub(r"\.list\[(\d+)\]$", r".\1", where.removeprefix("model."))


def with_table_networks(d: dict, source: str, where: str) -> dict:
    """``d`` with every missing embedding net that has a DeePMD-kit table replaced by that table's
    :func:`extrapolation_network` (``d`` itself when nothing is missing)."""
    nets = _networks(d)
    if "compress_data" not in ((d.get("compress") or {}).get("@variables") or {}) or all(n is not None for n in nets):
        return d  # no tables here (a .dcz keeps them apart), or nothing missing
    from ..model.parts import table_name

    prefix = table_prefix(where)
    tables = descriptor_tables(d, prefix, source)
    emb = d["embeddings"]
    ndim, ntypes = int(emb.get("ndim", 0)), int(emb.get("ntypes", 1))
    filled = []
    for flat, net in enumerate(nets):
        key = tuple((flat // ntypes**k) % ntypes for k in range(ndim))
        table = tables.get(table_name(prefix, key))
        filled.append(net if net is not None or table is None else extrapolation_network(table))
    return {**d, "embeddings": {**emb, "networks": filled}}


def dp_tables_meta(tree: dict, path, quiet: bool = False) -> dict:
    """What a loaded model says of DeePMD-kit's tables (``DeepPotential.meta``); logs once, at
    load time, what happens past them."""
    import logging

    origin = tables_origin(tree)
    meta = {"tables_from": origin, "source_file": str(getattr(path, "name", path))}
    if nets_stored(tree):
        meta["beyond_tables"] = "evaluated exactly with the embedding net stored in the file"
    else:
        meta["beyond_tables"] = BEYOND_EXTRAPOLATED
        if not quiet:
            logging.getLogger("deepcomp_ase").warning(
                "%s: tables from %s, used as they are; the file holds no embedding nets, so inputs beyond the "
                "tables cannot be evaluated exactly: they are continued linearly from the tables' ends as "
                "DeePMD-kit 3.2 does, counted, and reported by the overflow policy", path, origin)
    return meta


def without_tables(tree: dict) -> dict:
    """A copy of the tree without DeePMD-kit's tables (for a file that also holds its nets)."""
    import copy

    out = copy.copy(tree)
    out["model"] = dict(tree["model"])
    d = dict(out["model"]["descriptor"])
    if d.get("type") == "hybrid":
        d["list"] = [{k: v for k, v in sub.items() if k != "compress"} for sub in d["list"]]
    else:
        d.pop("compress", None)
    out["model"]["descriptor"] = d
    return out


def materialized(tree: dict, source: str) -> dict:
    """The tree as a .dcz stores it: missing nets replaced by their :func:`extrapolation_network`
    (flagged ``deepcomp_extrapolation_of_dp_table``); of DeePMD-kit's ``compress`` block only the
    origin and se_atten_v2's ``type_embd_data`` stay (the tables go to the file's ``tables``)."""
    out = without_tables(tree)
    parts = _descriptor_trees(tree)
    new_parts = []
    for (prefix, d), (_, bare) in zip(parts, _descriptor_trees(out)):
        filled = with_table_networks(d, source, prefix)
        kept = {"origin": d["compress"].get("origin", "dp compress")}
        tt = type_embd_table(d)
        if tt is not None:
            kept["@variables"] = {"type_embd_data": tt}
        new_parts.append({**bare, "embeddings": filled["embeddings"], "compress": kept})
    d = out["model"]["descriptor"]
    out["model"]["descriptor"] = {**d, "list": new_parts} if d.get("type") == "hybrid" else new_parts[0]
    return out
