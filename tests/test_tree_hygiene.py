"""The committed test data carries no paths of the machines that made it (DeePMD-kit records the training
input, with absolute data paths, in every graph it freezes; tests/data/scrub_graph_paths.py removes them)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(rb'"/(?:work|tmp|root|home|Users)/[^"]*"')


def _tracked_data_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "tests/data"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / line for line in out.splitlines() if line]


def test_no_machine_paths_in_test_models():
    found = []
    for path in _tracked_data_files():
        if path.suffix not in {".pb", ".pbtxt", ".json", ".yaml", ".dp", ".pth", ".pt"} or not path.is_file():
            continue
        hit = MACHINE_PATH.search(path.read_bytes())
        if hit:
            found.append(f"{path.relative_to(REPO)}: {hit.group().decode(errors='replace')}")
    assert not found, "machine paths in committed files (run tests/data/scrub_graph_paths.py):\n" + "\n".join(found)
