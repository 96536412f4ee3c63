"""Timing hook for benchmarks/lammps_vs_deepmd.py (hand-off overhead of ``pair_style deepcomp``).

Active only when this directory is on PYTHONPATH *and* DEEPCOMP_BENCH_TIMING=<output.json> is set.
Python imports ``sitecustomize`` at start-up, also in the interpreter the deepcomp plugin embeds in
``lmp``. When ``deepcomp_ase.lammps.bridge`` is imported (by the plugin, not by the ``lmp``
launcher), this wraps, without changing any source file:

* ``LammpsModel.compute`` (everything Python does per step: views -> numpy, type mapping,
  ``pos[pj] - pos[pi]``, the force/energy scatter, ``step_done``) and
* ``DeepPotential.compute_pairs`` (the model evaluation itself),

recording ``(timestep, t_bridge, t_model)`` per call with ``time.perf_counter`` (about 1 us of
its own per call). ``LammpsModel.close`` (called when LAMMPS deletes the pair style) writes the
records to the JSON file. With DEEPCOMP_BENCH_DUMP=<file.npz> the inputs of the first
``compute_pairs`` call are also saved (after its timing, in the warm-up run), so that the same
evaluation can be timed outside LAMMPS.
"""

import os
import sys

_OUT = os.environ.get("DEEPCOMP_BENCH_TIMING")
_TARGET = "deepcomp_ase.lammps.bridge"


def _patch(bridge):
    import json
    import time

    from deepcomp_ase.potential import DeepPotential

    records = []          # [step, t_bridge, t_model]
    model_time = [0.0]
    dump = [os.environ.get("DEEPCOMP_BENCH_DUMP")]

    orig_pairs = DeepPotential.compute_pairs

    def compute_pairs(self, atype_all, nloc, centers, neighbors, vectors, **kw):
        t = time.perf_counter()
        res = orig_pairs(self, atype_all, nloc, centers, neighbors, vectors, **kw)
        model_time[0] += time.perf_counter() - t
        if dump[0]:
            import numpy as np

            np.savez(dump[0], atype_all=np.asarray(atype_all), nloc=nloc, centers=np.asarray(centers),
                     neighbors=np.asarray(neighbors), vectors=np.asarray(vectors), energy=res.energy)
            dump[0] = None
        return res

    orig_compute = bridge.LammpsModel.compute

    def compute(self, *args, **kwargs):  # LammpsModel.compute's arguments, whatever the bridge ABI adds
        model_time[0] = 0.0
        t = time.perf_counter()
        out = orig_compute(self, *args, **kwargs)
        step = args[10] if len(args) > 10 else kwargs["step"]
        records.append((int(step), time.perf_counter() - t, model_time[0]))
        return out

    orig_close = bridge.LammpsModel.close

    def close(self):
        rank = getattr(self, "rank", 0)
        path = _OUT if rank == 0 else f"{_OUT}.rank{rank}"
        with open(path, "w") as fh:
            json.dump({"rank": rank, "records": records}, fh)
        return orig_close(self)

    DeepPotential.compute_pairs = compute_pairs
    bridge.LammpsModel.compute = compute
    bridge.LammpsModel.close = close


if _OUT:
    import importlib.abc
    import importlib.util

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != _TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                _patch(module)

            spec.loader.exec_module = exec_and_patch
            return spec

    sys.meta_path.insert(0, _Finder())
