"""Load model files under an address-space limit and report what happened (tests/test_hostile.py).

Usage: ``python limited_load.py MIB [--evaluate] PATH...``. Each path is loaded in a forked
child limited to MIB above what the interpreter holds after its imports (RLIMIT_AS, so a runaway
allocation fails with MemoryError instead of taking the machine) and to SECONDS (then killed:
outcome "timeout"). Prints one JSON line per path: the outcome ("ok", "nonfinite",
the DeepCompError subclass or another exception's name), its message, whether it is one of
these ("clean": a DeepCompError or a finite result) and the seconds taken.
``--evaluate`` also computes a small structure with the loaded model (numpy backend).
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from deepcomp_ase.errors import DeepCompError  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402


#: the longest a single load (and evaluation) may take
SECONDS = 60.0


def _subclasses(cls) -> set:
    return {cls.__name__}.union(*(_subclasses(c) for c in cls.__subclasses__()))


_ERROR_NAMES = _subclasses(DeepCompError)


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


def _load(path: str, evaluate: bool) -> dict:
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
    return {"path": path, "outcome": outcome, "message": message,
            "clean": outcome == "ok" or outcome in _ERROR_NAMES, "seconds": time.monotonic() - t0}


def _forked(path: str, evaluate: bool, mib: int, seconds: float) -> dict:
    """Load ``path`` in a forked child limited to ``mib`` more address space and ``seconds``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: limit, load, report, leave without cleanup
        os.close(read)
        limit = _vm_bytes() + mib * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            os.write(write, json.dumps(_load(path, evaluate)).encode())
        finally:
            os._exit(0)
    os.close(write)
    t0 = time.monotonic()
    chunks = []
    while True:
        ready, _, _ = select.select([read], [], [], max(0.0, seconds - (time.monotonic() - t0)))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return {"path": path, "outcome": "timeout", "message": f"still running after {seconds} s",
                    "clean": False, "seconds": time.monotonic() - t0}
        chunk = os.read(read, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"path": path, "outcome": f"died (status {status})", "message": "", "clean": False,
                "seconds": time.monotonic() - t0}
    return json.loads(b"".join(chunks))


def main(argv: list[str]) -> None:
    mib = int(argv[0])
    evaluate = "--evaluate" in argv
    paths = [a for a in argv[1:] if a != "--evaluate"]
    # the backends and readers are imported before any fork: only what a file makes us allocate counts
    import h5py  # noqa: F401
    import yaml  # noqa: F401

    import deepcomp_ase.io.load  # noqa: F401
    import deepcomp_ase.io.pth  # noqa: F401
    from deepcomp_ase.backends.numpy_ref import Backend  # noqa: F401

    for path in paths:
        print(json.dumps(_forked(path, evaluate, mib, SECONDS)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
