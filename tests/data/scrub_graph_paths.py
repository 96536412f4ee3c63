"""Remove the paths of the machine that trained a test graph from its recorded training script.

DeePMD-kit stores the training input in the graph (``train_attr/training_script``), with the data
systems as absolute paths of the machine that ran ``dp train`` (a temporary or work directory).
The weights are untouched; each absolute path becomes the part from its ``tests/data/`` (or last
``data/``) component on, as the make scripts' relative layout has it, or its last component.

    /path/to/deepmd-3.2.0/bin/python scrub_graph_paths.py models/*.pb models/tf_graphs/*.pb

Needs the ``tensorflow`` protobuf classes (any DeePMD-kit TF environment); rewrites only graphs
that hold such a path and says which.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ABSOLUTE = re.compile(r'"(/(?:work|tmp|root|home|Users)/[^"]*)"')


def relative(path: str) -> str:
    for marker in ("/tests/data/", "/data/"):
        k = path.rfind(marker)
        if k >= 0:
            return path[k + 1:]
    return path.rstrip("/").rsplit("/", 1)[-1]


def scrub(path: Path) -> bool:
    from tensorflow.core.framework import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(path.read_bytes())
    changed = False
    for node in graph.node:
        if "value" not in node.attr:
            continue
        values = node.attr["value"].tensor.string_val
        for k, raw in enumerate(values):
            text = raw.decode("utf-8", "replace")
            new = ABSOLUTE.sub(lambda m: '"' + relative(m.group(1)) + '"', text)
            if new != text:
                values[k] = new.encode()
                changed = True
    if changed:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(graph.SerializeToString())
        tmp.replace(path)
    return changed


if __name__ == "__main__":
    for name in sys.argv[1:]:
        if scrub(Path(name)):
            print("scrubbed", name)
