"""Open a DeePMD-kit model file of any supported format and return its serialization tree."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from ..errors import ModelFormatError, UnsupportedModelError
from .tree import read_h5_tree, yaml_arrays_to_numpy
from .untrusted import (MAX_RATIO, MAX_TEXT_BYTES, SMALL_BYTES, NodeBudget, check_regular_file,
                        one_line_errors, read_capped, safe_yaml_load)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
SNIFF_BYTES = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def read_dp(path: Path) -> dict:
    """Read a DeePMD-kit ``.dp`` (HDF5) file."""
    import h5py

    check_regular_file(path)
    try:
        with h5py.File(path, "r") as f:
            if "json" not in f.attrs:
                raise ModelFormatError(
                    f"{path}: HDF5 file has no 'json' attribute; it is not a DeePMD-kit .dp model "
                    "(deepcomp reads the .pb, .pth or .yaml model itself: pass that instead)"
                )
            return read_h5_tree(f, source=str(path))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read as HDF5 ({exc})") from exc
    except KeyError as exc:
        raise ModelFormatError(f"{path}: a variable named in the model tree is missing ({exc})") from exc


def read_yaml(path: Path, compressed: bool | None = None) -> dict:
    """Read a DeePMD-kit backend-neutral ``.yaml``/``.json`` model, optionally gzip-compressed.

    The text is limited in size (a gzip bomb stops at the limit), its nesting in depth and its
    aliases in how far they expand (io/untrusted.py).
    """
    import zlib

    import yaml

    if compressed is None:
        compressed = path.suffix == ".gz"
    size = check_regular_file(path)
    limit = min(MAX_TEXT_BYTES, max(SMALL_BYTES, MAX_RATIO * size)) if compressed else MAX_TEXT_BYTES
    what = "gzip-compressed YAML/JSON" if compressed else "YAML/JSON"
    if not compressed and size > limit:
        raise ModelFormatError(f"{path}: {size:,} bytes of YAML/JSON, above the limit of {limit:,} for a model")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as fh:
            raw = read_capped(fh, limit, str(path), what)
        tree = safe_yaml_load(raw.decode("utf-8"), str(path))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        detail = " ".join(str(exc).split())  # YAML errors span lines: one line
        raise ModelFormatError(f"{path}: cannot be parsed as {what} ({type(exc).__name__}: {detail})") from None
    if not isinstance(tree, dict) or "model" not in tree:
        raise ModelFormatError(f"{path}: YAML has no top-level 'model' key; not a DeePMD-kit model")
    return yaml_arrays_to_numpy(tree, str(path), NodeBudget(str(path), len(raw)))


def read_torch(path: Path, head: str | None = None) -> dict:
    """A PyTorch zip: a frozen TorchScript model or a training checkpoint, told apart by content."""
    from .pth import read_pt_or_pth

    return read_pt_or_pth(path, head)


def _sniff(head: bytes) -> str | None:
    """The model format from a file's first bytes, or None if they do not say."""
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    # text: UTF-8 without control characters other than tab, newlines and form feed (a binary
    # protobuf is full of them); a multi-byte character cut by the sniff window is still text
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[: exc.start].decode("utf-8") if exc.start >= len(head) - 3 else None
    if text and text.strip() and not _CONTROL.search(text):
        return "text"
    return None


@one_line_errors()
def read_model_tree(path: str | os.PathLike, head: str | None = None) -> dict:
    """Return the DeePMD-kit serialization tree (arrays as numpy) of a model file.

    Supported: ``.dp`` (HDF5), ``.yaml``/``.yml``/``.json`` (optionally gzip-compressed), frozen
    TensorFlow ``.pb`` graphs, frozen PyTorch ``.pth`` models and PyTorch training checkpoints
    ``.pt`` (``head`` picks the model of a multi-task checkpoint). The format is recognised from
    the file's content first and from its extension only when the content does not say.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected a model file (.dp, .yaml, .pb, .pth, .pt)")
    check_regular_file(path)  # before any open: a FIFO would block, a device never end
    name = path.name.lower()
    if name.endswith((".savedmodel", ".hlo")):
        raise UnsupportedModelError(
            f"{path}: JAX exports are not read directly; convert with "
            f"`dp convert-backend {path.name} {path.stem}.dp`"
        )
    try:
        with open(path, "rb") as fh:
            first = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc})") from None
    if not first:
        raise ModelFormatError(f"{path}: the file is empty; expected a DeePMD-kit model")
    kind = _sniff(first)
    if head is not None and kind != "zip":
        raise ModelFormatError(
            f"{path}: --head {head!r} was given, but heads exist only in PyTorch multi-task checkpoints (.pt); "
            "drop --head"
        )
    if kind == "hdf5":
        return read_dp(path)
    if kind == "gzip":
        return read_yaml(path, compressed=True)
    if kind == "zip":
        return read_torch(path, head)
    if kind == "text":
        return read_yaml(path, compressed=False)
    # binary without a signature: a protobuf GraphDef (frozen TensorFlow graph) has none
    if name.endswith(".pb") or first[:1] == b"\x0a":
        from .pb import read_pb

        return read_pb(path)
    raise ModelFormatError(
        f"{path}: unknown model format (its first bytes {first[:8]!r} match none of HDF5 .dp, YAML/JSON, "
        "gzip, zip .pth/.pt or protobuf .pb); expected a DeePMD-kit model or a deepcomp compressed model"
    )
