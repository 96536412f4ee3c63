"""Deterministic fuzzing of the model readers (slow): mutate valid .dp/.dcz/.yaml/.pth files
byte-wise and semantically; every mutant must load and evaluate to finite numbers, or fail with
a DeepCompError, within a memory bound (RLIMIT_AS, tests/limited_load.py) and a time bound.

Seeds are fixed: a failure names the mutant, which the same seeds rebuild.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import MODELS, write_dp

from deepcomp_ase.io import read_model_tree

HERE = Path(__file__).parent
LIMIT_MIB = 300  # address space a mutant may take above the interpreter's own
SECONDS_PER_MUTANT = 20
TOTAL_SECONDS = 900
#: mutants per format (YAML loads take seconds: fewer of them)
N_BYTEWISE = {"dp": 24, "dcz": 24, "pth": 24, "yaml": 8}
N_SEMANTIC = {"dp": 40, "yaml": 12, "dcz": 24}

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- mutations
def bytewise(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip bytes, truncate, overwrite a run with 0xff, duplicate a chunk, insert junk."""
    buf = bytearray(data)
    kind = int(rng.integers(5))
    if kind == 0:
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
            buf[pos] ^= int(rng.integers(1, 256))
    elif kind == 1:
        del buf[int(rng.integers(1, len(buf))):]
    elif kind == 2:
        pos = int(rng.integers(len(buf)))
        buf[pos:pos + int(rng.integers(1, 64))] = b"\xff" * len(buf[pos:pos + 64])
    elif kind == 3:
        a = int(rng.integers(len(buf)))
        chunk = buf[a:a + int(rng.integers(1, 4096))]
        b = int(rng.integers(len(buf)))
        buf[b:b] = chunk
    else:
        pos = int(rng.integers(len(buf)))
        buf[pos:pos] = rng.integers(0, 256, size=int(rng.integers(1, 256)), dtype=np.uint8).tobytes()
    return bytes(buf)


def _paths(tree, prefix=()):
    """Every (path, value) of the tree (dict keys and list indices)."""
    yield prefix, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _paths(v, prefix + (i,))


def _replacement(value, rng: np.random.Generator):
    choices = [float("nan"), float("inf"), -1, 0, 1e9, -1e9, "x", None, [], {}, True, [[[[1]]]], 2**63]
    if isinstance(value, np.ndarray) and value.size:
        arr = value.copy()
        pick = int(rng.integers(5))
        if pick == 0 and arr.dtype.kind == "f":
            arr.flat[int(rng.integers(arr.size))] = np.nan
            return arr
        if pick == 1:
            return arr.reshape(-1)[: max(1, arr.size // 2)]
        if pick == 2:
            return arr.astype(np.int8)
        if pick == 3 and arr.dtype.kind == "f":
            return arr * 1e6
    return choices[int(rng.integers(len(choices)))]


def semantic(tree: dict, rng: np.random.Generator) -> dict:
    """Replace one value of the tree (a field or an array) by a hostile one."""
    t = copy.deepcopy(tree)
    paths = [p for p, _ in _paths(t) if p]
    path = paths[int(rng.integers(len(paths)))]
    node = t
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = _replacement(node[path[-1]], rng)
    return t


def semantic_dcz(seed: Path, path: Path, rng: np.random.Generator) -> None:
    """Copy a compressed file and damage one table: an attribute, a coefficient or a dataset's shape."""
    import h5py

    path.write_bytes(seed.read_bytes())
    with h5py.File(path, "a") as f:
        tables = sorted(f["tables"])
        g = f["tables"][tables[int(rng.integers(len(tables)))]]
        kind = int(rng.integers(4))
        if kind == 0:
            attr = ["lower", "upper", "xmax", "stride0", "stride1", "xmin"][int(rng.integers(6))]
            g.attrs[attr] = [np.nan, np.inf, -1.0, 0.0, 1e9, 1e-300][int(rng.integers(6))]
        elif kind == 1:
            coeffs = g["coeffs"][()]
            coeffs.flat[int(rng.integers(coeffs.size))] = [np.nan, np.inf, 1e300][int(rng.integers(3))]
            g["coeffs"][...] = coeffs
        elif kind == 2:
            coeffs = g["coeffs"][()]
            del g["coeffs"]
            g.create_dataset("coeffs", data=coeffs[: max(1, len(coeffs) // 3)])
        else:
            f.attrs["options"] = json.dumps({"frequency": int(rng.integers(-5, 5)), "step": float(rng.random())})


def _yaml_ready(tree):
    if isinstance(tree, np.ndarray):
        return {"@class": "np.ndarray", "@is_variable": True, "dtype": str(tree.dtype), "value": tree.tolist()}
    if isinstance(tree, dict):
        return {k: _yaml_ready(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_yaml_ready(v) for v in tree]
    if isinstance(tree, float) and not np.isfinite(tree):
        return str(tree)  # JSON has no NaN: a string where a number belongs
    return tree


def write_yaml(tree, path):
    # JSON is YAML: written fast, read by the YAML reader
    path.write_text(json.dumps(_yaml_ready(tree)))


# ----------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def mutants(tmp_path_factory, compressed_model):
    out = tmp_path_factory.mktemp("fuzz")
    seeds_paths = {"dp": MODELS / "cuau_se_e2_r.dp", "dcz": compressed_model("cuau_se_e2_r", step=0.1),
                   "pth": MODELS / "pt_cuau_se_e2_r.pth"}
    seeds = {ext: p.read_bytes() for ext, p in seeds_paths.items()}
    tree = read_model_tree(MODELS / "cuau_se_e2_r.dp")
    write_yaml(tree, out / "seed.yaml")
    seeds["yaml"] = (out / "seed.yaml").read_bytes()
    paths = []
    for k, (ext, data) in enumerate(sorted(seeds.items())):
        rng = np.random.default_rng(1000 + k)
        for m in range(N_BYTEWISE[ext]):
            path = out / f"byte_{ext}_{m}.{ext}"
            path.write_bytes(bytewise(data, rng))
            paths.append(path)
    for k, (ext, writer) in enumerate([("dp", write_dp), ("yaml", write_yaml)]):  # the model tree
        rng = np.random.default_rng(2000 + k)
        for m in range(N_SEMANTIC[ext]):
            path = out / f"tree_{ext}_{m}.{ext}"
            writer(semantic(tree, rng), path)
            paths.append(path)
    rng = np.random.default_rng(3000)
    for m in range(N_SEMANTIC["dcz"]):
        path = out / f"tables_dcz_{m}.dcz"
        semantic_dcz(seeds_paths["dcz"], path, rng)
        paths.append(path)
    return paths


def test_mutants_load_cleanly_within_bounds(mutants):
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(HERE / "limited_load.py"), str(LIMIT_MIB), "--evaluate",
                           *map(str, mutants)], capture_output=True, text=True, timeout=TOTAL_SECONDS, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(mutants)
    bad = [r for r in results if not r["clean"] or r["seconds"] > SECONDS_PER_MUTANT]
    report = "\n".join(f"{Path(r['path']).name}: {r['outcome']} {r['message'][:300]} ({r['seconds']:.1f} s)"
                       for r in bad)
    assert not bad, f"{len(bad)} of {len(results)} mutants misbehaved:\n{report}"
    # the mutants exercise both outcomes: some still load, most are refused
    outcomes = {r["outcome"] for r in results}
    assert "ok" in outcomes and len(outcomes) > 2, outcomes
    assert time.monotonic() - t0 < TOTAL_SECONDS
