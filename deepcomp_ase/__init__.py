"""deepcomp: compressed DeePMD-kit Deep Potentials for fast MD (ASE, LAMMPS).

Public API: :func:`compress_model`, :class:`DeepPotential`, :class:`DeepCompCalculator`.
Nothing heavy is imported here; attributes load on first use.
"""

from ._version import __version__

__all__ = ["DeepCompCalculator", "DeepPotential", "__version__", "compress_model"]


def __getattr__(name):
    if name == "DeepCompCalculator":
        from .calculator import DeepCompCalculator

        return DeepCompCalculator
    if name == "DeepPotential":
        from .potential import DeepPotential

        return DeepPotential
    if name == "compress_model":
        from .compress.api import compress_model

        return compress_model
    raise AttributeError(f"module 'deepcomp_ase' has no attribute {name!r}")
