"""Command line: ``deepcomp compress | info | md | model-devi | warmup`` (also ``python -m deepcomp_ase``).

``compress`` takes the flags of ``dp compress``. Errors are printed as one line without a
traceback (add ``-v DEBUG`` for one) and the exit status is non-zero; anything else (a bug) keeps
its traceback, followed by one ``internal error:`` line.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._version import __version__
from .compress.api import MAX_TABLE_MIB
from .errors import DeepCompError

LOG_LEVELS = {"DEBUG": logging.DEBUG, "3": logging.DEBUG, "INFO": logging.INFO, "2": logging.INFO,
              "WARNING": logging.WARNING, "1": logging.WARNING, "ERROR": logging.ERROR, "0": logging.ERROR}


def _add_logging(p: argparse.ArgumentParser, mpi_log: bool = False) -> None:
    p.add_argument("-v", "--log-level", choices=list(LOG_LEVELS), default="INFO",
                   help="verbosity: DEBUG/3, INFO/2, WARNING/1, ERROR/0 (default: INFO)")
    p.add_argument("-l", "--log-path", default=None, help="also write the log to this file")
    if mpi_log:
        p.add_argument("-m", "--mpi-log", choices=["master", "collect", "workers"], default="master",
                       help="accepted for compatibility with dp compress; compression runs on one process")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive integer")
    return value


_HEAD_HELP = "the model (head) to read from a multi-task PyTorch training checkpoint (.pt)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepcomp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"deepcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="tabulate the embedding nets of a DeePMD-kit model",
                       description="Compress a DeePMD-kit model (.dp, .yaml, .pb, .pth, .pt) into a deepcomp "
                                   "model file.")
    c.add_argument("-i", "--input", default="frozen_model.dp", help="the original model (default: frozen_model.dp)")
    c.add_argument("-o", "--output", default="frozen_model_compressed.dcz",
                   help="the compressed model (default: frozen_model_compressed.dcz)")
    c.add_argument("-s", "--step", type=_positive_float, default=0.01,
                   help="step of the first (fine) table; the extrapolation table uses 10*step. Any positive "
                        "step: a range it does not divide is extended to whole intervals (default: 0.01)")
    c.add_argument("-e", "--extrapolate", type=int, default=5,
                   help="the second table covers [upper, extrapolate*upper] (default: 5)")
    c.add_argument("-f", "--frequency", type=int, default=-1,
                   help="check table overflow every this many steps during MD; 0 or -1: never (default: -1). "
                        "Unlike DeePMD-kit, the check is real")
    c.add_argument("--max-table-size", type=float, default=MAX_TABLE_MIB, metavar="MIB",
                   help=f"refuse, before building them, tables larger than this many MiB (default: "
                        f"{MAX_TABLE_MIB}); 0: no limit")
    c.add_argument("-c", "--checkpoint-folder", default=".",
                   help="accepted for compatibility with dp compress; has no effect here")
    c.add_argument("-t", "--training-script", default=None,
                   help="DeePMD-kit input.json whose training data give min_nbor_dist when the model lacks it")
    c.add_argument("--head", default=None, help=_HEAD_HELP)
    c.add_argument("--warmup", action="store_true",
                   help="then compile the numba kernels for the compressed model (as 'deepcomp warmup OUTPUT')")
    _add_logging(c, mpi_log=True)

    i = sub.add_parser("info", help="describe a compressed or uncompressed model")
    i.add_argument("model")
    i.add_argument("--head", default=None, help=_HEAD_HELP)
    _add_logging(i)

    m = sub.add_parser("md", help="run a short NVE molecular dynamics with ASE (a quick check of a model)")
    m.add_argument("model", help="compressed model or DeePMD-kit model file")
    m.add_argument("--structure", default=None,
                   help="any file ASE can read; default: a random fcc alloy of the model's elements")
    m.add_argument("--repeat", type=_positive_int, default=4,
                   help="fcc supercell size of the default structure (default: 4)")
    m.add_argument("--steps", type=int, default=100, help="number of MD steps (default: 100)")
    m.add_argument("--timestep", type=_positive_float, default=1.0, help="fs (default: 1)")
    m.add_argument("--temperature", type=float, default=600.0, help="initial temperature in K (default: 600)")
    m.add_argument("--log-every", type=_positive_int, default=10,
                   help="print energies and temperature every this many steps (default: 10)")
    m.add_argument("--seed", type=int, default=1,
                   help="random seed of the default structure's alloy and of the initial velocities (default: 1)")
    m.add_argument("--check-frequency", type=int, default=None,
                   help="overflow check every N steps, 0 or -1: never (default: the value stored in the model). "
                        "A summary is printed at the end whenever an input left the fine table")
    m.add_argument("--backend", choices=["auto", "cpu", "numpy", "numba", "cuda"], default="auto",
                   help="compute backend, as the calculator's backend= (default: auto)")
    _add_logging(m)

    _add_model_devi_parser(sub)
    w = sub.add_parser("warmup", help="compile the numba kernels a model needs, ahead of a run",
                       description="Compile (once; cached on disk) the numba kernels MODEL needs, in float64 and "
                                   "float32, and print the cache directory. Run it before starting many processes "
                                   "(LAMMPS ranks) or after installing into a read-only location.")
    w.add_argument("model", nargs="+", help="compressed model(s) or DeePMD-kit model file(s)")
    w.add_argument("--precision", choices=["float64", "float32", "both"], default="both",
                   help="working precision(s) to compile for (default: both)")
    _add_logging(w)
    return parser


def _setup_logging(args) -> None:
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log_path:
        handlers.append(logging.FileHandler(args.log_path))
    logging.basicConfig(level=LOG_LEVELS[args.log_level], format="%(levelname)s %(message)s", handlers=handlers,
                        force=True)


def _run_compress(args) -> int:
    from .compress.api import compress_model

    compress_model(args.input, args.output, step=args.step, extrapolate=args.extrapolate,
                   frequency=args.frequency, training_script=args.training_script,
                   max_table_mib=args.max_table_size, head=args.head)
    if args.warmup:
        return _run_warmup(argparse.Namespace(model=[args.output], precision="float64"))
    from .numba_cache import cold_cache_hint

    hint = cold_cache_hint(args.output)
    if hint:
        logging.getLogger("deepcomp_ase").info(hint)
    return 0


def _run_warmup(args) -> int:
    from .numba_cache import warmup

    precisions = ("float64", "float32") if args.precision == "both" else (args.precision,)
    directory = warmup(args.model, precisions)
    print(f"numba kernels for {', '.join(map(str, args.model))} ({', '.join(precisions)}) compiled; cached in "
          f"{directory}")
    return 0


def _run_info(args) -> int:
    from .info import describe

    print(describe(args.model, head=args.head))
    return 0


def _run_md(args) -> int:
    from .md import run_md

    run_md(args.model, structure=args.structure, repeat=args.repeat, steps=args.steps, timestep=args.timestep,
           temperature=args.temperature, log_every=args.log_every, seed=args.seed,
           check_frequency=args.check_frequency, backend=args.backend)
    return 0


# ---------------------------------------------------------------------------- model-devi
def _add_model_devi_parser(sub) -> None:
    """``deepcomp model-devi``: the flags of ``dp model-devi`` (-m -s -o -f --relative --relative-v --atomic
    --real-error)."""
    d = sub.add_parser(
        "model-devi", help="model deviation of several models on frames (like dp model-devi)",
        description="Evaluate every frame with every model and write the model deviation in the format of "
                    "dp model-devi (DeePMD-kit 3.2). The first model is the reference.")
    d.add_argument("-m", "--models", nargs="+", required=True,
                   help="two or more models: deepcomp compressed files or DeePMD-kit .dp/.yaml/.pb, mixed")
    d.add_argument("-s", "--system", nargs="+", required=True,
                   help="DeePMD-kit npy systems (directories, searched recursively for type.raw) or "
                        "trajectories ASE can read (extxyz, LAMMPS dumps with --type-map)")
    d.add_argument("-o", "--output", default="model_devi.out", help="output file (default: model_devi.out)")
    d.add_argument("-f", "--frequency", type=int, default=1,
                   help="steps between frames: the step column is frame index x FREQ (default: 1)")
    d.add_argument("--relative", type=float, default=None,
                   help="relative force deviation: eps_f divided by (|<F>| + RELATIVE)")
    d.add_argument("--relative-v", "--relative_v", dest="relative_v", type=float, default=None,
                   help="relative virial deviation: eps_v divided by (|<W>|/N + RELATIVE_V), |.| the norm of "
                        "the 9 components as dp model-devi")
    d.add_argument("--atomic", action="store_true", help="also write the force deviation of every atom")
    d.add_argument("--real-error", "--real_error", dest="real_error", action="store_true",
                   help="write the RMS error of the models against the systems' labels (set.*/energy.npy, "
                        "force.npy, virial.npy) instead of their deviation, in the same columns")
    d.add_argument("--type-map", nargs="+", default=None,
                   help="element of LAMMPS type 1, 2, ... (LAMMPS dumps); for npy systems without "
                        "type_map.raw, the element of type index 0, 1, ... (default: the first model's)")
    d.add_argument("--format", default=None, help="ASE format of trajectory files (default: guessed)")
    d.add_argument("--backend", default="auto", help="auto, cpu, numpy, numba or cuda (default: auto)")
    d.add_argument("-v", "--log-level", choices=list(LOG_LEVELS), default="INFO",
                   help="verbosity: DEBUG/3, INFO/2, WARNING/1, ERROR/0 (default: INFO)")
    d.add_argument("-l", "--log-path", default=None, help="also write the log to this file")


def _run_model_devi(args) -> int:
    import time

    import numpy as np

    from .ensemble import ModelEnsemble
    from .model_devi import dp_block
    from .output import check_output_path, write_atomic
    from .systems import load_frames

    log = logging.getLogger("deepcomp_ase.model_devi")
    check_output_path(args.output, inputs=[*args.models, *args.system])  # before hours of evaluation
    if args.frequency < 0:
        raise DeepCompError(f"-f/--frequency must be >= 0, got {args.frequency}")
    if len(args.models) < 2 and not args.real_error:
        log.warning("model-devi with one model: every deviation is zero")
    ens = ModelEnsemble(args.models, backend=args.backend, check_frequency=-1)
    systems = [fr for src in args.system
               for fr in load_frames(src, args.type_map, ens.first.type_map, args.format, labels=args.real_error)]
    total = sum(len(fr) for fr in systems)
    done, t0, last = 0, time.monotonic(), time.monotonic()
    blocks = []
    for fr in systems:
        symbols_all = fr.symbols if isinstance(fr.symbols[0], list) else [fr.symbols]
        for sym in symbols_all:
            ens.check_elements(sym)
        devis = []
        for k in range(len(fr)):
            sym = fr.symbols[k] if isinstance(fr.symbols[0], list) else fr.symbols
            cell = None if fr.cells is None else fr.cells[k]
            res = ens.compute(fr.positions[k], sym, cell, fr.pbc, fparam=None if fr.fparam is None else fr.fparam[k],
                              aparam=None if fr.aparam is None else fr.aparam[k])
            devis.append(res.deviation(relative=args.relative, relative_v=args.relative_v, magnitude="tensor",
                                       labels=fr.frame_labels(k) if args.real_error else None))
            done += 1
            # a progress line on long inputs (first after 2 s, then every 10 s)
            now = time.monotonic()
            if now - last > (2.0 if last == t0 else 10.0):
                last = now
                rate = done / (now - t0)
                log.info(f"model-devi: {done}/{total} frames ({100.0 * done / total:.0f} %), {fr.name}, "
                         f"{rate:.2g} frames/s, about {(total - done) / rate:.0f} s left")
        blocks.append(dp_block(fr.name, np.arange(len(fr)) * args.frequency, devis, atomic=args.atomic))
    # written at once: an interrupted run leaves no partial file behind
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write("".join(blocks))

    write_atomic(args.output, write, inputs=[*args.models, *args.system])
    log.info(f"model-devi: {total} frames of {len(systems)} system(s), {len(ens)} models -> {args.output}")
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _setup_logging(args)
    except OSError as exc:  # -l in a missing or unwritable directory
        print(f"deepcomp {args.command}: error: {args.log_path}: cannot open the log file "
              f"({exc.strerror or exc})", file=sys.stderr)
        return 1
    runner = {"compress": _run_compress, "info": _run_info, "md": _run_md,
              "model-devi": _run_model_devi, "warmup": _run_warmup}[args.command]
    try:
        return runner(args)
    except DeepCompError as exc:  # anything else is a bug: keep its traceback
        if args.log_level in ("DEBUG", "3"):
            raise
        print(f"deepcomp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError:
        if args.log_level in ("DEBUG", "3"):
            raise
        print(f"deepcomp {args.command}: error: out of memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepcomp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: its traceback, then the promised last line
        if args.log_level in ("DEBUG", "3"):
            raise
        import traceback

        traceback.print_exc(file=sys.stderr)
        print(f"deepcomp {args.command}: internal error: {type(exc).__name__}: {exc} (a bug in deepcomp; please "
              "report it with the traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
