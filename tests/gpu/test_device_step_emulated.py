"""The device step of issue 25, with the kernels compiled for the CPU: both table layouts give
the same bits, narrow blocks and small backward tiles give the same model, prod_force_virial
covers more centres than its grid has warps, and two atoms at one place are reported from the
neighbour-list kernel's record at the check frequency."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Reference  # noqa: E402
from kernel_cases import Inputs, host_emulation, needs_emulation, structure  # noqa: E402,F401
from twins import twin_prod_force  # noqa: E402

from deepcomp_ase.backends.cupy_gpu import Backend  # noqa: E402
from deepcomp_ase.errors import AtomsTooCloseError, InputError  # noqa: E402
from deepcomp_ase.kernels.launch import KERNELS, check_args  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

pytestmark = needs_emulation  # the kernels are compiled for the CPU when a test first runs


@pytest.fixture(scope="module")
def cuau(compressed_model):
    return compressed_model("cuau_se_e2_a"), Reference("cuau_se_e2_a")


def pot_of(path, **kw):
    return DeepPotential.from_file(path, backend="numpy", **kw)


def small_structure(ref, n=6):
    """The first ``n`` atoms of a refsuite cluster: about a second of emulation per step."""
    coord, atype, cell, pbc = structure(ref, "cluster55")
    return coord[:n], atype[:n], np.zeros((3, 3)), np.array([False] * 3)


def results(backend, path, coord, atype, cell, pbc):
    return backend.compute_atoms(pot_of(path, check_frequency=-1), coord, atype, cell, pbc, atomic_virial=True)


def test_table_layout_setting(monkeypatch):
    with pytest.raises(InputError, match="table layout 'rows'.*output-major, coefficient-major"):
        Backend(emulate=True, table_layout="rows")
    monkeypatch.setenv("DEEPCOMP_GPU_TABLE_LAYOUT", "diagonal")
    with pytest.raises(InputError, match="DEEPCOMP_GPU_TABLE_LAYOUT"):
        Backend(emulate=True)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_table_layouts_equal_bit_for_bit(cuau, precision):
    """Everything the tables feed is equal bit for bit: descriptor, its gradient, energies and
    the virial. Forces and per-atom virials are summed by atomicAdd, whose order differs from
    run to run (one layout twice too), so they are compared at 1e-14."""
    path, ref = cuau
    coord, atype, cell, pbc = small_structure(ref)
    out = {}
    for layout in ("output-major", "coefficient-major"):
        be = Backend(precision=precision, emulate=True, table_layout=layout)
        pot = pot_of(path, check_frequency=-1)
        res = be.compute_atoms(pot, coord, atype, cell, pbc, atomic_virial=True)
        st = be._state[pot]
        pws = st["ws"].parts[0]
        out[layout] = (res, st["model"].parts[0], np.array(pws.desc), np.array(pws.g_em))
    (ra, pa, da, ga), (rb, pb, db, gb) = out.values()
    assert int(pa.table_info[0, 9]) == 0 and int(pb.table_info[0, 9]) == 1
    assert not np.array_equal(pa.table, pb.table)  # the same numbers in another order
    np.testing.assert_array_equal(np.sort(pa.table), np.sort(pb.table))
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(ga, gb)
    assert ra.energy == rb.energy
    np.testing.assert_array_equal(ra.atom_energy, rb.atom_energy)
    np.testing.assert_array_equal(ra.virial, rb.virial)
    for name in ("forces", "atom_virial"):
        a, b = getattr(ra, name), getattr(rb, name)
        assert np.abs(a - b).max() <= 1e-14 * np.abs(b).max(), name


def test_narrow_blocks_and_small_tiles_give_the_same_model(cuau):
    """Thread limit 64 for a 100-wide net (the forward kernels take two passes over the outputs)
    and a 32-output backward tile (four passes) against the default launch."""
    path, ref = cuau
    coord, atype, cell, pbc = small_structure(ref)
    wide = Backend(precision="float64", emulate=True)
    narrow = Backend(precision="float64", emulate=True, max_threads_per_block=64)
    pot = pot_of(path, check_frequency=-1)
    part = narrow.device_model(pot).parts[0]
    assert part.ng == 100 and part.tile == 100
    part.tile = 32
    want = results(wide, path, coord, atype, cell, pbc)
    got = narrow.compute_atoms(pot, coord, atype, cell, pbc, atomic_virial=True)
    block = {key[0]: v[2] for key, v in narrow.ctx.launches.entries.items()}
    assert block["tabulate_fusion_se_a_fwd"] == (64,) and block["prod_force_virial"] == (64,)
    assert abs(got.energy - want.energy) <= 1e-13 * abs(want.energy)
    for name in ("forces", "virial", "atom_virial"):
        a, b = getattr(got, name), getattr(want, name)
        assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max(), name


def test_prod_force_virial_grid_stride(cuau):
    """One block of two warps for 12 centres: each warp walks six of them (the path of grids
    capped at GRID_CAP blocks, > 16.8M atoms on a GPU)."""
    path, ref = cuau
    backend = Backend(precision="float64", emulate=True)
    coord, atype, cell, pbc = small_structure(ref, 12)
    inp = Inputs(backend, pot_of(path), coord, atype, cell, pbc)
    ctx, dm, xp = inp.ctx, inp.dm, np
    mask = inp.real_mask()
    g_em = np.where(mask[..., None], inp.rng.normal(size=inp.em.shape), 0.0)
    want = twin_prod_force(inp.m, inp.nlist, inp.rij, g_em, inp.nnbr, inp.atype, inp.nloc)
    force, vrows, avir = xp.zeros((inp.nloc, 3)), xp.zeros((inp.nloc, 9)), xp.zeros((inp.nloc, 9))
    args = (inp.dev(inp.nlist, np.int32), inp.dev(inp.rij), inp.dev(g_em), None, inp.dev(inp.nnbr, np.int32),
            inp.dev(inp.atype, np.int32), dm.sec, dm.pair_table, dm.dstd, force, vrows, avir, inp.nloc, dm.nnei,
            dm.ntypes, 4, dm.rcut_smth, dm.rcut, dm.protection)
    cast, _ = check_args(KERNELS["prod_force_virial"], args, np.float64)
    ctx.function("prod_force_virial")((1,), (64,), cast, shared_mem=0)
    for got, exp, name in zip((force, vrows, avir), want, ("force", "virial rows", "atom virial")):
        assert np.abs(got - exp).max() <= 1e-12 * np.abs(exp).max(), name


def squeezed(ref):
    coord, atype, cell, pbc = small_structure(ref, 8)
    coord = coord.copy()
    coord[7] = coord[3] + [2e-4, 0.0, 0.0]
    return coord, atype, cell, pbc


@pytest.mark.slow  # three emulated steps
def test_close_pair_read_at_the_check_frequency(cuau):
    """check_frequency 3: the pair is recorded by build_nlist on the first call and reported,
    naming both atoms, when the counters are read on the third; the record is then cleared."""
    path, ref = cuau
    backend = Backend(precision="float64", emulate=True)
    pot = pot_of(path, check_frequency=3, overflow="ignore")
    coord, atype, cell, pbc = squeezed(ref)
    backend.compute_atoms(pot, coord, atype, cell, pbc)
    assert backend.read_counters(pot)[6] != 0  # recorded on the device, nothing read back yet
    backend.compute_atoms(pot, coord, atype, cell, pbc)
    with pytest.raises(AtomsTooCloseError) as info:
        backend.compute_atoms(pot, coord, atype, cell, pbc)
    assert set(info.value.atoms) == {3, 7}
    assert info.value.distance == pytest.approx(2e-4, rel=1e-9)
    assert backend.read_counters(pot)[6] == 0


def test_close_pair_without_check_frequency_after_every_call(cuau):
    path, ref = cuau
    backend = Backend(precision="float64", emulate=True)
    pot = pot_of(path, check_frequency=-1, overflow="ignore")
    with pytest.raises(AtomsTooCloseError, match=r"atom (3|7) and atom (3|7) are 0.0002 A apart"):
        backend.compute_atoms(pot, *squeezed(ref))
