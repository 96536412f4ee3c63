"""Summarise the error rows tests/gpu/test_gpu_backend.py writes (one JSON object per line).

Usage: python benchmarks/gpu_test_errors.py FILE.jsonl -- prints the worst relative error of the
whole-model tests per precision (energy, forces, virial), or that there are none.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else None
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path and path.exists() else []
    if not rows:
        print("gpu_test_errors: no error rows (the GPU tests did not run)")
        return 0
    for prec in ("float64", "float32"):
        w = [r for r in rows if r.get("test") == "whole_model" and r.get("precision") == prec]
        if w:
            print(f"gpu_test_errors: whole model {prec}: worst relative error over {len(w)} configurations: "
                  + ", ".join(f"{k} {max(r[k] for r in w):.2e}" for k in ("energy", "forces", "virial")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
