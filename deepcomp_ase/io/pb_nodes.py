"""Which constants of a frozen graph hold model state, and the check that every one was read.

The graph reader records each constant it reads (``_Graph.read`` in :mod:`.pb`). A weight or
setting it did not read would make the evaluation wrong without a word (DeePMD-kit 2.2's
se_atten_v2 type-embedding bias was such a case), so an unread one stops the reading, naming it.
"""

from __future__ import annotations

import re

from ..errors import UnsupportedModelError

# A Const node holds model state (and must be read) when it lives in an attribute scope, when its
# name ends in a weight name, or when it sits directly in a network scope. TF's op-internal
# constants (shapes, axes, slice bounds, ``mul/y``, ...) sit one level deeper, under the op's
# own name (``filter_type_0/Reshape_1/shape``), or under ``gradients*``; they are not model state.
_ATTR_SCOPE = re.compile(r"^[a-z]+_attr(_\d+)?/")
_NET_SCOPE = re.compile(r"^(filter_type_|layer_\d|final_layer|share_|type_embed_net|attention_layer|"
                        r"dprc_|spin_|embedding_net)")
_WEIGHT_LEAF = re.compile(r"^(matrix|bias|idt|kernel|gamma|beta|weight|table|t_)")

# Model-state nodes known not to matter for an energy model's energies, forces and virials.
IRRELEVANT_NODES = {
    # a marker of what the graph is: "original_model" here, "compressed_model" is refused
    "model_type": "graph kind marker (compressed graphs are refused before)",
}


def is_model_state(name: str) -> bool:
    if name in ("model_type",) or _ATTR_SCOPE.match(name):
        return True
    parts = name.split("/")
    if parts[0].startswith("gradients"):
        return False
    if _WEIGHT_LEAF.match(parts[-1]):
        return True
    return len(parts) == 2 and bool(_NET_SCOPE.match(parts[0]))


def check_all_read(graph) -> None:
    """Every weight and setting the graph holds went into the tree, or is known to be irrelevant."""
    unused = sorted(name for name, node in graph.nodes.items()
                    if node.op == "Const" and name not in graph.read and name not in IRRELEVANT_NODES
                    and is_model_state(name))
    if unused:
        shown = ", ".join(f"'{n}'" for n in unused[:8]) + (f" and {len(unused) - 8} more" if len(unused) > 8 else "")
        raise UnsupportedModelError(
            f"{graph.path}: graph node{'s' if len(unused) > 1 else ''} {shown} hold{'' if len(unused) > 1 else 's'} "
            "model weights or settings that deepcomp does not use for this model, so its energies would be "
            "wrong; the model has a part deepcomp cannot evaluate. Evaluate it with DeePMD-kit instead"
        )
