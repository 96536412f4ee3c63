"""The numba backend's thread count under load (DEEPCOMP_ADAPT_THREADS) and the calculator's cheap paths."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import compare_atoms

numba = pytest.importorskip("numba")

from deepcomp_ase import DeepCompCalculator  # noqa: E402
from deepcomp_ase.backends import numba_cpu  # noqa: E402


class _Clock:
    """Synthetic /proc/stat samples: (time, busy seconds of our CPUs, our CPU seconds)."""

    def __init__(self):
        self.t = self.busy = self.own = 0.0

    def advance(self, dt, others, own):
        self.t += dt
        self.busy += (others + own) * dt
        self.own += own * dt

    def sample(self):
        return self.t, self.busy, self.own


def _governor(monkeypatch, pool=2, setting="1"):
    monkeypatch.setenv("DEEPCOMP_ADAPT_THREADS", setting)
    clock = _Clock()
    monkeypatch.setattr(numba_cpu._ThreadGovernor, "_sample", lambda self: clock.sample())
    monkeypatch.setattr(numba_cpu.time, "monotonic", lambda: clock.t)
    gov = numba_cpu._ThreadGovernor(pool)
    gov.cpus = [0, 1]
    return gov, clock


def test_threads_follow_the_other_processes_load(monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba's pool has one thread on this machine")
    gov, clock = _governor(monkeypatch)
    before = numba.get_num_threads()
    try:
        clock.advance(0.5, others=0.0, own=1.8)  # idle machine: the whole pool
        assert gov.apply() == 2
        clock.advance(0.5, others=1.4, own=0.6)  # two busy processes on two cores: one thread
        assert gov.apply() == 1 and numba.get_num_threads() == 1
        clock.advance(0.05, others=0.0, own=2.0)  # within INTERVAL: not re-sampled
        assert gov.apply() == 1
        clock.advance(0.5, others=0.2, own=1.0)  # the others gone again
        assert gov.apply() == 2
    finally:
        numba.set_num_threads(before)


def test_adaptation_can_be_switched_off(monkeypatch):
    gov, clock = _governor(monkeypatch, setting="0")
    clock.advance(0.5, others=2.0, own=0.5)
    assert not gov.enabled and gov.apply() == 2


def test_blas_cap_is_restored(monkeypatch):
    gov, clock = _governor(monkeypatch)
    if gov._blas is None:
        pytest.skip("numpy's OpenBLAS not found among the loaded libraries")
    get, put = gov._blas
    before = get()
    put(2)
    try:
        clock.advance(0.5, others=1.5, own=0.5)
        gov.apply()
        with gov.blas():
            assert get() == 1
        assert get() == 2
    finally:
        put(before)


def _cell():
    atoms = bulk("Cu", "fcc", a=3.85, cubic=True).repeat(2)
    atoms.symbols[::3] = "Au"
    atoms.rattle(0.05, seed=1)
    return atoms


def test_check_state_agrees_with_ase(compressed_model):
    calc = DeepCompCalculator(compressed_model("cuau_se_e2_a"), backend="numba")
    atoms = _cell()
    atoms.calc = calc
    atoms.get_forces()
    same = atoms.copy()
    assert calc.check_state(same) == compare_atoms(calc.atoms, same) == []
    for change in (lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-9),
                   lambda a: a.set_chemical_symbols(["Au"] + a.get_chemical_symbols()[1:]),
                   lambda a: a.set_cell(a.cell * 1.01), lambda a: a.set_pbc([True, True, False]),
                   lambda a: a.set_initial_charges(np.ones(len(a))),
                   # one ulp: not bit-for-bit equal, yet within ASE's tolerance (unchanged for ASE)
                   lambda a: a.positions.__setitem__((0, 0), np.nextafter(a.positions[0, 0], np.inf)),
                   lambda a: a.set_pbc(a.pbc)):  # a fresh pbc array, same values
        other = atoms.copy()
        change(other)
        assert sorted(calc.check_state(other)) == sorted(compare_atoms(calc.atoms, other))
    ulp = atoms.copy()
    ulp.positions[0, 0] = np.nextafter(ulp.positions[0, 0], np.inf)
    assert calc.check_state(ulp) == []
    calc.ignored_changes = {"initial_charges"}  # ASE's attribute: properties not to compare
    other = atoms.copy()
    other.set_initial_charges(np.ones(len(other)))
    other.positions[1, 1] += 1e-3
    assert calc.check_state(other) == ["positions"]


def test_new_elements_give_new_types(compressed_model):
    """The calculator's type cache follows the atomic numbers."""
    path = compressed_model("cuau_se_e2_a")
    atoms = _cell()
    atoms.calc = DeepCompCalculator(path, backend="numba")
    atoms.get_potential_energy()
    atoms.symbols[1] = "Au"
    fresh = atoms.copy()
    fresh.calc = DeepCompCalculator(path, backend="numba")
    assert atoms.get_potential_energy() == fresh.get_potential_energy()
