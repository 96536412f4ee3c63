"""Read PyTorch zip archives (``torch.save`` checkpoints, TorchScript ``.pth``) without torch.

A model file is untrusted input and a pickle can run arbitrary code through the globals it names.
The unpickler below resolves only an explicit allow-list of globals, each mapped to a local,
side-effect-free replacement (never to the real torch/builtins object):

* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter*`` -> a numpy array built from the
  archive's ``data/N`` storage (dtype, storage offset, strides, byte order honoured);
* ``torch.<Type>Storage`` -> a dtype marker used by the persistent ids of the storages;
* ``collections.OrderedDict`` -> a plain dict;
* ``torch.jit._pickle`` helpers (type tags, typed lists) -> identity functions;
* any ``__torch__.<module>.<Class>`` (a TorchScript module or class) -> :class:`ScriptObject`,
  a record of the class name and its pickled attributes. Nothing from the TorchScript ``code/``
  folder is read, let alone run.

Every other global is refused with :class:`~deepcomp_ase.errors.ModelFormatError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeepCompError, ModelFormatError
from .untrusted import NodeBudget, check_member_size, check_regular_file, read_capped

#: the largest pickle (data.pkl) read; DeePMD-kit's are a few MB, the tensors live in data/
MAX_PICKLE_BYTES = 64 << 20
#: tensors may always take this much, whatever the storages hold
MIN_TENSOR_BUDGET = 64 << 20

ZIP_MAGIC = b"PK\x03\x04"

# torch storage class -> numpy dtype (bfloat16 is widened to float32 when read, exactly)
_STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
_SCRIPT_NAME = re.compile(r"^__torch__(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RefusedGlobal(DeepCompError):
    """The pickle names a global outside the allow-list."""


class ScriptObject:
    """A TorchScript module/class instance: its qualified class name and pickled attributes."""

    attrs: dict[str, Any]

    def __new__(cls) -> "ScriptObject":  # NEWOBJ/REDUCE with arguments fail here (a format error)
        obj = object.__new__(cls)
        obj.attrs = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ModelFormatError(f"TorchScript object {self.qualname} has a non-dict state")
        self.attrs = dict(state)

    qualname = "__torch__"

    def __repr__(self) -> str:
        return f"<{self.qualname} {sorted(self.attrs)}>"


def _script_class(qualname: str) -> type:
    return type("ScriptObject", (ScriptObject,), {"qualname": qualname, "__slots__": ()})


class _StateDict(dict):
    """``collections.OrderedDict`` of a state dict; ``torch.save`` BUILDs a ``_metadata`` onto it."""

    def __setstate__(self, state: Any) -> None:
        self.metadata = state


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.code = _STORAGE_DTYPES[name]


class _TensorBudget:
    """Bytes of tensors materialised by one unpickling: a few times what the storages hold.

    Many tensors may view one storage; each is copied, so without a budget a small storage
    referenced over and over would take memory out of proportion to the file.
    """

    def __init__(self, source: str, limit: int) -> None:
        self.source, self.limit, self.spent = source, limit, 0

    def spend(self, nbytes: int, size) -> None:
        self.spent += nbytes
        if self.spent > self.limit:
            raise ModelFormatError(
                f"its tensors (the last of size {size}) take more than {self.limit:,} bytes, out of proportion to "
                "the storages the archive holds; the file is damaged or hostile")


class _Storage:
    def __init__(self, array: np.ndarray, budget: _TensorBudget) -> None:
        self.array = array
        self.budget = budget


#: a tensor may hold more elements than its storage only through zero strides (an expanded tensor);
#: beyond this many elements that is refused (a 500-byte file must not allocate gigabytes)
MAX_EXPANDED_ELEMENTS = 1 << 20


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, _Storage):
        raise ModelFormatError(f"tensor rebuilt from {type(storage).__name__}, expected a stored tensor")
    size = tuple(int(s) for s in size)
    stride = tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise ModelFormatError(f"tensor has size {size}, stride {stride}, offset {offset}")
    flat = storage.array
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise ModelFormatError(
            f"tensor of size {size}, stride {stride}, offset {offset} reaches element {last} of a storage "
            f"of {flat.size} elements (truncated or damaged file)"
        )
    numel = int(np.prod(size, dtype=np.float64))
    if numel > max(flat.size, MAX_EXPANDED_ELEMENTS):
        raise ModelFormatError(
            f"tensor of size {size}, stride {stride} declares {numel:,} elements over a storage of {flat.size:,} "
            "(zero strides repeating elements); the file is damaged or hostile")
    storage.budget.spend(numel * flat.itemsize, size)
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=tuple(s * item for s in stride))
    return np.array(view, copy=True)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    return data


def _identity_first(value, *rest):
    return value


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _StateDict,
    ("torch.jit._pickle", "restore_type_tag"): _identity_first,
    ("torch.jit._pickle", "build_intlist"): _identity_first,
    ("torch.jit._pickle", "build_doublelist"): _identity_first,
    ("torch.jit._pickle", "build_boollist"): _identity_first,
    ("torch.jit._pickle", "build_tensorlist"): _identity_first,
}


#: objects a BUILD opcode may set state on: only those the unpickler itself makes (never an allowed
#: global such as a rebuild function, whose __dict__/__defaults__ would otherwise be rewritten)
_BUILDABLE = (_StateDict, ScriptObject)


class _Unpickler(pickle._Unpickler):  # noqa: SLF001 - the Python unpickler: memo is a dict, opcodes overridable
    """Restricted unpickler: allow-listed globals, BUILD only on its own objects, bounded memory.

    It is pickle's pure-Python unpickler: the memo is a dict (a huge memo index costs nothing,
    where the C unpickler allocates an array that large) and BUILD can be restricted.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # noqa: SLF001

    def __init__(self, data: bytes, archive: "TorchArchive") -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._budget = archive.budget

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if _SCRIPT_NAME.match(module) and _IDENT.match(name):
            return _script_class(f"{module}.{name}")
        raise RefusedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType)):
            raise ModelFormatError(f"unexpected persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid
        return _Storage(self._archive.storage(str(key), stype, int(numel)), self._budget)

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _BUILDABLE):
            raise ModelFormatError(f"BUILD (set state) applied to a {type(inst).__name__}, which only a hostile or "
                                   "damaged pickle does")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


class TorchArchive:
    """A zip written by ``torch.save`` or ``torch.jit.save``; ``load(name)`` unpickles ``name``.pkl."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_regular_file(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelFormatError(
                f"{path}: cannot be read as a PyTorch zip archive ({exc}); is it truncated or damaged?"
            ) from None
        pkls = [n for n in self.zip.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise ModelFormatError(
                f"{path}: zip archive has {len(pkls)} top-level '<name>/data.pkl' members, expected one; "
                "it is not a PyTorch model (torch.save / torch.jit.save)"
            )
        self.root = pkls[0].split("/")[0]
        self.names = set(self.zip.namelist())
        order = self._read_opt("byteorder")
        self.byteorder = "<" if order in (None, b"little") else ">" if order == b"big" else None
        if self.byteorder is None:
            raise ModelFormatError(f"{path}: member '{self.root}/byteorder' is {order!r}")
        self._cache: dict[str, np.ndarray] = {}
        # tensors may take a few times what the storages hold (views are copied), never more
        stored = sum(i.file_size for i in self.zip.infolist() if i.filename.startswith(f"{self.root}/data/"))
        self.budget = _TensorBudget(str(path), 4 * stored + MIN_TENSOR_BUDGET)

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "TorchArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def has(self, member: str) -> bool:
        return f"{self.root}/{member}" in self.names

    def _read_opt(self, member: str) -> bytes | None:
        return self.read(member) if self.has(member) else None

    def read(self, member: str) -> bytes:
        """A member's bytes; sizes and compression checked before anything is unpacked."""
        name = f"{self.root}/{member}"
        try:
            info = self.zip.getinfo(name)
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # torch writes stored members; bzip2/lzma would unpack a bomb in one call, unbounded
                raise ModelFormatError(
                    f"{self.path}: archive member '{name}' is compressed with method {info.compress_type} "
                    "(PyTorch stores members uncompressed); refused")
            limit = MAX_PICKLE_BYTES if member.endswith(".pkl") else None
            check_member_size(str(self.path), name, info.file_size, info.compress_size,
                              info.compress_type != zipfile.ZIP_STORED, limit)
            with self.zip.open(info) as fh:
                return read_capped(fh, info.file_size, str(self.path), f"archive member '{name}'")
        except KeyError:
            raise ModelFormatError(f"{self.path}: archive member '{self.root}/{member}' is missing") from None
        except (OSError, zipfile.BadZipFile, EOFError) as exc:  # truncated or damaged entries
            raise ModelFormatError(
                f"{self.path}: archive member '{self.root}/{member}' cannot be read ({exc})"
            ) from None

    def storage(self, key: str, stype: _StorageType, numel: int) -> np.ndarray:
        if not _IDENT.match("k" + key):
            raise ModelFormatError(f"{self.path}: storage key {key!r} is not a plain name")
        if key in self._cache:
            return self._cache[key]
        width = 2 if stype.code == "bf16" else np.dtype(stype.code).itemsize
        member = f"{self.root}/data/{key}"
        if member in self.names and self.zip.getinfo(member).file_size != numel * width:
            # checked before reading: a damaged or hostile size is not loaded into memory
            raise ModelFormatError(
                f"{self.path}: storage 'data/{key}' holds {self.zip.getinfo(member).file_size} bytes, "
                f"{stype.name} of {numel} elements needs {numel * width} (truncated or damaged file?)"
            )
        raw = self.read(f"data/{key}")
        if len(raw) < numel * width:
            raise ModelFormatError(
                f"{self.path}: storage 'data/{key}' holds {len(raw)} bytes, {stype.name} of {numel} elements "
                f"needs {numel * width} (truncated file?)"
            )
        raw = raw[: numel * width]
        if stype.code == "bf16":  # the upper half of a float32: widen exactly
            hi = np.frombuffer(raw, dtype=self.byteorder + "u2").astype(np.uint32) << 16
            arr = hi.view(np.float32)
        elif stype.code in ("?", "u1", "i1"):
            arr = np.frombuffer(raw, dtype=stype.code).copy()
        else:
            arr = np.frombuffer(raw, dtype=self.byteorder + stype.code).astype(stype.code)
        self._cache[key] = arr
        return arr

    def load(self, name: str = "data") -> Any:
        data = self.read(f"{name}.pkl")
        try:
            obj = _Unpickler(data, self).load()
            _check_expansion(obj, NodeBudget(str(self.path), len(data), f"pickle '{self.root}/{name}.pkl'"))
            return obj
        except RefusedGlobal as exc:
            raise ModelFormatError(
                f"{self.path}: refused to load: its pickle '{self.root}/{name}.pkl' asks for the Python "
                f"object '{exc}', which is not one of the tensor/module types a DeePMD-kit model needs. "
                "Nothing from the file was run; only load model files from sources you trust"
            ) from None
        except ModelFormatError as exc:
            msg = str(exc)
            raise ModelFormatError(msg if msg.startswith(str(self.path)) else f"{self.path}: {msg}") from None
        except DeepCompError:
            raise
        except Exception as exc:  # malformed pickle stream: any failure is a format error
            raise ModelFormatError(
                f"{self.path}: pickle '{self.root}/{name}.pkl' is damaged or not a PyTorch pickle "
                f"({type(exc).__name__}: {exc})"
            ) from None


def _check_expansion(obj: Any, budget: NodeBudget) -> None:
    """Count the nodes of ``obj`` as a tree walk would see them (shared references once per path).

    Readers walk what the pickle gives recursively: a DAG of lists each holding one list twice
    would make them expand 2**depth nodes, a cycle recurse forever. Both are refused here, at a
    cost bounded by the budget.
    """
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        budget.tick(depth)
        if isinstance(node, ScriptObject):
            node = node.attrs
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
            stack.extend((k, depth + 1) for k in node if isinstance(k, tuple))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def flatten_script_module(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The state-dict-like view of a TorchScript module tree: dotted attribute names -> arrays."""
    out: dict[str, Any] = {}
    stack = [(prefix, obj)]
    seen: set[int] = set()
    while stack:
        name, node = stack.pop()
        if isinstance(node, ScriptObject):
            if id(node) in seen:
                continue
            seen.add(id(node))
            for key, value in node.attrs.items():
                stack.append((f"{name}.{key}" if name else key, value))
        elif isinstance(node, np.ndarray):
            out[name] = node
    return out
