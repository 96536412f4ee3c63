"""What a device call carries: the working tree (tracked and untracked-not-ignored files) plus
the carried paths, against a limit (the device tool takes 64 MiB; the check keeps 56).

Usage: python benchmarks/travel_size.py [--limit MIB] [CARRIED ...]

In a git checkout the tree is ``git ls-files -co --exclude-standard``; without git (the copy on
the device machine) every file under the repository except .git, .venv and build outputs.
Exits 1 when the total exceeds the limit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "venv", "build", "_skbuild", "__pycache__", ".pytest_cache", ".whl"}


def tree_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout
        return [REPO / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for root, dirs, names in os.walk(REPO):
            dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            files += [Path(root, n) for n in names]
        return files


def size(paths) -> int:
    total = 0
    for p in paths:
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=float, default=56.0, help="MiB")
    p.add_argument("carried", nargs="*", help="carried (ignored) paths, e.g. .whl")
    args = p.parse_args(argv)
    tree = size(tree_files())
    carried = {c: size([REPO / c]) for c in args.carried}
    total = tree + sum(carried.values())
    parts = ", ".join(f"{c} {v / 2**20:.1f}" for c, v in carried.items())
    ok = total <= args.limit * 2**20
    print(f"travel size: {total / 2**20:.1f} MiB (tree {tree / 2**20:.1f}{', ' + parts if parts else ''}) -- "
          f"{'within' if ok else 'OVER'} the {args.limit:g} MiB budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
