"""Command line: ``deepcomp compress | info | md`` (also ``python -m deepcomp_ase``).

``compress`` takes the flags of ``dp compress``. Errors are printed as one line without a
traceback (add ``-v DEBUG`` for one) and the exit status is non-zero.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ._version import __version__
from .errors import DeepCompError

LOG_LEVELS = {"DEBUG": logging.DEBUG, "3": logging.DEBUG, "INFO": logging.INFO, "2": logging.INFO,
              "WARNING": logging.WARNING, "1": logging.WARNING, "ERROR": logging.ERROR, "0": logging.ERROR}


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--log-level", choices=list(LOG_LEVELS), default="INFO",
                   help="verbosity: DEBUG/3, INFO/2, WARNING/1, ERROR/0 (default: INFO)")
    p.add_argument("-l", "--log-path", default=None, help="also write the log to this file")
    p.add_argument("-m", "--mpi-log", choices=["master", "collect", "workers"], default="master",
                   help="accepted for compatibility with dp compress; compression runs on one process")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepcomp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"deepcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="tabulate the embedding nets of a DeePMD-kit model",
                       description="Compress a DeePMD-kit model (.dp, .yaml, .pb) into a deepcomp model file.")
    c.add_argument("-i", "--input", default="frozen_model.dp", help="the original model (default: frozen_model.dp)")
    c.add_argument("-o", "--output", default="frozen_model_compressed.dcz",
                   help="the compressed model (default: frozen_model_compressed.dcz)")
    c.add_argument("-s", "--step", type=float, default=0.01,
                   help="step of the first table; the extrapolation table uses 10*step (default: 0.01)")
    c.add_argument("-e", "--extrapolate", type=int, default=5,
                   help="the second table covers [upper, extrapolate*upper] (default: 5)")
    c.add_argument("-f", "--frequency", type=int, default=-1,
                   help="check table overflow every this many steps during MD; -1: never (default: -1). "
                        "Unlike DeePMD-kit, the check is real")
    c.add_argument("-c", "--checkpoint-folder", default=".",
                   help="accepted for compatibility with dp compress; has no effect here")
    c.add_argument("-t", "--training-script", default=None,
                   help="DeePMD-kit input.json whose training data give min_nbor_dist when the model lacks it")
    _add_logging(c)

    i = sub.add_parser("info", help="describe a compressed or uncompressed model")
    i.add_argument("model")
    _add_logging(i)

    m = sub.add_parser("md", help="run a short NVE molecular dynamics with ASE (a quick check of a model)")
    m.add_argument("model", help="compressed model or DeePMD-kit model file")
    m.add_argument("--structure", default=None,
                   help="any file ASE can read; default: a random fcc alloy of the model's elements")
    m.add_argument("--repeat", type=int, default=4, help="fcc supercell size of the default structure (default: 4)")
    m.add_argument("--steps", type=int, default=100)
    m.add_argument("--timestep", type=float, default=1.0, help="fs (default: 1)")
    m.add_argument("--temperature", type=float, default=600.0, help="initial temperature in K (default: 600)")
    m.add_argument("--log-every", type=int, default=10)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--check-frequency", type=int, default=None,
                   help="overflow check every N steps (default: the value stored in the model)")
    _add_logging(m)
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
                   frequency=args.frequency, training_script=args.training_script)
    return 0


def _run_info(args) -> int:
    from .info import describe

    print(describe(args.model))
    return 0


def _run_md(args) -> int:
    from .md import run_md

    run_md(args.model, structure=args.structure, repeat=args.repeat, steps=args.steps, timestep=args.timestep,
           temperature=args.temperature, log_every=args.log_every, seed=args.seed,
           check_frequency=args.check_frequency)
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    runner = {"compress": _run_compress, "info": _run_info, "md": _run_md}[args.command]
    try:
        return runner(args)
    except DeepCompError as exc:  # anything else is a bug: keep its traceback
        if args.log_level in ("DEBUG", "3"):
            raise
        print(f"deepcomp {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deepcomp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
