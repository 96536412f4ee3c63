"""GPU per MPI rank: cupy_gpu.choose_device (pure; no GPU needed)."""

from __future__ import annotations

import pytest

from deepcomp_ase.backends.cupy_gpu import LOCAL_RANK_VARIABLES, choose_device
from deepcomp_ase.errors import BackendUnavailableError


@pytest.mark.parametrize("var", ["MPI_LOCALRANKID", "PMI_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"])
def test_launcher_local_rank_picks_the_gpu(var):
    """mpich (Hydra, PMI), Open MPI and Slurm: local rank mod GPUs; more ranks than GPUs share."""
    assert var in LOCAL_RANK_VARIABLES
    picks = [choose_device(2, environ={var: str(r)}) for r in range(5)]
    assert [p[0] for p in picks] == [0, 1, 0, 1, 0]
    assert var in picks[3][1] and "local rank 3" in picks[3][1]


def test_first_launcher_variable_wins_and_bad_values_are_skipped():
    env = {"MPI_LOCALRANKID": "3", "SLURM_LOCALID": "0"}
    assert choose_device(4, environ=env)[0] == 3
    assert choose_device(4, environ={"MPI_LOCALRANKID": "x", "SLURM_LOCALID": "2"})[0] == 2


def test_gpu_id_keyword_overrides_the_local_rank():
    dev, why = choose_device(4, gpu_id=2, environ={"MPI_LOCALRANKID": "1"})
    assert (dev, why) == (2, "gpu_id 2")
    assert choose_device(4, gpu_id=-1, environ={"MPI_LOCALRANKID": "1"})[0] == 1  # -1: not given
    with pytest.raises(BackendUnavailableError, match="gpu_id 4 .* 4 GPU"):
        choose_device(4, gpu_id=4)


def test_without_launcher_variables():
    dev, why = choose_device(3, environ={}, node_rank=lambda: 4)
    assert (dev, why) == (1, "local rank 4 (MPI shared-memory split) mod 3 GPU(s)")
    assert choose_device(3, environ={})[0] == 0
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        choose_device(0, environ={"MPI_LOCALRANKID": "0"})
