"""The deepcomp compressed-model file: HDF5, self-describing and versioned.

Layout (documented in docs/file-format.md):

* root attributes: ``format`` = "deepcomp-compressed-model", ``format_version``, ``software``,
  ``version``, ``created``, ``source_file``, ``source_sha256``, ``options`` (JSON);
* group ``model``: the full DeePMD-kit serialization tree of the source model (same container
  as a ``.dp`` file), so the embedding nets stay available for exact evaluation;
* group ``tables/<name>``: dataset ``coeffs`` (nspline, ng, 6) float64 and attributes
  ``lower, upper, xmax, stride0, stride1``.

Files are written to a temporary name in the target directory and renamed, so a reader never
sees a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compress.tables import Table
from .errors import TableFormatError
from .io.tree import read_h5_tree, write_h5_tree

FORMAT_NAME = "deepcomp-compressed-model"
FORMAT_VERSION = 1


@dataclass
class CompressedFile:
    """What a compressed file holds."""

    tree: dict  # DeePMD-kit serialization tree of the source model
    tables: dict[str, Table]
    meta: dict = field(default_factory=dict)  # provenance and options


def is_compressed_file(path) -> bool:
    """True for a deepcomp compressed model (checked by content, not by extension)."""
    try:
        import h5py

        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                return False
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


def check_output_path(path) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Errors name the path as given: a directory, a missing or non-directory parent, or a parent
    this user cannot create files in.
    """
    from .errors import DeepCompError

    given = str(path)
    path = Path(path)
    if path.is_dir():
        raise DeepCompError(f"{given}: is a directory; give the output file name, e.g. {path / 'model.dcz'}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise DeepCompError(f"{given}: directory {parent} does not exist; create it first")
    if not parent.is_dir():
        raise DeepCompError(f"{given}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeepCompError(f"{given}: cannot create files in directory {parent} (permission denied)")
    if path.exists() and not path.is_file():
        raise DeepCompError(f"{given}: exists and is not a regular file")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, writer) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` only if it succeeded.

    The file gets the permissions any new file gets (0666 less the umask), not mkstemp's 0600.
    Errors name ``path``, never the temporary file.
    """
    from .errors import DeepCompError

    check_output_path(path)
    given = str(path)
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise DeepCompError(f"{given}: cannot be written ({exc.strerror or exc})") from exc
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DeepCompError(f"{given}: cannot be written ({exc.strerror or exc})") from exc
        raise


def save_compressed(path, content: CompressedFile) -> None:
    import h5py

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
                if len(table.split_intervals):
                    g.create_dataset("split_intervals", data=table.split_intervals)
                    g.create_dataset("sub_start", data=table.sub_start)
                    g.create_dataset("sub_coeffs", data=table.sub_coeffs)

    write_atomic(path, write)


def load_compressed(path) -> CompressedFile:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise TableFormatError(f"{path}: not a deepcomp compressed model (attribute 'format' missing)")
            version = int(f.attrs.get("format_version", -1))
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
                if key == "options" and isinstance(value, str):
                    value = json.loads(value)
                meta[key] = value.item() if isinstance(value, np.generic) else value
            tree = read_h5_tree(f["model"])
            tables = {}
            for name, g in f["tables"].items():
                coeffs = np.ascontiguousarray(g["coeffs"][()], dtype=np.float64)
                if coeffs.ndim != 3 or coeffs.shape[2] != 6:
                    raise TableFormatError(f"{path}: table {name} has shape {coeffs.shape}, expected (nspline, ng, 6)")
                extra = {}
                if "split_intervals" in g:
                    extra = {k: np.asarray(g[k][()]) for k in ("split_intervals", "sub_start", "sub_coeffs")}
                table = Table(coeffs=coeffs, xmin=float(g.attrs.get("xmin", g.attrs["lower"])), **extra,
                              **{a: float(g.attrs[a]) for a in ("lower", "upper", "xmax", "stride0", "stride1")})
                tables[name] = table
                expected = table.n_low + table.first_stride + int(round((table.xmax - table.upper) / table.stride1))
                if abs(expected - coeffs.shape[0]) > 1:
                    raise TableFormatError(f"{path}: table {name} has {coeffs.shape[0]} intervals, its range implies {expected}")
    except OSError as exc:
        raise TableFormatError(f"{path}: cannot be read as a compressed model ({exc})") from exc
    except KeyError as exc:
        raise TableFormatError(f"{path}: compressed model is missing {exc}") from exc
    return CompressedFile(tree=tree, tables=tables, meta=meta)
