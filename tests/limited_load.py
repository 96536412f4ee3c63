"""Load model files under an address-space limit and report what happened (tests/test_hostile.py).

Usage: ``python limited_load.py MIB [--evaluate] PATH...``. The limit is MIB above what the
interpreter holds after its imports (RLIMIT_AS, so a runaway allocation fails with MemoryError
instead of taking the machine). Prints one JSON line per path: the outcome ("ok", "nonfinite",
the DeepCompError subclass or another exception's name), its message and the seconds taken.
``--evaluate`` also computes a small structure with the loaded model (numpy backend).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from deepcomp_ase.errors import DeepCompError  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _evaluate(pot) -> bool:
    rng = np.random.default_rng(0)
    cell = np.eye(3) * 8.0
    pos = rng.random((6, 3)) * 8.0
    types = np.arange(6) % len(pot.type_map)
    res = pot.compute_atoms(pos, types, cell, (True, True, True))
    return bool(np.isfinite(res.energy) and np.isfinite(np.asarray(res.forces)).all())


def main(argv: list[str]) -> None:
    mib = int(argv[0])
    evaluate = "--evaluate" in argv
    paths = [a for a in argv[1:] if a != "--evaluate"]
    # the backends and h5py are imported before the limit: only what a file makes us allocate counts
    import h5py  # noqa: F401
    import yaml  # noqa: F401

    from deepcomp_ase.backends.numpy_ref import Backend  # noqa: F401

    limit = _vm_bytes() + mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for path in paths:
        t0 = time.monotonic()
        try:
            pot = DeepPotential.from_file(path, backend="numpy")
            outcome, message = ("ok" if not evaluate or _evaluate(pot) else "nonfinite"), ""
        except DeepCompError as exc:
            outcome, message = type(exc).__name__, str(exc)
        except MemoryError:
            outcome, message = "MemoryError", ""
        except BaseException as exc:  # noqa: BLE001 - reported, the test decides
            outcome, message = type(exc).__name__, str(exc)[:500]
        print(json.dumps({"path": path, "outcome": outcome, "message": message,
                          "seconds": time.monotonic() - t0}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
