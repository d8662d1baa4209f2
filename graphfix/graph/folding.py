"""Fold a tensor of the input graph to a numpy value, running only pure ops from an allowlist.

Params buffers are usually constants, or small constant subgraphs (Keras concatenates
reshaped, transposed slices), or `CudnnRNNCanonicalToParams` over constants. Folding runs
the subgraph in a private TensorFlow session on CPU, but only if every node in it is one of
`PURE_OPS`; cuDNN helpers in it are computed with the numpy layout code. Anything else
(placeholders, variables, stateful or file ops) means "not constant", and the caller slices
the buffer in-graph instead. Nothing outside the params' ancestry is ever run.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graphfix.cudnn import layout
from graphfix.errors import UnsupportedError
from graphfix.graph.bodies import Body, TensorRef

# Ops through which params come from a model's variables: not folded (variables stay variables).
VARIABLE_READS = frozenset({"ReadVariableOp", "VariableV2", "Variable", "VarHandleOp", "ResourceGather"})
# Ops that compute a value from their inputs alone: no state, no I/O, no randomness.
PURE_OPS = frozenset({
    "Const", "Identity", "IdentityN", "Snapshot", "StopGradient", "PreventGradient",
    "Concat", "ConcatV2", "Reshape", "Transpose", "Slice", "StridedSlice", "Split", "SplitV",
    "Squeeze", "ExpandDims", "Pack", "Unpack", "Tile", "Pad", "PadV2", "Reverse", "ReverseV2",
    "Gather", "GatherV2", "Fill", "Range", "Shape", "Size", "Rank", "ZerosLike", "OnesLike",
    "Cast", "Add", "AddV2", "Sub", "Mul", "Neg", "RealDiv", "Maximum", "Minimum",
})
CANONICAL_TO_PARAMS = ("CudnnRNNCanonicalToParams", "CudnnRNNCanonicalToParamsV2")


class Folder:
    """Folds tensors of one graph body; remembers results and why a tensor is not constant."""

    def __init__(self, body: Body):
        self.body = body
        self._cache: dict[TensorRef, np.ndarray | None] = {}
        self.why_not: dict[TensorRef, str] = {}

    def fold(self, ref: TensorRef) -> np.ndarray | None:
        """The tensor's value, or None when it is not computable from constants alone."""
        if ref not in self._cache:
            self._cache[ref] = self._fold(ref)
        return self._cache[ref]

    def ancestors(self, ref: TensorRef) -> list[str]:
        """Node names the tensor depends on through data inputs (the tensor's node first)."""
        seen, order, stack = set(), [], [ref.node]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = self.body.node(name)
            if node is None:
                continue
            order.append(name)
            stack.extend(r.node for r in self.body.data_inputs(node) if not r.is_arg)
        return order

    def _fold(self, ref: TensorRef):
        if ref.is_arg:
            self.why_not[ref] = f"it is the function argument {ref.node!r}"
            return None
        names = self.ancestors(ref)
        node = self.body.node(ref.node)
        if node is not None and node.op == "Const" and ref.index == 0:
            # The common case, read straight from the proto: a session would hold a
            # gigabyte-sized buffer four more times.
            detached = self.body.detached_value(node)
            return detached if detached is not None else tf.make_ndarray(node.attr["value"].tensor)
        substitutes: dict[str, np.ndarray] = {}
        for name in names:
            node = self.body.node(name)
            detached = self.body.detached_value(node)
            if detached is not None:  # a slim Const: its value is not in the proto
                substitutes[name] = detached
                continue
            if node.op in CANONICAL_TO_PARAMS:
                parts = [self.fold(r) for r in self.body.data_inputs(node)[3:]]
                if any(p is None for p in parts):
                    self.why_not[ref] = f"{node.op} {name!r} has an input that is not constant"
                    return None
                substitutes[name] = layout.pack_canonical(parts, [])  # weights then biases: one flat list
                continue
            if node.op in VARIABLE_READS:
                self.why_not[ref] = f"read from the model's variables at run time: {node.op} {name!r}"
                return None
            if node.op not in PURE_OPS:
                self.why_not[ref] = f"it depends on node {name!r} (op {node.op})"
                return None
            args = [r.node for r in self.body.data_inputs(node) if r.is_arg]
            if args:
                self.why_not[ref] = f"it depends on the function argument {args[0]!r}"
                return None
        if ref.node in substitutes:
            return substitutes[ref.node]
        try:
            return _run_subgraph(self.body, names, substitutes, ref)
        except _NotFoldable as exc:
            self.why_not[ref] = str(exc)
            return None

    def control_inputs(self, ref: TensorRef) -> list[str]:
        """Control inputs ("^node") of the tensor's folded ancestry that point outside it.

        Folding drops the params subgraph; whatever it was ordered after must still run
        before the weights that replace it are used.
        """
        names = set(self.ancestors(ref))
        controls = {text for name in names for text in self.body.node(name).input
                    if text.startswith("^") and text[1:].split(":")[0] not in names}
        return sorted(controls)


class _NotFoldable(Exception):
    """The subgraph is pure but folding it is not worth the risk (its message says why)."""


# An intermediate may hold at most this many times the folded tensor's elements (plus a
# slack): a Keras-style params subgraph never exceeds 1x, while `slice(fill([2**31]))`
# from an untrusted model would allocate gigabytes.
_GROWTH_LIMIT, _SLACK = 4, 1 << 20


def _run_subgraph(body: Body, names: list[str], substitutes: dict, ref: TensorRef) -> np.ndarray:
    """Evaluate `ref` from the listed nodes in a fresh CPU session.

    Raises _NotFoldable when some static size is unknown or too large, and
    UnsupportedError when TensorFlow cannot compute the value.
    """
    sub = graph_pb2.GraphDef()
    keep = set(names)
    for name in reversed(names):
        node = sub.node.add()
        if name in substitutes:
            node.CopyFrom(_const_node(name, substitutes[name]))
            continue
        node.CopyFrom(body.node(name))
        node.device = ""
        if "_class" in node.attr:  # colocation may name a node outside the ancestry: placement is moot here
            del node.attr["_class"]
        del node.input[:]
        for text in body.node(name).input:
            r = body.parse_input(text)
            if r is not None and r.node in keep:
                node.input.append(r.node if r.index == 0 else f"{r.node}:{r.index}")
    graph = tf.Graph()
    where = f"{body.where}, node {ref.node!r}"
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(sub, name="")
    except ValueError as exc:
        raise UnsupportedError(f"the params subgraph is malformed: {exc}", where) from None
    _check_sizes(graph, f"{ref.node}:{ref.index}")
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    try:
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            return session.run(f"{ref.node}:{ref.index}")
    except tf.errors.OpError as exc:
        first = exc.message.strip().splitlines()[0] if exc.message.strip() else type(exc).__name__
        raise UnsupportedError(f"the params cannot be computed from their constants: {first}", where) from None


def _check_sizes(graph: tf.Graph, target: str) -> None:
    final = graph.get_tensor_by_name(target).shape.num_elements()
    if final is None:
        raise _NotFoldable("its static size is unknown")
    limit = _GROWTH_LIMIT * final + _SLACK
    for op in graph.get_operations():
        for out in op.outputs:
            count = out.shape.num_elements()
            if count is None or count > limit:
                size = "an unknown number of" if count is None else f"{count}"
                raise _NotFoldable(f"folding it would compute {size} elements at node {op.name!r}")


def _const_node(name: str, value: np.ndarray):
    node = graph_pb2.GraphDef().node.add()
    node.name = name
    node.op = "Const"
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return node
