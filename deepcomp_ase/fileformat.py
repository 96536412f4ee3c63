"""The deepcomp compressed-model file: HDF5, self-describing and versioned.

Layout (documented in docs/file-format.md):

* root attributes: ``format`` = "deepcomp-compressed-model", ``format_version``, ``software``,
  ``version``, ``created``, ``source_file``, ``source_sha256``, ``options`` (JSON);
* group ``model``: the full DeePMD-kit serialization tree of the source model (same container
  as a ``.dp`` file), so the embedding nets stay available for exact evaluation;
* group ``tables/<name>``: dataset ``coeffs`` (nspline, ng, 6) float64, attributes
  ``lower, upper, xmax, stride0, stride1, xmin``, and for tables with relu kinks the datasets
  ``split_intervals``, ``sub_start`` and ``sub_coeffs``.

Version history: 2 documents ``xmin`` and the split intervals. Version 1 did not name them
(files written before they existed lack them; later version-1 files have them): version-1 files
are read with the defaults ``xmin = lower`` and no split intervals where the fields are absent.
Tables are validated on load.

Files are written through output.write_atomic (a temporary name in the target directory, then
a rename), so a reader never sees a half-written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compress.tables import Table
from .errors import DeepCompError, TableFormatError
from .io.tree import parse_json_attr, read_h5_tree, write_h5_tree
from .output import check_output_path, write_atomic  # noqa: F401 - re-exported
from .io.untrusted import (check_finite, check_regular_file, check_tree_finite, h5_get, h5_read,
                               one_line_errors)

FORMAT_NAME = "deepcomp-compressed-model"
FORMAT_VERSION = 2  # 2: xmin (low coarse part) and relu-split intervals


@dataclass
class CompressedFile:
    """What a compressed file holds."""

    tree: dict  # DeePMD-kit serialization tree of the source model
    tables: dict[str, Table]
    meta: dict = field(default_factory=dict)  # provenance and options


def is_compressed_file(path) -> bool:
    """True for a deepcomp compressed model (checked by content, not by extension)."""
    if not os.path.lexists(path):
        return False
    check_regular_file(path)  # a FIFO named as a model must not block this open
    try:
        import h5py

        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                return False
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except (OSError, KeyError, ValueError, RuntimeError, TypeError):  # damaged HDF5: the readers say why
        return False


def save_compressed(path, content: CompressedFile) -> None:
    import h5py

    # nothing non-finite is written: a NaN coefficient would give NaN energies to every reader
    check_tree_finite(content.tree, str(path))
    for name, table in content.tables.items():
        for array in ("coeffs", "sub_start", "sub_coeffs"):
            check_finite(getattr(table, array), f"{path}: table {name}", array)

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            for key, value in content.meta.items():
                f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
            write_h5_tree(f.create_group("model"), content.tree)
            tables = f.create_group("tables")
            for name, table in content.tables.items():
                g = tables.create_group(name)
                g.create_dataset("coeffs", data=table.coeffs)
                for attr in ("lower", "upper", "xmax", "stride0", "stride1", "xmin"):
                    g.attrs[attr] = getattr(table, attr)
                if table.index_counts is not None:  # DeePMD-kit's truncated interval counts
                    g.attrs["n_low"], g.attrs["first_stride"] = (int(v) for v in table.index_counts)
                if len(table.split_intervals):
                    g.create_dataset("split_intervals", data=table.split_intervals)
                    g.create_dataset("sub_start", data=table.sub_start)
                    g.create_dataset("sub_coeffs", data=table.sub_coeffs)

    write_atomic(path, write)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _check_options(options, path) -> None:
    """The ``options`` attribute: numbers where numbers are read (``info``, the overflow check)."""
    def bad(field: str, value) -> TableFormatError:
        return TableFormatError(f"{path}: field 'options.{field}' is {value!r:.80}; the file is damaged or was not "
                                "written by deepcomp, compress the original model again")

    if not isinstance(options, dict):
        raise bad("", options)
    frequency = options.get("frequency", -1)
    if not isinstance(frequency, int) or isinstance(frequency, bool):
        raise bad("frequency", frequency)
    for key in ("step", "extrapolate", "min_nbor_dist"):
        if key in options and not _is_number(options[key]):
            raise bad(key, options[key])
    extended = options.get("extended_ranges") or {}
    if not isinstance(extended, dict) or not all(
            isinstance(moved, dict) and all(isinstance(pair, list) and len(pair) == 2 and all(map(_is_number, pair))
                                            for pair in moved.values()) for moved in extended.values()):
        raise bad("extended_ranges", extended)


def _format_version(value, path) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TableFormatError(f"{path}: attribute 'format_version' is {value!r:.80}, expected an integer; the file "
                               "is damaged or was not written by deepcomp")
    return int(value)


@one_line_errors()
def load_compressed(path) -> CompressedFile:
    import h5py

    check_regular_file(path)
    source = str(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise TableFormatError(f"{path}: not a deepcomp compressed model (attribute 'format' missing)")
            version = _format_version(f.attrs.get("format_version", -1), path)
            if version < 1 or version > FORMAT_VERSION:
                raise TableFormatError(
                    f"{path}: format_version {version} is not readable by this deepcomp (reads 1..{FORMAT_VERSION}); "
                    "upgrade deepcomp or compress the model again"
                )
            meta = {}
            for key, value in f.attrs.items():
                if key in ("format",):
                    continue
                if isinstance(value, bytes):
                    value = value.decode()
                if key == "options":
                    value = parse_json_attr(value, source, "options")
                    _check_options(value, path)
                meta[key] = value.item() if isinstance(value, np.generic) else value
            tree = read_h5_tree(h5_get(f, "model", source), source=source)
            group = h5_get(f, "tables", source)
            tables = {name: read_table(h5_get(group, name, source), f"{path}: table {name}", version)
                      for name in group}
    except OSError as exc:
        raise TableFormatError(f"{path}: cannot be read as a compressed model ({exc})") from exc
    except KeyError as exc:
        raise TableFormatError(f"{path}: compressed model is missing {exc}") from exc
    return CompressedFile(tree=tree, tables=tables, meta=meta)


def read_table(g, where: str, version: int = FORMAT_VERSION) -> Table:
    """One table group, validated (shapes, interval counts, split pieces) with clear errors."""
    def bad(what: str) -> TableFormatError:
        return TableFormatError(f"{where}: {what}; the file is damaged or was not written by deepcomp, "
                                "compress the original model again")

    def array(name: str) -> np.ndarray:
        arr = h5_read(g, name, where)
        check_finite(arr, where, name)
        return arr

    coeffs = np.ascontiguousarray(array("coeffs"), dtype=np.float64)
    if coeffs.ndim != 3 or coeffs.shape[2] != 6 or coeffs.shape[0] < 1 or coeffs.shape[1] < 1:
        raise bad(f"coeffs has shape {coeffs.shape}, expected (nspline, ng, 6)")
    def number(name: str) -> float:
        value = g.attrs[name]
        if np.ndim(value) != 0 or not isinstance(np.asarray(value).item(), (int, float)) or isinstance(value, bool):
            raise bad(f"attribute '{name}' is {value!r:.80}, expected a number")
        return float(value)

    attrs = {a: number(a) for a in ("lower", "upper", "xmax", "stride0", "stride1")}
    attrs["xmin"] = number("xmin") if "xmin" in g.attrs else attrs["lower"]
    if not all(np.isfinite(v) for v in attrs.values()):
        raise bad(f"non-finite range attributes {attrs}")
    if not (attrs["xmin"] <= attrs["lower"] < attrs["upper"] <= attrs["xmax"]) or min(attrs["stride0"],
                                                                                       attrs["stride1"]) <= 0:
        raise bad(f"range attributes {attrs} are not ordered xmin <= lower < upper <= xmax with positive strides")
    extra = {}
    present = [k for k in ("split_intervals", "sub_start", "sub_coeffs") if k in g]
    if present:
        if len(present) != 3:
            raise bad(f"has {present} but split tables need split_intervals, sub_start and sub_coeffs")
        split = array("split_intervals")
        sub_start = np.asarray(array("sub_start"), dtype=np.float64)
        sub_coeffs = np.asarray(array("sub_coeffs"), dtype=np.float64)
        if split.ndim != 1 or not np.issubdtype(split.dtype, np.integer) or (
                len(split) and (split.min() < 0 or split.max() >= coeffs.shape[0])):
            raise bad(f"split_intervals must be interval indices in [0, {coeffs.shape[0]})")
        if sub_start.ndim != 1 or np.any(np.diff(sub_start) <= 0):
            raise bad("sub_start must be one ascending list of sub-piece starts")
        if sub_coeffs.shape != (len(sub_start), coeffs.shape[1], 6):
            raise bad(f"sub_coeffs has shape {sub_coeffs.shape}, expected ({len(sub_start)}, {coeffs.shape[1]}, 6)")
        extra = {"split_intervals": split.astype(np.int64), "sub_start": sub_start, "sub_coeffs": sub_coeffs}
    if "n_low" in g.attrs or "first_stride" in g.attrs:  # DeePMD-kit's own table (tables_from)
        counts = (int(g.attrs.get("n_low", 0)), int(g.attrs.get("first_stride", 0)))
        if min(counts) < 0 or sum(counts) >= coeffs.shape[0]:
            raise bad(f"interval counts {counts} do not fit {coeffs.shape[0]} intervals")
        extra["index_counts"] = counts
    table = Table(coeffs=coeffs, **attrs, **extra)
    n_high = int(round((table.xmax - table.upper) / table.stride1))
    expected = table.n_low + table.first_stride + n_high
    if abs(expected - coeffs.shape[0]) > 1:
        raise bad(f"{coeffs.shape[0]} intervals, its range implies {expected}")
    return table
