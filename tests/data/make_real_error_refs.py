"""Generate the DeePMD-kit 3.2.0 ``dp model-devi --real_error`` references in tests/data/real_error (run once, by hand).

Needs a DeePMD-kit 3.2.0 venv with the TensorFlow backend (see make_model_devi_refs.py):

    python tests/data/make_real_error_refs.py --deepmd-venv DIR

Systems (DeePMD-kit npy with labels, copied from the EMT-labelled Cu/Au validation data):

* ``labelled/``: n32_x25 and n32_x75, one set of 5 frames each;
* ``labelled_1f/n32_x50``: three sets of one frame each (frames 0-2 of that system). DeePMD-kit
  3.2.0's ``--relative_v`` divides a (frames, 9) array by a (frames,) one, which only broadcasts
  for sets of one frame, so its reference is made on these.

Writes, with the models cuau_se_e2_a.pb and cuau_se_e2_r.pb (tests/data/models):

* ``real_plain.out``: ``dp model-devi --real_error -m M1 M2 -s labelled -f 10``;
* ``real_rel_atomic.out``: the same with ``--relative 1.0 --atomic``;
* ``real_rel_v.out``: ``-s labelled_1f --relative 0.5 --relative_v 1.0`` (``-f 1``).

One thread. The tests compare ``deepcomp model-devi --real-error`` with these files without DeePMD-kit.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from make_model_devi_refs import thread_env

HERE = Path(__file__).resolve().parent
OUT = HERE / "real_error"
MODELS = ("cuau_se_e2_a", "cuau_se_e2_r")
RUNS = {
    "real_plain": ("labelled", ["-f", "10"]),
    "real_rel_atomic": ("labelled", ["-f", "10", "--relative", "1.0", "--atomic"]),
    "real_rel_v": ("labelled_1f", ["--relative", "0.5", "--relative_v", "1.0"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deepmd-venv", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="real_error_refs_") as tmp:
        work = Path(tmp)
        for m in MODELS:
            shutil.copy(HERE / "models" / f"{m}.pb", work / f"{m}.pb")
        for name, (system, extra) in RUNS.items():
            shutil.copytree(OUT / system, work / system, dirs_exist_ok=True)
            out = work / f"{name}.out"
            cmd = [str(args.deepmd_venv / "bin" / "dp"), "model-devi", "--real_error", "-m",
                   *(f"{m}.pb" for m in MODELS), "-s", system, "-o", out.name, *extra]
            print("#", " ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=work, env=thread_env(), check=True, capture_output=True)
            shutil.copy(out, OUT / f"{name}.out")
    print(f"# references written to {OUT}")


if __name__ == "__main__":
    main()
