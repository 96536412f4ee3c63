"""End-of-run overflow summary of ``pair_style deepcomp`` (Pair::finish), and ``check_frequency 0``.

Whatever the check frequency, a run in which inputs left the fine tables ends with one
``deepcomp overflow summary`` line with the global counts (the same on 1 and 2 ranks);
a run without overflow prints none. With several models (a model deviation) the periodic check
and the summary cover every model, each line naming its model file.
"""

from __future__ import annotations

import re
import shutil

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


def overflow_warnings(text: str, model) -> list[tuple[int, str]]:
    """(step, counts) of the periodic overflow warnings naming ``model``."""
    out = []
    for line in text.splitlines():
        m = re.search(rf"deepcomp table overflow of model {re.escape(str(model))} \(step (\d+)\): (\d+ of \d+)", line)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def test_every_model_checked_and_summarised_on_1_and_2_ranks(model_file, tmp_path):
    """Two models, deviation every 2 steps: the second model runs on steps 0, 2 (twice: end of the first
    run, set-up of the second) and 4 only, so its counts differ from the first's; both are checked on the
    first model's cadence and summarised, each naming its file, the same on 1 and 2 ranks."""
    second = tmp_path / "second.dcz"
    shutil.copy(model_file, second)
    deck = overflow_deck(1)
    old = "pair_style      deepcomp ${model} check_frequency 1"
    assert old in deck
    deck = deck.replace(old, f"pair_style      deepcomp ${{model}} {second} out_freq 2 out_file md.out "
                             "check_frequency 1")
    found = {}
    for n in (1, 2):
        work = tmp_path / f"np{n}"
        work.mkdir()
        rc, text, _ = run_lmp(deck, work, nprocs=n, timeout=240,
                              variables={"model": model_file, "data": DATA_500, "policy": "warn"})
        assert rc == 0, text[-4000:]
        assert "deepcomp table overflow (step" not in text  # every line names its model
        found[n] = (overflow_warnings(text, model_file), overflow_warnings(text, second), summaries(text))
        assert len((work / "md.out").read_text().splitlines()) == 1 + 4
    assert found[1] == found[2]
    first, other, summ = found[1]
    assert [s for s, _ in first] == [0, 1, 2, 2, 3, 4]
    assert [s for s, _ in other] == [0, 2, 2, 4]
    assert {c.split()[0] for _, c in first + other} == {"2"}  # 2 inputs beyond the table per force call
    # end of run 1: 3 and 2 force calls; end of run 2: 6 and 4
    assert [line.split(" (since")[0] for line in summ] == [
        f"WARNING: deepcomp overflow summary of model {m}" for m in (model_file, second, model_file, second)]
    assert [line.split("loaded): ")[1].split(" of ")[0] for line in summ] == ["6", "4", "12", "8"]
