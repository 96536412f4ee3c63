"""``mpiexec -n N lmp -in deck`` through the pip launcher (plugin auto-loaded, no `plugin load`).

* thermo of 1 and 2 ranks identical to 1e-10 relative over 50 NVE steps, per-atom energy and
  virial (stress/atom and the 9 components of centroid/stress/atom) summing to the global values
  on both, and a small NVE energy drift;
* the overflow check reports the same global counts on 1 and 2 ranks;
* ``overflow error`` on 2 ranks stops every rank within seconds with a non-zero status;
* a Python exception on one rank only aborts the run (error->one) instead of hanging.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from lammps_helpers import DATA_500, EXAMPLES, compressed_model, run_lmp, thermo_table

pytestmark = [pytest.mark.lammps, pytest.mark.mpi, pytest.mark.slow]  # mpiexec runs of LAMMPS


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    return compressed_model(tmp_path_factory)

NVE_DECK = """
units           metal
atom_style      atomic
boundary        p p p
read_data       {data}
pair_style      deepcomp {model}
pair_coeff      * * Cu Au
neighbor        1.0 bin
neigh_modify    every 1 delay 0 check yes
velocity        all create 600.0 4928459 dist gaussian
timestep        0.001
fix             1 all nve
compute         pa all pe/atom
compute         sa all stress/atom NULL virial
compute         pv all pressure NULL virial
compute         spa all reduce sum c_pa
compute         ssa all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
compute         ca all centroid/stress/atom NULL virial
compute         sca all reduce sum c_ca[*]
thermo          10
thermo_style    custom step temp pe ke etotal press pxx pyy pzz pxy pxz pyz vol c_spa &
                c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6] &
                c_ssa[1] c_ssa[2] c_ssa[3] c_ssa[4] c_ssa[5] c_ssa[6] c_sca[*]
thermo_modify   format float %.17g
run             50
"""


@pytest.fixture(scope="module")
def nve_runs(model_file, tmp_path_factory):
    work = tmp_path_factory.mktemp("nve")
    out = {}
    for n in (1, 2):
        rc, text, seconds = run_lmp(NVE_DECK.format(data=DATA_500, model=model_file), work, nprocs=n, timeout=300)
        assert rc == 0, text[-4000:]
        assert re.search(r"Loaded \d+ plugins from \S*deepcomp_ase", text), "plugin not auto-loaded by the entry point"
        out[n] = thermo_table(text)
    return out


def test_thermo_identical_on_1_and_2_ranks(nve_runs):
    header, one = nve_runs[1]
    header2, two = nve_runs[2]
    assert header == header2 and one.shape == two.shape == (6, len(header))
    col = {name: k for k, name in enumerate(header)}
    # scalar columns, relative to their own size
    for name in ("Temp", "PotEng", "KinEng", "TotEng", "Press", "c_spa"):
        k = col[name]
        assert np.all(np.abs(one[:, k] - two[:, k]) <= 1e-10 * np.abs(one[:, k])), name
    # tensor components, relative to the largest component of the tensor
    for group in (["Pxx", "Pyy", "Pzz", "Pxy", "Pxz", "Pyz"], [f"c_pv[{i}]" for i in range(1, 7)],
                  [f"c_ssa[{i}]" for i in range(1, 7)], [f"c_sca[{i}]" for i in range(1, 10)]):
        ks = [col[g] for g in group]
        scale = np.abs(one[:, ks]).max(axis=1, keepdims=True)
        assert np.all(np.abs(one[:, ks] - two[:, ks]) <= 1e-10 * scale), group


@pytest.mark.parametrize("nprocs", [1, 2])
def test_per_atom_sums_equal_global_values(nve_runs, nprocs):
    header, t = nve_runs[nprocs]
    col = {name: k for k, name in enumerate(header)}
    pe, spa = t[:, col["PotEng"]], t[:, col["c_spa"]]
    assert np.all(np.abs(spa - pe) <= 1e-10 * np.abs(pe))
    vol = t[:, col["Volume"]]
    pv = t[:, [col[f"c_pv[{i}]"] for i in range(1, 7)]]
    ssa = t[:, [col[f"c_ssa[{i}]"] for i in range(1, 7)]]
    # sum of stress/atom (pressure * volume) = - virial = pressure(virial part) * (-V)
    assert np.all(np.abs(-ssa / vol[:, None] - pv) <= 1e-10 * np.abs(pv).max(axis=1, keepdims=True))
    # centroid/stress/atom: the same 6 sums, and yx zx zy equal to xy xz yz (the sum is symmetric)
    sca = t[:, [col[f"c_sca[{i}]"] for i in range(1, 10)]]
    scale = np.abs(ssa).max(axis=1, keepdims=True)
    assert np.all(np.abs(sca[:, :6] - ssa) <= 1e-10 * scale)
    assert np.all(np.abs(sca[:, 6:] - ssa[:, 3:]) <= 1e-9 * scale)


def test_nve_energy_drift_is_small(nve_runs):
    header, t = nve_runs[1]
    etot = t[:, header.index("TotEng")]
    drift_per_atom = np.abs(etot - etot[0]).max() / 500
    assert drift_per_atom < 1e-5, drift_per_atom


def overflow_warnings(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if "deepcomp table overflow" in line]
    return [re.sub(r"\s*\(src/[^)]*\)\s*$", "", line) for line in lines]


def test_overflow_counts_same_on_1_and_2_ranks(model_file, tmp_path):
    deck = (EXAMPLES / "in.cuau_overflow").read_text()
    found = {}
    for n in (1, 2):
        rc, text, _ = run_lmp(deck, tmp_path, nprocs=n, timeout=120,
                              variables={"model": model_file, "data": DATA_500, "policy": "warn"})
        assert rc == 0, text[-4000:]
        found[n] = overflow_warnings(text)
    # one line per force call (setup + 2 steps), printed once (rank 0), with global counts
    assert len(found[1]) == 3, found[1]
    assert found[1] == found[2]
    assert all(line.startswith("WARNING: deepcomp table overflow (step ") for line in found[1])
    assert "for type pair Au-Cu" in found[1][0] and "2 of 28254 embedding inputs" in found[1][0], found[1][0]


def test_overflow_error_stops_every_rank(model_file, tmp_path):
    deck = (EXAMPLES / "in.cuau_overflow").read_text()
    rc, text, seconds = run_lmp(deck, tmp_path, nprocs=2, timeout=120,
                                variables={"model": model_file, "data": DATA_500, "policy": "error"})
    assert rc != 0, text[-4000:]
    assert "ERROR" in text and "TableOverflowError: deepcomp table overflow (step 0)" in text, text[-4000:]
    assert "Loop time" not in text
    assert seconds < 60, seconds


INJECT_FAILURE = """
import os
if os.environ.get("PMI_RANK") == "1":
    import deepcomp_ase.lammps.bridge as bridge

    import inspect

    original = bridge.LammpsModel._compute
    # the step's position among the arguments (after self), wherever the bridge's signature puts it
    STEP = list(inspect.signature(original).parameters).index("step") - 1

    def failing(self, *args):
        if args[STEP] >= 2:
            raise RuntimeError("injected failure on rank 1")
        return original(self, *args)

    bridge.LammpsModel._compute = failing
"""


def test_exception_on_one_rank_aborts_without_hanging(model_file, tmp_path):
    """The embedded interpreter reads PYTHONPATH: a sitecustomize makes rank 1 fail at step 2."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT_FAILURE)
    deck = NVE_DECK.format(data=DATA_500, model=model_file).replace("run             50", "run             5")
    rc, text, seconds = run_lmp(deck, tmp_path, nprocs=2, timeout=120, env={"PYTHONPATH": str(inject)})
    assert rc != 0, text[-4000:]
    assert "ERROR on proc 1: pair_style deepcomp: RuntimeError: injected failure on rank 1" in text, text[-4000:]
    assert "Traceback" in text
    assert seconds < 60, seconds


def test_two_atoms_at_one_place_stops_two_ranks(model_file, tmp_path):
    """Only the rank owning the pair sees it: error->one there, the run ends (no hang)."""
    deck = f"""
units           metal
atom_style      atomic
atom_modify     map array
read_data       {DATA_500}
variable        x1 equal x[1]
variable        y1 equal y[1]
variable        z1 equal z[1]
set             atom 2 x ${{x1}} y ${{y1}} z ${{z1}}
pair_style      deepcomp {model_file}
pair_coeff      * * Cu Au
run             0
"""
    rc, text, seconds = run_lmp(deck, tmp_path, nprocs=2, timeout=120)
    assert rc != 0, text[-4000:]
    assert re.search(r"ERROR on proc \d: pair_style deepcomp: AtomsTooCloseError: .* A apart", text), \
        text[-4000:]
    assert seconds < 60, seconds


def test_cold_numba_cache_compiled_by_one_rank(model_file, tmp_path):
    """Two ranks on an empty kernel cache: one compiles, the other waits on the lock and loads (without
    the lock both would compile and say so)."""
    deck = NVE_DECK.format(data=DATA_500, model=model_file).replace(
        "pair_style      deepcomp {}".format(model_file), f"pair_style      deepcomp {model_file} device cpu")
    deck = deck.replace("run             50", "run             2")
    rc, text, _ = run_lmp(deck, tmp_path, nprocs=2, timeout=600, env={"DEEPCOMP_NUMBA_CACHE": str(tmp_path / "nc")})
    assert rc == 0, text[-4000:]
    assert text.count("compiling the numba kernels, once") == 1, text[-4000:]  # either rank may be the one
    assert list((tmp_path / "nc" / "deepcomp-compiled").iterdir())
