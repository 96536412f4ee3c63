"""Refusals shared by the readers of DeePMD-kit's frozen formats (.pb, .pth)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UnsupportedModelError


def compressed_model_error(path: Path, reason: str, suffix: str) -> UnsupportedModelError:
    """A model already compressed by `dp compress`: its embedding nets are gone, only tables remain."""
    kind = "graph" if suffix == ".pb" else "model"
    return UnsupportedModelError(
        f"{path}: this {kind} was compressed by `dp compress` ({reason}); its embedding "
        "networks are replaced by tables and cannot be read back. Pass the original, "
        f"uncompressed model (the {suffix} given to `dp compress -i`) instead; deepcomp compresses it itself"
    )
