"""Extract and compare the thermo output of LAMMPS logs (used by run_examples.sh).

    python thermo_tools.py extract LOG                  thermo table (and overflow warnings) of LOG
    python thermo_tools.py compare LOG EXPECTED [--rtol R]
    python thermo_tools.py same LOG_A LOG_B [--rtol R]  two runs (e.g. 1 and 2 MPI ranks) agree
"""

from __future__ import annotations

import argparse
import re
import sys


def _overflow_message(line: str) -> str | None:
    """A deepcomp overflow WARNING/ERROR line without its source location, else None."""
    if line.startswith(("WARNING", "ERROR")) and "deepcomp table overflow" in line:
        return re.sub(r"\s*\(src/[^)]*\)\s*$", "", line.strip())
    return None


def extract(text: str) -> tuple[list[str], list[list[float]], list[str]]:
    """Header, rows of every thermo block, and the deepcomp overflow warnings of a log."""
    header, rows, warnings = None, [], []
    lines = iter(text.splitlines())
    for line in lines:
        if (msg := _overflow_message(line)) is not None:
            warnings.append(msg)
        if line.strip().startswith("Step "):
            header = line.split()
            for row in lines:
                if (msg := _overflow_message(row)) is not None:
                    warnings.append(msg)
                    continue
                if row.startswith("Loop time") or row.startswith("ERROR"):
                    break
                parts = row.split()
                if len(parts) == len(header) and re.match(r"^-?\d", parts[0]):
                    rows.append([float(p) for p in parts])
    return header or [], rows, warnings


def render(header, rows, warnings) -> str:
    out = [" ".join(f"{h:>18s}" for h in header)]
    for row in rows:
        out.append(" ".join(f"{v:18.0f}" if h == "Step" else f"{v:18.10f}" for h, v in zip(header, row, strict=True)))
    out += warnings
    return "\n".join(out) + "\n"


def parse_rendered(text: str):
    lines = text.splitlines()
    header = lines[0].split() if lines else []
    rows, warnings = [], []
    for line in lines[1:]:
        if line.startswith("WARNING") or line.startswith("ERROR"):
            warnings.append(line)
        elif line.strip():
            rows.append([float(v) for v in line.split()])
    return header, rows, warnings


def agree(a, b, rtol: float) -> list[str]:
    """Differences between two (header, rows, warnings) beyond rtol (relative to each column's size)."""
    (ha, ra, wa), (hb, rb, wb) = a, b
    problems = []
    if ha != hb:
        problems.append(f"columns differ: {ha} vs {hb}")
    if len(ra) != len(rb):
        problems.append(f"{len(ra)} vs {len(rb)} thermo rows")
    for k, name in enumerate(ha if ha == hb else []):
        scale = max([abs(r[k]) for r in ra] + [1e-300])
        for i, (x, y) in enumerate(zip(ra, rb, strict=False)):
            if abs(x[k] - y[k]) > rtol * max(abs(x[k]), abs(y[k]), 1e-3 * scale):
                problems.append(f"row {i} {name}: {x[k]!r} vs {y[k]!r}")
    if wa != wb:
        problems.append("overflow warnings differ:\n  " + "\n  ".join(wa) + "\nvs\n  " + "\n  ".join(wb))
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("log")
    c = sub.add_parser("compare")
    c.add_argument("log")
    c.add_argument("expected")
    c.add_argument("--rtol", type=float, default=1e-6)
    s = sub.add_parser("same")
    s.add_argument("log_a")
    s.add_argument("log_b")
    s.add_argument("--rtol", type=float, default=1e-10)
    args = p.parse_args(argv)

    if args.cmd == "extract":
        sys.stdout.write(render(*extract(open(args.log).read())))
        return 0
    if args.cmd == "compare":
        got = extract(open(args.log).read())
        expected = parse_rendered(open(args.expected).read())
        # compare at the precision written to the expected file
        got = parse_rendered(render(*got))
        problems = agree(got, expected, args.rtol)
    else:
        problems = agree(extract(open(args.log_a).read()), extract(open(args.log_b).read()), args.rtol)
    for line in problems[:20]:
        print("  " + line)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
