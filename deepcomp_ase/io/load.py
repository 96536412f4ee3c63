"""Open a DeePMD-kit model file of any supported format and return its serialization tree."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from ..errors import ModelFormatError, UnsupportedModelError
from .tree import read_h5_tree, yaml_arrays_to_numpy

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
SNIFF_BYTES = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def read_dp(path: Path) -> dict:
    """Read a DeePMD-kit ``.dp`` (HDF5) file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "json" not in f.attrs:
                raise ModelFormatError(
                    f"{path}: HDF5 file has no 'json' attribute; it is not a DeePMD-kit .dp model "
                    "(deepcomp reads the .pb, .pth or .yaml model itself: pass that instead)"
                )
            return read_h5_tree(f)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read as HDF5 ({exc})") from exc
    except KeyError as exc:
        raise ModelFormatError(f"{path}: a variable named in the model tree is missing ({exc})") from exc


def read_yaml(path: Path, compressed: bool | None = None) -> dict:
    """Read a DeePMD-kit backend-neutral ``.yaml``/``.json`` model, optionally gzip-compressed."""
    import zlib

    import yaml

    if compressed is None:
        compressed = path.suffix == ".gz"
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            tree = yaml.safe_load(fh)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, yaml.YAMLError) as exc:
        what = "gzip-compressed YAML/JSON" if compressed else "YAML/JSON"
        raise ModelFormatError(f"{path}: cannot be parsed as {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(tree, dict) or "model" not in tree:
        raise ModelFormatError(f"{path}: YAML has no top-level 'model' key; not a DeePMD-kit model")
    return yaml_arrays_to_numpy(tree)


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


def read_model_tree(path: str | os.PathLike, head: str | None = None) -> dict:
    """Return the DeePMD-kit serialization tree (arrays as numpy) of a model file.

    Supported: ``.dp`` (HDF5), ``.yaml``/``.yml``/``.json`` (optionally gzip-compressed), frozen
    TensorFlow ``.pb`` graphs, frozen PyTorch ``.pth`` models and PyTorch training checkpoints
    ``.pt`` (``head`` picks the model of a multi-task checkpoint). The format is recognised from
    the file's content first and from its extension only when the content does not say.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected a model file (.dp, .yaml, .pb, .pth, .pt)")
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
