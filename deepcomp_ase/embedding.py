"""Embedding-net evaluators: exact (the uncompressed reference) and tabulated (compressed).

Both map (net key, inputs x) to G(x) and dG/dx of shape (n, ng). The tabulated one falls back
to the exact net outside the tables instead of clamping, and counts such inputs.
"""

from __future__ import annotations

import numpy as np

from .compress.tables import ABOVE, BELOW, Table
from .overflow import OverflowTally


class ExactEmbedding:
    """Evaluate the embedding nets themselves."""

    compressed = False

    def __init__(self, nets: dict):
        self.nets = nets

    def __call__(self, key: tuple, x: np.ndarray):
        return self.nets[key].value_and_first_derivative(x)


class TabulatedEmbedding:
    """Evaluate quintic tables; exact nets for inputs outside [lower, extrapolate*upper)."""

    compressed = True

    def __init__(self, tables: dict[tuple, Table], nets: dict, tally: OverflowTally | None = None):
        self.tables = tables
        self.nets = nets
        self.tally = tally if tally is not None else OverflowTally()

    def __call__(self, key: tuple, x: np.ndarray):
        table = self.tables[key]
        idx, t, region = table.locate(x)
        g, dg = table.evaluate(idx, t, x)
        self.tally.add(x, region, key, table.lower, table.upper)
        outside = (region == ABOVE) | (region == BELOW)
        if outside.any():
            ge, dge = self.nets[key].value_and_first_derivative(x[outside])
            g[outside] = ge
            dg[outside] = dge
        return g, dg
