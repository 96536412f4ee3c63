"""Exceptions raised by deepcomp.

Every message says where (file, field), what was found and what to do, so that the
CLI can print it without a traceback.
"""

from __future__ import annotations


class DeepCompError(Exception):
    """Base class of every error deepcomp raises on purpose."""


class ModelFormatError(DeepCompError):
    """A model file is unreadable, truncated or has an unexpected layout."""


class UnsupportedModelError(DeepCompError):
    """A readable model uses a feature deepcomp does not implement."""


class TableFormatError(DeepCompError):
    """A compressed-model file is damaged or of an unknown format version."""


class TableOverflowError(DeepCompError):
    """Inputs fell outside the tables and the overflow policy is 'error'."""


class TypeMapError(DeepCompError):
    """An element of the structure is not in the model's type_map."""


class BackendUnavailableError(DeepCompError):
    """A requested backend (numba, cupy) cannot be used on this machine."""


class InputError(DeepCompError, ValueError):
    """An argument or input structure has an invalid value (a ValueError too, as before)."""


class NonFiniteInputError(InputError):
    """A position, pair vector or cell holds NaN or inf (a diverged simulation, a broken file)."""


class AtomsTooCloseError(InputError):
    """Two atoms (or an atom and a periodic image of another) closer than validate.MIN_DISTANCE.

    ``atoms`` holds the two indices as the caller numbered them and ``distance`` their distance
    in Angstrom, so that front ends (the LAMMPS bridge) can restate the error in their terms.
    """

    def __init__(self, message: str, atoms: tuple[int, int] = (-1, -1), distance: float = float("nan")):
        super().__init__(message)
        self.atoms = atoms
        self.distance = distance


class FrameParamError(InputError):
    """Frame or atomic parameters (fparam / aparam) missing, of the wrong size, or given to a model
    that takes none."""


class BuildError(DeepCompError, RuntimeError):
    """Compiling a runtime component (the kernels' host emulation) failed."""


def field_error(cls: type[DeepCompError], source: str, field: str, found: object, fix: str) -> DeepCompError:
    """Build an error naming the file, the field, the value found and the remedy."""
    return cls(f"{source}: field '{field}' is {found!r}; {fix}")
