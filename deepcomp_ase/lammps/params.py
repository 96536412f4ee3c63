"""``pair_style deepcomp ... fparam ... aparam ... fparam_from_compute ID aparam_from_compute ID
fparam_from_fix ID [i]``: what the plugin parsed, checked against the models when they load.

The plugin reads the values each step (the constants, or the compute / fix named) as
``pair_style deepmd`` does and hands them over with the positions; here the settings are checked
once, with the models' ``numb_fparam`` / ``numb_aparam`` known: a count that does not match, a
model that needs parameters none of the keywords gives, or parameters given to models that take
none.
"""

from __future__ import annotations

from ..errors import FrameParamError

#: how the plugin gets the values each step (``fparam_source`` / ``aparam_source`` of the create call)
SOURCES = ("none", "values", "compute", "fix")


def check_inputs(potentials, files, fparam: dict | None, aparam: dict | None) -> None:
    """``fparam`` / ``aparam``: {'source': one of SOURCES, 'count': values given with the keyword}."""
    first = potentials[0]
    dims = {(p.dim_fparam, p.dim_aparam) for p in potentials}
    if len(dims) > 1:
        listing = ", ".join(f"{f} (numb_fparam {p.dim_fparam}, numb_aparam {p.dim_aparam})"
                            for p, f in zip(potentials, files))
        raise FrameParamError(f"pair_style deepcomp: the models take different frame/atomic parameters: {listing}; "
                              "a model deviation needs models with the same numb_fparam and numb_aparam")
    for name, spec, dim, keyword_from in (("fparam", fparam, first.dim_fparam, "fparam_from_compute ID or "
                                           "fparam_from_fix ID"),
                                          ("aparam", aparam, first.dim_aparam, "aparam_from_compute ID")):
        source = (spec or {}).get("source", "none")
        count = int((spec or {}).get("count", 0))
        if source not in SOURCES:
            raise FrameParamError(f"pair_style deepcomp: unknown {name} source {source!r}")
        if source == "none":
            if dim and not (name == "fparam" and first.has_default_fparam) and not (
                    name == "aparam" and first.params.fitting.use_aparam_as_mask):
                raise FrameParamError(
                    f"pair_style deepcomp: model {files[0]} takes {dim} {'frame' if name == 'fparam' else 'atomic'} "
                    f"parameter(s) (numb_{name} = {dim}); give them with '{name} " + " ".join(["X"] * dim)
                    + f"' or {keyword_from}")
            continue
        if dim == 0:
            raise FrameParamError(f"pair_style deepcomp: keyword {name if source == 'values' else name + '_from_' + source} "
                                  f"given, but model {files[0]} takes no {name} (numb_{name} = 0); leave it out")
        if source == "values" and count != dim:
            raise FrameParamError(f"pair_style deepcomp: Illegal {name}, the dimension should be {dim} "
                                  f"({count} value(s) given; model {files[0]} has numb_{name} = {dim})")
