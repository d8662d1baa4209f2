"""What the rewrite asks of a target: how one cuDNN forward op becomes a function.

The rewrite finds and reads each op (`forward_op.ForwardOp`), and splices in a call; a
target (`graphfix.targets.cpu`, `graphfix.targets.tflite`) decides what that call runs.
The rewrite is handed a target and never imports one, so a new target (ONNX, a faster CPU
kernel) is a new class under `graphfix/targets/`, not an edit of the rewrite.

Per forward op, the rewrite calls::

    plan = target.plan(body, node, fop, report)      # the static configuration of its function
    name = graphfix_{node path}_{digest of repr(plan)}
    key  = target.share_key(plan, name)               # ops with equal keys share one function
    traced = target.trace_rnn(plan, name)             # once per key
    # params not constant: one more function, params [N] -> the weight slots, unless the
    # target sets `resolve_weight_sources = True` and the params are packed per call from
    # other tensors (Keras 3's variables): then the slots are read from those tensors
    # (`weight_sources.py`, a function name + "_weights" that the rewrite traces itself)
    traced = target.trace_params_unpack(spec, dtype, name + "_unpack_params", gate_order)
    # `gather_reverse_sequences = True`: the ReverseSequence ops that read a converted
    # CudnnRNNV3's sequence_lengths (Keras's go_backwards) become row gathers
    # (`reverse_sequence.py`)

The traced RNN function takes (input, input_h, input_c, [sequence_lengths], weight
slots...) in `cudnn.weights.weight_slots` order and returns the op's outputs in order.
"""

from __future__ import annotations

from typing import Hashable, Protocol

import tensorflow as tf

from graphfix.cudnn.layout import RnnSpec
from graphfix.graph.traced import TracedFunction


class Target(Protocol):
    """How the replacement of one cuDNN forward op is emitted (see the module docstring)."""

    def plan(self, body, node, fop, report) -> Hashable:
        """The static configuration of `node`'s replacement; its repr must be deterministic.

        body: the `graph.bodies.Body` holding node; fop: its `rewrite.forward_op.ForwardOp`;
        report: the `report.Report`, for notes and warnings about the choice made.
        """

    def share_key(self, plan: Hashable, function_name: str) -> Hashable:
        """Ops whose keys are equal share one traced function (the first one's)."""

    def trace_rnn(self, plan: Hashable, function_name: str) -> TracedFunction:
        """The replacement function for `plan`, traced and named from `function_name`."""

    def trace_params_unpack(self, spec: RnnSpec, dtype: tf.DType, function_name: str,
                            gate_order: str) -> TracedFunction:
        """A function params [N] -> the RNN function's weight slots, for params known at run time."""
