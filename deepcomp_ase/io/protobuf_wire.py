"""A minimal decoder (and encoder) for the protobuf wire format of TensorFlow ``GraphDef`` files.

Only what a frozen DeePMD-kit graph needs is decoded: ``GraphDef.node`` -> ``NodeDef``
(``name``, ``op``, ``attr`` map) -> ``AttrValue`` -> ``TensorProto``. Pure Python + numpy,
no dependency on the ``protobuf`` package or on TensorFlow.

Wire format recap: a message is a sequence of (key, value) records; ``key = field << 3 | wire``
with wire types 0 (varint), 1 (fixed 64 bit), 2 (length-delimited bytes), 5 (fixed 32 bit).
Repeated scalar fields may arrive either "packed" (one length-delimited record holding the
concatenated values) or one record per value; both are accepted.

The small encoder at the end writes the same subset; the tests use it to build synthetic graphs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_BYTES = 2
WIRE_FIXED32 = 5


#: the most elements a tensor may get by TF's "repeat the last value" rule (real graphs use it for
#: small constants only)
MAX_REPEATED_ELEMENTS = 1 << 20


class WireError(ValueError):
    """The byte string is not a well-formed protobuf message of the expected kind."""


# --------------------------------------------------------------------------- low level


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)`` for every record of a message.

    ``value`` is an ``int`` for varints, a 4/8-byte ``bytes`` for fixed fields and a
    ``memoryview`` slice for length-delimited fields.
    """
    view = memoryview(buf)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == WIRE_VARINT:
            value, pos = read_varint(view, pos)
        elif wire == WIRE_FIXED64:
            if pos + 8 > end:
                raise WireError("truncated fixed64")
            value = bytes(view[pos : pos + 8])
            pos += 8
        elif wire == WIRE_BYTES:
            length, pos = read_varint(view, pos)
            if pos + length > end:
                raise WireError("length-delimited field runs past the end of the message")
            value = view[pos : pos + length]
            pos += length
        elif wire == WIRE_FIXED32:
            if pos + 4 > end:
                raise WireError("truncated fixed32")
            value = bytes(view[pos : pos + 4])
            pos += 4
        else:  # 3/4 are deprecated groups, 6/7 do not exist
            raise WireError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed64(value: int) -> int:
    """Reinterpret an unsigned varint as a two's-complement int64 (proto ``int32``/``int64``)."""
    return value - (1 << 64) if value & (1 << 63) else value


def _varints(data: memoryview) -> list[int]:
    out = []
    pos = 0
    while pos < len(data):
        v, pos = read_varint(data, pos)
        out.append(_signed64(v))
    return out


def _add_repeated_int(target: list, wire: int, value) -> None:
    if wire == WIRE_VARINT:
        target.append(_signed64(value))
    elif wire == WIRE_BYTES:
        target.extend(_varints(value))
    else:
        raise WireError(f"integer field with wire type {wire}")


def _add_repeated_fixed(target: list, wire: int, value, fmt: str) -> None:
    size = struct.calcsize(fmt)
    expected = WIRE_FIXED32 if size == 4 else WIRE_FIXED64
    if wire == expected:
        target.append(struct.unpack(fmt, value)[0])
    elif wire == WIRE_BYTES:
        raw = bytes(value)
        if len(raw) % size:
            raise WireError("packed fixed-width field has a ragged length")
        target.extend(struct.unpack(f"<{len(raw) // size}{fmt[-1]}", raw))
    else:
        raise WireError(f"fixed-width field with wire type {wire}")


def _text(value) -> str:
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"string field is not UTF-8 ({exc})") from None


# --------------------------------------------------------------------------- TensorProto

# TensorFlow DataType enum values (types.proto) that DeePMD-kit graphs use.
DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_STRING = 7
DT_INT64 = 9
DT_BOOL = 10

_NUMPY_DTYPE = {
    DT_FLOAT: np.dtype("<f4"),
    DT_DOUBLE: np.dtype("<f8"),
    DT_INT32: np.dtype("<i4"),
    DT_INT64: np.dtype("<i8"),
    DT_BOOL: np.dtype("bool"),
}
DTYPE_NAMES = {DT_FLOAT: "float32", DT_DOUBLE: "float64", DT_INT32: "int32", DT_STRING: "string",
               DT_INT64: "int64", DT_BOOL: "bool"}


@dataclass
class TensorProto:
    dtype: int = 0
    shape: tuple[int, ...] | None = None  # None: unknown rank
    content: bytes = b""
    float_val: list = field(default_factory=list)
    double_val: list = field(default_factory=list)
    int_val: list = field(default_factory=list)  # int32, also bool/int8/int16 in TF
    int64_val: list = field(default_factory=list)
    string_val: list = field(default_factory=list)

    def to_numpy(self) -> np.ndarray:
        """Return the tensor as a numpy array (``object`` array of ``bytes`` for strings)."""
        shape = self.shape if self.shape is not None else ()
        if any(d < 0 for d in shape):
            raise WireError(f"tensor shape {shape} has a negative (unknown) dimension")
        count = int(np.prod(shape, dtype=np.float64)) if shape else 1
        if self.dtype == DT_STRING:
            values = list(self.string_val)
            return _broadcast(np.array(values, dtype=object), shape, count, "string_val")
        if self.dtype not in _NUMPY_DTYPE:
            raise WireError(f"tensor dtype enum {self.dtype} is not supported")
        dt = _NUMPY_DTYPE[self.dtype]
        if self.content:
            if len(self.content) != count * dt.itemsize:
                raise WireError(
                    f"tensor_content holds {len(self.content)} bytes, shape {shape} of "
                    f"{DTYPE_NAMES[self.dtype]} needs {count * dt.itemsize}"
                )
            return np.frombuffer(self.content, dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
        source = {
            DT_FLOAT: ("float_val", self.float_val),
            DT_DOUBLE: ("double_val", self.double_val),
            DT_INT32: ("int_val", self.int_val),
            DT_BOOL: ("int_val", self.int_val),
            DT_INT64: ("int64_val", self.int64_val),
        }[self.dtype]
        arr = np.array(source[1], dtype=dt.newbyteorder("="))
        return _broadcast(arr, shape, count, source[0])


def _broadcast(values: np.ndarray, shape: tuple, count: int, name: str) -> np.ndarray:
    """TF convention: an empty list means zeros, a shorter list repeats its last value."""
    n = values.size
    if n == count:
        return values.reshape(shape)
    if n > count:
        raise WireError(f"{name} holds {n} values but the shape {shape} has {count} elements")
    if count > MAX_REPEATED_ELEMENTS:  # a few bytes must not make gigabytes (docs/security.md)
        raise WireError(f"{name} holds {n} values repeated to the shape {shape} of {count:,} elements, above the "
                        f"limit of {MAX_REPEATED_ELEMENTS:,} for repeated values")
    if n == 0:
        fill = b"" if values.dtype == object else 0
        out = np.empty(count, dtype=values.dtype)
        out[...] = fill
        return out.reshape(shape)
    out = np.empty(count, dtype=values.dtype)
    out[:n] = values
    out[n:] = values[-1]
    return out.reshape(shape)


def parse_tensor_shape(buf) -> tuple[int, ...] | None:
    """TensorShapeProto: ``dim`` (2, repeated Dim{size=1, name=2}), ``unknown_rank`` (3)."""
    dims: list[int] = []
    unknown = False
    for number, wire, value in iter_fields(buf):
        if number == 2 and wire == WIRE_BYTES:
            size = 0
            for n2, w2, v2 in iter_fields(value):
                if n2 == 1 and w2 == WIRE_VARINT:
                    size = _signed64(v2)
            dims.append(size)
        elif number == 3 and wire == WIRE_VARINT:
            unknown = bool(value)
    return None if unknown else tuple(dims)


def parse_tensor(buf) -> TensorProto:
    """TensorProto: dtype=1, tensor_shape=2, tensor_content=4, float_val=5, double_val=6,
    int_val=7, string_val=8, int64_val=10, bool_val=11."""
    t = TensorProto(shape=())
    for number, wire, value in iter_fields(buf):
        if number == 1 and wire == WIRE_VARINT:
            t.dtype = value
        elif number == 2 and wire == WIRE_BYTES:
            t.shape = parse_tensor_shape(value)
        elif number == 4 and wire == WIRE_BYTES:
            t.content = bytes(value)
        elif number == 5:
            _add_repeated_fixed(t.float_val, wire, value, "<f")
        elif number == 6:
            _add_repeated_fixed(t.double_val, wire, value, "<d")
        elif number in (7, 11):
            _add_repeated_int(t.int_val, wire, value)
        elif number == 8 and wire == WIRE_BYTES:
            t.string_val.append(bytes(value))
        elif number == 10:
            _add_repeated_int(t.int64_val, wire, value)
    return t


# --------------------------------------------------------------------------- AttrValue / NodeDef


@dataclass
class AttrValue:
    """One ``AttrValue``; ``kind`` names the oneof member that was set."""

    kind: str
    value: object


def parse_attr_value(buf) -> AttrValue:
    """AttrValue oneof: list=1, s=2, i=3, f=4, b=5, type=6, shape=7, tensor=8, placeholder=9, func=10."""
    result = AttrValue("none", None)
    for number, wire, value in iter_fields(buf):
        if number == 2 and wire == WIRE_BYTES:
            result = AttrValue("s", bytes(value))
        elif number == 3 and wire == WIRE_VARINT:
            result = AttrValue("i", _signed64(value))
        elif number == 4 and wire == WIRE_FIXED32:
            result = AttrValue("f", struct.unpack("<f", value)[0])
        elif number == 5 and wire == WIRE_VARINT:
            result = AttrValue("b", bool(value))
        elif number == 6 and wire == WIRE_VARINT:
            result = AttrValue("type", value)
        elif number == 7 and wire == WIRE_BYTES:
            result = AttrValue("shape", parse_tensor_shape(value))
        elif number == 8 and wire == WIRE_BYTES:
            result = AttrValue("tensor", parse_tensor(value))
        elif number == 9 and wire == WIRE_BYTES:
            result = AttrValue("placeholder", _text(value))
        elif number == 1 and wire == WIRE_BYTES:
            result = AttrValue("list", bytes(value))  # list attrs are not needed; keep raw
        elif number == 10 and wire == WIRE_BYTES:
            result = AttrValue("func", bytes(value))
    return result


def attr_int_list(attr: AttrValue) -> list[int]:
    """The integers of a ``list`` attribute (``ListValue.i``, field 3, packed or not)."""
    if attr.kind != "list":
        raise WireError(f"attribute is a '{attr.kind}', expected a list")
    out: list[int] = []
    for number, wire, value in iter_fields(attr.value):
        if number == 3:
            _add_repeated_int(out, wire, value)
    return out


@dataclass
class NodeDef:
    name: str = ""
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    attr: dict[str, AttrValue] = field(default_factory=dict)

    def tensor(self) -> TensorProto | None:
        """The ``value`` tensor of a ``Const`` node (None for other nodes)."""
        av = self.attr.get("value")
        return av.value if av is not None and av.kind == "tensor" else None


def parse_node(buf) -> NodeDef:
    """NodeDef: name=1, op=2, input=3, device=4, attr=5 (map<string, AttrValue>)."""
    node = NodeDef()
    for number, wire, value in iter_fields(buf):
        if wire != WIRE_BYTES:
            continue
        if number == 1:
            node.name = _text(value)
        elif number == 2:
            node.op = _text(value)
        elif number == 3:
            node.inputs.append(_text(value))
        elif number == 5:
            key, attr = "", AttrValue("none", None)
            for n2, w2, v2 in iter_fields(value):
                if n2 == 1 and w2 == WIRE_BYTES:
                    key = _text(v2)
                elif n2 == 2 and w2 == WIRE_BYTES:
                    attr = parse_attr_value(v2)
            node.attr[key] = attr
    return node


def parse_graph_def(data: bytes) -> list[NodeDef]:
    """Decode a serialized ``GraphDef`` (node=1, versions=4, library=2) into its nodes.

    Raises ``WireError`` when ``data`` is not a GraphDef: malformed wire data, unexpected
    wire types for the GraphDef fields, or no node at all.
    """
    nodes: list[NodeDef] = []
    for number, wire, value in iter_fields(data):
        if number == 1:
            if wire != WIRE_BYTES:
                raise WireError("GraphDef.node has a non length-delimited wire type")
            nodes.append(parse_node(value))
        elif number in (2, 4) and wire != WIRE_BYTES:
            raise WireError(f"GraphDef field {number} has wire type {wire}")
        elif number == 3 and wire != WIRE_VARINT:  # deprecated int32 version
            raise WireError(f"GraphDef field 3 has wire type {wire}")
    if not nodes:
        raise WireError("no GraphDef node found")
    for node in nodes:
        if not node.name or not node.op:
            raise WireError("a GraphDef node has no name or no op")
    return nodes


# --------------------------------------------------------------------------- encoder


def _enc_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _enc_field(number: int, wire: int, payload) -> bytes:
    key = _enc_varint(number << 3 | wire)
    if wire == WIRE_BYTES:
        return key + _enc_varint(len(payload)) + bytes(payload)
    if wire == WIRE_VARINT:
        return key + _enc_varint(payload)
    return key + bytes(payload)


def encode_tensor(array, *, packed_values: bool = False) -> bytes:
    """Serialize ``array`` as a TensorProto (strings go to ``string_val``).

    ``packed_values=True`` writes numbers in the ``*_val`` list (packed) instead of
    ``tensor_content``; a list shorter than the shape may be passed with ``shape``.
    """
    arr = np.asarray(array)
    if arr.dtype == object or arr.dtype.kind in "SU":
        dtype = DT_STRING
    else:
        dtype = {np.dtype("float32"): DT_FLOAT, np.dtype("float64"): DT_DOUBLE,
                 np.dtype("int32"): DT_INT32, np.dtype("int64"): DT_INT64,
                 np.dtype("bool"): DT_BOOL}[arr.dtype]
    return encode_tensor_raw(dtype, arr.shape, arr.ravel().tolist() if dtype == DT_STRING or packed_values
                             else arr, packed_values=packed_values or dtype == DT_STRING)


def encode_tensor_raw(dtype: int, shape, values, *, packed_values: bool) -> bytes:
    """Low-level TensorProto writer: ``values`` is a list (value fields) or an array (content)."""
    shape_msg = b"".join(_enc_field(2, WIRE_BYTES, _enc_field(1, WIRE_VARINT, int(d))) for d in shape)
    out = _enc_field(1, WIRE_VARINT, dtype) + _enc_field(2, WIRE_BYTES, shape_msg)
    if not packed_values:
        dt = _NUMPY_DTYPE[dtype]
        return out + _enc_field(4, WIRE_BYTES, np.ascontiguousarray(values, dtype=dt).tobytes())
    if dtype == DT_STRING:
        for v in values:
            out += _enc_field(8, WIRE_BYTES, v.encode() if isinstance(v, str) else bytes(v))
        return out
    if dtype == DT_FLOAT:
        return out + _enc_field(5, WIRE_BYTES, np.asarray(values, "<f4").tobytes())
    if dtype == DT_DOUBLE:
        return out + _enc_field(6, WIRE_BYTES, np.asarray(values, "<f8").tobytes())
    number = 10 if dtype == DT_INT64 else 7
    return out + _enc_field(number, WIRE_BYTES, b"".join(_enc_varint(int(v)) for v in values))


def encode_node(name: str, op: str, attrs: dict[str, bytes] | None = None, inputs=()) -> bytes:
    """Serialize a NodeDef; ``attrs`` maps names to already-encoded AttrValue messages."""
    out = _enc_field(1, WIRE_BYTES, name.encode()) + _enc_field(2, WIRE_BYTES, op.encode())
    for inp in inputs:
        out += _enc_field(3, WIRE_BYTES, inp.encode())
    for key, attr in (attrs or {}).items():
        entry = _enc_field(1, WIRE_BYTES, key.encode()) + _enc_field(2, WIRE_BYTES, attr)
        out += _enc_field(5, WIRE_BYTES, entry)
    return out


def encode_const_node(name: str, array=None, *, tensor: bytes | None = None) -> bytes:
    """A ``Const`` node holding ``array`` (or an already-encoded TensorProto)."""
    if tensor is None:
        tensor = encode_tensor(array)
    dtype = parse_tensor(tensor).dtype
    return encode_node(name, "Const", {
        "dtype": _enc_field(6, WIRE_VARINT, dtype),
        "value": _enc_field(8, WIRE_BYTES, tensor),
    })


def encode_graph_def(nodes: list[bytes]) -> bytes:
    """Serialize a GraphDef from encoded NodeDefs."""
    return b"".join(_enc_field(1, WIRE_BYTES, n) for n in nodes)
