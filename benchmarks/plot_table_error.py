"""Plot the table error |table - net| along the input axis, for two steps (docs/table_error.png).

Usage: python benchmarks/plot_table_error.py [--model cuau_se_e2_a] [--out docs/table_error.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODELS, REPO  # noqa: E402

from deepcomp_ase.compress.api import tabulate_model  # noqa: E402
from deepcomp_ase.io import read_model_tree  # noqa: E402
from deepcomp_ase.model.params import parse_model  # noqa: E402


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cuau_se_e2_a")
    p.add_argument("--out", default=str(REPO / "docs" / "table_error.png"))
    args = p.parse_args(argv)
    model = parse_model(read_model_tree(MODELS / f"{args.model}.dp"))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (step, ext) in zip(axes, ((0.01, 5), (0.005, 10))):
        tables = tabulate_model(model, model.min_nbor_dist, step, ext)
        name, table = sorted(tables.items())[0]
        key = tuple(int(k) for k in name.split(":")[1].split("-"))
        net = model.descriptor.embeddings[key]
        x = np.linspace(table.xmin, table.xmax * 0.999, 20000)
        v, d = table.value_and_derivative(x)
        ve, de = net.value_and_first_derivative(x)
        ax.semilogy(x, np.abs(v - ve).max(axis=1) + 1e-18, lw=0.6, label="value")
        ax.semilogy(x, np.abs(d - de).max(axis=1) + 1e-18, lw=0.6, label="derivative")
        ax.axvline(table.upper, color="k", ls=":", lw=0.8)
        ax.set_title(f"{args.model} {name}, -s {step} -e {ext}")
        ax.set_xlabel("table input (normalised radial entry)")
        ax.text(table.upper, 0.95, "  coarse table from here", fontsize=8, va="top",
                transform=ax.get_xaxis_transform())
    axes[0].set_ylabel("max over outputs |table - net|")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
