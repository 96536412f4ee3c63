"""The torch-free reader of DeePMD-kit PyTorch models (.pth frozen, .pt checkpoints).

Oracle: DeePMD-kit 3.2.0's PyTorch backend (refsuite3, and the smaller models that
tests/data/make_pt_models.py trains the same way): the ``.dp`` that ``dp convert-backend`` wrote
from each ``.pth``, and DeePMD-kit's outputs of the ``.pth`` (variant ``pth``). Keys that
legitimately differ from the ``.dp`` tree: ``time`` (when the tree was made) and ``pt_version``
(the torch version that ran the conversion; no torch runs here).

Synthetic archives (multi-task checkpoints, edited model definitions, malicious pickles) are
written by :func:`write_checkpoint`, which emits the pickle opcodes ``torch.save`` emits
without importing torch.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import Reference, deviations, evaluate

from deepcomp_ase.cli import main
from deepcomp_ase.errors import DeepCompError, ModelFormatError, UnsupportedModelError
from deepcomp_ase.io.load import read_dp, read_model_tree
from deepcomp_ase.io.torch_pickle import TorchArchive
from deepcomp_ase.potential import DeepPotential

MODELS = Path(__file__).parent / "data" / "models"
# refsuite3 (300 training steps) and tiny models made by tests/data/make_pt_models.py
NAMES = ("pt_cuau_se_e2_a", "pt_cuau_se_atten_v2", "pt_cuau_se_e2_r", "pt_cuau_se_e3", "pt_cuau_hybrid",
         "pt_cuau_se_e2_a_tos", "pt_cuau_se_e2_a_excl")
SOURCES = [(n, ".pth") for n in NAMES] + [("pt_cuau_se_atten_v2", ".ckpt.pt")]
IGNORED = {"time", "pt_version"}


def assert_bitwise_same(got, want, where=""):
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert set(got) - IGNORED == set(want) - IGNORED, (where, set(got) ^ set(want))
        # the same key order as DeePMD-kit, so that a re-written .dp is laid out alike
        assert [k for k in got if k not in IGNORED] == [k for k in want if k not in IGNORED], where
        for k in set(want) - IGNORED:
            assert_bitwise_same(got[k], want[k], f"{where}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_bitwise_same(g, w, f"{where}[{i}]")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert (got.shape, got.dtype) == (want.shape, want.dtype), where
        assert got.tobytes() == want.tobytes(), where
    else:
        assert type(got) is type(want) and got == want, (where, got, want)


@pytest.mark.parametrize("name,ext", SOURCES)
def test_tree_equals_convert_backend_dp(name, ext):
    got = read_model_tree(MODELS / f"{name}{ext}")
    want = read_dp(MODELS / f"{name}.dp")
    assert want["backend"] == got["backend"] == "PyTorch"
    assert_bitwise_same(got, want)


def test_checkpoint_and_frozen_model_agree():
    a = read_model_tree(MODELS / "pt_cuau_se_atten_v2.pth")
    b = read_model_tree(MODELS / "pt_cuau_se_atten_v2.ckpt.pt")
    assert_bitwise_same(a, b)


def _check(pot, name, kinds, variant="pth"):
    ref = Reference(name)
    checked = 0
    for kind in kinds:
        for conf in ref.confs(kind):
            res = evaluate(pot, ref, conf)
            dev = deviations(res, ref.output(conf, variant), len(res.atom_energy))
            assert dev["e_per_atom"] <= 1e-10, (conf, dev)
            assert dev["force"] <= 1e-9, (conf, dev)
            assert dev["virial_per_atom"] <= 1e-9, (conf, dev)
            assert dev["atom_energy"] <= 1e-9, (conf, dev)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("name,ext", SOURCES)
def test_uncompressed_evaluation_matches_deepmd(name, ext):
    pot = DeepPotential.from_file(MODELS / f"{name}{ext}", backend="numpy")
    _check(pot, name, ("in_dist", "stretched", "overflow"))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_compressed_evaluation_matches_deepmd(name, tmp_path):
    from deepcomp_ase.compress.api import compress_model

    out = tmp_path / f"{name}.dcz"
    compress_model(MODELS / f"{name}.pth", out)
    _check(DeepPotential.from_file(out, backend="numpy"), name, ("in_dist",))


def test_info_reads_pth(capsys):
    assert main(["info", str(MODELS / "pt_cuau_se_e2_a.pth")]) == 0
    out = capsys.readouterr().out
    assert "Cu Au" in out and "se_e2_a" in out


# --------------------------------------------------------------------------- synthetic archives


class _Global:
    """Pickles as GLOBAL module.name (what the real torch object would pickle as)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self):  # pickle's save_reduce wants a callable; never called here
        raise AssertionError


class _Tensor:
    """A tensor view of a flat storage, as torch.save pickles it."""

    def __init__(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


_DTYPE_STORAGE = {"float64": "DoubleStorage", "float32": "FloatStorage", "int64": "LongStorage", "int32": "IntStorage"}
_REBUILD = _Global("torch._utils", "_rebuild_tensor_v2")
_ORDERED = _Global("collections", "OrderedDict")


class _Writer(pickle._Pickler):
    """Writes the pickle torch.save writes for dicts of tensors, with no torch: each tensor is a
    _rebuild_tensor_v2 call on a persistent storage that is stored as data/N."""

    def __init__(self, fh, storages: dict):
        super().__init__(fh, protocol=2)
        self.storages = storages

    def persistent_id(self, obj):
        if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__storage__":
            arr = obj[1]
            key = str(len(self.storages))
            self.storages[key] = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            return ("storage", _Global("torch", _DTYPE_STORAGE[arr.dtype.name]), key, "cpu", arr.size)
        return None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        elif isinstance(obj, np.ndarray):
            flat = obj.copy(order="C")  # (ascontiguousarray would make a 0-d array 1-d)
            stride = tuple(s // flat.itemsize for s in flat.strides)
            self.save(_Tensor(flat.ravel(), 0, obj.shape, stride))
        elif isinstance(obj, _Tensor):
            args = (("__storage__", obj.storage), obj.offset, tuple(obj.size), tuple(obj.stride), False, _Empty())
            self.save_reduce(_REBUILD, args)
        elif isinstance(obj, _Empty):
            self.save_reduce(_ORDERED, ())
        else:
            super().save(obj, save_persistent_id)


class _Empty:
    """An empty OrderedDict() call (the backward hooks of a tensor)."""


def _dumps(obj) -> tuple[bytes, dict]:
    storages: dict[str, bytes] = {}
    fh = io.BytesIO()
    _Writer(fh, storages).dump(obj)
    return fh.getvalue(), storages


def write_archive(path: Path, obj, root: str = "archive", raw_pickle: bytes | None = None) -> Path:
    data, storages = (raw_pickle, {}) if raw_pickle is not None else _dumps(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{root}/data.pkl", data)
        z.writestr(f"{root}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{root}/data/{key}", raw)
    return path


def _checkpoint_state():
    with TorchArchive(MODELS / "pt_cuau_se_atten_v2.ckpt.pt") as a:
        ckpt = a.load()
    return dict(ckpt["model"])  # a plain dict: the reader's own OrderedDict stand-in is not picklable as torch's


def write_checkpoint(path: Path, state: dict) -> Path:
    return write_archive(path, {"model": state}, root="model.ckpt-1")


def test_synthetic_writer_round_trips(tmp_path):
    state = _checkpoint_state()
    path = write_checkpoint(tmp_path / "copy.pt", state)
    assert_bitwise_same(read_model_tree(path), read_model_tree(MODELS / "pt_cuau_se_atten_v2.ckpt.pt"))


def _multitask(tmp_path) -> Path:
    state = _checkpoint_state()
    params = state["_extra_state"]["model_params"]
    # the second head names its descriptor in shared_dict, as multi-task inputs do
    scan = {**params, "descriptor": "shared_descriptor:1", "type_map": "shared_type_map"}
    shared = {"shared_descriptor": params["descriptor"], "shared_type_map": params["type_map"]}
    out = {"_extra_state": {**state["_extra_state"], "model_params": {
        "model_dict": {"CuAu_PBE": params, "CuAu_SCAN": scan}, "shared_dict": shared}}}
    for key, value in state.items():
        if key.startswith("model.Default."):
            rest = key[len("model.Default."):]
            out[f"model.CuAu_PBE.{rest}"] = value
            out[f"model.CuAu_SCAN.{rest}"] = value + 1.0 if rest == "atomic_model.out_bias" else value
    return write_checkpoint(tmp_path / "multi.ckpt-1.pt", out)


def test_multitask_checkpoint_needs_head(tmp_path):
    path = _multitask(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"heads \['CuAu_PBE', 'CuAu_SCAN'\].*--head") as info:
        read_model_tree(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsupportedModelError, match=r"'PBE' is not a head.*\['CuAu_PBE', 'CuAu_SCAN'\]"):
        read_model_tree(path, head="PBE")
    want = read_dp(MODELS / "pt_cuau_se_atten_v2.dp")
    assert_bitwise_same(read_model_tree(path, head="CuAu_PBE"), want)
    scan = read_model_tree(path, head="CuAu_SCAN")
    np.testing.assert_array_equal(scan["model"]["@variables"]["out_bias"],
                                  want["model"]["@variables"]["out_bias"] + 1.0)
    assert_bitwise_same(scan["model"]["descriptor"], want["model"]["descriptor"])


def test_real_multitask_checkpoint():
    """A checkpoint of DeePMD-kit multi-task training (two heads sharing a descriptor)."""
    path = MODELS / "pt_cuau_multitask.ckpt.pt"
    with pytest.raises(UnsupportedModelError, match=r"heads \['CuAu_a', 'CuAu_b'\]"):
        read_model_tree(path)
    # equals dp --pt freeze --head CuAu_b followed by dp convert-backend
    assert_bitwise_same(read_model_tree(path, head="CuAu_b"), read_dp(MODELS / "pt_cuau_multitask_CuAu_b.dp"))
    a = read_model_tree(path, head="CuAu_a")["model"]
    b = read_model_tree(path, head="CuAu_b")["model"]
    assert_bitwise_same(a["descriptor"], b["descriptor"])  # shared
    assert a["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"].tobytes() != \
        b["fitting"]["nets"]["networks"][0]["layers"][0]["@variables"]["w"].tobytes()


def test_head_through_the_cli(tmp_path, capsys):
    path = _multitask(tmp_path)
    assert main(["info", str(path), "--head", "CuAu_SCAN"]) == 0
    assert "se_atten_v2" in capsys.readouterr().out
    assert main(["info", str(path)]) != 0
    assert "CuAu_PBE" in capsys.readouterr().err


def test_head_refused_for_single_models():
    with pytest.raises(UnsupportedModelError, match="single model"):
        read_model_tree(MODELS / "pt_cuau_se_e2_a.pth", head="x")
    with pytest.raises(DeepCompError, match="heads exist only"):
        read_model_tree(MODELS / "pt_cuau_se_e2_a.dp", head="x")


@pytest.mark.parametrize("edit,field,value", [
    (lambda m: m["descriptor"].update(type="dpa2"), "model.descriptor.type", "dpa2"),
    (lambda m: m["descriptor"].update(type="se_e3_tebd"), "model.descriptor.type", "se_e3_tebd"),
    (lambda m: m["descriptor"].update(attn_layer=2, lmax=2), "model.descriptor.lmax", "2"),
    (lambda m: m["fitting_net"].update(type="dipole"), "model.fitting_net.type", "dipole"),
    (lambda m: m["fitting_net"].update(type="polar"), "model.fitting_net.type", "polar"),
    (lambda m: m.update(spin={"use_spin": [True, False]}), "model.spin", "use_spin"),
    (lambda m: m.update(type="zbl"), "model.type", "zbl"),
])
def test_unsupported_model_refused_naming_the_field(tmp_path, edit, field, value):
    state = _checkpoint_state()
    params = json.loads(json.dumps(state["_extra_state"]["model_params"]))
    edit(params)
    state["_extra_state"] = {**state["_extra_state"], "model_params": params}
    path = write_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(UnsupportedModelError) as info:
        read_model_tree(path)
    msg = str(info.value)
    assert str(path) in msg and f"'{field}'" in msg and value in msg


# --------------------------------------------------------------------------- untrusted pickles


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


def _evil_pickles(sentinel: Path) -> dict[str, bytes]:
    import os

    cmd = f"touch {sentinel}"
    return {
        "os.system via __reduce__": pickle.dumps(_Evil(os.system, cmd), protocol=2),
        "builtins.eval": pickle.dumps(_Evil(eval, f"open({str(sentinel)!r}, 'w')"), protocol=2),
        "builtins.exec, protocol 4": pickle.dumps(_Evil(exec, f"open({str(sentinel)!r}, 'w')"), protocol=4),
        "nested in a state dict": pickle.dumps({"model": {"x": _Evil(os.system, cmd)}}, protocol=2),
        "__torch__ name with a call": b"\x80\x02c__torch__.m\nC\nX\x01\x00\x00\x00xq\x00\x85R.",
    }


@pytest.mark.parametrize("case", list(_evil_pickles(Path("/nonexistent"))))
@pytest.mark.parametrize("ext", [".pth", ".pt"])
def test_malicious_pickle_refused_and_not_run(tmp_path, case, ext):
    sentinel = tmp_path / "pwned"
    path = write_archive(tmp_path / f"evil{ext}", None, raw_pickle=_evil_pickles(sentinel)[case])
    with pytest.raises(ModelFormatError) as info:
        DeepPotential.from_file(path)
    assert str(path) in str(info.value)
    assert not sentinel.exists()


def test_refusal_names_the_global(tmp_path):
    import os

    path = write_archive(tmp_path / "evil.pth", None, raw_pickle=pickle.dumps(_Evil(os.system, "true"), protocol=2))
    refused = r"asks for the Python object '(posix|os)\.system'.*Nothing from the file was run"
    with pytest.raises(ModelFormatError, match=refused):
        read_model_tree(path)


# --------------------------------------------------------------------------- tensors


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "int64"])
def test_tensor_dtypes_offsets_and_strides(tmp_path, dtype):
    base = np.arange(60).astype(dtype)
    # a transposed view of base[5:17] with shape (4, 3): strides (1, 4)
    path = write_archive(tmp_path / "t.pt", {"t": _Tensor(base, 5, (4, 3), (1, 4))})
    with TorchArchive(path) as a:
        got = a.load()["t"]
    np.testing.assert_array_equal(got, base[5:17].reshape(3, 4).T)
    assert got.dtype == np.dtype(dtype)


def test_big_endian_archive(tmp_path):
    base = np.linspace(0.0, 1.0, 7)
    data, _ = _dumps({"t": base})
    with zipfile.ZipFile(tmp_path / "be.pt", "w") as z:
        z.writestr("be/data.pkl", data)
        z.writestr("be/byteorder", "big")
        z.writestr("be/data/0", base.astype(">f8").tobytes())
    with TorchArchive(tmp_path / "be.pt") as a:
        np.testing.assert_array_equal(a.load()["t"], base)


def test_tensor_past_its_storage_refused(tmp_path):
    path = write_archive(tmp_path / "short.pt", {"t": _Tensor(np.zeros(4), 2, (3,), (1,))})
    with pytest.raises(ModelFormatError, match=f"{path}: .*reaches element 4 of a storage of 4"):
        TorchArchive(path).load()
