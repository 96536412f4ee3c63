"""deepcomp: compressed DeePMD-kit Deep Potentials for fast MD (ASE, LAMMPS).

Public API: :func:`compress_model`, :class:`DeepPotential`, :class:`DeepCompCalculator`; for model deviation
:class:`DeepCompEnsembleCalculator` and :func:`model_devi_frames`.
Nothing heavy is imported here; attributes load on first use.
"""

from ._version import __version__

__all__ = ["DeepCompCalculator", "DeepCompEnsembleCalculator", "DeepPotential", "__version__", "compress_model",
           "model_devi_frames"]


def __getattr__(name):
    if name == "DeepCompCalculator":
        from .calculator import DeepCompCalculator

        return DeepCompCalculator
    if name == "DeepPotential":
        from .potential import DeepPotential

        return DeepPotential
    if name == "DeepCompEnsembleCalculator":
        from .ensemble_calculator import DeepCompEnsembleCalculator

        return DeepCompEnsembleCalculator
    if name == "model_devi_frames":
        from .ensemble import model_devi_frames

        return model_devi_frames
    if name == "compress_model":
        from .compress.api import compress_model

        return compress_model
    raise AttributeError(f"module 'deepcomp_ase' has no attribute {name!r}")
