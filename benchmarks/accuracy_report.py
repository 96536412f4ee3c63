"""Agreement of deepcomp with DeePMD-kit 3.2 on every refsuite model: prints a markdown table.

Usage: python benchmarks/accuracy_report.py [model ...]
Columns: max over the configurations of each group of |dE|/N (eV), max |dF| (eV/A), max |dV|/N (eV).
"""

from __future__ import annotations

import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import git_revision, machine  # noqa: E402
from conftest import MODEL_CASES, Reference  # noqa: E402

from deepcomp_ase.compress.api import compress_model  # noqa: E402
from deepcomp_ase.potential import DeepPotential  # noqa: E402

DEFAULT = list(MODEL_CASES)


def run(pot, ref, conf):
    coord, atype, box = ref.structure(conf)
    return pot.compute_atoms(coord, atype, box, [box is not None] * 3)


def dev(res, out, n):
    return (abs(res.energy - float(out["energy"])) / n, np.abs(res.forces - out["force"]).max(),
            np.abs(res.virial - out["virial"]).max() / n)


def main(names):
    print(f"# {datetime.date.today()} | {machine()} | git {git_revision()}")
    print("| model | ours | vs | group | dE/N | dF | dV/N |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            case = MODEL_CASES[name]
            ref = Reference(name)
            exact = DeepPotential.from_file(case.source)
            ours = {"uncompressed": exact}
            for variant, kw in (("compress", {}), ("compress_fine", dict(step=0.005, extrapolate=10))):
                out = Path(tmp) / f"{name}-{variant}.dcz"
                compress_model(case.source, out, training_script=case.training_script, **kw)
                ours[variant] = DeepPotential.from_file(out)
            for label, pot in ours.items():
                against = [case.reference] if label == "uncompressed" else [label, "uncompressed"]
                for vs in against:
                    for group in ("in_dist", "stretched", "overflow"):
                        rows = []
                        for conf in ref.confs(group):
                            if vs not in ("uncompressed",) and not ref.has(conf, vs):
                                continue
                            res = run(pot, ref, conf)
                            if vs == "uncompressed":
                                other = run(exact, ref, conf)
                                out = {"energy": other.energy, "force": other.forces, "virial": other.virial}
                            else:
                                out = ref.output(conf, vs)
                            rows.append(dev(res, out, len(res.atom_energy)))
                        if not rows:
                            continue
                        worst = np.max(rows, axis=0)
                        print(f"| {name} | {label} | {vs} | {group} | {worst[0]:.1e} | {worst[1]:.1e} | {worst[2]:.1e} |")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
