"""The CuPy backend on a real GPU: every kernel vs its numpy twin, the whole model vs the CPU
reference (float64 within 1e-10 relative on the refsuite configurations of every compressed
model: se_e2_a, se_e2_r, se_e3, se_atten_v2, hybrid; float32 errors reported), overflow
counters, device selection.

Marked ``gpu``; skipped with the reason when CuPy or a CUDA device is missing. Run with
``pytest -m gpu tests/gpu`` (benchmarks/gpu_check.sh does).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import SE_E2_A_MODELS, Reference  # noqa: E402
from kernel_cases import (Inputs, check_cell_list, check_counters, check_env_mat, check_fitting,  # noqa: E402
                          check_prod_force, check_tabulate, check_whole_model, random_structure, structure)

from deepcomp_ase.backends import cupy_gpu  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

REASON = cupy_gpu.why_unavailable()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(REASON), reason=f"no GPU backend: {REASON}")]
REPORT = Path(os.environ.get("OUT", "/tmp")) / "gpu_test_errors.jsonl"


def report(**row):
    with open(REPORT, "a") as fh:
        fh.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module", params=["float64", "float32"])
def backend(request):
    return cupy_gpu.Backend(precision=request.param)


def pot_of(path):
    return DeepPotential.from_file(path, backend="numpy", check_frequency=-1)


@pytest.fixture(scope="module")
def cuau(compressed_model):
    return compressed_model("cuau_se_e2_a"), Reference("cuau_se_e2_a")


def test_select_device_uses_local_rank_modulo_count():
    import cupy

    n = cupy.cuda.runtime.getDeviceCount()
    assert cupy_gpu.select_device(n + 0)[0] == 0
    assert cupy.cuda.Device().id == 0


@pytest.mark.parametrize("case", ["p32_0", "cluster55", "p256"])
def test_cell_list(backend, cuau, case):
    path, ref = cuau
    check_cell_list(backend, pot_of(path), *structure(ref, case))


def test_env_mat(backend, cuau):
    path, ref = cuau
    check_env_mat(backend, Inputs(backend, pot_of(path), *structure(ref, "p108_0")))


def test_tabulate_fusion(backend, cuau):
    path, ref = cuau
    errs = check_tabulate(backend, Inputs(backend, pot_of(path), *structure(ref, "p108_1"), seed=3))
    report(test="tabulate_fusion", precision=backend.precision, **errs)


def test_prod_force_virial(backend, cuau):
    path, ref = cuau
    check_prod_force(backend, Inputs(backend, pot_of(path), *structure(ref, "p108_2"), seed=4), nall=120)


def test_fitting(backend, cuau):
    path, ref = cuau
    pot = pot_of(path)
    check_fitting(backend, pot, Inputs(backend, pot, *structure(ref, "p108_0"), seed=5))


_REFERENCE: dict = {}
DEVICE_MODELS = SE_E2_A_MODELS + ("cuau_se_e2_r", "cuau_se_e2_r_tos", "cuau_se_e3", "cuau_se_atten_v2",
                                  "cuau_se_atten_v2_jax", "cuau_hybrid")


def representative(ref):
    """One configuration of each kind (periodic, cluster, stretched, overflow): the other
    descriptors' check, keeping the device run short."""
    names = ref.names
    picks = [names[0], next(n for n in names if n.startswith("cluster")), ref.confs("stretched")[0],
             ref.confs("overflow")[-1]]
    return list(dict.fromkeys(picks))


@pytest.mark.parametrize("name", DEVICE_MODELS)
def test_whole_model_refsuite(backend, compressed_model, name):
    """Refsuite configurations (every one for se_e2_a models, one of each kind for the others) of
    every compressed refsuite model."""
    ref = Reference(name)
    path = compressed_model(name)
    worst = {}
    confs = ref.names if name in SE_E2_A_MODELS else representative(ref)
    for conf in confs:
        dev_pot, ref_pot = pot_of(path), pot_of(path)
        key = (name, conf)
        if key not in _REFERENCE:  # the CPU reference once for both precisions
            _REFERENCE[key] = ref_pot.compute_atoms(*structure(ref, conf), atomic_virial=True)
        errs = check_whole_model(backend, dev_pot, ref_pot, *structure(ref, conf),
                                 tol=1e-10 if backend.precision == "float64" else 1e-3, want=_REFERENCE[key])
        report(test="whole_model", model=name, conf=conf, precision=backend.precision, **errs)
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), v)
    print(name, backend.precision, worst)


def test_overflow_counters(cuau):
    path, ref = cuau
    backend = cupy_gpu.Backend(precision="float64")
    dev_pot, ref_pot = pot_of(path), pot_of(path)
    for conf in ("overflow_0.30A", "overflow_0.15A", "stretched_1.53A", "p32_0"):
        coord, atype, cell, pbc = structure(ref, conf)
        ref_pot.compute_atoms(coord, atype, cell, pbc)
        backend.compute_atoms(dev_pot, coord, atype, cell, pbc)
    check_counters(backend, dev_pot, ref_pot)


def test_results_stay_on_device(cuau):
    import cupy

    path, ref = cuau
    backend = cupy_gpu.Backend(precision="float64")
    pot = pot_of(path)
    coord, atype, cell, pbc = structure(ref, "p108_0")
    out = backend.compute_device(pot, cupy.asarray(coord), atype, cell, pbc)
    assert isinstance(out.forces, cupy.ndarray) and isinstance(out.energy, cupy.ndarray)
    want = pot.compute_atoms(coord, atype, cell, pbc)
    assert abs(float(out.energy) - want.energy) <= 1e-10 * abs(want.energy)
    np.testing.assert_allclose(out.forces.get(), want.forces, atol=1e-10 * np.abs(want.forces).max())


@pytest.mark.parametrize("name", ["cuau_se_e2_a", "cuau_se_atten_v2", "cuau_hybrid"])
def test_lammps_layout_device_path(compressed_model, name):
    """LAMMPS's layout (local + ghost atoms) on the device path: neighbour list on the GPU from
    positions only; equal to the reference on the same pair list; bytes per step as budgeted."""
    from conftest import with_ghost_atoms

    from deepcomp_ase.backends.cuda_lammps import LammpsDevicePath, expected_step_bytes

    path = compressed_model(name)
    coord, atype, cell, pbc = structure(Reference(name), "p108_0")
    ref_pot, dev_pot = pot_of(path), pot_of(path)
    atype_all, centers, neighbors, vectors, owner = with_ghost_atoms(coord, atype, cell, ref_pot.rcut)
    x = np.zeros((len(atype_all), 3))
    x[:len(coord)] = coord
    x[neighbors] = coord[centers] + vectors  # every ghost is some local atom's neighbour
    want = ref_pot.compute_pairs(atype_all, len(coord), centers, neighbors, vectors, atomic_virial=True)
    dev = LammpsDevicePath(cupy_gpu.Backend(precision="float64"), dev_pot)
    for _ in range(2):
        got = dev.compute(x, atype_all, len(coord), atom_energy=True, atomic_virial=True)
    errs = {k: float(np.abs(np.asarray(getattr(got, k)) - getattr(want, k)).max() / np.abs(getattr(want, k)).max())
            for k in ("energy", "forces", "virial", "atom_energy", "atom_virial")}
    report(test="lammps_layout", model=name, nloc=len(coord), nall=len(x), **errs)
    assert max(errs.values()) <= 1e-10, errs
    assert dev.last_step_bytes == expected_step_bytes(len(coord), len(x), len(dev_pot.parts), types_changed=False,
                                                      atom_energy=True, atomic_virial=True)


@pytest.mark.parametrize("name", ["pt_cuau_se_atten_v2_a2.dp", "pt_cuau_dpa1_concat.dp", "pt_cuau3_dpa1_concat_smooth.dp",
                                  "tf_graphs/tf32_cuau_se_atten.pb"])
def test_dpa1_whole_model(backend, tmp_path, name):
    """DPA-1 with attention layers (kernels/dpa1.cu) vs the CPU reference: padding, sel truncation,
    an isolated atom and an input beyond the table (exact net); a TensorFlow graph too."""
    from deepcomp_ase.compress.api import compress_model

    path = tmp_path / f"{Path(name).stem}.dcz"
    compress_model(Path(__file__).parents[1] / "data" / "models" / name, path)
    assert backend.unsupported_reason(pot_of(path)) == ""
    ntypes = pot_of(path).plan.ntypes
    for kind in ("periodic", "dense", "cluster", "close"):
        # the close pair of a TF graph passes a norm below its 1e-6 floor: digits lost (tests/gpu/test_dpa1_emulated.py)
        tol = 1e-9 if kind == "close" and backend.precision == "float64" else None
        errs = check_whole_model(backend, pot_of(path), pot_of(path), *random_structure(kind, ntypes, seed=1), tol=tol)
        report(test="dpa1", model=name, conf=kind, precision=backend.precision, **errs)
