"""Read a binary GraphDef file in one pass, its large Const values going straight to numpy.

Parsing the file whole holds it twice (the bytes and the parsed message), and detaching
afterwards copies each large value once more. Here the file's top-level fields are walked
(`graphfix.io.wire`): runs of small fields are parsed in batches, and a large node is taken
apart so that its `tensor_content` is read from the file directly into an array::

    GraphDef.node[k] (NodeDef)        name, op, input, ... attr["value"]
      attr entry {key: "value", value: AttrValue}
        AttrValue.tensor (TensorProto)    dtype, tensor_shape, ... tensor_content ──► ndarray
                                          (everything else parsed by protobuf)

Protobuf parses a message by merging its fields in order, so parsing the fields in pieces
gives the message parsing the whole would. A node this reader does not expect is parsed
whole and handed to `detached.take_value` like any other; malformed input raises
`wire.WireError` or protobuf's DecodeError, and the caller re-reads the file with protobuf
for its error message.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO

import numpy as np
from tensorflow.core.framework import (
    attr_value_pb2,
    graph_pb2,
    node_def_pb2,
    tensor_pb2,
)

from graphfix.graph import detached
from graphfix.io import wire

GRAPH_NODE = 1        # GraphDef.node
NODE_ATTR = 5         # NodeDef.attr (map entries: MAP_KEY, MAP_VALUE)
MAP_KEY, MAP_VALUE = 1, 2
ATTR_TENSOR = 8       # AttrValue.tensor
TENSOR_CONTENT = 4    # TensorProto.tensor_content
_BATCH_BYTES = 64 << 20  # small fields are parsed this many bytes at a time


class Unexpected(Exception):
    """This node is not a large Const laid out as expected: parse (or serialize) it whole."""


def read_detached(handle: BinaryIO, size: int) -> tuple[graph_pb2.GraphDef, detached.ConstStore]:
    """The GraphDef in handle[0:size] as (slim graph, detached values); see module doc."""
    slim = graph_pb2.GraphDef()
    store = detached.ConstStore()
    batch: list[bytes] = []
    batch_bytes = 0

    def flush():
        nonlocal batch_bytes
        if batch:
            slim.MergeFromString(b"".join(batch))
            batch.clear()
            batch_bytes = 0

    for field in wire.fields(handle, 0, size):
        if field.number == GRAPH_NODE and field.wire_type == wire.LENGTH_DELIMITED \
                and field.end - field.value_start >= detached.DETACH_BYTES:
            flush()
            try:
                node, value = _read_large_const(handle, field)
            except Unexpected:
                node = node_def_pb2.NodeDef.FromString(wire.read_range(handle, field.value_start, field.end))
                value = detached.take_value(node)
            if value is not None:
                store.values[node.name] = value
            slim.node.append(node)
            continue
        batch.append(wire.read_range(handle, field.start, field.end))
        batch_bytes += field.end - field.start
        if batch_bytes >= _BATCH_BYTES:
            flush()
    flush()
    return slim, store


@dataclasses.dataclass(frozen=True)
class ValueTensor:
    """Where a serialized NodeDef keeps attr["value"].tensor (offsets in the handle's bytes)."""

    entry: wire.Field         # the NodeDef.attr map entry whose key is "value"
    attr: wire.Field          # that entry's AttrValue
    tensor: wire.Field        # the AttrValue's tensor: its only field
    others: list[wire.Field]  # every other field of the NodeDef, in order


def locate_value_tensor(handle: BinaryIO, start: int, end: int) -> ValueTensor:
    """Find attr["value"].tensor in the NodeDef at handle[start:end]; raise Unexpected if odd.

    Odd: no "value" entry, or one protobuf would have to merge (a repeated key or value
    field), or an AttrValue that holds more than a tensor.
    """
    others, found = [], None
    for field in wire.fields(handle, start, end):
        if field.number == NODE_ATTR and field.wire_type == wire.LENGTH_DELIMITED:
            key, attr = _map_entry(handle, field)
            if key == b"value":
                if found is not None:
                    raise Unexpected  # a repeated key: protobuf keeps the last; do not guess
                found = (field, attr)
                continue
        others.append(field)
    if found is None:
        raise Unexpected
    entry, attr = found
    return ValueTensor(entry, attr, _only_field(handle, attr, ATTR_TENSOR), others)


def _read_large_const(handle: BinaryIO, node_field: wire.Field) -> tuple[node_def_pb2.NodeDef, np.ndarray]:
    """Parse one NodeDef field, reading its attr["value"] tensor_content into an array."""
    where = locate_value_tensor(handle, node_field.value_start, node_field.end)
    node = node_def_pb2.NodeDef.FromString(b"".join(wire.read_range(handle, f.start, f.end) for f in where.others))
    if node.op != "Const":
        raise Unexpected
    tensor_rest, content = [], None
    for field in wire.fields(handle, where.tensor.value_start, where.tensor.end):
        if field.number == TENSOR_CONTENT and field.wire_type == wire.LENGTH_DELIMITED:
            if content is not None:
                raise Unexpected
            content = field
            continue
        tensor_rest.append(wire.read_range(handle, field.start, field.end))
    tensor = tensor_pb2.TensorProto.FromString(b"".join(tensor_rest))
    layout = detached.detachable(tensor)
    if content is None or layout is None or layout[2] != content.end - content.value_start:
        raise Unexpected
    dtype, shape, nbytes = layout
    value = np.empty(shape, dtype)
    handle.seek(content.value_start)
    if handle.readinto(memoryview(value.reshape(-1).view(np.uint8))) != nbytes:
        raise wire.WireError("file ends inside a tensor")
    node.attr["value"].CopyFrom(attr_value_pb2.AttrValue(tensor=tensor))
    return node, value


def _map_entry(handle: BinaryIO, entry: wire.Field) -> tuple[bytes | None, wire.Field | None]:
    """(key, value field) of a map<string, message> entry, the value not read.

    key is None when unreadable (long or odd); a "value" entry that protobuf would merge
    from several value fields is refused (Unexpected) rather than half-read.
    """
    key, values, odd = None, [], False
    for field in wire.fields(handle, entry.value_start, entry.end):
        if field.number == MAP_KEY and field.wire_type == wire.LENGTH_DELIMITED \
                and field.end - field.value_start < 4096:
            key = wire.read_range(handle, field.value_start, field.end)
        elif field.number == MAP_VALUE and field.wire_type == wire.LENGTH_DELIMITED:
            values.append(field)
        else:
            odd = True
    if key == b"value" and (odd or len(values) != 1):
        raise Unexpected
    return key, values[-1] if values else None


def _only_field(handle: BinaryIO, message: wire.Field, number: int) -> wire.Field:
    """The message's one field, which must be length-delimited field `number`."""
    found = list(wire.fields(handle, message.value_start, message.end))
    if len(found) != 1 or found[0].number != number or found[0].wire_type != wire.LENGTH_DELIMITED:
        raise Unexpected
    return found[0]
