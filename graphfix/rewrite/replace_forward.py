"""Replace one CudnnRNN/V2/V3 node by a call of the function its target emits::

    before:  x, h, c, params --> [CudnnRNNV3 "rnn"] --> rnn:0, rnn:1, rnn:2
    after:   x, h, c, rnn/graphfix/layer0_fw_kernel (Const), ...
                     --> [PartitionedCall "rnn" f=graphfix_rnn_<digest>] --> rnn:0, rnn:1, rnn:2

Constant params are folded into one Const per weight slot. Params packed per call from
other tensors (Keras 3's variables) are read from those tensors by a call of their own
(`{node}/graphfix/weights`, `weight_sources.py`) when the target asks for it; any other
params known only at run time are sliced by a second call (`{node}/graphfix/unpack_params`)
that the target also emits.
"""

from __future__ import annotations

import dataclasses

from graphfix.cudnn import gates, weights
from graphfix.errors import UnsupportedError
from graphfix.graph.bodies import Body, TensorRef
from graphfix.graph.consumers import uses
from graphfix.graph.folding import Folder
from graphfix.report import ConvertedOp
from graphfix.rewrite import weight_sources
from graphfix.rewrite.context import Context
from graphfix.rewrite.forward_op import Shapes, node_where, read_forward_op
from graphfix.rewrite.splice import (
    add_call,
    add_weight_consts,
    function_name,
    replace_with_call,
)

TRAINING_OUTPUTS = {3: "reserve_space", 4: "host_reserved"}


def convert_forward(ctx: Context, body: Body, node, shapes: Shapes, folder: Folder,
                    side_by_side: bool = False) -> TensorRef | None:
    """Replace one CudnnRNN/V2/V3 node, as ctx.target emits it. Returns the params ref when it was folded.

    side_by_side: another forward op of the body can run at the same time (`ForwardOp.side_by_side`).
    """
    _refuse_training_consumers(ctx.graph_def, body, node, node_where(body, node))
    fop = dataclasses.replace(read_forward_op(body, node, shapes, folder, ctx.gate_order), side_by_side=side_by_side)
    ctx.report.warnings += fop.warnings
    spec, dtype, target = fop.spec, fop.dtype, ctx.target
    plan = target.plan(body, node, fop, ctx.report)
    fname = function_name(body, node, plan)
    traced = ctx.function(("rnn", target.share_key(plan, fname)), lambda: target.trace_rnn(plan, fname))

    resolved = None
    if fop.params is not None:
        values = weights.graph_weights_from_buffer(fop.params, spec, fop.gate_order)
        weight_refs = add_weight_consts(body, node.name, values, spec, folder.control_inputs(fop.params_ref))
        params_note = "folded to constants"
    elif (resolved := _resolve_sources(ctx, body, folder, shapes, fop)) is not None:
        slots = ctx.function(("sources", spec, dtype, resolved.shapes, resolved.recipe),
                             lambda: weight_sources.trace_slots(resolved, spec, dtype, fname + "_weights"))
        call_name = add_call(body, f"{node.name}/graphfix/weights", slots, list(resolved.inputs), []).name
        weight_refs = [body.format_ref(call_name, i) for i in range(len(slots.output_types))]
        params_note = "read from the tensors the model packed them from (no per-call packing)"
    else:
        unpack = ctx.function(("unpack", spec, dtype, fop.gate_order),
                              lambda: target.trace_params_unpack(spec, dtype, fname + "_unpack_params",
                                                                     fop.gate_order))
        unpack_name = add_call(body, f"{node.name}/graphfix/unpack_params", unpack, [node.input[3]], []).name
        weight_refs = [body.format_ref(unpack_name, i) for i in range(len(unpack.output_types))]
        params_note = f"sliced in-graph ({fop.params_why_not})"

    data = list(node.input[:3])
    if fop.has_sequence_lengths:
        data.append(node.input[4])
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    replace_with_call(node, traced, data + weight_refs, controls)

    ctx.report.ops.append(ConvertedOp(
        where=body.where, node=node.name, op=fop.op, mode=spec.mode, num_layers=spec.num_layers,
        bidirectional=spec.num_dirs == 2, input_size=spec.input_size, num_units=spec.num_units,
        num_proj=spec.num_proj, input_mode=spec.input_mode, dtype=dtype.name, time_major=fop.time_major,
        sequence_lengths=fop.sequence_lengths, params=params_note,
        gate_order=fop.gate_order if gates.applies(spec, fop.gate_order) else gates.CUDNN))
    return fop.params_ref if fop.params is not None or resolved is not None else None


def _resolve_sources(ctx: Context, body: Body, folder: Folder, shapes: Shapes, fop):
    """weight_sources.resolve for targets that ask for it (`resolve_weight_sources`), else None."""
    if not getattr(ctx.target, "resolve_weight_sources", False):
        return None
    return weight_sources.resolve(body, folder, shapes, fop.params_ref, fop.spec, fop.gate_order)


def _refuse_training_consumers(graph_def, body: Body, node, where: str) -> None:
    """Refuse when anything uses reserve_space/host_reserved, which only cuDNN's backward pass can.

    A function that merely returns them (a tf.function returning the raw op's whole tuple)
    is not training: its callers are looked at instead (`graph.consumers.uses`), and the
    converted op returns dummies there.
    """
    users = uses(graph_def, body, node.name, TRAINING_OUTPUTS)
    if users:
        raise UnsupportedError(
            "this is a training graph: the reserve_space/host_reserved outputs, which only cuDNN's "
            f"backward pass can use, are consumed by {', '.join(users)}", where)
