#!/usr/bin/env bash
# Download the wheels the device image lacks into .whl/ (Python 3.12, manylinux x86_64), for
# benchmarks/gpu_check.sh. What deepcomp_ase needs there beyond CuPy/numpy: ase (which imports
# scipy in ase.neighborlist), h5py (model and compressed files), pyyaml (.yaml models). ase's
# other dependency, matplotlib, is never imported on our paths. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl ase==3.29.0 h5py==3.16.0 pyyaml==6.0.3 scipy==1.17.1
ls -l .whl
