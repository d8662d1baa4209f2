"""Find every cuDNN RNN op in a GraphDef (top level and function library) and replace it.

The pipeline, per body (the graph, then each library function that can run)::

    refuse training graphs (CudnnRNNBackprop*)
    each CudnnRNN/V2/V3:  read_forward_op -> the target plans and traces its function
                          -> fold or slice params -> splice a call under the node's name
    prune the pure nodes that only built folded params buffers
    targets with `gather_reverse_sequences`: Keras's ReverseSequence ops on the converted
                          ops' lengths -> one row gather each (reverse_sequence.py)
    each helper op:       HELPER_HANDLERS[op] (Const, concat, slices)
    drop colocation constraints (`_class: loc:@X`) naming a node that was removed
    check: no cuDNN op left

The rewrite is given its target (`graphfix.targets`) and never imports one.
"""

from __future__ import annotations

import logging

from tensorflow.core.framework import graph_pb2

from graphfix.cudnn import gates
from graphfix.errors import GraphfixError, UnsupportedError
from graphfix.graph.bodies import (
    Body,
    GraphBody,
    TensorRef,
    bodies,
    find_cudnn_nodes,
    is_cudnn,
    reachable_functions,
)
from graphfix.graph.detached import ConstStore
from graphfix.graph.folding import Folder
from graphfix.graph.side_by_side import side_by_side
from graphfix.report import Report
from graphfix.rewrite.context import Context
from graphfix.rewrite.forward_op import FORWARD_OPS, Shapes
from graphfix.rewrite.helper_ops import HELPER_HANDLERS
from graphfix.rewrite.replace_forward import convert_forward
from graphfix.rewrite.reverse_sequence import replace_reverse_sequences
from graphfix.rewrite.splice import drop_colocation_with, prune_dead
from graphfix.rewrite.target import Target

log = logging.getLogger(__name__)


def convert_graph_def(graph_def: graph_pb2.GraphDef, target: Target, source: str = "<graph>",
                      gate_order: str = gates.CUDNN, roots=()) -> tuple[graph_pb2.GraphDef, Report]:
    """Return a copy of `graph_def` with every cuDNN RNN op replaced, and the report.

    The input is not modified. Raises a GraphfixError subclass naming the node when an op
    cannot be converted; nothing is returned then. gate_order: how LSTM params buffers order
    their gates (`graphfix.cudnn.gates`; "ifoc" for ROCm builds of Keras). target: how each
    forward op is emitted (`graphfix.targets.cpu.CpuTarget()`, `graphfix.targets.tflite.TfliteTarget`).
    roots: functions callable from outside the graph (a SavedModel's saved concrete functions). A library function
    that neither the graph nor a root calls never runs: it is left as it is and listed in
    `report.left_unchanged`.
    """
    out, _, report = convert_detached(graph_def, None, target, source, gate_order, roots)
    return out, report


def convert_detached(graph_def: graph_pb2.GraphDef, consts: ConstStore | None, target: Target,
                     source: str = "<graph>", gate_order: str = gates.CUDNN, roots=(),
                     ) -> tuple[graph_pb2.GraphDef, ConstStore | None, Report]:
    """`convert_graph_def` for a slim graph whose large Const values are in `consts`.

    Returns (slim converted graph, the values it needs, report): folded weights go into
    the returned store rather than the proto (`graphfix.graph.detached`). Neither input is
    modified; values are shared, not copied. consts=None: an ordinary, complete GraphDef.
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    working = ConstStore(consts.values) if consts is not None else None
    ctx = Context(out, Report(source=source), target, gates.check(gate_order))
    live = reachable_functions(out, roots)
    left_alone = set()
    for body in bodies(out, working):  # a list made now: functions added while converting are not revisited
        if not any(is_cudnn(n.op) for n in body.nodes):
            continue
        if isinstance(body, GraphBody) or body.container.signature.name in live:
            _rewrite_body(ctx, body)
        else:
            # Nothing can call it, so it never runs: tf_keras SavedModels keep GPU-only
            # variants and gradient functions so. Some of those (gradients, training-only
            # forward passes) cannot be converted; leaving them all exactly as they were is
            # both safe and faithful.
            left_alone.add(body.where)
            ops = sorted({n.op for n in body.nodes if is_cudnn(n.op)})
            ctx.report.left_unchanged.append((body.container.signature.name, ", ".join(ops)))
    ctx.report.cleared_devices = _clear_gpu_devices(out)
    left = [f"{where}: {n.name} ({n.op})" for where, n in find_cudnn_nodes(out) if where not in left_alone]
    if left:  # a handler bug, never user error: fail loudly rather than write a GPU-only graph
        raise GraphfixError("cuDNN ops left after conversion: " + ", ".join(left))
    return out, (working.restricted_to(out) if working is not None else None), ctx.report


def _rewrite_body(ctx: Context, body: Body) -> None:
    before = {n.name for n in body.nodes}
    _replace_ops(ctx, body)
    drop_colocation_with(body, before - {n.name for n in body.nodes})


def _replace_ops(ctx: Context, body: Body) -> None:
    shapes = Shapes(ctx.shape_graph, body)
    folder = Folder(body)
    folded_params: list[TensorRef] = []
    nodes = list(body.nodes)
    backprop = [n for n in nodes if n.op.startswith("CudnnRNNBackprop")]
    if backprop:
        raise UnsupportedError(
            f"this is a training graph: it computes cuDNN RNN gradients ({backprop[0].op}); "
            "convert the inference graph instead", f"{body.where}, node {backprop[0].name!r}")
    # CudnnRNNV3's sequence_lengths (input 4), read before the ops are replaced
    lengths = {body.parse_input(n.input[4]) for n in nodes if n.op == "CudnnRNNV3" and len(n.input) > 4}
    beside = side_by_side(body, [n.name for n in nodes if n.op in FORWARD_OPS])
    for node in nodes:
        if node.op in FORWARD_OPS:
            log.info("converting %s %r (%s)", node.op, node.name, body.where)
            params_ref = convert_forward(ctx, body, node, shapes, folder, node.name in beside)
            if params_ref is not None:
                folded_params.append(params_ref)
    ctx.report.removed_nodes += prune_dead(body, folded_params)
    if getattr(ctx.target, "gather_reverse_sequences", False):
        for name in replace_reverse_sequences(ctx, body, lengths - {None}):
            ctx.report.helpers.append(f"ReverseSequence {name!r} ({body.where}) -> one gather of rows "
                                      "(the same values; TensorFlow's CPU kernel for it is slow)")
    for node in list(body.nodes):
        handler = HELPER_HANDLERS.get(node.op)
        if handler is not None:
            handler(ctx, body, node, shapes, folder)
        elif is_cudnn(node.op) and node.op not in FORWARD_OPS:
            raise UnsupportedError(f"op {node.op} is not supported", f"{body.where}, node {node.name!r}")


def _clear_gpu_devices(graph_def: graph_pb2.GraphDef) -> int:
    """Drop GPU placements (a GPU-trained graph often pins every node there)."""
    count = 0
    all_nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for n in all_nodes:
        if "GPU" in n.device.upper():
            n.device = ""
            count += 1
    return count
