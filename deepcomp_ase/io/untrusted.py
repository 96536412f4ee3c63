"""Limits and checks for reading untrusted model files (docs/security.md).

A model file comes from papers and colleagues: opening one must not read other files, hang, or
take memory out of proportion to what the file holds. Every reader goes through these checks:

* :func:`check_regular_file` -- FIFOs, devices, directories refused before anything opens them;
* :func:`h5_get` / :func:`h5_read` -- HDF5 objects reached only through links inside the file,
  datasets refused when their data lives elsewhere (external storage, virtual datasets) or when
  their declared size exceeds what the file stores;
* :class:`NodeBudget` -- a count of the nodes a tree conversion visits (shared references and
  YAML aliases included), and a depth limit, so that a DAG or an alias bomb stops early;
* :func:`check_member_size` -- compressed archive members refused when their declared size is
  out of proportion to their stored size;
* :func:`check_finite` -- NaN/inf in weights or tables refused, naming the array.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFormatError

#: the deepest nesting of containers accepted anywhere in a model tree (DeePMD trees are < 15 deep)
MAX_DEPTH = 100
#: how many times larger than its stored bytes a compressed dataset or archive member may unpack
#: (real models are stored uncompressed; gzip'd data reaches ~5-10x on weights)
MAX_RATIO = 64
#: compressed data smaller than this when unpacked is accepted whatever its ratio
SMALL_BYTES = 4 << 20
#: the largest text (YAML/JSON, after decompression) read as a model
MAX_TEXT_BYTES = 256 << 20
#: the fewest tree nodes a conversion may visit; the budget grows with the file's size
MIN_NODES = 1 << 20


def check_regular_file(path: str | os.PathLike, what: str = "model file") -> int:
    """Refuse anything but a regular file (after symlinks) before a reader opens it; its size.

    A FIFO would block the reader forever, /dev/urandom never ends, a directory is not a model.
    Checked with stat, without opening: opening some devices has effects of its own.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFormatError(f"{path}: is a directory, expected a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
                "a character device" if stat.S_ISCHR(st.st_mode) else
                "a block device" if stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise ModelFormatError(f"{path}: is {kind}, not a regular file; a {what} must be a regular file "
                               "(copy it to a regular file and pass that)")
    return st.st_size


class NodeBudget:
    """Counts the nodes a tree conversion visits and refuses too many or too deep.

    ``limit`` is set from the file's size: a tree without shared references has fewer nodes than
    its text has bytes, so only shared references (pickle memo, YAML aliases) can exceed it.
    """

    def __init__(self, source: str, file_bytes: int = 0, what: str = "model tree") -> None:
        self.source = source
        self.what = what
        self.limit = max(MIN_NODES, 4 * int(file_bytes))
        self.count = 0

    def tick(self, depth: int, where: str = "") -> None:
        self.count += 1
        if self.count > self.limit:
            raise ModelFormatError(
                f"{self.source}: the {self.what} expands to more than {self.limit:,} nodes (shared references or "
                "aliases repeated over and over); the file is damaged or hostile")
        if depth > MAX_DEPTH:
            at = f" at '{where}'" if where else ""
            raise ModelFormatError(
                f"{self.source}: the {self.what} is nested more than {MAX_DEPTH} levels deep{at} (or refers to "
                "itself); the file is damaged or hostile")


# ----------------------------------------------------------------------------- HDF5
def _h5_source(group) -> str:
    try:
        return group.file.filename
    except Exception:  # noqa: BLE001 - only used to name the file in a message
        return "<hdf5>"


def h5_get(group, path: str, source: str | None = None):
    """``group[path]`` reached only through hard links and soft links that stay in the file.

    External links (another file) are refused before they are followed, as is a soft-link chain
    longer than a few hops.
    """
    import h5py

    source = source or _h5_source(group)
    node = group
    parts = [p for p in str(path).split("/") if p]
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in (".", ".."):
            raise ModelFormatError(f"{source}: HDF5 path '{path}' contains '{name}'")
        link = node.get(name, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            raise ModelFormatError(f"{source}: HDF5 object '{path}' is missing; the file is incomplete")
        if isinstance(link, h5py.ExternalLink):
            raise ModelFormatError(
                f"{source}: HDF5 object '{path}' is an external link to '{link.filename}:{link.path}'; a model file "
                "must hold its own data, external links are not followed")
        if isinstance(link, h5py.SoftLink):
            hops += 1
            if hops > 8:
                raise ModelFormatError(f"{source}: HDF5 object '{path}': soft links nested too deep")
            target = [p for p in link.path.split("/") if p]
            if link.path.startswith("/"):
                node = node.file
            parts = target + parts
            continue
        if not isinstance(link, h5py.HardLink):  # a user-defined link type: nothing a model needs
            raise ModelFormatError(f"{source}: HDF5 object '{path}' is reached through a {type(link).__name__}; "
                                   "only links inside the file are followed")
        node = node[name]
    return node


def _declared_bytes(ds) -> int:
    return int(np.prod(ds.shape, dtype=np.float64) * ds.dtype.itemsize) if ds.shape is not None else 0


def check_h5_dataset(ds, source: str, name: str) -> None:
    """Refuse a dataset whose data is outside the file or larger than what the file stores."""
    if ds.is_virtual:
        raise ModelFormatError(f"{source}: dataset '{name}' is a virtual dataset (its data lives in other files); "
                               "a model file must hold its own data")
    plist = ds.id.get_create_plist()
    if plist.get_external_count() > 0:
        files = [plist.get_external(k)[0] for k in range(plist.get_external_count())]
        raise ModelFormatError(f"{source}: dataset '{name}' keeps its data in external file(s) {files!r:.200}; a "
                               "model file must hold its own data, external storage is not read")
    if ds.dtype.kind not in "biuf":
        raise ModelFormatError(f"{source}: dataset '{name}' has dtype {ds.dtype}, expected numbers")
    declared = _declared_bytes(ds)
    # what the file records as stored, never more than the file itself holds
    stored = min(int(ds.id.get_storage_size()), os.path.getsize(ds.file.filename))
    filtered = plist.get_nfilters() > 0
    allowed = max(SMALL_BYTES, MAX_RATIO * stored) if filtered else stored
    if declared > allowed:
        raise ModelFormatError(
            f"{source}: dataset '{name}' declares shape {ds.shape} of {ds.dtype} ({declared:,} bytes) but the file "
            f"stores {stored:,} bytes of it; the file is damaged or hostile")


def h5_read(group, path: str, source: str | None = None) -> np.ndarray:
    """The checked dataset at ``path`` under ``group``, read into memory."""
    import h5py

    source = source or _h5_source(group)
    ds = h5_get(group, path, source)
    if not isinstance(ds, h5py.Dataset):
        raise ModelFormatError(f"{source}: HDF5 object '{path}' is a group, expected a dataset")
    check_h5_dataset(ds, source, path)
    return np.asarray(ds[()])


# ----------------------------------------------------------------------------- archives
def check_member_size(source: str, member: str, file_size: int, compress_size: int, compressed: bool,
                      limit: int | None = None) -> None:
    """Refuse an archive member whose unpacked size is out of proportion or above ``limit``."""
    if limit is not None and file_size > limit:
        raise ModelFormatError(f"{source}: archive member '{member}' declares {file_size:,} bytes, above the limit "
                               f"of {limit:,} for it; the file is damaged or hostile")
    if compressed and file_size > max(SMALL_BYTES, MAX_RATIO * compress_size):
        raise ModelFormatError(
            f"{source}: archive member '{member}' unpacks {compress_size:,} stored bytes into {file_size:,} (a "
            "compression bomb?); the file is damaged or hostile")


def read_capped(fh, limit: int, source: str, what: str) -> bytes:
    """Read a stream (a decompressor) to its end, refusing more than ``limit`` bytes."""
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModelFormatError(f"{source}: {what} unpacks to more than {limit:,} bytes; the file is damaged or "
                               "hostile (or not a model)")
    return data


# ----------------------------------------------------------------------------- values
def check_finite(array: Any, source: str, field: str) -> None:
    """Refuse NaN/inf in a float array, naming the array and the first bad element."""
    arr = np.asarray(array)
    if arr.dtype.kind not in "fc" or arr.size == 0:
        return
    ok = np.isfinite(arr)
    if ok.all():
        return
    first = np.unravel_index(int(np.flatnonzero(~ok.ravel())[0]), arr.shape) if arr.ndim else ()
    raise ModelFormatError(
        f"{source}: '{field}' holds {int((~ok).sum())} non-finite value(s) (first {arr[first]!r} at index "
        f"{tuple(int(i) for i in first)}); a model's weights and tables must be finite numbers, the model is "
        "damaged (a diverged training?)")


def check_tree_finite(tree: Any, source: str) -> None:
    """Every float array of a serialization tree is finite (errors name the array's path)."""
    stack = [("", tree, 0)]
    seen: set[int] = set()
    while stack:
        where, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ModelFormatError(f"{source}: the model tree is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, np.ndarray):
            check_finite(node, source, where)
        elif isinstance(node, dict):
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend((f"{where}.{k}" if where else str(k), v, depth + 1) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(node))


# ----------------------------------------------------------------------------- YAML
def safe_yaml_load(text: str, source: str) -> Any:
    """``yaml.safe_load`` with a nesting limit (a one-line error, never a RecursionError or a crash).

    With libyaml, the events are streamed once to check the nesting (its composer recurses in C,
    where no recursion limit applies), then the document is loaded by the C loader (several
    times faster than the Python one). Aliases are kept shared here; what they expand to is
    counted by the tree conversion (:func:`~deepcomp_ase.io.tree.yaml_arrays_to_numpy`).
    """
    import yaml

    def too_deep(line: int):
        return ModelFormatError(f"{source}: YAML nested more than {MAX_DEPTH} levels deep (line {line}); the file "
                                "is damaged or hostile")

    if getattr(yaml, "__with_libyaml__", False):
        depth = 0
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise too_deep(event.start_mark.line + 1)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.load(text, Loader=yaml.CSafeLoader)  # noqa: S506 - the safe loader

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise too_deep(self.peek_event().start_mark.line + 1)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- last line of defence
#: what reading a wrongly typed value raises (int("a"), list(1e9), tree["missing"], ...)
_MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


def one_line_errors(source_arg: int = 0, source_kw: str = "source"):
    """Decorator: what a malformed value makes a reader raise becomes a :class:`ModelFormatError`.

    The readers check the fields they know with messages naming them; this catches what slips
    through (a string where a number belongs, a list nested too deep) so that a damaged file
    still gives one line naming the file (positional argument ``source_arg`` or keyword
    ``source_kw`` of the call), not a traceback.
    """
    import functools

    from ..errors import DeepCompError

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            try:
                return func(*args, **kwargs)
            except _MALFORMED as exc:
                if isinstance(exc, DeepCompError):  # InputError is a ValueError too
                    raise
                source = kwargs.get(source_kw, args[source_arg] if len(args) > source_arg else "<model>")
                what = ("nested too deep (or refers to itself)" if isinstance(exc, RecursionError)
                        else f"{type(exc).__name__}: {str(exc)[:200]}")
                raise ModelFormatError(
                    f"{source}: a field of the model has a value of the wrong type, shape or size ({what}); the file "
                    "is damaged or not a DeePMD-kit model") from None
        return wrapper
    return decorate
