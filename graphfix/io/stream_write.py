"""Write a slim GraphDef and its detached values as one binary GraphDef, node by node.

The inverse of `graphfix.io.stream_read`. The output is byte for byte what
`consts.attach(graph_def).SerializeToString(deterministic=True)` gives, without ever
holding it: protobuf writes known fields in field-number order and `node` is GraphDef's
field 1, so the nodes can go out one at a time and the other fields after them.

A node with a detached value is not rebuilt as a proto (three more copies of a value that
can be hundreds of megabytes). Its slim serialization is split where `tensor_content`
belongs (TensorProto field 4, after dtype, shape and version_number) and the three lengths
that enclose it are re-encoded; the value's bytes are written straight from the array::

    NodeDef ... attr entry {key "value", AttrValue {tensor TensorProto {1 2 3 | 4: content | 5...}}}
                      len ^           len ^              len ^
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from tensorflow.core.framework import graph_pb2, node_def_pb2

from graphfix.graph.detached import ConstStore
from graphfix.io import stream_read, wire
from graphfix.io.stream_read import (
    ATTR_TENSOR,
    GRAPH_NODE,
    MAP_VALUE,
    NODE_ATTR,
    TENSOR_CONTENT,
)


def write_graph(graph_def: graph_pb2.GraphDef, consts: ConstStore, handle: BinaryIO) -> None:
    """Serialize `graph_def` with `consts` put back into `handle` (see module doc)."""
    for node in graph_def.node:
        value = consts.value(node)
        pieces = _spliced(node, value) if value is not None else None
        if pieces is None:  # no detached value, or (never expected) a layout not handled here
            data = consts.full_node(node).SerializeToString(deterministic=True)
            pieces = [data]
        total = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in pieces)
        handle.write(wire.encode_key(GRAPH_NODE) + wire.encode_varint(total))
        for piece in pieces:
            handle.write(piece if isinstance(piece, bytes) else _content_bytes(piece))
    rest = graph_pb2.GraphDef()  # the graph is slim, so copying it whole is cheap
    rest.CopyFrom(graph_def)
    rest.ClearField("node")
    handle.write(rest.SerializeToString(deterministic=True))


def _spliced(node: node_def_pb2.NodeDef, value: np.ndarray) -> list | None:
    """The node's full serialization as pieces: bytes, and `value` where its content goes."""
    data = node.SerializeToString(deterministic=True)
    view = io.BytesIO(data)
    try:
        where = stream_read.locate_value_tensor(view, 0, len(data))
    except stream_read.Unexpected:
        return None
    entry, attr, tensor = where.entry, where.attr, where.tensor
    tensor_fields = list(wire.fields(view, tensor.value_start, tensor.end))
    if any(f.number == TENSOR_CONTENT for f in tensor_fields):
        return None
    insert_at = next((f.start for f in tensor_fields if f.number > TENSOR_CONTENT), tensor.end)

    content_header = wire.encode_key(TENSOR_CONTENT) + wire.encode_varint(value.nbytes)
    tensor_length = tensor.end - tensor.value_start + len(content_header) + value.nbytes
    tensor_header = wire.encode_key(ATTR_TENSOR) + wire.encode_varint(tensor_length)
    attr_length = (tensor.start - attr.value_start) + len(tensor_header) + tensor_length + (attr.end - tensor.end)
    attr_header = wire.encode_key(MAP_VALUE) + wire.encode_varint(attr_length)
    entry_length = (attr.start - entry.value_start) + len(attr_header) + attr_length + (entry.end - attr.end)
    entry_header = wire.encode_key(NODE_ATTR) + wire.encode_varint(entry_length)
    return [data[:entry.start] + entry_header + data[entry.value_start:attr.start]
            + attr_header + data[attr.value_start:tensor.start]
            + tensor_header + data[tensor.value_start:insert_at] + content_header,
            value,
            data[insert_at:]]


def _content_bytes(value: np.ndarray):
    """The value's bytes in C order, without a copy when it is already contiguous."""
    return np.ascontiguousarray(value).reshape(-1).view(np.uint8).data
