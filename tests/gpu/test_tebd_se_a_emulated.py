"""se_e2_a with a TF type embedding on the CUDA kernels (host emulation): the model is read folded
into a plain se_e2_a (io/pb_tebd.py), so the se_e2_a kernels evaluate it unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Reference  # noqa: E402
from kernel_cases import check_whole_model, needs_emulation, structure  # noqa: E402
from kernel_cases import host_emulation  # noqa: E402,F401 - the fixture behind needs_emulation

from deepcomp_ase.backends.cupy_gpu import Backend  # noqa: E402
from deepcomp_ase.compress.api import compress_model  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

MODELS = Path(__file__).parents[1] / "data" / "models" / "tf_graphs"


@needs_emulation
@pytest.mark.slow  # emulated kernels: one CPU thread per CUDA thread
def test_three_type_two_side_model_on_the_device(tmp_path):
    name = "tf32_cuau3_se_a_tebd"
    path = tmp_path / f"{name}.dcz"
    compress_model(MODELS / f"{name}.pb", path)
    backend = Backend(precision="float64", emulate=True)
    dev_pot, ref_pot = (DeepPotential.from_file(path, backend="numpy", check_frequency=-1) for _ in range(2))
    assert backend.unsupported_reason(dev_pot) == ""
    errs = check_whole_model(backend, dev_pot, ref_pot, *structure(Reference(name), "p32_0"))
    print(name, errs)
