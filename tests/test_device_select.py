"""GPU choice per MPI rank (cupy_gpu.select_device, used by the LAMMPS bridge), with a stand-in CuPy."""

from __future__ import annotations

import types

import pytest

from deepcomp_ase.backends.cupy_gpu import LOCAL_RANK_VARIABLES, select_device
from deepcomp_ase.errors import BackendUnavailableError
from deepcomp_ase.lammps import bridge


def fake_cupy(count: int):
    """Just enough of CuPy: a device count and Device(i).use() recording the current device."""
    state = types.SimpleNamespace(current=None)

    class Device:
        def __init__(self, index):
            self.index = index

        def use(self):
            state.current = self.index

    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: count), Device=Device)
    return types.SimpleNamespace(cuda=cuda, state=state)


@pytest.fixture
def no_launcher_rank(monkeypatch):
    for var in LOCAL_RANK_VARIABLES:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("rank, count, want", [(0, 1, 0), (3, 1, 0), (1, 4, 1), (5, 4, 1), (7, 2, 1)])
def test_explicit_rank_takes_rank_mod_count(rank, count, want):
    cp = fake_cupy(count)
    dev, why = select_device(rank, cupy_module=cp)
    assert dev == want and cp.state.current == want and f"local rank {rank}" in why


def test_rank_from_launcher_variable(monkeypatch, no_launcher_rank):
    monkeypatch.setenv(LOCAL_RANK_VARIABLES[0], "3")
    cp = fake_cupy(2)
    dev, why = select_device(cupy_module=cp)
    assert dev == 1 and cp.state.current == 1 and LOCAL_RANK_VARIABLES[0] in why


def test_single_process_takes_gpu_0(no_launcher_rank):
    cp = fake_cupy(4)
    assert select_device(cupy_module=cp)[0] == 0 and cp.state.current == 0


def test_no_device_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        select_device(0, cupy_module=fake_cupy(0))


def test_gpu_id_wins_over_the_local_rank(monkeypatch, no_launcher_rank):
    monkeypatch.setenv(LOCAL_RANK_VARIABLES[0], "1")
    cp = fake_cupy(4)
    assert select_device(cupy_module=cp, gpu_id=3) == (3, "gpu_id 3") and cp.state.current == 3


class _TwoRanks:
    """A communicator of two ranks whose shared-memory split puts this process at node rank 1."""

    def Get_size(self):  # noqa: N802 - mpi4py spelling
        return 2


def test_shared_memory_split_without_launcher_variable(monkeypatch, no_launcher_rank):
    from deepcomp_ase.lammps import mpi

    monkeypatch.setattr(mpi, "shared_memory_rank", lambda comm: 1)
    cp = fake_cupy(2)
    dev, why = select_device(comm=_TwoRanks(), cupy_module=cp)
    assert dev == 1 and cp.state.current == 1 and "shared-memory" in why


def test_bridge_uses_select_device(monkeypatch, no_launcher_rank):
    """The LAMMPS bridge binds its rank through select_device (not a copy of it), with gpu_id."""
    from deepcomp_ase.backends import cupy_gpu
    from deepcomp_ase.lammps.mpi import SerialComm

    calls = []
    monkeypatch.setattr(cupy_gpu, "select_device",
                        lambda local_rank=None, comm=None, *, gpu_id=None: calls.append((comm, gpu_id)) or (2, "why"))
    monkeypatch.setattr(bridge, "_visible_gpus", lambda: 1)
    kwargs, gpu = bridge._backend_options("cuda", "double", SerialComm(), gpu_id=5)
    assert gpu == "cuda:2 (why)" and len(calls) == 1 and calls[0][1] == 5
    assert kwargs == {"backend": "cuda", "precision": "float64"}
