"""Counting inputs that leave the fine table, and the periodic check of those counts.

DeePMD-kit stores a check frequency (``-f``) but never reads it; here every evaluation counts
how many embedding inputs fell in the coarse (extrapolation) table and how many fell beyond it
(those are evaluated exactly through the stored net, never clamped), and the caller checks the
counts every N steps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .errors import TableOverflowError

log = logging.getLogger(__name__)


@dataclass
class OverflowTally:
    """Accumulated since the last check."""

    n_inputs: int = 0
    n_coarse: int = 0  # upper <= x < extrapolate*upper: second, 10x coarser table
    n_beyond: int = 0  # outside [lower, extrapolate*upper): evaluated exactly with the net
    n_sel_dropped: int = 0  # neighbours inside rcut that did not fit in sel
    worst_excess: float = -np.inf  # how far the worst input lies beyond 'upper' (in table units)
    worst_x: float = float("nan")
    worst_key: tuple = field(default_factory=tuple)
    worst_upper: float = float("nan")
    #: what happens to inputs beyond the tables (kept by reset)
    beyond: str = "evaluated exactly with the embedding net"

    def add(self, x: np.ndarray, region: np.ndarray, key: tuple, lower: float, upper: float) -> None:
        from .compress.tables import ABOVE, BELOW, COARSE

        self.n_inputs += int(x.size)
        out = region != 0
        if not out.any():
            return
        self.n_coarse += int(np.count_nonzero(region == COARSE))
        self.n_beyond += int(np.count_nonzero((region == ABOVE) | (region == BELOW)))
        excess = np.where(x >= upper, x - upper, lower - x)
        excess = np.where(out, excess, -np.inf)
        k = int(np.argmax(excess))
        if excess[k] > self.worst_excess:
            self.worst_excess = float(excess[k])
            self.worst_x = float(x[k])
            self.worst_key = tuple(key)
            self.worst_upper = float(upper)

    def merge(self, other: "OverflowTally") -> None:
        """Add another tally into this one (keeps the worse of the two worst inputs)."""
        self.n_inputs += other.n_inputs
        self.n_coarse += other.n_coarse
        self.n_beyond += other.n_beyond
        self.n_sel_dropped += other.n_sel_dropped
        if other.worst_excess > self.worst_excess:
            self.worst_excess, self.worst_x = other.worst_excess, other.worst_x
            self.worst_key, self.worst_upper = other.worst_key, other.worst_upper

    def counts(self) -> dict:
        return {"inputs": self.n_inputs, "coarse_table": self.n_coarse, "beyond_table": self.n_beyond,
                "sel_dropped": self.n_sel_dropped, "worst_input": self.worst_x,
                "worst_type_pair": self.worst_key}

    def reset(self) -> None:
        self.__init__(beyond=self.beyond)

    @property
    def any(self) -> bool:
        return bool(self.n_coarse or self.n_beyond or self.n_sel_dropped)

    def as_vector(self) -> np.ndarray:
        """Counts as float64 for reductions across MPI ranks (sum)."""
        return np.array([self.n_inputs, self.n_coarse, self.n_beyond, self.n_sel_dropped], dtype=np.float64)

    def summary(self, type_map=None) -> str:
        def name(t):
            return type_map[t] if type_map is not None and 0 <= t < len(type_map) else str(t)

        pair = "-".join(name(t) for t in self.worst_key) if self.worst_key else "n/a"
        parts = [
            f"{self.n_coarse} of {self.n_inputs} embedding inputs in the extrapolation table",
            f"{self.n_beyond} beyond it ({self.beyond})",
        ]
        if self.n_sel_dropped:
            parts.append(f"{self.n_sel_dropped} neighbours beyond sel dropped")
        if np.isfinite(self.worst_excess):
            parts.append(
                f"worst input {self.worst_x:.6g} (table upper bound {self.worst_upper:.6g}) "
                f"for type pair {pair}"
            )
        return "; ".join(parts)


def check_and_report(tally: OverflowTally, policy: str, type_map=None, step=None, model=None) -> bool:
    """Apply the overflow policy ('warn', 'error', 'ignore') and reset; True if anything overflowed.

    ``model`` (a model file) is named in the message: with several models (a model deviation)
    it says whose tables overflowed.
    """
    flagged = tally.any
    if flagged and policy != "ignore":
        where = f" (step {step})" if step is not None else ""
        message = "deepcomp table overflow" + _of_model(model) + where + ": " + tally.summary(type_map)
        if policy == "error":
            tally.reset()
            raise TableOverflowError(message)
        log.warning(message)
    tally.reset()
    return flagged


def run_totals(potential, reduce=None) -> OverflowTally:
    """All counts of ``potential`` since it was loaded, checked or not, without changing its state.

    The periodic check only sees the counts of its own window, and with no check frequency
    nothing looks at them; this is what an end-of-run summary reports. ``reduce`` combines the
    counts not yet checked across MPI ranks (collective: every rank must call this).
    """
    import copy

    flush = getattr(potential.backend, "flush_overflow", None)
    if flush is not None:  # device-side counters join the host tally
        flush(potential)
    pending = copy.deepcopy(potential.tally)
    if reduce is not None:
        reduce(pending)
    totals = OverflowTally(beyond=potential.total.beyond)
    totals.merge(potential.total)
    totals.merge(pending)
    return totals


def summary_line(totals: OverflowTally, type_map=None, steps=None, model=None) -> str | None:
    """One line for the end of a run, or None when every input stayed in the fine tables.

    ``model`` (a model file) is named in the line, as in :func:`check_and_report`.
    """
    if not totals.any:
        return None
    when = f"over {steps} steps" if steps is not None else "since the model was loaded"
    return f"deepcomp overflow summary{_of_model(model)} ({when}): {totals.summary(type_map)}"


def _of_model(model) -> str:
    return f" of model {model}" if model is not None else ""
