"""``min_nbor_dist`` from the training systems named in a DeePMD-kit input.json (``-t``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import DeepCompError

log = logging.getLogger(__name__)


def _systems(spec, base: Path, script: Path) -> list[Path]:
    if isinstance(spec, (str, Path)):
        root = (base / spec).resolve()
        found = sorted(p.parent for p in root.rglob("type.raw"))
        if not found:
            raise DeepCompError(f"{script}: training_data.systems {spec!r} contains no DeePMD-kit system (type.raw)")
        return found
    return [(base / s).resolve() for s in spec]


def _frames(system: Path):
    types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    periodic = not (system / "nopbc").exists()
    sets = sorted(system.glob("set.*"))
    if not sets:
        raise DeepCompError(f"{system}: no set.* folders with coord.npy")
    for s in sets:
        coord = np.load(s / "coord.npy").reshape(-1, len(types), 3)
        box = np.load(s / "box.npy").reshape(-1, 3, 3) if periodic else None
        for k in range(len(coord)):
            yield coord[k], (box[k] if periodic else None)


def min_nbor_dist_from_training_script(script: str | Path, search_cutoff: float = 10.0) -> float:
    """Smallest distance between any two atoms (periodic images included) of the training data."""
    from ase.neighborlist import primitive_neighbor_list

    script = Path(script)
    try:
        config = json.loads(script.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DeepCompError(f"{script}: cannot read the training script ({exc})") from exc
    training = config.get("training", {})
    data = training.get("training_data", training)
    spec = data.get("systems")
    if spec is None:
        raise DeepCompError(f"{script}: field 'training.training_data.systems' is missing; cannot compute min_nbor_dist")
    best = search_cutoff
    nframes = 0
    for system in _systems(spec, script.parent, script):
        if not (system / "type.raw").exists():
            raise DeepCompError(f"{script}: training system {system} not found (paths are relative to the script)")
        for coord, box in _frames(system):
            pbc = np.array([box is not None] * 3)
            cell = box if box is not None else np.diag(coord.max(0) - coord.min(0) + 2 * search_cutoff)
            pos = coord if box is not None else coord - coord.min(0) + search_cutoff
            d = primitive_neighbor_list("d", pbc, cell, pos, search_cutoff, self_interaction=False)
            if len(d):
                best = min(best, float(d.min()))
            nframes += 1
    if best < 1e-6 * search_cutoff:
        raise DeepCompError(f"{script}: some atoms of the training data overlap (distance {best:.3g} A)")
    log.info("min_nbor_dist %.6f A from %d training frames", best, nframes)
    return best
