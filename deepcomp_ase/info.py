"""Human-readable description of a model file (``deepcomp info``)."""

from __future__ import annotations

from pathlib import Path

from .model.parts import descriptor_parts
from .fileformat import is_compressed_file, load_compressed
from .io import read_model_tree
from .model.params import parse_model
from .compress.dp_tables import BEYOND_EXTRAPOLATED, dp_tables, dp_tables_meta, tables_origin


def _describe_part(prefix: str, d) -> list[str]:
    flags = []
    if d.type_one_side:
        flags.append("type_one_side")
    if d.exclude_types:
        flags.append(f"exclude_types {sorted(d.exclude_types)}")
    if hasattr(d, "summary"):  # DPA-1 with attention layers describes its own settings
        flags.append(d.summary())
    elif d.mixed_types:  # se_atten_v2
        flags.append(f"tebd_dim {d.tebd_dim}, strip mode, attn_layer 0"
                     + (", TensorFlow type-term switch" if d.tf_switch else ""))
    lines = [
        f"{prefix}:  {d.kind}{' (' + '; '.join(flags) + ')' if flags else ''}",
        f"  rcut:      {d.rcut} A (smooth from {d.rcut_smth} A)",
        f"  sel:       {list(d.sel)}",
        f"  embedding: {list(d.neuron)} {d.activation}"
        + (f", axis_neuron {d.axis_neuron}" if hasattr(d, "axis_neuron") else ""),
        f"  output:    {d.dim_out} per atom",
    ]
    return lines


def _folded_type_embedding(tree: dict, model) -> list[str]:
    """A TF se_e2_a model with a model-level type embedding is read folded (io/pb_tebd.py): say so."""
    script = tree.get("model_def_script")
    te = script.get("type_embedding") if isinstance(script, dict) else None
    d = model.descriptor
    if not isinstance(te, dict) or getattr(d, "kind", None) != "se_e2_a":
        return []
    per = "per neighbour type" if d.type_one_side else "per type pair"
    return [f"  type embedding: {te.get('neuron', [8])} {te.get('activation_function', 'tanh')}, folded into "
            f"{len(d.embeddings)} scalar-input embedding nets ({per}) and one fitting net per type"]


def _kind(compressed: bool, dp_origin: str | None) -> str:
    if compressed:
        return "deepcomp compressed model"
    if dp_origin:
        return "DeePMD-kit model compressed by dp compress"
    return "uncompressed DeePMD-kit model"


def _table_lines(tables: dict) -> list[str]:
    lines = ["tables:      name                 fine range -> extrapolated range      steps        intervals x outputs"]
    total = 0
    for name, t in sorted(tables.items()):
        total += t.coeffs.nbytes + t.sub_coeffs.nbytes
        split = f", {len(t.split_intervals)} split at kinks" if len(t.split_intervals) else ""
        lines.append(f"             {name:20s} [{t.lower:g}, {t.upper:g}) -> [{t.xmin:g}, {t.xmax:g})   "
                     f"{t.stride0:g} / {t.stride1:g}   {t.nspline} x {t.ng}{split}")
    lines.append(f"table memory: {total / 2**20:.2f} MiB")
    return lines


def describe(path, head: str | None = None) -> str:
    path = Path(path)
    compressed = is_compressed_file(path)
    if compressed:
        content = load_compressed(path)
        tree, tables, meta = content.tree, content.tables, content.meta
    else:
        tree, tables, meta = read_model_tree(path, head=head), {}, {}
    dp_origin = None if compressed else tables_origin(tree)
    if dp_origin:  # compressed by DeePMD-kit: its own tables
        tables = dp_tables(tree, str(path))
    model = parse_model(tree, str(path))
    fit = model.fitting
    net = fit.shared or next(n for n in fit.nets if n is not None)
    lines = [
        f"file:        {path}",
        f"kind:        {_kind(compressed, dp_origin)}",
        f"type_map:    {' '.join(model.type_map)}",
        f"rcut:        {model.rcut} A",
    ]
    for prefix, part in descriptor_parts(model):
        lines += _describe_part(prefix, part)
    lines += _folded_type_embedding(tree, model)
    lines += [
        f"fitting:     {[layer.n_out for layer in net.layers[:-1]]} {net.layers[0].activation}"
        + (" (shared by all types)" if fit.shared is not None else " (one net per type)"),
        f"min_nbor_dist: {model.min_nbor_dist if model.min_nbor_dist is not None else 'not stored'}",
    ]
    if fit.numb_fparam or fit.numb_aparam:  # what a run must give (docs/ase.md, docs/lammps.md)
        default = "" if fit.default_fparam is None else f" (default_fparam {fit.default_fparam.tolist()})"
        mask = " (use_aparam_as_mask: not read by the fitting net)" if fit.use_aparam_as_mask else ""
        lines.append(f"parameters:  numb_fparam {fit.numb_fparam}{default}, numb_aparam {fit.numb_aparam}{mask}")
    if dp_origin:
        lines += [
            f"tables from: {dp_origin}, used as they are",
            f"beyond them: {dp_tables_meta(tree, path, quiet=True)['beyond_tables']}",
        ] + _table_lines(tables)
    if compressed:
        opts = meta.get("options", {})
        if meta.get("tables_from"):
            lines += [f"tables from: {meta['tables_from']}, used as they are (converted by deepcomp compress)",
                      f"beyond them: {meta.get('beyond_tables', BEYOND_EXTRAPOLATED)}"]
        lines += [
            f"compressed by: deepcomp {meta.get('version')} on {meta.get('created')} from {meta.get('source_file')} "
            f"(sha256 {str(meta.get('source_sha256'))[:16]}...)",
            f"options:     step {opts.get('step')}, extrapolate {opts.get('extrapolate')}, "
            f"check frequency {opts.get('frequency')}, min_nbor_dist {opts.get('min_nbor_dist')} "
            f"({opts.get('min_nbor_dist_origin')})",
        ] + _table_lines(tables)
        extended = opts.get("extended_ranges") or {}
        if extended:
            lines.append(f"extended:    step {opts.get('step')} does not divide every DeePMD-kit table range; these "
                         "bounds were moved outward to whole intervals (DeePMD-kit's value -> value used):")
            for name, moved in sorted(extended.items()):
                text = ", ".join(f"{bound} {old:g} -> {new:.10g}" for bound, (old, new) in sorted(moved.items()))
                lines.append(f"             {name:20s} {text}")
    return "\n".join(lines)
