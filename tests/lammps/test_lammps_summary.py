"""End-of-run overflow summary of ``pair_style deepcomp`` (Pair::finish), and ``check_frequency 0``.

Whatever the check frequency, a run in which inputs left the fine tables ends with one
``deepcomp overflow summary`` line with the global counts (the same on 1 and 2 ranks);
a run without overflow prints none.
"""

from __future__ import annotations

import re

import pytest
from lammps_helpers import DATA_500, EXAMPLES, compressed_model, run_lmp

pytestmark = [pytest.mark.lammps, pytest.mark.mpi]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return compressed_model(tmp_path_factory)


def summaries(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if "deepcomp overflow summary" in line]
    return [re.sub(r"\s*\(src/[^)]*\)\s*$", "", line) for line in lines]


def overflow_deck(freq: int) -> str:
    deck = (EXAMPLES / "in.cuau_overflow").read_text()
    deck = deck.replace("check_frequency 1 overflow ${policy}", f"check_frequency {freq} overflow ${{policy}}")
    assert f"check_frequency {freq} " in deck
    return deck + "\nrun 2\n"  # a second run: a second summary with the counts so far


def test_summary_without_periodic_check_same_on_1_and_2_ranks(model_file, tmp_path):
    found = {}
    for n in (1, 2):
        rc, text, _ = run_lmp(overflow_deck(0), tmp_path, nprocs=n, timeout=180,
                              variables={"model": model_file, "data": DATA_500, "policy": "error"})
        assert rc == 0, text[-4000:]
        # check_frequency 0 = never: no periodic warning, and policy error does not stop the run
        assert "no periodic overflow check" in text
        assert "deepcomp table overflow (step" not in text
        found[n] = summaries(text)
    assert len(found[1]) == 2, found[1]
    assert found[1] == found[2]
    # 3 force calls of 2 inputs each in the first run (setup + 2 steps), 6 after the second
    assert found[1][0].startswith("WARNING: deepcomp overflow summary (since the model was loaded): 6 of ")
    assert " 12 of " in found[1][1] and "type pair Au-Cu" in found[1][1]


def test_no_summary_without_overflow(model_file, tmp_path):
    deck = (EXAMPLES / "in.cuau_nvt").read_text()
    rc, text, _ = run_lmp(deck, tmp_path, nprocs=1, timeout=180,
                          variables={"model": model_file, "data": DATA_500, "nsteps": 3})
    assert rc == 0, text[-4000:]
    assert not summaries(text)
