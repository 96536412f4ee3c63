"""CUDA kernels of the GPU backend (fused tabulate-contract se_e2_a), their loader and launcher.

Nothing here imports CuPy at import time: :mod:`.launch` (argument checks) is pure numpy,
:mod:`.loader` imports CuPy only when a GPU module is requested.
"""

from .launch import KERNELS, ArgSpec, KernelArgumentError, KernelSpec, check_args, checked_launch

__all__ = ["KERNELS", "ArgSpec", "KernelArgumentError", "KernelSpec", "check_args", "checked_launch"]
