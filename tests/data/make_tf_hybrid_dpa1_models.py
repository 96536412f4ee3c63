"""Regenerate the small TensorFlow hybrid graphs with a DPA-1 part, tests/data/models/tf_graphs/tf*_hyb_atten*.pb.

Run with the Python of a DeePMD-kit environment (not the test environment):

    cd tests/data && /path/to/deepmd-3.2.0/bin/python make_tf_hybrid_dpa1_models.py 32 [name ...]
    cd tests/data && /path/to/deepmd-2.2.11/bin/python make_tf_hybrid_dpa1_models.py 22 [name ...]

Each hybrid holds an se_atten part and an se_e2_a part with different cutoffs and sel (the
se_atten part's cutoff smaller than the hybrid's in one model, larger in the other). Training,
freezing and the held-out configurations are those of make_tf_dpa1_models.py; the ``near_cut``
cluster puts a neighbour 0.004 A inside the se_atten part's cutoff.
"""

from __future__ import annotations

import sys

from make_tf_dpa1_models import TEBD, _input, write_refs
from make_tf_models import main

_ATTEN = {"type": "se_atten", "sel": 40, "rcut_smth": 0.5, "neuron": [4, 8], "axis_neuron": 4, "attn": 8,
          "activation_function": "tanh", "type_one_side": False, "set_davg_zero": False, "seed": 11}
_SE_A = {"type": "se_e2_a", "sel": [30, 26], "rcut_smth": 0.6, "neuron": [4, 8], "axis_neuron": 2,
         "activation_function": "tanh", "seed": 7}


def _hybrid(atten: dict, se_a: dict) -> dict:
    return {"type": "hybrid", "list": [dict(_ATTEN, **atten), dict(_SE_A, **se_a)]}


# the cutoff of each model's se_atten part: the near_cut cluster probes it
ATTEN_RCUT = {"tf32_cuau_hyb_atten_small": 3.5, "tf32_cuau_hyb_atten_v2_large": 4.5,
              "tf22_cuau_hyb_atten_small": 3.5}

MODELS = {
    "32": {
        # se_atten (two attention layers) inside a wider one-side se_e2_a
        "tf32_cuau_hyb_atten_small": _input(_hybrid({"rcut": 3.5, "attn_layer": 2, "sel": 30},
                                                    {"rcut": 4.5, "sel": [20, 16], "type_one_side": True}),
                                            dict(TEBD, use_tebd_bias=True)),
        # se_atten_v2 (strip, one attention layer) wider than its se_e2_a partner
        "tf32_cuau_hyb_atten_v2_large": _input(_hybrid({"type": "se_atten_v2", "rcut": 4.5, "attn_layer": 1},
                                                       {"rcut": 3.8, "sel": [24, 20]}), TEBD),
    },
    "22": {
        "tf22_cuau_hyb_atten_small": _input(_hybrid({"rcut": 3.5, "attn_layer": 1}, {"rcut": 4.5}), TEBD),
    },
}


def refs(name: str, pb) -> None:
    """DeePMD-kit's own energies/forces/virials of ``pb`` on the held-out configurations."""
    write_refs(name, pb, 4.5, ATTEN_RCUT[name])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:], MODELS, refs)
