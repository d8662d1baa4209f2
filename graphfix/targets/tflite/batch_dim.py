"""Which dimension of each signature input is the batch: found from the graph, not assumed.

A time-major TF1 model takes x [T, B, I], a Keras model x [B, T, F], a tf_keras model with
an initial state h0 [B, H] besides. The dimension that matters is the one that reaches a
cuDNN op's batch (x dim 1 time-major / dim 0 batch-major, input_h / input_c likewise, V3's
sequence_lengths dim 0). Found by TensorFlow's own shape inference on marked shapes::

    signature input x [?, ?, 3]  -> placeholder shape [1009, 1013, 1019] (a distinct prime per dim)
    import the graph; follow (Stateful)PartitionedCall into library functions with the
    call's input shapes (function_def_to_graph), down to each Cudnn forward op
    CudnnRNN x [1009, 1013, 1019]: time-major, batch dim 1 = 1013 -> x's dimension 1

A product or a slice of a marked size is never one of the primes, so only a dimension that
reaches the op unchanged is taken. No dimension found: `find_batch_dims` says so per signature,
and the caller asks for help rather than guess.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf
from tensorflow.python.framework import function_def_to_graph

from graphfix.rewrite.forward_op import FORWARD_OPS

log = logging.getLogger(__name__)

FIRST_MARK = 1009  # primes from here on: far from any real layer size, and no product of two of them
CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
MAX_DEPTH = 16


@dataclasses.dataclass(frozen=True)
class SignatureBatch:
    """Per signature: input key -> the dimension that is the batch, and that input's static size there.

    dims: inputs with a dimension that reaches a cuDNN op's batch (others: no batch found).
    static: input key -> the size of that dimension in the signature (None: open).
    unmarked: the cuDNN ops the signature runs whose batch no input dimension reaches
    ("CudnnRNN 'rnn' (function f)").
    """

    key: str
    dims: dict
    static: dict
    unmarked: tuple = ()

    def describe(self, meta_signature) -> str:
        """E.g. "x [?, ?, 3]", the signature's inputs with their shapes."""
        return ", ".join(f"{k} {_shape_text(info.tensor_shape)}" for k, info in sorted(meta_signature.inputs.items()))


def find_batch_dims(meta_graph) -> dict[str, SignatureBatch]:
    """Signature key -> SignatureBatch for every signature of one MetaGraphDef."""
    out = {}
    for key, sig in sorted(meta_graph.signature_def.items()):
        # open sizes first; static ones too only when no open one is the batch (marking a
        # static size can break shape inference: a Reshape to it)
        dims, unmarked = _marked_dims(meta_graph.graph_def, sig, every_dim=False) or ({}, [])
        if not dims:
            dims, unmarked = _marked_dims(meta_graph.graph_def, sig, every_dim=True) or (dims, unmarked)
        static = {k: _dim_size(sig.inputs[k].tensor_shape, d) for k, d in dims.items()}
        out[key] = SignatureBatch(key, dims, static, tuple(unmarked))
    return out


def _marked_dims(graph_def, sig, every_dim: bool) -> tuple[dict, list] | None:
    """(input key -> batch dimension, ops whose batch is no mark), by shape inference on marked
    placeholder shapes; None if the marked graph does not import."""
    marks: dict[int, tuple[str, int]] = {}
    primes = _primes(FIRST_MARK)
    marked = type(graph_def)()
    marked.CopyFrom(graph_def)
    nodes = {n.name: n for n in marked.node}
    for key, info in sorted(sig.inputs.items()):
        node = nodes.get(info.name.split(":")[0])
        if node is None or node.op not in ("Placeholder", "PlaceholderWithDefault") or info.tensor_shape.unknown_rank:
            continue
        shape = []
        for d, dim in enumerate(info.tensor_shape.dim):
            if dim.size < 0 or every_dim:
                mark = next(primes)
                marks[mark] = (key, d)
                shape.append(mark)
            else:
                shape.append(dim.size)
        node.attr["shape"].shape.CopyFrom(tf.TensorShape(shape).as_proto())
        node.attr.pop("_output_shapes", None)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(marked, name="")
    except Exception as exc:  # noqa: BLE001 (a static size the graph relies on: the caller retries without marking it)
        log.debug("batch search: marked graph does not import: %s", exc)
        return None
    library = {f.signature.name: f for f in marked.library.function}
    used = _ancestors(graph, [info.name for info in sig.outputs.values()])
    found: dict[str, int] = {}
    unmarked = []
    for sizes, where in _cudnn_batch_sizes(graph, graph, library, set(marks), used, 0, set()):
        if not sizes:
            unmarked.append(where)
        for size in sizes:
            key, d = marks[size]
            found.setdefault(key, d)
    return found, unmarked


def _ancestors(graph, tensor_names) -> set[str]:
    """Names of the ops the given tensors depend on (data and control inputs), themselves included."""
    stack = []
    for name in tensor_names:
        try:
            element = graph.as_graph_element(name)
        except (KeyError, ValueError):
            continue
        stack.append(element if isinstance(element, tf.Operation) else element.op)
    seen = set()
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen.add(op.name)
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return seen


def _cudnn_batch_sizes(graph, base, library, marks: set, used: set | None, depth: int, seen: set):
    """Yield (the marked sizes among its batch dimensions, op description) for every cuDNN forward op that runs: in graph
    (only ops in `used` when given) and in the functions it calls with a marked size."""
    where = f"function {graph.name}" if depth else "graph"
    for op in graph.get_operations():
        if used is not None and op.name not in used:
            continue
        if op.type in FORWARD_OPS:
            time_major = op.type != "CudnnRNNV3" or op.get_attr("time_major")
            axis = 1 if time_major else 0
            shapes = [(op.inputs[i].shape, axis) for i in range(3)]
            if op.type == "CudnnRNNV3":
                shapes.append((op.inputs[4].shape, 0))
            sizes = [s[a] for s, a in shapes if s.rank is not None and a < s.rank and s[a] in marks]
            yield sizes, f"{op.type} {op.name!r} ({where})"
        elif op.type in CALL_OPS and depth < MAX_DEPTH:
            shapes = [t.shape for t in op.inputs]
            if not any(s.rank is not None and any(d in marks for d in s.as_list()) for s in shapes):
                continue  # no marked size goes in: nothing to find there
            name = op.get_attr("f").name
            key = (name, tuple(tuple(s.as_list()) if s.rank is not None else None for s in shapes))
            if name not in library or key in seen:
                continue
            seen.add(key)
            try:
                with base.as_default():
                    body = function_def_to_graph.function_def_to_graph(_unannotated(library[name]),
                                                                       input_shapes=shapes)
            except Exception as exc:  # noqa: BLE001 (shapes are a help: a function that does not import is skipped)
                log.debug("batch search: function %s does not import: %s", name, exc)
                continue
            yield from _cudnn_batch_sizes(body, base, library, marks, None, depth + 1, seen)


def _unannotated(fdef):
    """A copy of fdef without its recorded shapes (`_output_shapes`, `_input_shapes`), which
    pin the shapes it was traced with and would hide the marks."""
    out = type(fdef)()
    out.CopyFrom(fdef)
    out.attr.pop("_input_shapes", None)
    for node in out.node_def:
        node.attr.pop("_output_shapes", None)
    for arg in out.arg_attr.values():
        arg.attr.pop("_output_shapes", None)
    return out


def _primes(start: int):
    n = start
    while True:
        if all(n % p for p in range(2, int(n ** 0.5) + 1)):
            yield n
        n += 1


def _dim_size(shape_proto, d: int) -> int | None:
    size = shape_proto.dim[d].size
    return size if size >= 0 else None


def _shape_text(shape_proto) -> str:
    if shape_proto.unknown_rank:
        return "[unknown rank]"
    return "[" + ", ".join(str(d.size) if d.size >= 0 else "?" for d in shape_proto.dim) + "]"
