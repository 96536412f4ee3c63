"""ASE calculator: a thin adapter from ``ase.Atoms`` to :class:`DeepPotential`."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes, compare_atoms
from ase.stress import full_3x3_to_voigt_6_stress

from .errors import DeepCompError
from .fitting_inputs import check_sizes
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
    fparam, aparam
        Frame parameters (``numb_fparam`` numbers) and atomic parameters (``numb_aparam`` per atom:
        an (natoms, numb_aparam) array, or ``numb_aparam`` numbers for every atom) of a model
        trained with them. As with DeePMD-kit's calculator, ``atoms.info['fparam']`` and
        ``atoms.info['aparam']`` take precedence when present. Without fparam the model's
        ``default_fparam`` is used where it has one. ``results['dedfparam']`` holds dE/dfparam.

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
    default_parameters = {"check_frequency": None, "overflow": "warn", "backend": "auto", "precision": "float64",
                          "fparam": None, "aparam": None}
    #: what ``set()`` may change on a live calculator (the rest needs a new one)
    _settable = ("check_frequency", "overflow", "fparam", "aparam")
    #: keywords that are not settings of the DeepPotential
    _inputs = ("fparam", "aparam")

    def __init__(self, model, *, label=None, atoms=None, directory=".", **kwargs):
        _check_keywords(kwargs)
        super().__init__(label=label, atoms=atoms, directory=directory)
        if isinstance(model, DeepPotential):
            _check_agrees(model, kwargs)
            self.potential = model
            if kwargs.get("check_frequency") is not None:
                model.check_frequency = int(kwargs["check_frequency"])
        else:
            opts = {k: v for k, v in {**self.default_parameters, **kwargs}.items() if k not in self._inputs}
            self.potential = DeepPotential.from_file(model, **opts)
        self._inputs_used = None  # (fparam, aparam) of the last calculation
        self._set_inputs(kwargs)
        self._sync_parameters(model)

    def _set_inputs(self, kwargs) -> None:
        """Store fparam/aparam (checked against the model now: a wrong size is an error here, not at the first step)."""
        for key in self._inputs:
            if key in kwargs:
                value = kwargs[key]
                self.parameters[key] = None if value is None else np.array(value, dtype=np.float64)
        pot = self.potential
        check_sizes(pot.params.fitting, self.parameters.get("fparam"), self.parameters.get("aparam"),
                    pot.params.source)

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
        inputs = {k: kwargs[k] for k in self._inputs if k in kwargs}
        if inputs:
            self._set_inputs(inputs)
        self._sync_parameters()
        changed = {k: v for k, v in self.parameters.items() if not _same(old.get(k), v)}
        if any(k in changed for k in self._inputs):
            self.reset()  # the energy depends on fparam / aparam
        return changed

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

    def _parameters_for(self, atoms):
        """(fparam, aparam): atoms.info's where present (DeePMD-kit's calculator reads them there), else the keywords."""
        info = atoms.info
        fp = info.get("fparam", self.parameters.get("fparam"))
        ap = info.get("aparam", self.parameters.get("aparam"))
        return fp, ap

    def check_state(self, atoms, tol=1e-15):
        changes = self._check_state(atoms, tol)
        if self._inputs_used is not None and "info" not in changes:
            fp, ap = self._parameters_for(atoms)
            if not (_same(fp, self._inputs_used[0]) and _same(ap, self._inputs_used[1])):
                changes = [*changes, "info"]  # new fparam / aparam in atoms.info
        return changes

    def _check_state(self, atoms, tol=1e-15):
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
        fparam, aparam = self._parameters_for(atoms)
        res = self.potential.compute_atoms(atoms.positions, types, atoms.cell.array, pbc,
                                           atomic_virial=want_atomic, fparam=fparam, aparam=aparam)
        self._inputs_used = (None if fparam is None else np.array(fparam, dtype=np.float64),
                             None if aparam is None else np.array(aparam, dtype=np.float64))
        if res.dedfparam is not None:
            self.results["dedfparam"] = res.dedfparam
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


def _same(a, b) -> bool:
    """Equal settings (arrays element-wise; None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (str, int, float, bool)) and isinstance(b, (str, int, float, bool)):
        return a == b
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def _identical(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and equal elements (NaN is never equal: ASE's comparison decides then)."""
    return a.shape == b.shape and bool((a == b).all())
