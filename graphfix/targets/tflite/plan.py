"""The TFLite target, per op: a fused LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM) where TFLite can fuse it, else a static While loop.

An LSTM layer/direction is fused only when its sequence lengths are every example's full
length (Keras without masking), its final cell state is unused, it has no skip input, and
it is float32 (projections are fused too, through `stub_lstm.py`); the report says which way
each op went and why.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from graphfix.cudnn.layout import RnnSpec
from graphfix.errors import UnsupportedError
from graphfix.graph.bodies import Body, FunctionBody
from graphfix.graph.traced import TracedFunction
from graphfix.report import Report
from graphfix.targets import cpu
from graphfix.targets.tflite.fused_lstm import fused_direction

CELL_CLIP = 10.0  # the converter's own LSTM fusion clips the cell state to +-10 (graphfix's stub op does not)


@dataclasses.dataclass(frozen=True)
class TfliteTarget:
    """The TFLite target (`graphfix.rewrite.target.Target`): static loops, fused LSTMs where possible.

    batch: the fixed batch size (None: each op's own static batch); fuse_lstm: use the fused
    op where possible; fetches: graph tensor names the signatures output ("rnn:2").
    """

    batch: int | None
    fuse_lstm: bool = True
    fetches: frozenset = frozenset()

    def plan(self, body: Body, node, fop, report: Report) -> cpu.RnnCall:
        """The RnnCall for one forward op, with a note in the report of how it goes and why."""
        batch = self.batch
        if batch is None:
            batch = fop.x_shape[1 if fop.time_major else 0] if fop.x_shape.rank else None
            if batch is None:
                raise UnsupportedError("the TFLite target needs a static batch and this op's input has none: pass "
                                       "--batch-size N", f"{body.where}, node {node.name!r}")
        why_not = _why_not_fused(body, node, fop, self.fetches) if self.fuse_lstm else "--no-fused-lstm"
        call = dataclasses.replace(cpu.call_for(fop), static_batch=batch, fused_lstm=why_not is None)
        how = _fused_how(fop.spec) if why_not is None else f"While loop ({why_not})"
        report.helpers.append(f"TFLite: {node.name!r} ({body.where}) -> {how}")
        if why_not is None:
            _note_cell_clip(body, node, fop, report)
        return call

    def share_key(self, plan: cpu.RnnCall, function_name: str):
        # TFLite's converter fails to lower the While loop of a function called from two places
        return plan, function_name

    def trace_rnn(self, plan: cpu.RnnCall, function_name: str) -> TracedFunction:
        return cpu.trace_rnn(plan, function_name, fused_direction if plan.fused_lstm else None)

    def trace_params_unpack(self, spec: RnnSpec, dtype: tf.DType, function_name: str,
                            gate_order: str) -> TracedFunction:
        return cpu.trace_params_unpack(spec, dtype, function_name, gate_order)


def _note_cell_clip(body: Body, node, fop, report: Report) -> None:
    steps = fop.x_shape[0 if fop.time_major else 1] if fop.x_shape.rank else None
    if not fop.spec.num_proj and (steps is None or steps > CELL_CLIP):
        # |c_t| <= |c_{t-1}| + 1 (forget gate < 1, |i * g| < 1): from a zero state no
        # clipping can happen within 10 steps; beyond, it can.
        report.helpers.append(
            f"TFLite: {node.name!r} ({body.where}): the .tflite graphfix writes does not clip the cell state; "
            "TFLiteConverter.from_saved_model on the output folder fuses this LSTM the Keras way, which clips "
            f"it to +-10 (cell_clip), and with {steps or 'an open number of'} time steps |c| can exceed 10")


def _fused_how(spec: RnnSpec) -> str:
    if spec.num_proj:
        return ("fused LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM with projection weights"
                + (", one per direction" if spec.num_dirs == 2 else "") + ")")
    if spec.num_dirs == 1:
        return "fused LSTM (UNIDIRECTIONAL_SEQUENCE_LSTM)"
    # TF 2.21's converter fuses LSTM composites into the unidirectional op only; no pass
    # produces BIDIRECTIONAL_SEQUENCE_LSTM from a TensorFlow graph (docs/tflite.md).
    return ("fused LSTM (one UNIDIRECTIONAL_SEQUENCE_LSTM per direction, the backward one between "
            "REVERSE_V2 ops: the TFLite converter produces no BIDIRECTIONAL_SEQUENCE_LSTM)")


def _why_not_fused(body: Body, node, fop, fetches=frozenset()) -> str | None:
    spec = fop.spec
    if spec.mode != "lstm":
        return f"{spec.mode}: TFLite fuses LSTMs only"
    if not spec.has_input_weights(0):
        return "skip_input LSTM"
    if fop.dtype != tf.float32:
        return f"{fop.dtype.name}"
    if fop.lengths_ref is not None and not _full_lengths(body, node, fop):
        return "sequence lengths (masking): the fused op has none"
    if _output_live(body, node, 2, fetches):
        return "final cell state used (return_state): the fused op does not output it"
    return None


def _full_lengths(body: Body, node, fop) -> bool:
    """Whether the V3 op's sequence_lengths are every example's full length T.

    Constant lengths all equal to the static T; or Keras 3's unmasked pattern
    `tf.fill([batch], tf.shape(x)[time_axis])` on this op's own input x.
    """
    t_axis = 0 if fop.time_major else 1
    steps = fop.x_shape[t_axis] if fop.x_shape.rank else None
    if fop.lengths is not None:
        return steps is not None and bool(np.all(np.asarray(fop.lengths) == steps))
    fill = _producer(body, fop.lengths_ref)
    if fill is None or fill.op != "Fill":
        return False
    value = _producer(body, body.data_inputs(fill)[1])
    if value is None or value.op != "StridedSlice" or value.attr["shrink_axis_mask"].i != 1:
        return False
    shape_ref, begin_ref = body.data_inputs(value)[:2]
    shape = _producer(body, shape_ref)
    begin = _const(body, begin_ref)
    return (shape is not None and shape.op == "Shape" and begin is not None and begin.tolist() == [t_axis]
            and body.data_inputs(shape)[0] in _same_steps(body, body.data_inputs(node)[0]))


def _same_steps(body: Body, ref) -> list:
    """ref and the tensors it was reordered from along time without changing T (Keras's
    go_backwards reverses its input before the op)."""
    refs = [ref]
    node = _producer(body, ref)
    while node is not None and node.op in ("ReverseSequence", "ReverseV2", "Identity"):
        ref = body.data_inputs(node)[0]
        refs.append(ref)
        node = _producer(body, ref)
    return refs


def _producer(body: Body, ref):
    return None if ref is None or ref.is_arg else body.node(ref.node)


def _const(body: Body, ref):
    node = _producer(body, ref)
    if node is None or node.op != "Const":
        return None
    return tf.make_ndarray(node.attr["value"].tensor)


def _output_live(body: Body, node, index: int, fetches=frozenset()) -> bool:
    """Whether output `index` of `node` reaches the body's results (in a graph: any consumer,
    or a fetch, i.e. a tensor a signature outputs).

    A traced Keras function keeps nodes nothing uses (the squeezed final cell state of a
    layer without return_state): those do not count.
    """
    if not isinstance(body, FunctionBody):
        return (f"{node.name}:{index}" in fetches
                or any(ref.index == index for _, _, ref in body.consumers(node.name)))
    results = {ref.node for _, ref in body.output_refs() if ref is not None and not ref.is_arg}
    users: dict[str, set[str]] = {}
    for n in body.nodes:
        for text in n.input:
            ref = body.parse_input(text)
            if ref is not None and not ref.is_arg:
                users.setdefault(ref.node, set()).add(n.name)
    if any(ref is not None and ref.node == node.name and ref.index == index for _, ref in body.output_refs()):
        return True
    stack = [n.name for n, _, ref in body.consumers(node.name) if ref.index == index]
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in results or _stateful(body.node(name)):
            return True
        stack.extend(users.get(name, ()))
    return False


def _stateful(node) -> bool:
    op_def = op_def_registry.get(node.op) if node is not None else None
    return op_def is None or op_def.is_stateful and node.op not in ("PartitionedCall",)
