"""The CPU target: standard-op TensorFlow functions that compute what a cuDNN op computed.

`CpuTarget` is what `graphfix.convert` hands the rewrite (`graphfix.rewrite.target.Target`).
Each builder traces a `tf.function` for one static configuration and returns its
FunctionDefs (the function and the While bodies it calls), renamed deterministically from
the node being replaced (`graphfix.graph.traced`), so that the same input always gives the
same output.

The RNN function (one per cuDNN node)::

    x [T,B,I] or [B,T,I] --transpose--> [T,B,I]
    split: unidirectional, no other op beside it (call_for), and the recurrent kernel
           [Hh, G*H] of 768 KB to 1.5 MB (cpu_loop.splits_product)   # fixed when traced;
           a GRU's above 1.5 MB: split below SPLIT_MIN_BATCH only (splits_large_gru_product)
    unidirectional, nothing beside it, not always split, B >= SPLIT_MIN_BATCH:   # one test per call
      all that follows on each half of the batch, side by side (the loop only), concatenated
    otherwise, on the whole batch:
      for each layer, for each direction:
        LSTM (float, no projection) and batch <= BLOCK_LSTM_MAX_BATCH   # one test per call
        (split: batch < IN_LOOP_MIN_BATCH):
            BlockLSTMV2 over the whole sequence (block_lstm.py; masked after, if lengths are short)
        otherwise:
            batch < IN_LOOP_MIN_BATCH:                  # one test per call
                x_proj = reshape(x) @ kernel + bias     # one MatMul for all steps, outside the loop
            else: x_proj[t] = x[t] @ kernel + bias, inside the loop (run ahead on the other core);
                  split: h @ recurrent_kernel as two column halves, side by side, concatenated
            if every length >= T (or no lengths):      # one test per call
                (backward: reverse time)
                While: 4 steps per iteration, then T % 4 single steps:
                    gates = x_proj[t] + h @ recurrent_kernel; cell update (gates in Keras's
                    order, as the weight slots hold them: `graphfix.cudnn.weights`)
            else:
                (backward: reverse_sequence over each example's valid steps)
                the same loops, masked past each example's length
      concat directions -> next layer's input
    -> output, output_h, output_c, reserve_space (dummy), [host_reserved (dummy)]

Float16 and bfloat16 are computed in float32 and cast back (cuDNN accumulates in float32 too).
"""

from __future__ import annotations

import dataclasses
import functools

import tensorflow as tf

from graphfix.cudnn import gates
from graphfix.cudnn.layout import RnnSpec
from graphfix.cudnn.weights import graph_weights, weight_slots
from graphfix.graph.traced import TracedFunction, trace
from graphfix.targets import block_lstm, cpu_loop

_UPCAST = {tf.float16: tf.float32, tf.bfloat16: tf.float32}
# Full-length, unprojected float LSTM layers run as one BlockLSTMV2 op (block_lstm.py).
BLOCK_LSTM = True
# ... for batches up to this size (measured on 2 cores: 0.65-0.9x the While loop at batch 1-8,
# about even at 12, 1.15-1.2x at 16-32).
BLOCK_LSTM_MAX_BATCH = 8


@dataclasses.dataclass(frozen=True)
class RnnCall:
    """Everything static about one cuDNN forward op that the CPU function depends on.

    Its repr names the traced function (a digest of it), so fields and their order are
    part of the output's bytes.
    """

    spec: RnnSpec
    dtype: tf.DType
    time_major: bool = True
    has_sequence_lengths: bool = False
    num_outputs: int = 4  # CudnnRNN: 4; V2/V3: 5 (host_reserved)
    # TFLite target (graphfix.targets.tflite): a fixed batch makes every loop state static,
    # as builtins-only conversion needs; fused_lstm: each LSTM layer/direction goes through
    # the `fused_direction` given to trace_rnn (a function the TFLite converter fuses).
    static_batch: int | None = None
    fused_lstm: bool = False
    # CPU target: the op has both cores to itself (unidirectional, no other forward op beside
    # it; see call_for). From SPLIT_MIN_BATCH examples on it runs two halves of the batch side
    # by side, or, when its recurrent kernel is of a size to split (cpu_loop.splits_product),
    # two column halves of every recurrent product instead.
    batch_halves: bool = False


class _TfOps:
    concat = staticmethod(lambda xs, axis: tf.concat(xs, axis=axis))
    reshape = staticmethod(tf.reshape)
    transpose = staticmethod(tf.transpose)
    add = staticmethod(tf.add)


def unpack_params_tensor(params: tf.Tensor, spec: RnnSpec, gate_order: str = gates.CUDNN) -> list[tf.Tensor]:
    """In-graph twin of `weights.graph_weights_from_buffer`: params [N] (gates in `gate_order`) -> weight slots.

    Runs on every call when params are read from variables: each slot is one slice in
    cuDNN's gate order (GRU: three, put in the slots' order), plus one transpose per matrix.
    """
    return graph_weights(lambda offset, size: tf.slice(params, [offset], [size]), spec, _TfOps, gate_order)


def _block_or_loop(spec, x, project, h0, c0, w, lengths, reverse, split_product=False):
    """An LSTM pseudo-layer: BlockLSTMV2 up to BLOCK_LSTM_MAX_BATCH examples (with
    split_product: below IN_LOOP_MIN_BATCH), else the While loop (masked only when some length
    is short). x: [T, B, I]; project() -> x_proj, built in the loop's branch only."""
    # Above a few examples the loop's one MatMul over all steps for the input part wins
    # (BlockLSTMV2 multiplies [x_t, h] step by step); see docs/performance.md. With its
    # recurrent product split over the two cores the loop wins from IN_LOOP_MIN_BATCH on.
    batch = tf.shape(x)[1]
    small = batch < cpu_loop.IN_LOOP_MIN_BATCH if split_product else batch <= BLOCK_LSTM_MAX_BATCH
    # The loop runs only from IN_LOOP_MIN_BATCH on: input part per step.
    loop = lambda: cpu_loop.loop_per_step(spec, x, project, h0, c0, w, lengths, reverse, split_product)
    if lengths is None:
        return tf.cond(small, lambda: block_lstm.block_direction(spec, x, h0, c0, w, reverse), loop)
    full = tf.reduce_all(lengths >= tf.shape(x)[0])
    # Full lengths skip the mask and the gathers of the final states.
    block = lambda: tf.cond(full, lambda: block_lstm.block_direction(spec, x, h0, c0, w, reverse),
                            lambda: block_lstm.block_direction(spec, x, h0, c0, w, reverse, lengths))
    return tf.cond(small, block, loop)


def rnn_forward(call: RnnCall, x, h0, c0, sequence_lengths, weight_values, fused_direction=None):
    """The cuDNN op's forward pass in standard ops. Shapes as the op's (see CUDNN_FACTS §1).

    fused_direction(spec, batch, x [T,B,I], h0, c0, w, reverse) -> (y, h_n, c_n): computes each
    layer/direction when call.fused_lstm (the TFLite target's fusable LSTM).
    """
    spec = call.spec
    out_dtype = x.dtype
    compute = _UPCAST.get(out_dtype, out_dtype)
    cast = lambda t: tf.cast(t, compute) if t.dtype != compute else t
    x, h0, c0 = cast(x), cast(h0), cast(c0)
    slots = weight_slots(spec)
    by_layer: dict = {}
    for slot, value in zip(slots, weight_values):
        if call.static_batch is not None:  # the TFLite converter types a function from its callers
            value = tf.reshape(value, slot.shape)
        by_layer.setdefault((slot.layer, slot.direction), {})[slot.kind] = cast(value)

    if not call.time_major:
        x = tf.transpose(x, [1, 0, 2])
    steps, batch = tf.shape(x)[0], tf.shape(x)[1]
    LD = spec.num_layers * spec.num_dirs
    # Batch-major states are [B, L*D, .] in shape only; memory is [L*D, B, .] (TF's descriptor quirk).
    h0 = tf.reshape(h0, [LD, batch, spec.hidden_size])
    c0 = (tf.reshape(c0, [LD, batch, spec.num_units]) if spec.mode == "lstm"
          else tf.zeros([LD, batch, spec.num_units], compute))
    lengths = None
    if sequence_lengths is not None:
        lengths = tf.minimum(tf.cast(sequence_lengths, tf.int32), steps)

    # Each layer/direction's computation (see _layers): (spec, x, project, h0, c0, w, lengths, reverse).
    split = False
    if call.fused_lstm:
        direction = lambda spec, x, project, h0, c0, w, lengths, reverse: fused_direction(
            spec, call.static_batch, x, h0, c0, w, reverse)
    elif call.static_batch is not None:  # TFLite: one plain loop, as its converter is known to take it
        direction = lambda spec, x, project, h0, c0, w, lengths, reverse: cpu_loop.run_direction(
            spec, project(), h0, c0, w, lengths, reverse, static_batch=call.static_batch)
    else:
        # An op with both cores to itself (call_for) multiplies a large recurrent kernel as two
        # column halves side by side (cpu_loop.SPLIT_PRODUCT_MIN_BYTES), and then needs no
        # batch halves. A GRU's larger kernel is split below the batch halves' range only.
        split = call.batch_halves and cpu_loop.splits_product(spec, compute)
        if BLOCK_LSTM and block_lstm.applies(spec, compute):  # BlockLSTMV2 (block_lstm.py)
            direction = functools.partial(_block_or_loop, split_product=split)
        else:
            split_below_halves = call.batch_halves and cpu_loop.splits_large_gru_product(spec, compute)
            direction = functools.partial(cpu_loop.loop_direction, split_product=split or split_below_halves)
    layers = lambda x, h0, c0, lengths, direction: _layers(call, by_layer, x, h0, c0, lengths, direction)
    if call.batch_halves and call.static_batch is None and not call.fused_lstm and not split:
        output, output_h, output_c = tf.cond(
            batch >= SPLIT_MIN_BATCH, lambda: _batch_halves(layers, x, h0, c0, lengths, batch),
            lambda: layers(x, h0, c0, lengths, direction))
    else:
        output, output_h, output_c = layers(x, h0, c0, lengths, direction)
    if call.static_batch is not None:
        batch = call.static_batch

    if not call.time_major:
        output = tf.transpose(output, [1, 0, 2])
        output_h = tf.reshape(output_h, [batch, LD, spec.hidden_size])
        output_c = tf.reshape(output_c, [batch, LD, spec.num_units])
    if spec.mode != "lstm":
        output_c = tf.zeros([], compute)  # what the kernel allocates for non-LSTM modes: a dummy
    results = [tf.cast(t, out_dtype) for t in (output, output_h, output_c)]
    results.append(tf.zeros([], out_dtype))  # reserve_space: only meaningful for training
    if call.num_outputs == 5:
        results.append(tf.zeros([], tf.int8))  # host_reserved: likewise
    return results


# From this batch size on, a call with batch_halves runs as two independent halves of the
# batch, side by side: two chains of recurrent products that the executor runs on the two
# cores at once. One product over the whole batch runs slower on two threads than on one
# (LSTM [32, 256] @ [256, 1024]: 124 us on two, 95 on one, 85 for two halves side by side).
# Whole loop against halves, in one process (11 interleaved rounds, median): LSTM 12 x 100,
# 128 -> 256: 0.83; 16 x 80, 96 -> 192: 0.83; 24 x 80, 96 -> 192: 0.75; 32 x 100, 128 -> 256:
# 0.83; 32 x 80, 64 -> 512: 0.79; 64 x 50: 0.81; GRU 12 x 100: 0.91; 16 x 100: 0.83; 32 x 100:
# 0.85; 16 x 80, 96 -> 192: 1.02 (noise). Below: LSTM 8 x 100, 128 -> 256: 1.07 (slower);
# four parts: 0.88-2.0. Not where a peer already takes the second core (call_for).
SPLIT_MIN_BATCH = 12


def _batch_halves(layers, x, h0, c0, lengths, batch):
    """`layers` (see _layers) on the batch's first and second half, side by side; both run the
    While loop with the input part per step (each half has >= IN_LOOP_MIN_BATCH examples).
    x: [T, B, I]; h0, c0: [L*D, B, .]; lengths [B] or None. Returns _layers' results for B."""
    half = batch // 2
    parts = [layers(x[:, rows], h0[:, rows], c0[:, rows], None if lengths is None else lengths[rows],
                    cpu_loop.loop_per_step)
             for rows in (slice(None, half), slice(half, None))]
    return tuple(tf.concat(pieces, axis=1) for pieces in zip(*parts))


def _layers(call, by_layer, x, h0, c0, lengths, direction):
    """Every layer and direction of the RNN, time-major. x: [T, B, I]; h0 [L*D, B, Hh];
    c0 [L*D, B, H]; lengths [B] or None; by_layer: (layer, direction) -> weight slots;
    direction(spec, x, project, h0, c0, w, lengths, reverse) -> (y, h_n, c_n) computes one,
    project() giving the input part of every gate for all steps when it needs that.

    Returns (output [T, B, D*Hh], h_n [L*D, B, Hh], c_n [L*D, B, H]).
    """
    spec = call.spec
    steps, batch = tf.shape(x)[0], (call.static_batch or tf.shape(x)[1])
    layer_in = x
    h_list, c_list = [], []
    for layer in range(spec.num_layers):
        flat_in = tf.reshape(layer_in, [-1, spec.layer_input_size(layer)])
        outs = []
        for d in range(spec.num_dirs):
            w = by_layer[(layer, d)]
            k = layer * spec.num_dirs + d
            project = (lambda w=w, flat_in=flat_in: cpu_loop.project_all(spec, flat_in, w, steps, batch))
            y, h_n, c_n = direction(spec, layer_in, project, h0[k], c0[k], w, lengths, d == 1)
            outs.append(y)
            h_list.append(h_n)
            c_list.append(c_n)
        layer_in = outs[0] if len(outs) == 1 else tf.concat(outs, axis=2)
    return layer_in, tf.stack(h_list), tf.stack(c_list)

def trace_rnn(call: RnnCall, name: str, fused_direction=None) -> TracedFunction:
    """Trace the CPU replacement of one cuDNN forward op as FunctionDefs named from `name`.

    fused_direction: see rnn_forward (the TFLite target's; None on CPU).
    """
    spec, dtype = call.spec, call.dtype
    LD = spec.num_layers * spec.num_dirs
    B = call.static_batch
    state_shape = ([LD, B] if call.time_major else [B, LD])
    x_shape = [None, B] if call.time_major else [B, None]
    signature = [tf.TensorSpec(x_shape + [spec.input_size], dtype, "input"),
                 tf.TensorSpec(state_shape + [spec.hidden_size], dtype, "input_h"),
                 tf.TensorSpec(None, dtype, "input_c")]
    if call.has_sequence_lengths:
        signature.append(tf.TensorSpec([B], tf.int32, "sequence_lengths"))
    slots = weight_slots(spec)
    signature += [tf.TensorSpec(s.shape, dtype, s.name) for s in slots]

    def forward(*args):
        x, h0, c0 = args[:3]
        seq = args[3] if call.has_sequence_lengths else None
        weights = args[4 if call.has_sequence_lengths else 3:]
        return rnn_forward(call, x, h0, c0, seq, weights, fused_direction)

    return trace(forward, signature, name)


def trace_params_unpack(spec: RnnSpec, dtype: tf.DType, name: str, gate_order: str = gates.CUDNN) -> TracedFunction:
    """Trace params [N] -> the RNN function's weight inputs (for params known at run time)."""
    signature = [tf.TensorSpec([None], dtype, "params")]
    return trace(lambda params: unpack_params_tensor(params, spec, gate_order), signature, name)


class CpuTarget:
    """The CPU target (`graphfix.rewrite.target.Target`): one While-loop function per configuration.

    Ops whose RnnCall is equal share one traced function, named after the first of them.
    """

    # Params packed per call from variables (Keras 3) reach the RNN function read straight
    # from those variables (graphfix.rewrite.weight_sources), not sliced back from the buffer.
    resolve_weight_sources = True
    # Keras 3's ReverseSequence ops around a converted op run as a row gather
    # (graphfix.rewrite.reverse_sequence): same values, several times faster on CPU.
    gather_reverse_sequences = True

    def plan(self, body, node, fop, report) -> RnnCall:
        return call_for(fop)

    def share_key(self, plan: RnnCall, function_name: str):
        return plan

    def trace_rnn(self, plan: RnnCall, function_name: str) -> TracedFunction:
        return trace_rnn(plan, function_name)

    def trace_params_unpack(self, spec: RnnSpec, dtype: tf.DType, function_name: str,
                            gate_order: str) -> TracedFunction:
        return trace_params_unpack(spec, dtype, function_name, gate_order)


def call_for(fop) -> RnnCall:
    """The RnnCall of a `graphfix.rewrite.forward_op.ForwardOp`, any batch.

    Batch halves only where nothing else uses the second core: not for a bidirectional op
    (its directions run side by side), nor for an op another runs beside (Keras's
    Bidirectional is two ops: halves there made four chains on two cores, measured 1.12-1.19x
    the whole batch at 16 x 80, 96 -> 192).
    """
    halves = fop.spec.num_dirs == 1 and not fop.side_by_side
    return RnnCall(fop.spec, fop.dtype, fop.time_major, fop.has_sequence_lengths, fop.num_outputs,
                   batch_halves=halves)

