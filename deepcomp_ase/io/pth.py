"""DeePMD-kit PyTorch-backend models read without torch: frozen ``.pth`` and checkpoints ``.pt``.

``dp convert-backend model.pth model.dp`` rebuilds the PyTorch model from its definition
(``model_def_script``) and state dict, then calls ``serialize()``. We do the same from the
archive's pickle (see :mod:`.torch_pickle`): the definition gives the hyper-parameters, the
state dict the arrays, and the functions below lay them out as DeePMD-kit's ``serialize()``
methods do, so the tree equals the one in the ``.dp`` file (apart from the fields that record
the conversion: ``software``, ``version``, ``time``, ``pt_version``).

* ``.pth`` (``dp --pt freeze``): a TorchScript archive; ``data.pkl`` holds the scripted module tree,
  whose ``model_def_script`` attribute is the model definition (JSON) and whose tensors are the
  state dict.
* ``.pt`` (``model.ckpt-N.pt``): ``torch.save({"model": state_dict, "optimizer": ...})`` of the
  training wrapper; ``state_dict["_extra_state"]["model_params"]`` is the model definition and the
  tensors of model ``<head>`` sit under ``model.<head>.`` (``Default`` for single-task training).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError, UnsupportedModelError
from .tree import embedding_net_record, layer_record
from .torch_pickle import ScriptObject, TorchArchive, flatten_script_module

TREE_SOFTWARE = "deepmd-kit"
TREE_VERSION = "3.2.0"

# DeePMD-kit's global float precision: PyTorch models resolve "default" to it
_PRECISIONS = {"default": "float64", "float64": "float64", "double": "float64", "float32": "float32",
               "single": "float32", "float16": "float16", "half": "float16", "bfloat16": "bfloat16"}
_SUPPORTED_DESCRIPTORS = "se_e2_a, se_e2_r, se_e3, se_atten_v2, dpa1 (se_atten) and hybrid"


class _State:
    """The arrays of one model: ``get(name)`` with errors that name the file and the entry.

    Every array read is recorded, so that :meth:`check_all_used` can refuse a state dict holding
    a tensor the reader did not place in the tree.
    """

    def __init__(self, path: Path, arrays: dict[str, Any], prefix: str) -> None:
        self.path = path
        self.arrays = arrays
        self.prefix = prefix
        self.used: set[str] = set()
        self.dp_tables = False  # table entries accounted for by io/pth_compressed (a compressed model)

    def key(self, name: str) -> str:
        return self.prefix + name

    def has(self, name: str) -> bool:
        return isinstance(self.arrays.get(self.key(name)), np.ndarray)

    def get(self, name: str) -> np.ndarray:
        value = self.arrays.get(self.key(name))
        self.used.add(self.key(name))
        if not isinstance(value, np.ndarray):
            raise ModelFormatError(
                f"{self.path}: tensor '{self.key(name)}' is missing from the model's state dict "
                "(the file does not match its model definition; is it damaged?)"
            )
        return value

    def opt(self, name: str) -> np.ndarray | None:
        value = self.arrays.get(self.key(name))
        self.used.add(self.key(name))
        return value if isinstance(value, np.ndarray) and value.size else None

    def check_mask(self, name: str, expected: np.ndarray, setting: str) -> None:
        """A PyTorch exclusion mask buffer (``emask.type_mask``), if saved, must match the exclusions."""
        if not self.has(name):
            return
        mask = self.get(name)
        if mask.shape != expected.shape or not np.array_equal(mask, expected):
            raise ModelFormatError(
                f"{self.path}: tensor '{self.key(name)}' ({mask.tolist()}) does not match the model definition's "
                f"{setting} (which gives {expected.tolist()}); the file contradicts itself"
            )

    def check_all_used(self) -> None:
        """Refuse a tensor of this model that no part of the tree took, unless it is one of:

        * ``X._networks.K...``: TorchScript's second name for ``X.networks.K...`` (a NetworkCollection
          registers its module list under both); accepted when equal to the tensor that was read;
        * ``compress_data.K``, ``compress_info.K``, ``type_embd_data``: the tables of `dp compress`,
          empty in an uncompressed model (a non-empty one is refused), accounted for by
          io/pth_compressed.add_dp_tables in a model flagged compressed (``dp_tables``).
        """
        for key in sorted(self.arrays, key=lambda k: ("._networks." in k, k)):  # name the primary first
            if not key.startswith(self.prefix) or key in self.used:
                continue
            value = self.arrays[key]
            if not isinstance(value, np.ndarray):
                continue
            alias = key.replace("._networks.", ".networks.")
            if alias != key and alias in self.used:
                if np.array_equal(value, self.arrays.get(alias)):
                    continue
                raise ModelFormatError(f"{self.path}: tensors '{key}' and '{alias}' (two names of one network) "
                                       "differ; the file contradicts itself")
            name = key.rsplit(".", 2)
            if (value.size == 0 or self.dp_tables) and (name[-1] == "type_embd_data"
                                                        or name[-2] in ("compress_data", "compress_info")):
                continue
            raise UnsupportedModelError(
                f"{self.path}: tensor '{key}' (shape {tuple(value.shape)}) is not used by any part of the model "
                "deepcomp reads. An unknown weight may change what the model computes, so the file is refused "
                "rather than read without it; deepcomp reads models as DeePMD-kit 3.0-3.2 write them"
            )


def _pair_mask(ntypes: int, exclude_types) -> np.ndarray:
    """DeePMD-kit's pair-exclusion mask over (ntypes + 1)**2 type pairs (the last type: padding)."""
    excl = {(int(a), int(b)) for a, b in exclude_types or []}
    excl |= {(b, a) for a, b in excl}
    return np.array([0 if (i, j) in excl else 1 for i in range(ntypes + 1) for j in range(ntypes + 1)],
                    dtype=np.int32)


def _atom_mask(ntypes: int, exclude_types) -> np.ndarray:
    return np.array([0 if t in set(exclude_types or []) else 1 for t in range(ntypes)], dtype=np.int32)


def _unsupported(path: Path, field: str, found: Any, fix: str) -> UnsupportedModelError:
    return UnsupportedModelError(f"{path}: field '{field}' is {found!r}; {fix}")


def _precision(value: Any) -> str:
    return _PRECISIONS.get(value if value is not None else "default", value)


# --------------------------------------------------------------------------- reading the archive


def read_pt_or_pth(path, head: str | None = None) -> dict:
    """A PyTorch zip archive, frozen model or checkpoint, told apart by its content (not its name)."""
    path = Path(path)
    with TorchArchive(path) as archive:
        obj = archive.load("data")
    if isinstance(obj, ScriptObject):
        return _from_script_module(path, obj, head)
    return _from_checkpoint(path, obj, head)


def read_pth(path, head: str | None = None) -> dict:
    """Return the DeePMD-kit serialization tree of a frozen PyTorch model (``dp --pt freeze``)."""
    path = Path(path)
    with TorchArchive(path) as archive:
        root = archive.load("data")
    return _from_script_module(path, root, head)


def _from_script_module(path: Path, root: Any, head: str | None) -> dict:
    if not isinstance(root, ScriptObject):
        raise ModelFormatError(
            f"{path}: its data.pkl holds a {type(root).__name__}, not a TorchScript module; a frozen "
            "DeePMD-kit model (`dp --pt freeze`) was expected (a training checkpoint is named .pt)"
        )
    if head is not None:
        raise UnsupportedModelError(
            f"{path}: --head {head!r} was given, but a frozen .pth holds a single model "
            "(the head was chosen by `dp --pt freeze --head`); drop --head"
        )
    script = root.attrs.get("model_def_script")
    if not isinstance(script, str):
        raise ModelFormatError(
            f"{path}: the TorchScript module has no 'model_def_script' string; it is not a model frozen by "
            "DeePMD-kit's PyTorch backend (`dp --pt freeze`)"
        )
    try:
        model_def = json.loads(script)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: 'model_def_script' is not valid JSON ({exc})") from None
    flag = _compressed_flag(root)
    arrays = flatten_script_module(root)
    state = _State(path, arrays, "")
    state.dp_tables = bool(flag)  # add_dp_tables below accounts for the table entries
    tree = _tree(path, model_def, state)
    if flag:  # `dp --pt compress` output: the nets stay, DeePMD-kit's tables join them
        from .pth_compressed import add_dp_tables

        add_dp_tables(tree, arrays, path, flag)
    return tree


def read_pt(path, head: str | None = None) -> dict:
    """Return the DeePMD-kit serialization tree of a training checkpoint (``model.ckpt-N.pt``)."""
    path = Path(path)
    with TorchArchive(path) as archive:
        obj = archive.load("data")
    if isinstance(obj, ScriptObject):
        raise ModelFormatError(
            f"{path}: this is a TorchScript archive (a frozen model), not a training checkpoint; name it .pth"
        )
    return _from_checkpoint(path, obj, head)


def _from_checkpoint(path: Path, obj: Any, head: str | None) -> dict:
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    extra = state.get("_extra_state") if isinstance(state, dict) else None
    params = extra.get("model_params") if isinstance(extra, dict) else None
    if not isinstance(params, dict):
        raise ModelFormatError(
            f"{path}: no '_extra_state' -> 'model_params' in the checkpoint; it is not a DeePMD-kit PyTorch "
            "training checkpoint (model.ckpt-N.pt written by `dp --pt train`)"
        )
    if "model_dict" in params:  # multi-task training: one model per head
        heads = list(params["model_dict"])
        if head is None:
            raise UnsupportedModelError(
                f"{path}: this is a multi-task checkpoint with heads {heads}; choose one with --head "
                "(as `dp --pt freeze --head` does)"
            )
        if head not in params["model_dict"]:
            raise UnsupportedModelError(
                f"{path}: --head {head!r} is not a head of this checkpoint; its heads are {heads}"
            )
        model_def = _resolve_shared(path, params["model_dict"][head], params.get("shared_dict") or {})
    else:
        if head is not None and head != "Default":
            raise UnsupportedModelError(
                f"{path}: --head {head!r} was given, but this is a single-task checkpoint (its only model is "
                "'Default'); drop --head"
            )
        head, model_def = "Default", params
    if not isinstance(model_def, dict):
        raise ModelFormatError(
            f"{path}: the model definition of head {head!r} is {type(model_def).__name__}, not a dict"
        )
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    st = _State(path, arrays, f"model.{head}.")
    if not st.has("atomic_model.out_bias") and not any(k.startswith(st.prefix) for k in arrays):
        raise ModelFormatError(f"{path}: the checkpoint holds no tensors under 'model.{head}.'")
    return _tree(path, model_def, st)


def _resolve_shared(path: Path, model_def: Any, shared: dict) -> Any:
    """Multi-task definitions may name a shared component ("my_descriptor" or "my_descriptor:1")."""
    if not isinstance(model_def, dict):
        return model_def
    out = dict(model_def)
    for key in ("type_map", "descriptor", "fitting_net"):
        value = out.get(key)
        if isinstance(value, str):
            name = value.split(":")[0]
            if name not in shared:
                raise ModelFormatError(
                    f"{path}: field 'model.{key}' names the shared component {value!r}, which is not in "
                    f"'shared_dict' (it has {sorted(shared)})"
                )
            out[key] = shared[name]
    return out


def _compressed_flag(root: ScriptObject) -> str | None:
    """``dp --pt compress`` flags the descriptor (``compress``/``geo_compress``/``tebd_compress``):
    the first flag set, or None."""
    stack, seen = [("model", root)], set()
    while stack:
        where, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, value in node.attrs.items():
            if key in ("compress", "geo_compress", "tebd_compress") and value is True:
                return f"{where}.{key}"
            if isinstance(value, ScriptObject):
                stack.append((f"{where}.{key}", value))
    return None


# --------------------------------------------------------------------------- the tree


def _tree(path: Path, model_def: dict, st: _State) -> dict:
    tree: dict[str, Any] = {
        "software": TREE_SOFTWARE,
        "version": TREE_VERSION,
        "time": str(datetime.now(timezone.utc)),
        "backend": "PyTorch",
        "model": _model(path, model_def, st),
        "model_def_script": model_def,
        "@variables": {},
    }
    min_nbor = st.arrays.get(st.key("min_nbor_dist"))
    st.used.add(st.key("min_nbor_dist"))
    if isinstance(min_nbor, np.ndarray) and min_nbor.size == 1:
        tree["@variables"]["min_nbor_dist"] = min_nbor.reshape(())
    st.check_all_used()
    return tree


def _model(path: Path, m: dict, st: _State) -> dict:
    mtype = m.get("type", "standard")
    if mtype != "standard":
        raise _unsupported(path, "model.type", mtype,
                           "only standard (descriptor + fitting) energy models are supported")
    for key, what in (("spin", "spin models"), ("use_srtab", "tabulated pair potentials (use_srtab / ZBL)"),
                      ("hessian_mode", "Hessian models")):
        if m.get(key):
            raise _unsupported(path, f"model.{key}", m[key], f"{what} are not supported")
    type_map = m.get("type_map")
    if not isinstance(type_map, list) or not type_map:
        raise ModelFormatError(f"{path}: field 'model.type_map' is {type_map!r}; expected a list of element names")
    ntypes = len(type_map)
    d = m.get("descriptor")
    if not isinstance(d, dict):
        raise ModelFormatError(f"{path}: field 'model.descriptor' is missing from the model definition")
    descriptor = _descriptor(path, d, ntypes, type_map, st, "atomic_model.descriptor.", "model.descriptor")
    f = m.get("fitting_net")
    if not isinstance(f, dict):
        raise ModelFormatError(f"{path}: field 'model.fitting_net' is missing from the model definition")
    mixed = descriptor["type"] in ("se_atten_v2", "dpa1") or (
        descriptor["type"] == "hybrid" and any(c["type"] in ("se_atten_v2", "dpa1") for c in descriptor["list"]))
    fitting = _fitting(path, f, ntypes, mixed, type_map, st, m.get("atom_exclude_types", []))
    # the atomic model's own exclusion masks (present only when it excludes something)
    st.check_mask("atomic_model.atom_excl.type_mask", _atom_mask(ntypes, m.get("atom_exclude_types")),
                  "model.atom_exclude_types")
    st.check_mask("atomic_model.pair_excl.type_mask", _pair_mask(ntypes, m.get("pair_exclude_types")),
                  "model.pair_exclude_types")
    return {
        "type_map": type_map,
        "atom_exclude_types": m.get("atom_exclude_types", []),
        "pair_exclude_types": m.get("pair_exclude_types", []),
        "rcond": None,
        "preset_out_bias": m.get("preset_out_bias"),
        "@variables": {"out_bias": st.get("atomic_model.out_bias"), "out_std": st.get("atomic_model.out_std")},
        "@class": "Model",
        "@version": 2,
        "type": "standard",
        "descriptor": descriptor,
        "fitting": fitting,
    }


# --------------------------------------------------------------------------- networks


def _layer(st: _State, name: str, *, activation: str, resnet: bool, precision: str, trainable: bool) -> dict:
    w = st.get(name + ".matrix")
    b = st.opt(name + ".bias") if st.has(name + ".bias") else None
    idt = st.get(name + ".idt") if st.has(name + ".idt") else None
    if w.ndim != 2:
        raise ModelFormatError(f"{st.path}: tensor '{st.key(name)}.matrix' has shape {w.shape}, expected a matrix")
    return layer_record(w, b, idt, activation=activation, resnet=resnet, precision=precision,
                        trainable=trainable)


def _n_layers(st: _State, name: str) -> int:
    n = 0
    while st.has(f"{name}.layers.{n}.matrix"):
        n += 1
    if n == 0:
        raise ModelFormatError(f"{st.path}: network '{st.key(name)}' has no layers in the state dict")
    return n


def _embedding_net(st: _State, name: str, *, neuron: list[int], activation: str, resnet_dt: bool,
                   precision: str, trainable: bool = True, bias: bool = True) -> dict:
    n = _n_layers(st, name)
    if n != len(neuron):
        raise ModelFormatError(
            f"{st.path}: network '{st.key(name)}' has {n} layers, the definition's neuron is {neuron}"
        )
    layers = [_layer(st, f"{name}.layers.{l}", activation=activation, resnet=True, precision=precision,
                     trainable=trainable) for l in range(n)]
    return embedding_net_record(layers[0]["@variables"]["w"].shape[0], neuron, activation, resnet_dt, bias,
                                precision, layers)


def _collection_ndim(st: _State, name: str, ntypes: int, where: str, declared) -> int:
    """1 (one net per neighbour type) or 2 (per type pair), from the networks the state dict holds.

    ``type_one_side`` defaults to true in DeePMD-kit's PyTorch descriptors (false in TensorFlow), and
    hand-written model definitions may omit it: the networks say which it is.
    """
    count = 0
    while st.has(f"{name}.networks.{count}.layers.0.matrix"):
        count += 1
    ndim = {ntypes: 1, ntypes * ntypes: 2}.get(count)
    if ntypes == 1 and count == 1:
        ndim = 1 if declared is None or declared else 2
    if ndim is None:
        raise ModelFormatError(
            f"{st.path}: '{st.key(name)}' holds {count} networks; a descriptor over {ntypes} types has {ntypes} "
            f"(type_one_side) or {ntypes * ntypes}"
        )
    if declared is not None and bool(declared) != (ndim == 1):
        raise ModelFormatError(
            f"{st.path}: field '{where}.type_one_side' is {declared!r}, but '{st.key(name)}' holds {count} networks "
            f"({'one per type pair' if ndim == 2 else 'one per neighbour type'}); the file contradicts itself"
        )
    return ndim


def _collection(st: _State, name: str, ndim: int, ntypes: int, network_type: str, build) -> dict:
    nets = []
    for k in range(ntypes**ndim):
        key = f"{name}.networks.{k}"
        if not st.has(f"{key}.layers.0.matrix"):
            raise ModelFormatError(f"{st.path}: network '{st.key(key)}' is missing from the state dict")
        nets.append(build(key))
    return {"@class": "NetworkCollection", "@version": 1, "ndim": ndim, "ntypes": ntypes,
            "network_type": network_type, "networks": nets}


def _env_mat(d: dict, protection: bool = True) -> dict:
    return {"rcut": d["rcut"], "rcut_smth": d["rcut_smth"],
            "protection": d.get("env_protection", 0.0) if protection else 0.0, "use_exp_switch": False}


def _sel(path: Path, d: dict, where: str) -> list[int]:
    sel = d.get("sel")
    if isinstance(sel, int):
        return [sel]
    if isinstance(sel, list) and sel and all(isinstance(s, int) for s in sel):
        return list(sel)
    raise ModelFormatError(
        f"{path}: field '{where}.sel' is {sel!r}; expected a list of integers (an 'auto' sel is resolved by "
        "`dp train`, so a trained model always has numbers)"
    )


def _stats(st: _State, block: str, ntypes: int, nnei: int, width: int) -> dict:
    out = {}
    for key, name in (("davg", "mean"), ("dstd", "stddev")):
        arr = st.get(f"{block}{name}")
        if arr.shape != (ntypes, nnei, width):
            raise ModelFormatError(
                f"{st.path}: tensor '{st.key(block + name)}' has shape {arr.shape}, expected {(ntypes, nnei, width)}"
            )
        out[key] = arr
    return out


def _common(path, d, where):
    for key in ("use_exp_switch",):
        if d.get(key):
            raise _unsupported(path, f"{where}.{key}", d[key], "this option is not supported")
    return (_sel(path, d, where), list(d["neuron"]), d.get("activation_function", "tanh"),
            bool(d.get("resnet_dt", False)), _precision(d.get("precision", "default")))


def _descrpt_se_a(path, d, ntypes, type_map, st, block, where):
    sel, neuron, act, resnet_dt, prec = _common(path, d, where)
    block += "sea."
    one_side = _collection_ndim(st, block + "filter_layers", ntypes, where, d.get("type_one_side")) == 1
    st.check_mask(block + "emask.type_mask", _pair_mask(ntypes, d.get("exclude_types")), f"{where}.exclude_types")
    trainable = d.get("trainable", True)
    return {
        "@class": "Descriptor", "type": "se_e2_a", "@version": 2,
        "rcut": d["rcut"], "rcut_smth": d["rcut_smth"], "sel": sel, "neuron": neuron,
        "axis_neuron": d.get("axis_neuron", 16), "resnet_dt": resnet_dt,
        "set_davg_zero": d.get("set_davg_zero", False), "activation_function": act, "precision": prec,
        "embeddings": _collection(st, block + "filter_layers", 1 if one_side else 2, ntypes, "embedding_network",
                                  lambda k: _embedding_net(st, k, neuron=neuron, activation=act, resnet_dt=resnet_dt,
                                                           precision=prec, trainable=trainable)),
        "env_mat": _env_mat(d),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "@variables": _stats(st, block, ntypes, sum(sel), 4),
        "type_map": type_map, "trainable": True, "type_one_side": one_side, "spin": None,
    }


def _descrpt_se_r(path, d, ntypes, type_map, st, block, where):
    sel, neuron, act, resnet_dt, prec = _common(path, d, where)
    trainable = d.get("trainable", True)
    # PyTorch's se_e2_r has one net per neighbour type whatever the definition's type_one_side says
    # (its constructor takes no such argument)
    if _collection_ndim(st, block + "filter_layers", ntypes, where, None) != 1:
        raise UnsupportedModelError(f"{path}: '{st.key(block)}filter_layers' holds one network per type pair; "
                                    "DeePMD-kit's PyTorch se_e2_r has one per neighbour type")
    st.check_mask(block + "emask.type_mask", _pair_mask(ntypes, d.get("exclude_types")), f"{where}.exclude_types")
    if st.has(block + "sec"):  # cumulative sel, a derived buffer
        sec = np.cumsum([0, *sel])
        if not np.array_equal(st.get(block + "sec"), sec):
            raise ModelFormatError(f"{path}: tensor '{st.key(block + 'sec')}' does not match {where}.sel {sel}")
    return {
        "@class": "Descriptor", "type": "se_r", "@version": 2,
        "rcut": d["rcut"], "rcut_smth": d["rcut_smth"], "sel": sel, "neuron": neuron,
        "resnet_dt": resnet_dt, "set_davg_zero": d.get("set_davg_zero", False),
        "activation_function": act, "precision": prec,
        "embeddings": _collection(st, block + "filter_layers", 1, ntypes, "embedding_network",
                                  lambda k: _embedding_net(st, k, neuron=neuron, activation=act, resnet_dt=resnet_dt,
                                                           precision=prec, trainable=trainable)),
        # DeePMD-kit's se_r builds its env-mat helper without the protection
        "env_mat": _env_mat(d, protection=False),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "@variables": _stats(st, block, ntypes, sum(sel), 1),
        "type_map": type_map, "trainable": True, "type_one_side": True, "spin": None,
    }


def _descrpt_se_e3(path, d, ntypes, type_map, st, block, where):
    sel, neuron, act, resnet_dt, prec = _common(path, d, where)
    block += "seat."
    trainable = d.get("trainable", True)
    st.check_mask(block + "emask.type_mask", _pair_mask(ntypes, d.get("exclude_types")), f"{where}.exclude_types")
    return {
        "@class": "Descriptor", "type": "se_e3", "@version": 2,
        "rcut": d["rcut"], "rcut_smth": d["rcut_smth"], "sel": sel, "neuron": neuron,
        "resnet_dt": resnet_dt, "set_davg_zero": d.get("set_davg_zero", False),
        "activation_function": act, "precision": prec,
        "embeddings": _collection(st, block + "filter_layers", 2, ntypes, "embedding_network",
                                  lambda k: _embedding_net(st, k, neuron=neuron, activation=act, resnet_dt=resnet_dt,
                                                           precision=prec, trainable=trainable)),
        "env_mat": _env_mat(d),
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "type_map": type_map,
        "@variables": _stats(st, block, ntypes, sum(sel), 4),
        "trainable": trainable,
    }


def _descrpt_dpa1(path, d, ntypes, type_map, st, block, where):
    from .pth_dpa1 import descrpt_dpa1  # DPA-1 with attention layers: its own module

    return descrpt_dpa1(path, d, ntypes, type_map, st, block, where)


def _descrpt_se_atten_v2(path, d, ntypes, type_map, st, block, where):
    attn_layer = d.get("attn_layer", 2)
    if attn_layer != 0:
        return _descrpt_dpa1(path, d, ntypes, type_map, st, block, where)
    sel, neuron, act, resnet_dt, prec = _common(path, d, where)
    raw_prec = d.get("precision", "default")
    tebd_dim = int(d.get("tebd_dim", 8))
    use_tebd_bias = bool(d.get("use_tebd_bias", False))
    if d.get("use_econf_tebd"):
        raise _unsupported(path, where + ".use_econf_tebd", True,
                           "electronic-configuration type embeddings are not supported")
    trainable = d.get("trainable", True)
    ln_eps = d.get("ln_eps")
    ln_eps = 1e-5 if ln_eps is None else ln_eps
    nnei = sum(sel)
    atten = block + "se_atten."
    # the strip net reads the neighbour's type embedding (type_one_side) or [neighbour, centre]
    strip_in = st.get(atten + "filter_layers_strip.networks.0.layers.0.matrix").shape[0]
    one_side = strip_in == tebd_dim
    if strip_in not in (tebd_dim, 2 * tebd_dim) or ("type_one_side" in d and bool(d["type_one_side"]) != one_side):
        raise ModelFormatError(
            f"{path}: '{st.key(atten)}filter_layers_strip' takes {strip_in} inputs, which matches neither "
            f"{where}.type_one_side {d.get('type_one_side')!r} nor the type embedding width {tebd_dim}")
    st.check_mask(atten + "emask.type_mask", _pair_mask(ntypes, d.get("exclude_types")), f"{where}.exclude_types")
    net = dict(neuron=neuron, activation=act, resnet_dt=resnet_dt, precision=prec, trainable=trainable)
    tebd_name = block + "type_embedding.embedding.embedding_net"
    tebd_w = st.get(tebd_name + ".layers.0.matrix")
    if tebd_w.shape != (ntypes, tebd_dim) or st.has(tebd_name + ".layers.1.matrix"):
        raise ModelFormatError(f"{path}: tensor '{st.key(tebd_name)}.layers.0.matrix' has shape {tebd_w.shape}; "
                               f"expected one linear layer of shape {(ntypes, tebd_dim)}")
    type_embedding = {
        "@class": "TypeEmbedNet", "@version": 2, "ntypes": ntypes, "neuron": [tebd_dim], "resnet_dt": False,
        "precision": raw_prec, "activation_function": "Linear", "trainable": trainable, "padding": True,
        "use_econf_tebd": False, "use_tebd_bias": use_tebd_bias, "type_map": type_map,
        "embedding": _embedding_net(st, tebd_name, neuron=[tebd_dim], activation="Linear", resnet_dt=False,
                                    precision=prec, trainable=trainable, bias=use_tebd_bias),
    }
    return {
        "@class": "Descriptor", "type": "se_atten_v2", "@version": 2,
        "rcut": d["rcut"], "rcut_smth": d["rcut_smth"], "sel": sel, "ntypes": ntypes, "neuron": neuron,
        "axis_neuron": d.get("axis_neuron", 16), "tebd_dim": tebd_dim, "set_davg_zero": d.get("set_davg_zero", True),
        "attn": d.get("attn", 128), "attn_layer": 0, "attn_dotr": d.get("attn_dotr", True), "attn_mask": False,
        "activation_function": act, "resnet_dt": resnet_dt, "scaling_factor": d.get("scaling_factor", 1.0),
        "normalize": d.get("normalize", True), "temperature": d.get("temperature"),
        "trainable_ln": d.get("trainable_ln", True), "ln_eps": ln_eps, "type_one_side": one_side,
        "concat_output_tebd": d.get("concat_output_tebd", True), "use_econf_tebd": False,
        "use_tebd_bias": use_tebd_bias, "type_map": type_map, "precision": prec,
        "embeddings": _collection(st, atten + "filter_layers", 0, ntypes, "embedding_network",
                                  lambda k: _embedding_net(st, k, **net)),
        "embeddings_strip": _collection(st, atten + "filter_layers_strip", 0, ntypes, "embedding_network",
                                        lambda k: _embedding_net(st, k, **net)),
        "attention_layers": {
            "@class": "NeighborGatedAttention", "@version": 1, "layer_num": 0, "nnei": nnei,
            "embed_dim": neuron[-1], "hidden_dim": d.get("attn", 128), "dotr": d.get("attn_dotr", True),
            "do_mask": d.get("attn_mask", False), "scaling_factor": d.get("scaling_factor", 1.0),
            "normalize": d.get("normalize", True), "temperature": d.get("temperature"),
            "trainable_ln": d.get("trainable_ln", True), "ln_eps": ln_eps, "precision": raw_prec,
            "attention_layers": [],
        },
        "env_mat": _env_mat(d, protection=False),
        "type_embedding": type_embedding,
        "exclude_types": d.get("exclude_types", []),
        "env_protection": d.get("env_protection", 0.0),
        "@variables": _stats(st, atten, ntypes, nnei, 4),
        "trainable": trainable,
        "spin": None,
    }


def _descrpt_hybrid(path, d, ntypes, type_map, st, block, where):
    children = d.get("list")
    if not isinstance(children, list) or not children:
        raise ModelFormatError(f"{path}: field '{where}.list' is {children!r}; expected a list of descriptors")
    out = []
    for k, child in enumerate(children):
        if not isinstance(child, dict) or child.get("type") == "hybrid":
            raise _unsupported(path, f"{where}.list[{k}]", child, "nested hybrid descriptors are not supported")
        out.append(_descriptor(path, child, ntypes, type_map, st, f"{block}descrpt_list.{k}.", f"{where}.list[{k}]"))
    return {"@class": "Descriptor", "type": "hybrid", "@version": 1, "list": out}


_DESCRIPTORS = {
    "se_e2_a": _descrpt_se_a, "se_a": _descrpt_se_a,
    "se_e2_r": _descrpt_se_r, "se_r": _descrpt_se_r,
    "se_e3": _descrpt_se_e3, "se_at": _descrpt_se_e3, "se_a_3be": _descrpt_se_e3,
    "se_atten_v2": _descrpt_se_atten_v2,
    "dpa1": _descrpt_dpa1, "se_atten": _descrpt_dpa1,
    "hybrid": _descrpt_hybrid,
}


def _descriptor(path, d, ntypes, type_map, st, block, where) -> dict:
    dtype = d.get("type")
    builder = _DESCRIPTORS.get(dtype)
    if builder is None:
        raise _unsupported(path, where + ".type", dtype, f"supported descriptors are {_SUPPORTED_DESCRIPTORS}")
    if d.get("spin"):
        raise _unsupported(path, where + ".spin", d["spin"], "spin models are not supported")
    return builder(path, d, ntypes, type_map, st, block, where)


# --------------------------------------------------------------------------- fitting


def _default_fparam(path: Path, scripted, stored: np.ndarray | None):
    """default_fparam: the state dict's ``default_fparam_tensor`` (DeePMD-kit 3.1+), which must repeat
    the definition's (to the model's precision)."""
    if stored is None:
        return scripted
    values = np.asarray(stored, dtype=np.float64).reshape(-1)
    try:
        agree = scripted is not None and np.allclose(np.asarray(scripted, dtype=np.float64).reshape(-1), values,
                                                     rtol=1e-6, atol=0.0)
    except (TypeError, ValueError):
        agree = False
    if not agree:
        raise ModelFormatError(f"{path}: tensor 'default_fparam_tensor' {values.tolist()} differs from the "
                               f"definition's default_fparam {scripted!r}; the file was edited or damaged")
    return values.tolist()  # what DeePMD-kit evaluates with (the model's precision)


def _fitting(path: Path, f: dict, ntypes: int, mixed: bool, type_map, st: _State, exclude_types: list) -> dict:
    where = "model.fitting_net"
    ftype = f.get("type", "ener")
    if ftype != "ener":
        raise _unsupported(path, where + ".type", ftype,
                           "only energy fitting networks ('ener') are supported (dipole, polar, dos, property are not)")
    if f.get("dim_case_embd", 0):
        raise _unsupported(path, where + ".dim_case_embd", f["dim_case_embd"], "case embeddings are not supported")
    block = "atomic_model.fitting_net."
    raw_prec = f.get("precision", "default")
    prec = _precision(raw_prec)
    neuron = list(f.get("neuron", [128, 128, 128]))
    act = f.get("activation_function", "tanh")
    resnet_dt = bool(f.get("resnet_dt", True))
    nfp = int(f.get("numb_fparam", 0))
    nap = int(f.get("numb_aparam", 0))
    trainable = f.get("trainable", True)
    if not isinstance(trainable, bool):
        raise _unsupported(path, where + ".trainable", trainable, "a per-layer trainable list is not supported")

    def network(name: str) -> dict:
        n = _n_layers(st, name)
        if n != len(neuron) + 1:
            raise ModelFormatError(
                f"{path}: network '{st.key(name)}' has {n} layers, the definition's neuron is {neuron}"
            )
        layers = [_layer(st, f"{name}.layers.{l}", activation=act, resnet=True, precision=prec, trainable=trainable)
                  for l in range(n - 1)]
        layers.append(_layer(st, f"{name}.layers.{n - 1}", activation="none", resnet=False, precision=prec,
                             trainable=trainable))
        return {
            "@class": "FittingNetwork", "@version": 1,
            "in_dim": int(layers[0]["@variables"]["w"].shape[0]),
            "out_dim": int(layers[-1]["@variables"]["w"].shape[1]),
            "neuron": neuron, "activation_function": act, "resnet_dt": resnet_dt, "precision": raw_prec,
            "bias_out": True, "layers": layers,
        }

    nets = _collection(st, block + "filter_layers", 0 if mixed else 1, ntypes, "fitting_network", network)
    st.check_mask(block + "emask.type_mask", _atom_mask(ntypes, exclude_types), "model.atom_exclude_types")
    in_dim = nets["networks"][0]["in_dim"]
    bias = st.get(block + "bias_atom_e")
    default_fparam = _default_fparam(path, f.get("default_fparam"), st.opt(block + "default_fparam_tensor"))
    return {
        "@class": "Fitting", "@version": 4, "var_name": "energy", "ntypes": ntypes,
        "dim_descrpt": in_dim - nfp - (0 if f.get("use_aparam_as_mask", False) else nap), "neuron": neuron,
        "resnet_dt": resnet_dt,
        "numb_fparam": nfp, "numb_aparam": nap, "dim_case_embd": 0,
        "default_fparam": default_fparam, "activation_function": act, "precision": raw_prec,
        "mixed_types": mixed, "nets": nets, "rcond": f.get("rcond"),
        "exclude_types": exclude_types,  # the atomic model hands its atom exclusions to the fitting
        "@variables": {
            "bias_atom_e": bias,
            "case_embd": None,
            "fparam_avg": st.opt(block + "fparam_avg") if nfp else None,
            "fparam_inv_std": st.opt(block + "fparam_inv_std") if nfp else None,
            "aparam_avg": st.opt(block + "aparam_avg") if nap else None,
            "aparam_inv_std": st.opt(block + "aparam_inv_std") if nap else None,
        },
        "type_map": type_map, "tot_ener_zero": False, "trainable": [trainable] * (len(neuron) + 1),
        "layer_name": None, "use_aparam_as_mask": f.get("use_aparam_as_mask", False), "spin": None,
        "type": "ener", "dim_out": int(bias.shape[-1]) if bias.ndim == 2 else 1,
        "atom_ener": f.get("atom_ener", []),
    }
