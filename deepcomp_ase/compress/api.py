"""``compress_model``: a DeePMD-kit model file in, a deepcomp compressed file out."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import DeepCompError
from ..fileformat import CompressedFile, save_compressed
from ..io import read_model_tree
from ..model.params import ModelParams, parse_model
from ..model.parts import descriptor_parts, embedding_tables_for, table_name  # noqa: F401 (re-exported)
from .dp_tables import BEYOND_EXTRAPOLATED, dp_tables, has_dp_tables, materialized, nets_stored, tables_origin, without_tables
from .min_dist import min_nbor_dist_from_training_script
from .tables import Table
from .tabulate import angular_range, build_table, check_step, radial_range_per_type, table_bytes, table_grid

log = logging.getLogger(__name__)

#: se_e3 tables use 10x the step (DeePMD-kit's convention: its inputs span a wider range)
SE_E3_STEP_FACTOR = 10

#: default refusal threshold of the table coefficients, MiB (--max-table-size lifts it)
MAX_TABLE_MIB = 1024


def _table_specs(d, min_nbor_dist: float):
    """{net key: (lower, upper, low_coarse)} for one descriptor."""
    if d.three_body:
        lo, up = angular_range(d.dstd, min_nbor_dist, d.rcut_smth, d.rcut)
        return {key: (lo, up, True) for key in d.embeddings}
    lower, upper = radial_range_per_type(d.davg, d.dstd, min_nbor_dist, d.rcut_smth, d.rcut)
    if d.mixed_types and list(d.embeddings) == [()]:  # one net for every type pair (strip mode)
        return {(): (float(lower.min()), float(upper.max()), False)}
    specs = {}
    for key in d.embeddings:
        if d.type_one_side:
            (tj,) = key
            centres = [ti for ti in range(d.ntypes) if not d.excluded(ti, tj)] or list(range(d.ntypes))
            specs[key] = (float(np.min(lower[centres])), float(np.max(upper[centres])), False)
        else:
            ti, _ = key
            specs[key] = (float(lower[ti]), float(upper[ti]), False)
    return specs


def _table_jobs(model: ModelParams, min_nbor_dist: float, step: float):
    """(name, net, lower, upper, fine step, low_coarse) of every table, in file order."""
    jobs = []
    for prefix, d in descriptor_parts(model):
        factor = SE_E3_STEP_FACTOR if d.three_body else 1
        for key, (lo, up, low_coarse) in sorted(_table_specs(d, min_nbor_dist).items()):
            jobs.append((table_name(prefix, key), d.embeddings[key], lo, up, step * factor, low_coarse))
    return jobs


def estimate_table_bytes(model: ModelParams, min_nbor_dist: float, step: float, extrapolate: float) -> int:
    """Size of all table coefficients for these options, computed from the grids alone."""
    return sum(table_bytes(table_grid(lo, up, s0, 10 * s0, extrapolate, low), net.n_out)
               for _, net, lo, up, s0, low in _table_jobs(model, min_nbor_dist, step))


def tabulate_model(model: ModelParams, min_nbor_dist: float, step: float, extrapolate: float,
                   progress=None) -> dict[str, Table]:
    """Tables for every embedding net of every descriptor part."""
    jobs = _table_jobs(model, min_nbor_dist, step)
    tables = {}
    for n, (name, net, lo, up, s0, low_coarse) in enumerate(jobs):
        tables[name] = build_table(net, lo, up, s0, 10 * s0, extrapolate, low_coarse)
        if progress:
            progress(n + 1, len(jobs), name, tables[name])
    return tables


def extended_ranges(model: ModelParams, min_nbor_dist: float, step: float, extrapolate: float,
                    tables: dict[str, Table]) -> dict[str, dict]:
    """{table: {bound: [DeePMD-kit's value, value used]}} for bounds moved to whole intervals."""
    out = {}
    for name, _, lo, up, _, low_coarse in _table_jobs(model, min_nbor_dist, step):
        t = tables[name]
        requested = {"upper": up, "xmax": extrapolate * up}
        if low_coarse:
            requested["xmin"] = extrapolate * lo
        moved = {k: [float(v), float(getattr(t, k))] for k, v in requested.items() if getattr(t, k) != v}
        if moved:
            out[name] = moved
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _meta(source: Path, options: dict, **extra) -> dict:
    """The root attributes of a .dcz: provenance and options."""
    return {
        "software": "deepcomp",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_file": str(source.name),
        "source_sha256": _sha256(source),
        "options": options,
        **extra,
    }


def _check_table_size(source, model, mnd, step, extrapolate, max_table_mib) -> int:
    """Refuse options whose tables would not fit, before building any (``-e``/``-s`` extremes)."""
    nbytes = estimate_table_bytes(model, mnd, step, extrapolate)
    mib = nbytes / 2**20
    if max_table_mib is not None and max_table_mib > 0 and mib > max_table_mib:
        raise DeepCompError(
            f"{source}: the tables for step {step:g} and extrapolate {extrapolate:g} would take {mib:,.0f} MiB "
            f"(building them needs several times that), above the limit of {max_table_mib:,.0f} MiB; "
            "choose a larger -s or a smaller -e, or raise the limit with --max-table-size MIB "
            "(0: no limit)"
        )
    return nbytes


def compress_model(source, output, *, step: float = 0.01, extrapolate: float = 5, frequency: int = -1,
                   training_script=None, max_table_mib: float | None = MAX_TABLE_MIB,
                   head: str | None = None) -> CompressedFile:
    """Compress the DeePMD-kit model ``source`` into ``output`` (written atomically).

    ``max_table_mib``: refuse (before building anything) when the table coefficients would
    exceed this many MiB; None or <= 0: no limit. ``head`` picks the model of a multi-task
    PyTorch checkpoint (as ``dp --pt freeze --head``).
    """
    from ..fileformat import check_output_path, is_compressed_file

    source = Path(source)
    check_step(step, extrapolate)
    check_output_path(output, inputs=[source] + ([training_script] if training_script else []))
    if training_script is not None and not Path(training_script).is_file():
        what = "is not a file" if Path(training_script).exists() else "not found"
        raise DeepCompError(f"{training_script}: training script (-t) {what}")
    if is_compressed_file(source):
        raise DeepCompError(f"{source}: is already a deepcomp compressed model; compress the original model")
    tree = read_model_tree(source, head=head)
    if has_dp_tables(tree):
        if not nets_stored(tree):
            return convert_dp_compressed(source, output, tree, step=step, extrapolate=extrapolate, frequency=frequency)
        log.warning("%s was compressed by dp compress but still holds its embedding nets: deepcomp builds its own "
                    "tables from them (DeePMD-kit's tables in the file are not used)", source)
        tree = without_tables(tree)
    model = parse_model(tree, str(source))
    mnd = model.min_nbor_dist
    origin = "model file"
    if mnd is None:
        if training_script is None:
            raise DeepCompError(
                f"{source}: the model stores no min_nbor_dist (the smallest interatomic distance of the training "
                "data, which sets the table range); pass the training input with -t input.json"
            )
        mnd = min_nbor_dist_from_training_script(training_script)
        origin = f"training script {training_script}"
    elif training_script is not None:
        # DeePMD-kit too prefers the value stored at freeze time
        log.info("the model stores min_nbor_dist; the training script %s is not needed", training_script)
    log.info("compressing %s: %s, type_map %s, min_nbor_dist %.6f A (from %s)", source, model.descriptor.kind,
             list(model.type_map), mnd, origin)
    nbytes = _check_table_size(source, model, mnd, step, extrapolate, max_table_mib)
    log.info("tables: %.1f MiB of coefficients", nbytes / 2**20)

    def progress(n, total, name, table):
        extra = f", {len(table.split_intervals)} intervals split at relu kinks" if len(table.split_intervals) else ""
        log.info("table %d/%d %s: fine [%g, %g) step %g, extrapolated to [%g, %g) step %g%s", n, total, name,
                 table.lower, table.upper, table.stride0, table.xmin, table.xmax, table.stride1, extra)

    tables = tabulate_model(model, mnd, step, extrapolate, progress)
    extended = extended_ranges(model, mnd, step, extrapolate, tables)
    if extended:
        log.info("step %g does not divide every table range: %d table(s) extended to whole intervals "
                 "(deepcomp info lists them)", step, len(extended))
    options = {
        "step": step, "extrapolate": extrapolate, "frequency": frequency,
        "min_nbor_dist": mnd, "min_nbor_dist_origin": origin, "range_rule": "radial (TensorFlow backend)",
    }
    if extended:
        options["extended_ranges"] = extended
    content = CompressedFile(tree=tree, tables=tables, meta=_meta(source, options))
    save_compressed(output, content)
    log.info("wrote %s (%d tables, %.1f MB of coefficients)", output, len(tables),
             sum(t.coeffs.nbytes + t.sub_coeffs.nbytes for t in tables.values()) / 1e6)
    return content


#: compress's defaults: other values ask for tables a net-less file cannot give
DEFAULT_STEP, DEFAULT_EXTRAPOLATE = 0.01, 5


def convert_dp_compressed(source: Path, output, tree: dict, *, step: float, extrapolate: float,
                          frequency: int) -> CompressedFile:
    """A model compressed by DeePMD-kit without its nets (a TensorFlow graph): its tables into a
    deepcomp file as they are. New tables (another step or range) would need the nets."""
    origin = tables_origin(tree)
    if step != DEFAULT_STEP or extrapolate != DEFAULT_EXTRAPOLATE:
        raise DeepCompError(
            f"{source}: this model was compressed by {origin} and no longer holds its embedding nets, so deepcomp "
            f"cannot build tables with step {step:g} / extrapolate {extrapolate:g}; without -s/-e it stores "
            "DeePMD-kit's tables as they are, or compress the original (uncompressed) model for new tables")
    tables = dp_tables(tree, str(source))
    model = parse_model(tree, str(source))
    log.warning(
        "%s was compressed by %s: its embedding nets are gone, so deepcomp cannot build its own tables (any step, "
        "exact beyond the tables). Storing DeePMD-kit's %d tables as they are in %s: results equal DeePMD-kit's "
        "evaluation of this file; inputs beyond the tables are continued linearly as DeePMD-kit 3.2 does, counted "
        "as overflow. For deepcomp's own tables compress the original, uncompressed model",
        source, origin, len(tables), output)
    first = next(iter(tables.values()))
    options = {
        "step": first.stride0, "extrapolate": first.xmax / first.upper if first.upper else None,
        "frequency": frequency, "min_nbor_dist": model.min_nbor_dist,
        "min_nbor_dist_origin": "model file", "range_rule": f"as stored by {origin}",
    }
    meta = _meta(source, options, tables_from=origin, beyond_tables=BEYOND_EXTRAPOLATED)
    content = CompressedFile(tree=materialized(tree, str(source)), tables=tables, meta=meta)
    save_compressed(output, content)
    log.info("wrote %s (%d tables from %s)", output, len(tables), origin)
    return content
