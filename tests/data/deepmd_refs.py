"""DeePMD-kit's outputs for one configuration, keyed as the reference files store them.

Imported by the make_*.py scripts here, which run in a DeePMD-kit environment.
"""

from __future__ import annotations

import numpy as np


def eval_outputs(dp, coord, box, atype, prefix: str, **kwargs) -> dict:
    """``DeepPot.eval`` of one frame (``box`` None: no periodicity) as ``{prefix}energy``, ``force``, ...;
    ``kwargs`` (fparam, aparam) go to ``eval``."""
    box = None if box is None else np.asarray(box).reshape(1, 9)
    e, f, v, ae, av = dp.eval(np.asarray(coord).reshape(1, -1), box, atype, atomic=True, **kwargs)
    return {
        f"{prefix}energy": np.float64(e.ravel()[0]),
        f"{prefix}force": f.reshape(-1, 3),
        f"{prefix}virial": v.reshape(3, 3),
        f"{prefix}atom_energy": ae.ravel(),
        f"{prefix}atom_virial": av.reshape(-1, 9),
    }
