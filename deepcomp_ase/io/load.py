"""Open a DeePMD-kit model file of any supported format and return its serialization tree."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from ..errors import ModelFormatError, UnsupportedModelError
from .tree import read_h5_tree, yaml_arrays_to_numpy

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == HDF5_MAGIC


def read_dp(path: Path) -> dict:
    """Read a DeePMD-kit ``.dp`` (HDF5) file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "json" not in f.attrs:
                raise ModelFormatError(
                    f"{path}: HDF5 file has no 'json' attribute; it is not a DeePMD-kit .dp model "
                    "(make one with `dp convert-backend model.pb model.dp`)"
                )
            return read_h5_tree(f)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read as HDF5 ({exc})") from exc
    except KeyError as exc:
        raise ModelFormatError(f"{path}: a variable named in the model tree is missing ({exc})") from exc


def read_yaml(path: Path) -> dict:
    """Read a DeePMD-kit backend-neutral ``.yaml`` (optionally gzip-compressed) model."""
    import yaml

    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            tree = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ModelFormatError(f"{path}: cannot be parsed as YAML ({exc})") from exc
    if not isinstance(tree, dict) or "model" not in tree:
        raise ModelFormatError(f"{path}: YAML has no top-level 'model' key; not a DeePMD-kit model")
    return yaml_arrays_to_numpy(tree)


def read_model_tree(path: str | os.PathLike) -> dict:
    """Return the DeePMD-kit serialization tree (arrays as numpy) of a model file.

    Supported: ``.dp`` (HDF5), ``.yaml``/``.yml`` (optionally ``.gz``) and frozen TensorFlow
    ``.pb`` graphs where the ``.pb`` reader is available.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: model file not found")
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a directory, expected a model file (.dp, .yaml, .pb)")
    name = path.name.lower()
    if name.endswith((".yaml", ".yml", ".yaml.gz", ".yml.gz")):
        return read_yaml(path)
    if name.endswith(".pb"):
        try:
            from .pb import read_pb
        except ImportError:  # the TensorFlow-graph reader is optional
            raise UnsupportedModelError(
                f"{path}: frozen TensorFlow graphs cannot be read by this build; convert it with "
                f"`dp convert-backend {path.name} {path.stem}.dp` and pass the .dp file"
            ) from None
        return read_pb(path)
    if name.endswith((".pth", ".pt")):
        raise UnsupportedModelError(
            f"{path}: PyTorch models are not read directly; convert it with "
            f"`dp convert-backend {path.name} {path.stem}.dp` and pass the .dp file"
        )
    if name.endswith((".savedmodel", ".hlo")):
        raise UnsupportedModelError(
            f"{path}: JAX exports are not read directly; convert with "
            f"`dp convert-backend {path.name} {path.stem}.dp`"
        )
    if _is_hdf5(path):
        return read_dp(path)
    raise ModelFormatError(
        f"{path}: unknown model format (expected a DeePMD-kit .dp, .yaml or .pb file, "
        "or a deepcomp compressed model)"
    )
