"""ASE calculator: a thin adapter from ``ase.Atoms`` to :class:`DeepPotential`."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes, compare_atoms
from ase.stress import full_3x3_to_voigt_6_stress

from .errors import DeepCompError
from .potential import OVERFLOW_POLICIES, DeepPotential


def _check_keywords(kwargs: dict, extra=()) -> None:
    allowed = tuple(DeepCompCalculator.default_parameters) + tuple(extra)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        import difflib

        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, allowed, 1))
                 else repr(k) for k in unknown]
        raise DeepCompError(f"DeepCompCalculator: unknown keyword {', '.join(hints)}; "
                            f"the keywords are model, {', '.join(allowed)}")


def _check_agrees(potential: DeepPotential, kwargs: dict) -> None:
    """A loaded DeepPotential keeps its settings: refuse keywords that say otherwise."""
    conflicts = []
    if "overflow" in kwargs and kwargs["overflow"] != potential.overflow:
        conflicts.append(f"overflow={kwargs['overflow']!r} (the potential has {potential.overflow!r})")
    name = getattr(potential.backend, "name", "numpy")
    wanted = kwargs.get("backend", "auto")
    if wanted not in ("auto", name) and not (wanted == "cpu" and name in ("numba", "numpy")):
        conflicts.append(f"backend={wanted!r} (the potential uses {name!r})")
    precision = getattr(potential.backend, "precision", "float64")
    if "precision" in kwargs and kwargs["precision"] != precision:
        conflicts.append(f"precision={kwargs['precision']!r} (the potential uses {precision!r})")
    if conflicts:
        raise DeepCompError(
            "DeepCompCalculator: the DeepPotential given was loaded with other settings: " + "; ".join(conflicts)
            + ". Load it with these settings (DeepPotential.from_file(path, overflow=..., backend=..., "
            "precision=...)) or pass the model path")


class DeepCompCalculator(Calculator):
    """Deep Potential calculator for a deepcomp compressed model or a DeePMD-kit model file.

    Parameters
    ----------
    model
        Path of a compressed model (``deepcomp compress`` output) or of an uncompressed
        DeePMD-kit model (.dp, .yaml, .pb), or a loaded :class:`DeepPotential`.
    check_frequency
        Check the table-overflow counts every N force calls (default: the ``-f`` value stored at
        compression; 0 or negative: never, as ``-f 0``/``-f -1`` and LAMMPS's ``check_frequency 0``).
    overflow
        What a check does when inputs left the fine table: 'warn', 'error' or 'ignore'.
    backend
        'auto' (CUDA if CuPy sees a GPU, else numba if installed, else numpy), 'cpu', 'numpy',
        'numba' or 'cuda'.
    precision
        'float64' (default) or 'float32' (numba or CUDA backends).

    Any other keyword is an error. With a loaded :class:`DeepPotential`, ``overflow``, ``backend``
    and ``precision`` must agree with the settings it was loaded with (``check_frequency`` is
    applied to it). ``calc.parameters`` (and ``todict()``) hold the settings in use: the model,
    the check frequency in force, the backend 'auto' chose.

    ``overflow_counts`` holds the counts since the last check, ``overflow_total`` the counts of
    all checks so far. Units: eV, Angstrom; stress in eV/A^3 (ASE convention), ``virial`` in eV
    (DeePMD-kit convention, ``stress = -virial / volume``).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress", "virial", "stresses"]

    #: keywords and their defaults; ``calc.parameters`` holds the values in use (ASE convention)
    default_parameters = {"check_frequency": None, "overflow": "warn", "backend": "auto", "precision": "float64"}
    #: what ``set()`` may change on a live calculator (the rest needs a new one)
    _settable = ("check_frequency", "overflow")

    def __init__(self, model, *, label=None, atoms=None, directory=".", **kwargs):
        _check_keywords(kwargs)
        super().__init__(label=label, atoms=atoms, directory=directory)
        if isinstance(model, DeepPotential):
            _check_agrees(model, kwargs)
            self.potential = model
            if kwargs.get("check_frequency") is not None:
                model.check_frequency = int(kwargs["check_frequency"])
        else:
            opts = {**self.default_parameters, **kwargs}
            self.potential = DeepPotential.from_file(model, **opts)
        self._sync_parameters(model)

    def _sync_parameters(self, model=None) -> None:
        """Record the settings actually in use (the backend 'auto' resolved to, the file's check frequency)."""
        pot = self.potential
        if model is not None:
            self.parameters["model"] = str(model) if not isinstance(model, DeepPotential) else pot.params.source
        self.parameters.update(check_frequency=pot.check_frequency, overflow=pot.overflow,
                               backend=getattr(pot.backend, "name", "numpy"),
                               precision=getattr(pot.backend, "precision", "float64"))

    def set(self, **kwargs):
        """Change ``check_frequency`` or ``overflow``; other keywords need a new calculator."""
        if not kwargs:  # ASE's __init__ calls set() before the potential exists
            return {}
        _check_keywords(kwargs, extra=("model",))
        fixed = {k: v for k, v in kwargs.items() if k not in self._settable and v != self.parameters.get(k)}
        if fixed:
            raise DeepCompError(
                f"DeepCompCalculator.set: {', '.join(sorted(fixed))} cannot change on a live calculator "
                f"(only {', '.join(self._settable)} can); create a new DeepCompCalculator")
        if "overflow" in kwargs:
            if kwargs["overflow"] not in OVERFLOW_POLICIES:
                raise DeepCompError(f"overflow policy {kwargs['overflow']!r} is not one of "
                                    f"{', '.join(OVERFLOW_POLICIES)}")
            self.potential.overflow = kwargs["overflow"]
        if kwargs.get("check_frequency") is not None:
            self.potential.check_frequency = int(kwargs["check_frequency"])
        old = dict(self.parameters)
        self._sync_parameters()
        # results do not depend on these settings: keep them (no reset)
        return {k: v for k, v in self.parameters.items() if old.get(k) != v}

    @property
    def type_map(self):
        return self.potential.type_map

    @property
    def overflow_counts(self) -> dict:
        return self.potential.tally.counts()

    @property
    def overflow_total(self) -> dict:
        return self.potential.total.counts()

    def check_overflow(self) -> bool:
        """Apply the overflow policy to the counts now (as the periodic check does)."""
        return self.potential.check_overflow()

    def check_state(self, atoms, tol=1e-15):
        """ASE's check, comparing with ASE's tolerance only what is not bit-for-bit unchanged.

        ASE compares cell, pbc and every per-atom array element-wise with a tolerance (about 12 us each,
        four per check, two checks per step for forces + stress); an exactly equal one is unchanged for
        ASE too, so it is left out of ASE's comparison, which then sees only the others (the positions,
        in MD): the result is ASE's in every case."""
        old = self.atoms
        if old is None:
            return super().check_state(atoms, tol)
        same = {name for name, a, b in (("cell", old.cell.array, atoms.cell.array), ("pbc", old.pbc, atoms.pbc))
                if _identical(a, b)}
        same.update(name for name, a in old.arrays.items() if name in atoms.arrays and _identical(a, atoms.arrays[name]))
        return compare_atoms(old, atoms, tol=tol, excluded_properties=set(getattr(self, "ignored_changes", ())) | same)

    def _types(self, atoms) -> np.ndarray:
        """Model types of the atoms, recomputed only when the atomic numbers change."""
        numbers = atoms.numbers
        cached = getattr(self, "_types_cache", None)
        if cached is None or not np.array_equal(cached[0], numbers):
            cached = (numbers.copy(), self.potential.types_of(atoms.get_chemical_symbols()))
            self._types_cache = cached
        return cached[1]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        types = self._types(atoms)
        want_atomic = "stresses" in properties
        pbc = atoms.pbc
        res = self.potential.compute_atoms(atoms.positions, types, atoms.cell.array, pbc,
                                           atomic_virial=want_atomic)
        self.results["energy"] = res.energy
        self.results["free_energy"] = res.energy
        self.results["energies"] = res.atom_energy.copy()
        self.results["forces"] = res.forces
        self.results["virial"] = res.virial
        if pbc.all():
            volume = atoms.get_volume()
            stress = -0.5 * (res.virial + res.virial.T) / volume
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
            if want_atomic:
                av = res.atom_virial.reshape(-1, 3, 3)
                self.results["stresses"] = np.array(
                    [full_3x3_to_voigt_6_stress(-0.5 * (v + v.T) / volume) for v in av])
        elif "stress" in properties or "stresses" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        self.potential.step_done()


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and equal elements (NaN is never equal: ASE's comparison decides then)."""
    return a.shape == b.shape and bool((a == b).all())
