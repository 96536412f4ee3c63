"""Descriptor evaluators: forward (descriptor of a block of atoms) and analytic backward.

Each evaluator is built from its parameters and an embedding provider (exact nets or tables)
and exposes ``block_atoms``, ``forward(block) -> (descriptor, context)`` and
``backward(block, context, dE/dD) -> dE/dx_ij`` per pair.
"""

from __future__ import annotations


def make_evaluator(params, embed):
    """Evaluator of one (non-hybrid) descriptor."""
    from .dpa1 import Dpa1
    from .se_atten_v2 import SeAttenV2
    from .se_e2_a import SeE2A
    from .se_e2_r import SeE2R
    from .se_e3 import SeE3

    cls = {"se_e2_a": SeE2A, "se_e2_r": SeE2R, "se_e3": SeE3, "se_atten_v2": SeAttenV2, "dpa1": Dpa1}[params.kind]
    return cls(params, embed)
