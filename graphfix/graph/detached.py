"""Large constants held as numpy arrays beside a slim GraphDef while a model file converts.

A frozen cuDNN model keeps its weights in Const nodes, and one params buffer can be over
a gigabyte. Inside a protobuf message each copy of such a node costs its full size, and
its memory is not given back while the message lives. So `graphfix.convert` on a GraphDef
file detaches every large Const value right after parsing: the graph it converts is slim
(those Consts keep their dtype and shape, not their content), and the values go back in
node by node as the output is written (`graph_def_file.write_graph_def`)::

    slim GraphDef:  Const "params"  {dtype: float32, shape: [N]}      (no content)
    ConstStore:     {"params": ndarray float32 [N]}

Only the top-level graph's Consts are detached (functions hold small constants), and
only values stored as `tensor_content` (how TensorFlow stores every large tensor).
Attaching writes exactly the bytes `tf.make_tensor_proto` would, so a converted model is
byte-identical whichever way it was made.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

# Smaller values stay in the proto: detaching pays off only where copies are costly.
DETACH_BYTES = 1 << 20


class ConstStore:
    """Values of detached top-level Const nodes, by node name."""

    def __init__(self, values: dict[str, np.ndarray] | None = None):
        self.values: dict[str, np.ndarray] = dict(values or {})

    def __len__(self) -> int:
        return len(self.values)

    def value(self, node: node_def_pb2.NodeDef) -> np.ndarray | None:
        """The node's detached value, or None when the node holds its own (or is no Const)."""
        return self.values.get(node.name) if node.op == "Const" else None

    def wants(self, value: np.ndarray) -> bool:
        """Whether a new Const of this value should be detached (it is large)."""
        return value.nbytes >= DETACH_BYTES

    def put(self, node: node_def_pb2.NodeDef, value: np.ndarray) -> None:
        """Make `node` a slim Const of `value`'s dtype and shape, holding `value` here."""
        # Kept as given, views included: the bytes are made (in C order) only when written.
        value = np.asarray(value)
        dtype = tf.as_dtype(value.dtype).as_datatype_enum
        node.op = "Const"
        node.attr["dtype"].type = dtype
        tensor = node.attr["value"].tensor
        tensor.Clear()
        tensor.dtype = dtype
        for size in value.shape:
            tensor.tensor_shape.dim.add().size = size
        self.values[node.name] = value

    def restricted_to(self, graph_def: graph_pb2.GraphDef) -> "ConstStore":
        """A store with only the values whose Const nodes `graph_def` still has (arrays shared)."""
        return ConstStore({n.name: self.values[n.name] for n in graph_def.node
                           if n.op == "Const" and n.name in self.values})

    def full_node(self, node: node_def_pb2.NodeDef) -> node_def_pb2.NodeDef:
        """`node` with its value put back (a copy), or `node` itself when nothing was detached."""
        value = self.value(node)
        if value is None:
            return node
        full = node_def_pb2.NodeDef()
        full.CopyFrom(node)
        full.attr["value"].tensor.tensor_content = value.tobytes()
        return full

    def attach(self, graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
        """A complete copy of `graph_def` with every detached value put back."""
        out = graph_pb2.GraphDef()
        out.CopyFrom(graph_def)
        for node in out.node:
            value = self.value(node)
            if value is not None:
                node.attr["value"].tensor.tensor_content = value.tobytes()
        return out


def detach(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, ConstStore]:
    """Take the large Const values out of a freshly parsed GraphDef: (slim copy, their values).

    `graph_def` is emptied of those values and should be dropped: protobuf frees a
    message's memory only with the whole message, so the slim graph is a new message and
    each value then exists once (a read-only array over the bytes protobuf handed out).
    """
    store = ConstStore()
    for node in graph_def.node:
        value = take_value(node)
        if value is not None:
            store.values[node.name] = value
    slim = graph_pb2.GraphDef()
    slim.CopyFrom(graph_def)
    return slim, store


def detachable(tensor) -> tuple[np.dtype, list[int], int] | None:
    """(dtype, shape, byte size) when the tensor's content should live outside the proto.

    Decided from dtype and shape alone: reading tensor_content copies it (and upb's
    ByteSize serializes). Small or unusual tensors (string or resource dtypes, negative
    sizes) stay in the proto, where TensorFlow's own checks see them.
    """
    try:
        dtype = np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype)
    except (TypeError, ValueError):
        return None
    shape = [d.size for d in tensor.tensor_shape.dim]
    if dtype.hasobject or dtype.kind in "SU" or any(size < 0 for size in shape):
        return None
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: a crafted shape cannot overflow
    return (dtype, shape, nbytes) if nbytes >= DETACH_BYTES else None


def take_value(node: node_def_pb2.NodeDef) -> np.ndarray | None:
    """A large Const's value as an array (read-only, over protobuf's bytes), cleared from the node.

    None, node untouched, unless the node is a Const whose tensor is `detachable` and holds
    exactly as many content bytes as its shape says (malformed ones are left for TensorFlow
    to refuse).
    """
    if node.op != "Const" or "value" not in node.attr:
        return None
    tensor = node.attr["value"].tensor
    layout = detachable(tensor)
    if layout is None:
        return None
    dtype, shape, nbytes = layout
    content = tensor.tensor_content
    if len(content) != nbytes:
        return None
    tensor.ClearField("tensor_content")
    return np.frombuffer(content, dtype=dtype).reshape(shape)
