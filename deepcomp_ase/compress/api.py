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
from .min_dist import min_nbor_dist_from_training_script
from .tables import Table
from .tabulate import angular_range, build_table, check_step, radial_range_per_type

log = logging.getLogger(__name__)

#: se_e3 tables use 10x the step (DeePMD-kit's convention: its inputs span a wider range)
SE_E3_STEP_FACTOR = 10


def _table_specs(d, min_nbor_dist: float):
    """{net key: (lower, upper, low_coarse)} for one descriptor."""
    if d.three_body:
        lo, up = angular_range(d.dstd, min_nbor_dist, d.rcut_smth, d.rcut)
        return {key: (lo, up, True) for key in d.embeddings}
    lower, upper = radial_range_per_type(d.davg, d.dstd, min_nbor_dist, d.rcut_smth, d.rcut)
    if d.mixed_types:  # one net for every type pair
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


def tabulate_model(model: ModelParams, min_nbor_dist: float, step: float, extrapolate: float,
                   progress=None) -> dict[str, Table]:
    """Tables for every embedding net of every descriptor part."""
    jobs = []
    for prefix, d in descriptor_parts(model):
        factor = SE_E3_STEP_FACTOR if d.three_body else 1
        for key, (lo, up, low_coarse) in sorted(_table_specs(d, min_nbor_dist).items()):
            jobs.append((table_name(prefix, key), d.embeddings[key], lo, up, step * factor, low_coarse))
    tables = {}
    for n, (name, net, lo, up, s0, low_coarse) in enumerate(jobs):
        tables[name] = build_table(net, lo, up, s0, 10 * s0, extrapolate, low_coarse)
        if progress:
            progress(n + 1, len(jobs), name, tables[name])
    return tables


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compress_model(source, output, *, step: float = 0.01, extrapolate: float = 5, frequency: int = -1,
                   training_script=None) -> CompressedFile:
    """Compress the DeePMD-kit model ``source`` into ``output`` (written atomically)."""
    from ..fileformat import is_compressed_file

    source = Path(source)
    check_step(step, extrapolate)
    if is_compressed_file(source):
        raise DeepCompError(f"{source}: is already a deepcomp compressed model; compress the original model")
    tree = read_model_tree(source)
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
    log.info("compressing %s: %s, type_map %s, min_nbor_dist %.6f A (from %s)", source, model.descriptor.kind,
             list(model.type_map), mnd, origin)

    def progress(n, total, name, table):
        extra = f", {len(table.split_intervals)} intervals split at relu kinks" if len(table.split_intervals) else ""
        log.info("table %d/%d %s: fine [%g, %g) step %g, extrapolated to [%g, %g) step %g%s", n, total, name,
                 table.lower, table.upper, table.stride0, table.xmin, table.xmax, table.stride1, extra)

    tables = tabulate_model(model, mnd, step, extrapolate, progress)
    meta = {
        "software": "deepcomp",
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_file": str(source.name),
        "source_sha256": _sha256(source),
        "options": {
            "step": step, "extrapolate": extrapolate, "frequency": frequency,
            "min_nbor_dist": mnd, "min_nbor_dist_origin": origin, "range_rule": "radial (TensorFlow backend)",
        },
    }
    content = CompressedFile(tree=tree, tables=tables, meta=meta)
    save_compressed(output, content)
    log.info("wrote %s (%d tables, %.1f MB of coefficients)", output, len(tables),
             sum(t.coeffs.nbytes + t.sub_coeffs.nbytes for t in tables.values()) / 1e6)
    return content
