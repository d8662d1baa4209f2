"""tf2onnx converts the graph; graphfix's handler converts its cuDNN ops (tf2onnx's public
`custom_op_handlers` extension point of `tf2onnx.convert.from_graph_def`).

    frozen GraphDef (cuDNN ops in it)
      -> prepare: each CudnnRNN/V2/V3 read (`rewrite.read_forward_op`), its params folded and
         unpacked in numpy (`plan.plan_rnn`); its params input cut to an empty Const, so
         neither TensorFlow nor tf2onnx folds or carries the old buffer (nor runs
         CudnnRNNCanonicalToParams, which has no CPU kernel); the dead subgraph pruned
      -> tf2onnx.convert.from_graph_def(custom_op_handlers={CudnnRNN*: graphfix's handler})
         the handler removes the node and emits the plan's ONNX nodes under the node's output
         names (`emit.emit_rnn` through `Tf2onnxBuilder`), so every consumer stays wired
      -> check: only standard ONNX ops left (tf2onnx's from_graph_def carries on after an op it
         cannot convert, leaving it as a TensorFlow op), and onnx.checker passes
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graphfix.cudnn import gates
from graphfix.errors import GraphfixError, UnsupportedError
from graphfix.graph.bodies import GraphBody, ancestors
from graphfix.graph.folding import Folder
from graphfix.rewrite.forward_op import FORWARD_OPS, ForwardOp, Shapes, node_where, read_forward_op
from graphfix.targets.onnx.emit import OPSET, emit_rnn
from graphfix.targets.onnx.plan import OnnxRnn, plan_rnn

log = logging.getLogger(__name__)


def prepare(graph_def: graph_pb2.GraphDef, outputs: list[str], gate_order: str = gates.CUDNN
            ) -> tuple[graph_pb2.GraphDef, dict[str, OnnxRnn], list[ForwardOp]]:
    """A copy of the frozen graph_def ready for tf2onnx, each cuDNN forward op's ONNX plan, and its ForwardOp.

    outputs: the graph tensors the model returns (what pruning keeps). Raises a GraphfixError
    naming the node when an op cannot become ONNX recurrent nodes; nothing is returned then.
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    body = GraphBody(out)
    shapes = Shapes(lambda: _imported(graph_def), body)
    folder = Folder(body)
    plans, fops = {}, []
    for node in list(body.nodes):
        if node.op not in FORWARD_OPS:
            continue
        where = node_where(body, node)
        fop = read_forward_op(body, node, shapes, folder, gate_order)
        plans[node.name] = plan_rnn(fop, where, lengths_full=lengths_always_full(body, folder, fop))
        fops.append(fop)
        empty = out.node.add()
        empty.name, empty.op = f"{node.name}/graphfix_no_params", "Const"
        empty.attr["dtype"].type = node.attr["T"].type
        empty.attr["value"].tensor.dtype = node.attr["T"].type
        empty.attr["value"].tensor.tensor_shape.dim.add().size = 0
        node.input[3] = empty.name
    return _pruned(out, {t.split(":")[0] for t in outputs}), plans, fops


def lengths_always_full(body: GraphBody, folder: Folder, fop: ForwardOp) -> bool:
    """True when every V3 sequence length is at least the op's number of steps, whatever the
    inputs: constant lengths (with a static step count), or Keras 3's unmasked
    `Fill([batch], tf.shape(x)[time axis])` of the op's own input x. sequence_lens is then left
    out: it would change nothing, and costs a few small ops per call."""
    if fop.lengths_ref is None or fop.lengths_ref.is_arg:
        return False
    steps = fop.x_shape[0 if fop.time_major else 1] if fop.x_shape.rank == 3 else None
    if fop.lengths is not None:
        return steps is not None and bool(np.all(np.asarray(fop.lengths) >= steps))
    fill = body.node(fop.lengths_ref.node)
    if fill is None or fill.op != "Fill":
        return False
    value_ref = body.data_inputs(fill)[1]
    value = folder.fold(value_ref)
    if value is not None:
        return steps is not None and value.size == 1 and int(value.reshape(())) >= steps
    return _is_step_count(body, folder, value_ref, body.data_inputs(body.node(fop.node))[0],
                          0 if fop.time_major else 1)


def _is_step_count(body: GraphBody, folder: Folder, ref, x_ref, axis: int) -> bool:
    """ref is StridedSlice(Shape(x))[axis] (a scalar): x's size along `axis`."""
    node = None if ref.is_arg else body.node(ref.node)
    if node is None or node.op != "StridedSlice" or node.attr["shrink_axis_mask"].i != 1:
        return False
    source, begin, end, strides = body.data_inputs(node)[:4]
    shape = None if source.is_arg else body.node(source.node)
    if shape is None or shape.op != "Shape" or _identity_source(body, body.data_inputs(shape)[0]) \
            != _identity_source(body, x_ref):
        return False
    values = [folder.fold(r) for r in (begin, strides)]
    return all(v is not None for v in values) and values[0].tolist() == [axis] and values[1].tolist() == [1]


def _identity_source(body: GraphBody, ref):
    """The tensor an Identity chain starts from."""
    while not ref.is_arg:
        node = body.node(ref.node)
        if node is None or node.op != "Identity":
            break
        ref = body.data_inputs(node)[0]
    return ref


def _pruned(graph_def: graph_pb2.GraphDef, keep: set[str]) -> graph_pb2.GraphDef:
    """The nodes `keep` and everything they depend on (data and control inputs), library kept."""
    seen = ancestors(GraphBody(graph_def), keep)
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(n for n in graph_def.node if n.name in seen)
    return out


def _imported(graph_def) -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


class Tf2onnxBuilder:
    """`emit.Builder` over tf2onnx's graph (the `ctx` its op handlers get)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def const(self, name: str, value: np.ndarray) -> str:
        return self.ctx.make_const(name, np.asarray(value)).output[0]

    def node(self, op, inputs, name, attrs=None, outputs=None, num_outputs=1):
        made = self.ctx.make_node(op, inputs, attr=attrs or {}, name=name, outputs=outputs, output_count=num_outputs)
        return list(made.output)


def cudnn_handler(plans: dict[str, OnnxRnn]):
    """tf2onnx's custom op handler for the cuDNN forward ops `plans` describes (old style:
    func(ctx, node, name, args); its args must stay empty, since tf2onnx reads a first arg as
    the ONNX op type to rename the node to)."""
    def handle(ctx, node, name, args):
        rnn = plans.get(node.name)
        if rnn is None:  # a node graphfix did not prepare: never write a model missing it
            raise GraphfixError(f"tf2onnx handed graphfix an unprepared {node.type} node {node.name!r}")
        inputs, outputs = list(node.input), list(node.output)
        lstm = rnn.spec.mode == "lstm"
        used = [o if ctx.find_output_consumers(o) or o in ctx.outputs else None for o in outputs]
        ctx.remove_node(node.name)
        emit_rnn(Tf2onnxBuilder(ctx), rnn, inputs[0], inputs[1], inputs[2] if lstm else None,
                 inputs[4] if rnn.has_lengths else None, used)
    return handle


def to_onnx(graph_def: graph_pb2.GraphDef, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]],
            plans: dict[str, OnnxRnn], name: str, opset: int = OPSET):
    """Convert a prepared graph (`prepare`) with tf2onnx; returns the checked ModelProto.

    inputs/outputs: (graph tensor, ONNX name) pairs; the ONNX model's names are the second ones.
    """
    import onnx
    from tf2onnx import convert

    handlers = {op: (cudnn_handler(plans), []) for op in FORWARD_OPS}
    renames = {t: n for t, n in inputs + outputs if t != n}
    try:
        with _quiet("tf2onnx"):
            model, _ = convert.from_graph_def(graph_def, name=name, input_names=[t for t, _ in inputs],
                                              output_names=[t for t, _ in outputs], opset=opset,
                                              custom_op_handlers=handlers, tensors_to_rename=renames)
    except GraphfixError:
        raise
    except Exception as exc:  # tf2onnx raises many types; all mean "not converted"
        log.debug("tf2onnx failed", exc_info=True)
        raise UnsupportedError(f"tf2onnx could not convert the graph: {type(exc).__name__}: {exc}") from None
    foreign = sorted({f"{n.op_type} ({n.domain or 'ai.onnx'})" for n in _all_nodes(model.graph)
                      if n.domain not in ("", "ai.onnx") or not onnx.defs.has(n.op_type)})
    if foreign:
        raise UnsupportedError("tf2onnx left op(s) it cannot convert to ONNX: " + ", ".join(foreign))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise GraphfixError(f"the ONNX model fails onnx.checker: {str(exc).splitlines()[0]}") from None
    return model


@contextlib.contextmanager
def _quiet(name: str):
    """Keep a library's warnings (tf2onnx's "Cannot infer shape for ...") off the user's screen,
    unless graphfix logs at DEBUG (--debug); its errors still show."""
    logger = logging.getLogger(name)
    before = logger.level
    if not logging.getLogger("graphfix").isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)
