"""The ``deepcomp`` command line: flags of dp compress, clean errors, atomic output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS

from deepcomp_ase.cli import main
from deepcomp_ase.fileformat import is_compressed_file, load_compressed

REPO = Path(__file__).resolve().parents[1]


def test_compress_with_dp_flags(tmp_path):
    out = tmp_path / "m.dcz"
    log = tmp_path / "log.txt"
    rc = main(["compress", "-i", str(MODELS / "cu_se_e2_a_tanh.dp"), "-o", str(out), "-s", "0.02", "-e", "4",
               "-f", "50", "-c", "ignored", "-v", "WARNING", "-l", str(log), "-m", "master"])
    assert rc == 0 and is_compressed_file(out)
    content = load_compressed(out)
    assert content.meta["options"]["step"] == 0.02
    assert content.meta["options"]["extrapolate"] == 4
    assert content.meta["options"]["frequency"] == 50
    assert content.meta["source_file"] == "cu_se_e2_a_tanh.dp" and len(content.meta["source_sha256"]) == 64
    (table,) = content.tables.values()
    assert (table.stride0, table.stride1, table.xmax) == (0.02, 0.2, 4 * table.upper)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".part")]


def test_error_is_one_line_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "deepcomp_ase", "compress", "-i", str(tmp_path / "missing.dp"),
                           "-o", str(tmp_path / "o.dcz")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "missing.dp: model file not found" in proc.stderr
    assert not (tmp_path / "o.dcz").exists()


def test_unwritable_output_leaves_nothing(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.dcz"
    rc = main(["compress", "-i", str(MODELS / "cu_se_e2_a_tanh.dp"), "-o", str(out), "-v", "ERROR"])
    assert rc == 1 and not out.exists()


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    out = tmp_path / "m.dcz"
    out.write_text("previous content")
    import deepcomp_ase.fileformat as ff

    def broken(group, tree, attr="json"):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ff, "write_h5_tree", broken)
    rc = main(["compress", "-i", str(MODELS / "cu_se_e2_a_tanh.dp"), "-o", str(out), "-v", "ERROR"])
    assert rc == 1
    assert out.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["m.dcz"]


def test_help_says_checkpoint_folder_has_no_effect(capsys):
    with pytest.raises(SystemExit):
        main(["compress", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "has no effect here" in text and "--training-script" in text and "--frequency" in text


def test_info(compressed_model, capsys):
    assert main(["info", str(compressed_model("cuau_se_e2_a"))]) == 0
    text = capsys.readouterr().out
    for expected in ("se_e2_a", "Cu Au", "sel:       [72, 64]", "[-1, 7) -> [-1, 35)", "0.01 / 0.1", "table memory",
                     "descriptor:0-1", "sha256"):
        assert expected in text


def test_info_hybrid_and_split_tables(compressed_model, capsys):
    assert main(["info", str(compressed_model("cuau_hybrid"))]) == 0
    text = capsys.readouterr().out
    assert "descriptor.0:  se_e2_a" in text and "descriptor.1:  se_e2_r" in text and "descriptor.1:1-1" in text
    assert main(["info", str(compressed_model("cu_se_e2_a_relu"))]) == 0
    assert "split at kinks" in capsys.readouterr().out


def test_info_uncompressed(capsys):
    assert main(["info", str(MODELS / "cu_se_e2_a_gelu.dp")]) == 0
    assert "uncompressed DeePMD-kit model" in capsys.readouterr().out


@pytest.mark.slow  # an MD run: numba compile and steps
def test_md_command(compressed_model, capsys):
    assert main(["md", str(compressed_model("cu_se_e2_a_tanh")), "--steps", "4", "--log-every", "2",
                 "--repeat", "2", "-v", "WARNING"]) == 0
    out = capsys.readouterr().out
    assert "energy drift over 4 steps" in out and "32 atoms" in out
