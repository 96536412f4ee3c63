"""Hostile and malformed model files: nothing read outside the file, bounded memory, no hangs,
no silent NaN, no state left in the unpickler, one-line errors (docs/security.md).

Each class is shown by the smallest file that triggers it, built here. Files that would
allocate gigabytes without the limits are loaded in a subprocess under an address-space limit
(tests/limited_load.py), so a regression fails the test instead of taking the machine.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import MODELS, edited, write_dp

from deepcomp_ase.cli import main as cli_main
from deepcomp_ase.errors import DeepCompError, InputError, ModelFormatError, TableFormatError
from deepcomp_ase.fileformat import load_compressed, save_compressed
from deepcomp_ase.io import read_model_tree
from deepcomp_ase.io import torch_pickle
from deepcomp_ase.model.params import parse_model
from deepcomp_ase.output import check_output_path
from deepcomp_ase.potential import DeepPotential

HERE = Path(__file__).parent
#: what a hostile file may make the loader allocate above the interpreter's own footprint
LIMIT_MIB = 300


# ----------------------------------------------------------------------------- builders
@pytest.fixture(scope="module")
def tree():
    return read_model_tree(MODELS / "cuau_se_e2_a.dp")


def _s(text: str) -> bytes:  # BINUNICODE
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _i(value: int) -> bytes:  # BININT
    return b"J" + struct.pack("<i", value)


def write_pth(path, pickle_bytes: bytes, storages: dict | None = None, method=zipfile.ZIP_STORED):
    """A PyTorch-style zip: archive/data.pkl and archive/data/<key> members."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes, compress_type=method)
        for key, raw in (storages or {}).items():
            z.writestr(f"archive/data/{key}", raw)
    return path


def tensor_pickle(size: int, stride: int, numel: int = 1) -> bytes:
    """A pickle of one tensor: _rebuild_tensor_v2(storage '0' of float64, 0, (size,), (stride,))."""
    return (b"\x80\x02" + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"(" + b"(" + _s("storage")
            + b"ctorch\nDoubleStorage\n" + _s("0") + _s("cpu") + _i(numel) + b"t" + b"Q" + _i(0)
            + b"(" + _i(size) + b"t" + b"(" + _i(stride) + b"t" + b"\x89" + b"}" + b"t" + b"R" + b".")


def run_limited(paths, evaluate=False, timeout=120):
    """Load ``paths`` in a subprocess limited to LIMIT_MIB more address space; {path name: outcome}."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, str(HERE / "limited_load.py"), str(LIMIT_MIB), *(["--evaluate"] if evaluate else []),
           *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(r["path"]).name: r for r in map(json.loads, proc.stdout.splitlines())}


# ----------------------------------------------------------------------------- 1: reads outside the model
def _replace_variable(path, make):
    """Replace the first weight dataset of a .dp by ``make(f, name, data)``."""
    with h5py.File(path, "a") as f:
        name = "variable_0000"
        data = f[name][()]
        del f[name]
        make(f, name, data)


@pytest.fixture()
def secret(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(b"PRIVATE" * 1000)
    return path


OUTSIDE = {
    "external storage": lambda f, n, d, s: f.create_dataset(n, shape=d.shape, dtype=d.dtype,
                                                            external=[(str(s), 0, d.nbytes)]),
    "external link": lambda f, n, d, s: f.__setitem__(n, h5py.ExternalLink(str(s), "/x")),
    "soft link to external link": lambda f, n, d, s: (f.__setitem__("out", h5py.ExternalLink(str(s), "/x")),
                                                      f.__setitem__(n, h5py.SoftLink("/out"))),
    "virtual dataset": lambda f, n, d, s: f.create_virtual_dataset(
        n, _layout(d, s)),
}


def _layout(d, secret):
    layout = h5py.VirtualLayout(shape=d.shape, dtype=d.dtype)
    layout[...] = h5py.VirtualSource(str(secret) + ".h5", "x", shape=d.shape)
    return layout


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_dp_never_reads_outside_the_file(tree, tmp_path, secret, case):
    path = write_dp(tree, tmp_path / "model.dp")
    _replace_variable(path, lambda f, n, d: OUTSIDE[case](f, n, d, secret))
    with pytest.raises(ModelFormatError) as info:
        read_model_tree(path)
    assert str(path) in str(info.value) and "variable_0000" in str(info.value)


def test_dcz_table_with_external_storage_is_refused(compressed_model, tmp_path, secret):
    path = tmp_path / "model.dcz"
    path.write_bytes(compressed_model("cu_se_e2_a_tanh").read_bytes())
    with h5py.File(path, "a") as f:
        g = f["tables"][next(iter(f["tables"]))]
        d = g["coeffs"][()]
        del g["coeffs"]
        g.create_dataset("coeffs", shape=d.shape, dtype=d.dtype, external=[(str(secret), 0, d.nbytes)])
    with pytest.raises(ModelFormatError, match="coeffs.*external"):
        load_compressed(path)


# ----------------------------------------------------------------------------- 2: writes where they must not
def test_output_path_refuses_devices_fifos_directories_and_the_input(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    model = tmp_path / "m.pth"
    model.write_bytes(b"x")
    os.link(model, tmp_path / "hard.pth")
    for target, inputs, what in [(fifo, (), "not a regular file"), ("/dev/null", (), "not a regular file"),
                                 (tmp_path, (), "is a directory"), (model, (model,), "is the input file"),
                                 (tmp_path / "hard.pth", (model,), "is the input file")]:
        with pytest.raises(DeepCompError, match=what):
            check_output_path(target, inputs)
    assert fifo.is_fifo() and model.read_bytes() == b"x"


def test_cli_writers_use_the_check(tmp_path, capsys):
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    model = tmp_path / "m.dp"
    model.write_bytes((MODELS / "cuau_se_e2_a.dp").read_bytes())
    assert cli_main(["model-devi", "-m", str(model), str(model), "-s", str(tmp_path), "-o", str(fifo)]) == 1
    assert cli_main(["model-devi", "-m", str(model), str(model), "-s", str(tmp_path), "-o", str(tmp_path)]) == 1
    assert cli_main(["compress", "-i", str(model), "-o", str(model)]) == 1
    err = capsys.readouterr().err
    assert "out: exists and is not a regular file" in err and "is a directory" in err and "is the input file" in err
    assert fifo.is_fifo() and model.read_bytes() == (MODELS / "cuau_se_e2_a.dp").read_bytes()


# ----------------------------------------------------------------------------- 3, 4: memory and hangs
def _memory_cases(tmp_path, tree) -> dict:
    """name -> (path, expected text in the error); each would take gigabytes (or forever) unchecked."""
    cases = {}
    # a tensor of 2**28 elements from one float64 through a zero stride (2 GiB)
    cases["stride 0"] = (write_pth(tmp_path / "stride0.pth", tensor_pickle(2**28, 0), {"0": b"\0" * 8}),
                         "zero strides")
    # a 9-byte pickle whose memo index 2**27 makes the C unpickler allocate a 2 GiB memo
    cases["memo index"] = (write_pth(tmp_path / "memo.pth", b"\x80\x02Nr" + struct.pack("<I", 2**27) + b"."),
                           "not a DeePMD-kit PyTorch training checkpoint")
    # data.pkl bzip2-compressed: one call of the decompressor would unpack all of it
    cases["bzip2 member"] = (write_pth(tmp_path / "bz2.pth", b"\x80\x02N." + b"\0" * (8 << 20),
                                       method=zipfile.ZIP_BZIP2), "compressed with method 12")
    # a deflate bomb: 32 MiB from 32 KiB
    cases["deflate bomb"] = (write_pth(tmp_path / "deflate.pth", b"\x80\x02N." + b"\0" * (32 << 20),
                                       method=zipfile.ZIP_DEFLATED), "compression bomb")
    # a 40-level DAG of shared lists in model_params: 2**40 nodes when walked as a tree
    dag: list = [0]
    for _ in range(40):
        dag = [dag, dag]
    import pickle

    ckpt = {"model": {"_extra_state": {"model_params": {"descriptor": dag}}}}
    cases["pickle DAG"] = (write_pth(tmp_path / "dag.pt", pickle.dumps(ckpt, protocol=2)), "expands to more than")
    # a YAML whose aliases expand to 10**8 elements
    lines = ["a0: &a0 [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    lines += [f"a{k}: &a{k} [{', '.join([f'*a{k - 1}'] * 10)}]" for k in range(1, 8)]
    lines.append("model: {'@class': np.ndarray, value: *a7}")
    (tmp_path / "aliases.yaml").write_text("\n".join(lines) + "\n")
    cases["YAML aliases"] = (tmp_path / "aliases.yaml", "expands to more than")
    # a gzip bomb: 32 MiB of YAML comment from 32 KiB
    with gzip.open(tmp_path / "bomb.yaml.gz", "wb") as fh:
        fh.write(b"model: 1\n#" + b" " * (32 << 20))
    cases["gzip bomb"] = (tmp_path / "bomb.yaml.gz", "unpacks to more than")
    # HDF5 datasets declared huge but never written (contiguous, and chunked with a fill value)
    for name, kwargs in [("unwritten", {}), ("chunked", {"chunks": (1 << 16,), "compression": "gzip"})]:
        path = write_dp(tree, tmp_path / f"{name}.dp")
        _replace_variable(path, lambda f, n, d: f.create_dataset(n, shape=(1 << 29,), dtype="f8", **kwargs))
        cases[f"HDF5 {name}"] = (path, "declares shape")
    # special files: no read ever returns (FIFO: blocks; /dev/urandom: endless)
    os.mkfifo(tmp_path / "fifo.dp")
    cases["FIFO"] = (tmp_path / "fifo.dp", "FIFO")
    cases["urandom"] = (Path("/dev/urandom"), "character device")
    return cases


@pytest.fixture(scope="module")
def memory_outcomes(tmp_path_factory, tree):
    tmp = tmp_path_factory.mktemp("hostile")
    cases = _memory_cases(tmp, tree)
    outcomes = run_limited([p for p, _ in cases.values()])
    return {name: (outcomes[path.name], text) for name, (path, text) in cases.items()}


@pytest.mark.parametrize("case", ["stride 0", "memo index", "bzip2 member", "deflate bomb", "pickle DAG",
                                  "YAML aliases", "gzip bomb", "HDF5 unwritten", "HDF5 chunked", "FIFO", "urandom"])
def test_memory_is_bounded_and_nothing_hangs(memory_outcomes, case):
    result, text = memory_outcomes[case]
    assert result["outcome"] in ("ModelFormatError", "TableFormatError"), result
    assert text in result["message"] and Path(result["path"]).name in result["message"], result
    assert result["seconds"] < 10, result


def test_small_files_stay_small(tmp_path):
    # the limits do not refuse what a real model holds: a stored tensor of 2**20 elements
    path = write_pth(tmp_path / "big.pth", tensor_pickle(1 << 20, 1, 1 << 20), {"0": b"\0" * (8 << 20)})
    with torch_pickle.TorchArchive(path) as archive:
        assert archive.load().shape == (1 << 20,)


def _descriptor(**fields):
    return lambda t: t["model"]["descriptor"].update(fields)


def test_protobuf_repeated_values_are_bounded():
    # TF repeats the last listed value to fill the shape: 8 bytes must not become 8 GB
    from deepcomp_ase.io.protobuf_wire import DT_DOUBLE, WireError, encode_tensor_raw, parse_tensor

    small = parse_tensor(encode_tensor_raw(DT_DOUBLE, (1000,), [1.5], packed_values=True)).to_numpy()
    assert small.shape == (1000,) and (small == 1.5).all()
    with pytest.raises(WireError, match="above the limit"):
        parse_tensor(encode_tensor_raw(DT_DOUBLE, (10**9,), [1.5], packed_values=True)).to_numpy()


RANGES = {
    "rcut huge": (_descriptor(rcut=1e4), "model.descriptor.rcut"),
    "rcut zero": (_descriptor(rcut=0.0), "model.descriptor.rcut"),
    "rcut negative": (_descriptor(rcut=-6.0), "model.descriptor.rcut"),
    "rcut NaN": (_descriptor(rcut=float("nan")), "model.descriptor.rcut"),
    "rcut_smth beyond rcut": (_descriptor(rcut_smth=7.0), "model.descriptor.rcut_smth"),
    "sel huge": (_descriptor(sel=[10**9, 10]), "model.descriptor.sel"),
    "sel negative": (_descriptor(sel=[-1, 10]), "model.descriptor.sel"),
    "min_nbor_dist NaN": (lambda t: t["@variables"].update(min_nbor_dist=np.array(np.nan)), "min_nbor_dist"),
}


@pytest.mark.parametrize("case", list(RANGES))
def test_model_fields_are_checked_against_their_range(tree, tmp_path, case):
    edit, field = RANGES[case]
    path = write_dp(edited(tree, edit), tmp_path / "bad.dp")
    with pytest.raises(ModelFormatError) as info:
        parse_model(read_model_tree(path), str(path))
    assert str(path) in str(info.value) and f"'{field}'" in str(info.value)


def test_wrongly_typed_fields_give_one_line_errors(tree, tmp_path):
    # a number where a list belongs (neuron 1e9), a string where a number belongs
    for edit in (_descriptor(neuron=1e9), _descriptor(rcut="six"), _descriptor(sel="many")):
        path = write_dp(edited(tree, edit), tmp_path / "bad.dp")
        with pytest.raises(ModelFormatError, match=f"{path}: .*damaged") as info:
            parse_model(read_model_tree(path), str(path))
        assert "\n" not in str(info.value)


def test_nearly_flat_cell_and_huge_extent_are_refused():
    pot = DeepPotential.from_file(MODELS / "cuau_se_e2_a.dp", backend="numpy")
    pos = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    with pytest.raises(InputError, match="nearly flat.*axis"):
        pot.compute_atoms(pos, [0, 1], np.array([[5, 0, 0], [5, 1e-5, 0], [0, 0, 5.0]]), (True, True, True))
    with pytest.raises(InputError, match="spans"):
        pot.compute_atoms(pos * 1e8, [0, 1], None, (False, False, False))


# ----------------------------------------------------------------------------- 5: no silent NaN
def test_nan_weight_is_refused_on_load_and_compress(tree, tmp_path):
    def poison(t):
        t["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][1]["@variables"]["w"][3, 4] = np.nan

    path = write_dp(edited(tree, poison), tmp_path / "nan.dp")
    field = "model.descriptor.embeddings.networks[0].layers[1].@variables.w"
    with pytest.raises(ModelFormatError, match=re.escape(f"'{field}' holds 1 non-finite")):
        parse_model(read_model_tree(path), str(path))
    assert cli_main(["compress", "-i", str(path), "-o", str(tmp_path / "out.dcz")]) == 1
    assert not (tmp_path / "out.dcz").exists()


def test_nan_table_is_refused_on_load_and_before_writing(compressed_model, tmp_path):
    path = tmp_path / "nan.dcz"
    path.write_bytes(compressed_model("cu_se_e2_a_tanh").read_bytes())
    with h5py.File(path, "a") as f:
        name = next(iter(f["tables"]))
        f["tables"][name]["coeffs"][5, 0, 2] = np.inf
    with pytest.raises(ModelFormatError, match=f"table {name}.*'coeffs' holds 1 non-finite"):
        load_compressed(path)
    content = load_compressed(compressed_model("cu_se_e2_a_tanh"))
    next(iter(content.tables.values())).coeffs[0, 0, 0] = np.nan
    with pytest.raises(ModelFormatError, match="'coeffs' holds 1 non-finite"):
        save_compressed(tmp_path / "out.dcz", content)
    assert not (tmp_path / "out.dcz").exists()


# ----------------------------------------------------------------------------- 6: unpickler state
def test_build_on_an_allowed_global_is_refused(tmp_path):
    # BUILD with a slot state on _rebuild_parameter would set its __defaults__ for the whole process
    before = torch_pickle._rebuild_parameter.__defaults__
    payload = (b"\x80\x02ctorch._utils\n_rebuild_parameter\n" + b"N" + b"}" + _s("__defaults__")
               + b"(" + _i(1) + b"t" + b"s" + b"\x86" + b"b" + b".")
    path = write_pth(tmp_path / "build.pth", payload)
    with pytest.raises(ModelFormatError, match="BUILD"):
        read_model_tree(path)
    assert torch_pickle._rebuild_parameter.__defaults__ == before


# ----------------------------------------------------------------------------- 7: one-line errors
def _dp_with_json(tmp_path, text):
    path = tmp_path / "json.dp"
    with h5py.File(path, "w") as f:
        f.attrs["json"] = text
    return path


def _yaml(tmp_path, text):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


ONE_LINE = {
    "pickle nesting": (lambda p: write_pth(p / "deep.pth", b"\x80\x02" + b"]" * 5000 + b"a" * 4999 + b"."),
                       "nested more than"),
    "pickle cycle": (lambda p: write_pth(p / "cycle.pth", b"\x80\x02]q\x00h\x00a."), "nested more than"),
    "YAML nesting": (lambda p: _yaml(p, "model: " + "[" * 500 + "]" * 500), "nested more than"),
    "YAML nesting beyond libyaml": (lambda p: _yaml(p, "model: " + "[" * 5000 + "]" * 5000), "nesting depth"),
    "JSON nesting": (lambda p: _dp_with_json(p, "[" * 100000 + "]" * 100000), "nested too deep"),
    "JSON malformed": (lambda p: _dp_with_json(p, '{"model": '), "not valid JSON"),
    "YAML string coefficients": (lambda p: _yaml(p, "model: {'@class': np.ndarray, value: [a, b]}"),
                                 "field 'model.value' is not a regular array"),
    "YAML unknown dtype": (lambda p: _yaml(p, "model: {'@class': np.ndarray, dtype: V999999999, value: [1]}"),
                           "field 'model.dtype' is 'V999999999'"),
    "YAML ragged": (lambda p: _yaml(p, "model: {'@class': np.ndarray, value: [[1, 2], [3]]}"),
                    "not a regular array"),
}


@pytest.mark.parametrize("case", list(ONE_LINE))
def test_malformed_structures_give_one_line_errors(tmp_path, case):
    build, text = ONE_LINE[case]
    path = build(tmp_path)
    with pytest.raises(ModelFormatError) as info:
        read_model_tree(path)
    assert text in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_bogus_format_version(compressed_model, tmp_path):
    path = tmp_path / "v.dcz"
    path.write_bytes(compressed_model("cu_se_e2_a_tanh").read_bytes())
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = "two"
    with pytest.raises(TableFormatError, match="'format_version' is 'two'"):
        load_compressed(path)


@pytest.mark.parametrize("options", ['{"frequency": "often"}', '{"step": "fine"}', '[1, 2]',
                                     '{"frequency": 1, "extended_ranges": {"t": {"lower": "x"}}}'])
def test_bogus_options_attribute(compressed_model, tmp_path, options):
    path = tmp_path / "o.dcz"
    path.write_bytes(compressed_model("cu_se_e2_a_tanh").read_bytes())
    with h5py.File(path, "a") as f:
        f.attrs["options"] = options
    with pytest.raises(TableFormatError, match=r"field 'options\.\w*' is"):
        load_compressed(path)


def test_cli_prints_internal_error_for_a_bug(monkeypatch, capsys):
    import deepcomp_ase.info

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(deepcomp_ase.info, "describe", broken)
    assert cli_main(["info", "whatever.dp"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("deepcomp info: internal error: ZeroDivisionError: a bug")


def test_yaml_depth_limit_without_libyaml(tmp_path, monkeypatch):
    import yaml

    monkeypatch.setattr(yaml, "__with_libyaml__", False)  # the pure-Python loader's own check
    path = _yaml(tmp_path, "model: " + "[" * 500 + "]" * 500)
    with pytest.raises(ModelFormatError, match="nested more than 100 levels"):
        read_model_tree(path)


def test_fifo_as_trajectory_is_refused(tmp_path):
    from deepcomp_ase.systems import load_frames

    fifo = tmp_path / "traj.xyz"
    os.mkfifo(fifo)
    with pytest.raises(DeepCompError, match="traj.xyz: is a FIFO"):
        load_frames(fifo, None, ["Cu"])
    system = tmp_path / "system"
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0\n0\n")
    os.mkfifo(system / "set.000" / "coord.npy")
    with pytest.raises(DeepCompError, match="coord.npy: is a FIFO"):
        load_frames(system, None, ["Cu"])


def test_lammps_model_devi_out_file_uses_the_check(tmp_path):
    from deepcomp_ase.lammps.bridge import _DeviationOutput

    class OneRank:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 1

    fifo = tmp_path / "md.out"
    os.mkfifo(fifo)
    with pytest.raises(DeepCompError, match="out_file .*md.out.*not a regular file"):
        _DeviationOutput(OneRank(), {"out_file": str(fifo), "out_freq": 1}, 2, 1.0)
    model = tmp_path / "m.dcz"
    model.write_bytes(b"model")
    with pytest.raises(DeepCompError, match="is the input file"):
        _DeviationOutput(OneRank(), {"out_file": str(model), "out_freq": 1, "model_files": [str(model)]}, 2, 1.0)
    assert model.read_bytes() == b"model"
