"""Human-readable description of a model file (``deepcomp info``)."""

from __future__ import annotations

from pathlib import Path

from .fileformat import is_compressed_file, load_compressed
from .io import read_model_tree
from .model.params import parse_model


def describe(path) -> str:
    path = Path(path)
    compressed = is_compressed_file(path)
    if compressed:
        content = load_compressed(path)
        tree, tables, meta = content.tree, content.tables, content.meta
    else:
        tree, tables, meta = read_model_tree(path), {}, {}
    model = parse_model(tree, str(path))
    d = model.descriptor
    lines = [
        f"file:        {path}",
        f"kind:        {'deepcomp compressed model' if compressed else 'uncompressed DeePMD-kit model'}",
        f"descriptor:  {d.kind}{' (type_one_side)' if d.type_one_side else ''}",
        f"type_map:    {' '.join(model.type_map)}",
        f"rcut:        {d.rcut} A (smooth from {d.rcut_smth} A)",
        f"sel:         {list(d.sel)}",
        f"embedding:   {list(d.neuron)} {d.activation}, axis_neuron {d.axis_neuron}",
        f"fitting:     {[n.n_out for n in model.fitting.nets[0].layers[:-1]] if model.fitting.nets[0] else '-'}",
        f"min_nbor_dist: {model.min_nbor_dist if model.min_nbor_dist is not None else 'not stored'}",
    ]
    if compressed:
        opts = meta.get("options", {})
        lines += [
            f"compressed by: deepcomp {meta.get('version')} on {meta.get('created')} from {meta.get('source_file')} "
            f"(sha256 {str(meta.get('source_sha256'))[:16]}...)",
            f"options:     step {opts.get('step')}, extrapolate {opts.get('extrapolate')}, "
            f"check frequency {opts.get('frequency')}, min_nbor_dist {opts.get('min_nbor_dist')} "
            f"({opts.get('min_nbor_dist_origin')})",
            "tables:      name           range [lower, upper) -> xmax   steps          intervals x outputs",
        ]
        total = 0
        for name, t in sorted(tables.items()):
            total += t.coeffs.nbytes
            lines.append(f"             {name:14s} [{t.lower:g}, {t.upper:g}) -> {t.xmax:g}   "
                         f"{t.stride0:g} / {t.stride1:g}   {t.nspline} x {t.ng}")
        lines.append(f"table memory: {total / 2**20:.2f} MiB")
    return "\n".join(lines)
