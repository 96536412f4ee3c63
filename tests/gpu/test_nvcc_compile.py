"""Every .cu file compiles standalone with nvcc for sm_80 and sm_90, without register spills.

The .cu files carry explicit float/double instantiations under -DDEEPCOMP_STANDALONE (NVRTC
instantiates through name_expressions instead). ``--resource-usage`` reports registers, stack
frame and spills per kernel; a spill fails the test. Skipped only when nvcc is absent.
Run ``python tests/gpu/test_nvcc_compile.py`` for the resource table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deepcomp_ase.kernels.loader import SOURCES  # noqa: E402

NVCC = shutil.which("nvcc")
ARCHS = ("sm_80", "sm_90")
_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def kernel_dir() -> Path:
    return Path(str(resources.files("deepcomp_ase.kernels")))


def demangle(name: str) -> str:
    m = re.match(r"_Z(\d+)(\w+)", name)
    if not m:
        return name
    n = int(m.group(1))
    base, rest = m.group(2)[:n], m.group(2)[n:]
    return f"{base}<{'double' if rest.startswith('Id') else 'float' if rest.startswith('If') else '?'}>"


def compile_report(source: str, arch: str, tmp: Path) -> list[dict]:
    cmd = [NVCC, f"-arch={arch}", "--resource-usage", "-DDEEPCOMP_STANDALONE", "-c", str(kernel_dir() / source),
           "-o", str(tmp / f"{source}.{arch}.o")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    rows, cur = [], None
    for line in (res.stdout + res.stderr).splitlines():
        if m := _ENTRY.search(line):
            cur = {"source": source, "kernel": demangle(m.group(1)), "arch": m.group(2)}
            rows.append(cur)
        elif cur is not None and (m := _PROPS.search(line)):
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
        elif cur is not None and (m := _REGS.search(line)):
            cur["registers"] = int(m.group(1))
    assert "warning" not in res.stderr.lower(), res.stderr
    return rows


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH")
# seconds of ptxas per file and arch: the fast loop compiles for the oldest arch only
@pytest.mark.parametrize("arch", [a if a == ARCHS[0] else pytest.param(a, marks=pytest.mark.slow) for a in ARCHS])
@pytest.mark.parametrize("source", SOURCES)
def test_compiles_without_spills(source, arch, tmp_path):
    rows = compile_report(source, arch, tmp_path)
    assert rows, f"no kernels reported for {source}"
    for r in rows:
        assert r["arch"] == arch
        assert r["spill_stores"] == 0 and r["spill_loads"] == 0, r
        assert r["registers"] <= 128, r  # keeps >= 4 warps of 128 threads resident per SM partition
    names = {r["kernel"] for r in rows}
    assert all(n.endswith(("<float>", "<double>")) for n in names)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print("| kernel | arch | registers | stack B | spills (st/ld B) |\n|---|---|---|---|---|")
        for arch in ARCHS:
            for src in SOURCES:
                for r in sorted(compile_report(src, arch, Path(d)), key=lambda r: r["kernel"]):
                    print(f"| {r['kernel']} | {arch} | {r['registers']} | {r['stack']} | "
                          f"{r['spill_stores']}/{r['spill_loads']} |")
    sys.exit(0)
