"""The CPU target: standard-op TensorFlow functions that compute what a cuDNN op computed.

`CpuTarget` is what `graphfix.convert` hands the rewrite (`graphfix.rewrite.target.Target`).
Each builder traces a `tf.function` for one static configuration and returns its
FunctionDefs (the function and the While bodies it calls), renamed deterministically from
the node being replaced (`graphfix.graph.traced`), so that the same input always gives the
same output.

The RNN function (one per cuDNN node)::

    x [T,B,I] or [B,T,I] --transpose--> [T,B,I]
    unidirectional, no other op beside it (call_for), B >= SPLIT_MIN_BATCH:   # one test per call
      all that follows on each half of the batch, side by side (the loop only), concatenated
    otherwise, on the whole batch:
      for each layer, for each direction:
        LSTM (float, no projection) and batch <= BLOCK_LSTM_MAX_BATCH:   # one test per call
            BlockLSTMV2 over the whole sequence (block_lstm.py; masked after, if lengths are short)
        otherwise:
            batch < IN_LOOP_MIN_BATCH:                  # one test per call
                x_proj = reshape(x) @ kernel + bias     # one MatMul for all steps, outside the loop
            else: x_proj[t] = x[t] @ kernel + bias, inside the loop (run ahead on the other core)
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

import tensorflow as tf

from graphfix.cudnn import gates
from graphfix.cudnn.layout import RnnSpec
from graphfix.cudnn.weights import graph_weights, weight_slots
from graphfix.graph.traced import TracedFunction, trace
from graphfix.targets import block_lstm

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
    # CPU target: from SPLIT_MIN_BATCH examples on, run two halves of the batch side by side
    # (unidirectional ops that no other forward op runs beside; see call_for).
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


def _cell_step(spec: RnnSpec, x_t, h, c, recurrent_kernel, recurrent_bias, projection):
    """One step for a batch. x_t: [B, G*H] (input part, biases added). h: [B, Hh]. c: [B, H].

    Gates in the slots' order (`cudnn.weights`: LSTM i, f, c, o; GRU z, r, n). GRU splits
    both products into three equal parts (Split) and takes two sigmoids: measured 2-5%
    faster at batch 1-32 than one sigmoid over z and r after two unequal SplitVs.
    """
    rec = tf.matmul(h, recurrent_kernel)
    if spec.mode == "lstm":
        i, f, g, o = tf.split(x_t + rec, 4, axis=1)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h_new = tf.sigmoid(o) * tf.tanh(c_new)
        if projection is not None:
            h_new = tf.matmul(h_new, projection)
        return h_new, c_new
    if spec.mode == "gru":
        x_z, x_r, x_n = tf.split(x_t, 3, axis=1)
        h_z, h_r, h_n = tf.split(rec + recurrent_bias, 3, axis=1)
        z, r = tf.sigmoid(x_z + h_z), tf.sigmoid(x_r + h_r)
        n = tf.tanh(x_n + r * h_n)
        return n + z * (h - n), c
    pre = x_t + rec
    return (tf.tanh(pre) if spec.mode == "rnn_tanh" else tf.nn.relu(pre)), c


# Time steps per While iteration. Each iteration pays for the loop's control ops (per loop
# variable: Merge, Switch, Identity, NextIteration; plus the condition), which at batch 1
# cost as much as the step itself; unrolling 4 steps cut an LSTM 1 x 100, 64 -> 128 call
# by about 25% (2 steps: about 20%) and changed nothing measurable at batch 32.
_UNROLL = 4
# Iterations the executor may run at once (TensorFlow's default is 10). With 2 (8 steps in
# flight) the per-step input products still run ahead of the recurrent chain, and fewer in
# flight measured faster (not profiled; presumably less contention with the chain for the
# cores). Against 10, interleaved in one process (11 rounds, median):
# GRU 16 x 80, 96 -> 192: 0.92; 32 x 100, 128 -> 256: 0.93; 32 x 80, 64 -> 512: 0.93;
# 1 x 100, 64 -> 128: 0.96; 4 x 120, 128 -> 512: 0.98; 4 x 300, 40 -> 320: 1.02 (noise);
# LSTM loop 16 x 80, 96 -> 192: 0.97; 32 x 100, 128 -> 256: 1.00; 32 x 80, 64 -> 512: 0.98.
# 1 was slower (GRU 16 x 80: 1.19), 32 too (1.05-1.07). The TFLite loop keeps the default.
_PARALLEL_ITERATIONS = 2


def run_direction(spec, x_proj, h0, c0, w, lengths, reverse, static_batch=None, project_step=None):
    """One pseudo-layer. x_proj: [T, B, G*H]; h0 [B, Hh]; c0 [B, H]; lengths [B] (<= T) or None.

    project_step: None when x_proj is the input part of every gate already; else x_proj is
    the layer's input x [T, B, in] and project_step(x_t [B, in]) -> [B, G*H] runs inside the
    loop, step by step (see `_loop`).
    Returns (y [T, B, Hh], h_n [B, Hh], c_n [B, H]). static_batch: B when fixed (TFLite).
    """
    if lengths is None or static_batch is not None:
        # TFLite target: one plain loop, as before. Its converter (builtins only) failed to
        # lower the fast path's TensorList reads ("Lowering tensor list ops is failed").
        return _scan(spec, x_proj, h0, c0, w, lengths, reverse, static_batch, project_step)
    # Keras 3 exports always feed sequence lengths, and nearly always full ones. Masking
    # costs 6 ops per step (a third of an LSTM step at batch 1); with every length equal
    # to T it changes nothing, so one test per call picks the loop without it.
    full = tf.reduce_all(lengths >= tf.shape(x_proj)[0])
    return tf.cond(full, lambda: _scan(spec, x_proj, h0, c0, w, None, reverse, static_batch, project_step),
                   lambda: _scan(spec, x_proj, h0, c0, w, lengths, reverse, static_batch, project_step))


def _scan(spec, x_proj, h0, c0, w, lengths, reverse, static_batch, project_step=None):
    """run_direction's loop; masked past each example's length when `lengths` is given."""
    steps = tf.shape(x_proj)[0]
    if reverse:  # with full lengths reverse_sequence is tf.reverse
        x_proj = (tf.reverse(x_proj, [0]) if lengths is None
                  else tf.reverse_sequence(x_proj, lengths, seq_axis=0, batch_axis=1))
    outputs = tf.TensorArray(x_proj.dtype, size=steps, element_shape=tf.TensorShape([static_batch, spec.hidden_size]))
    tflite = static_batch is not None
    if tflite:  # the TFLite converter (builtins only) lowers no TensorList read
        read = lambda t: x_proj[t]
    else:  # a TensorArray read is one op per step; x_proj[t] is four (two Packs, an add, the slice)
        inputs = tf.TensorArray(x_proj.dtype, size=steps, element_shape=tf.TensorShape(
            [None, x_proj.shape[-1]])).unstack(x_proj)
        read = inputs.read if project_step is None else (lambda t: project_step(inputs.read(t)))

    def step(t, h, c, outputs):
        h_new, c_new = _cell_step(spec, read(t), h, c, w["recurrent_kernel"],
                                  w.get("recurrent_bias"), w.get("projection"))
        if lengths is None:
            return t + 1, h_new, c_new, outputs.write(t, h_new)
        # Past its length an example keeps its state and outputs zeros (cuDNN padding_fill 0).
        valid = tf.expand_dims(t < lengths, 1)
        y = tf.where(valid, h_new, tf.zeros_like(h_new))
        return t + 1, tf.where(valid, h_new, h), tf.where(valid, c_new, c), outputs.write(t, y)

    def unrolled(*state):
        for _ in range(_UNROLL):
            state = step(*state)
        return state

    state = (tf.constant(0), h0, c0, outputs)
    if tflite:  # one plain loop, as the TFLite converter is known to take it
        _, h_n, c_n, outputs = tf.while_loop(lambda t, *_: t < steps, step, state, maximum_iterations=steps)
    else:
        # All whole blocks of _UNROLL steps, then the T % _UNROLL steps left one at a time.
        # No maximum_iterations: it adds two ops per iteration, and nothing here needs it.
        blocks_end = steps - steps % _UNROLL
        state = tf.while_loop(lambda t, *_: t < blocks_end, unrolled, state,
                              parallel_iterations=_PARALLEL_ITERATIONS)
        _, h_n, c_n, outputs = tf.while_loop(lambda t, *_: t < steps, step, state,
                                             parallel_iterations=_PARALLEL_ITERATIONS)
    # An empty TensorArray cannot stack without a fully static element shape (batch is
    # dynamic), so zero time steps take the other branch.
    y = (outputs.stack() if static_batch is not None  # static element shape: stacks even when empty
         else tf.cond(steps > 0, outputs.stack,
                      lambda: tf.zeros([0, tf.shape(h0)[0], spec.hidden_size], x_proj.dtype)))
    if reverse:
        y = tf.reverse(y, [0]) if lengths is None else tf.reverse_sequence(y, lengths, seq_axis=0, batch_axis=1)
    return y, h_n, c_n


def _project(spec, flat_in, w, steps, batch):
    """The input part of every gate for all steps at once: [T*B, in] -> x_proj [T, B, G*H]."""
    return tf.reshape(_project_rows(spec, flat_in, w), [steps, batch, spec.gates * spec.num_units])


def _project_rows(spec, rows, w):
    """The input part of every gate, biases added: [N, in] -> [N, G*H]."""
    if "kernel" in w:  # [in, G*H]
        proj = tf.matmul(rows, w["kernel"])
    else:  # skip_input: the input enters every gate unprojected
        proj = tf.tile(rows, [1, spec.gates])
    return proj + w.get("bias", w.get("input_bias"))


# From this batch size on, the While loop multiplies each step's input by the kernel inside
# the loop instead of all steps in one MatMul first. Those products do not depend on the
# recurrent state, so the executor runs them ahead (the loop's parallel_iterations) on the
# second core while the recurrent chain runs, as Keras's own loop does. Measured against the
# one-MatMul loop in the same process (GRU unless named; median of 11 interleaved rounds):
# 1 x 100, 64 -> 128: 1.08 (slower); 4 x 300, 40 -> 320: 1.01; 4 x 120, 128 -> 512: 0.94;
# 8 x 100, 128 -> 256: 0.89; 16 x 80, 96 -> 192: 0.79 (LSTM 0.87); 32 x 100, 128 -> 256:
# 0.81 (LSTM 0.96); 32 x 80, 64 -> 512: 0.92.
IN_LOOP_MIN_BATCH = 4


def _loop(spec, x, project, h0, c0, w, lengths, reverse):
    """A pseudo-layer as a While loop, its input part computed per call (one MatMul for all
    steps, below IN_LOOP_MIN_BATCH examples) or per step (from it on). x: [T, B, in]."""
    at_once = lambda: run_direction(spec, project(), h0, c0, w, lengths, reverse)
    return tf.cond(tf.shape(x)[1] >= IN_LOOP_MIN_BATCH,
                   lambda: _loop_per_step(spec, x, project, h0, c0, w, lengths, reverse), at_once)


def _loop_per_step(spec, x, project, h0, c0, w, lengths, reverse):
    """The While loop with each step's input part computed inside it. x: [T, B, in]; project:
    unused (each step is projected inside the loop), taken to be a `_layers` direction."""
    return run_direction(spec, x, h0, c0, w, lengths, reverse, project_step=lambda rows: _project_rows(spec, rows, w))


def _block_or_loop(spec, x, project, h0, c0, w, lengths, reverse):
    """An LSTM pseudo-layer: BlockLSTMV2 up to BLOCK_LSTM_MAX_BATCH examples, else the While
    loop (masked only when some length is short). x: [T, B, I]; project() -> x_proj, built in
    the loop's branch only."""
    # Above a few examples the loop's one MatMul over all steps for the input part wins
    # (BlockLSTMV2 multiplies [x_t, h] step by step); see docs/performance.md.
    small = tf.shape(x)[1] <= BLOCK_LSTM_MAX_BATCH
    # The loop runs only above BLOCK_LSTM_MAX_BATCH (>= IN_LOOP_MIN_BATCH): input part per step.
    loop = lambda: _loop_per_step(spec, x, project, h0, c0, w, lengths, reverse)
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
    if call.fused_lstm:
        direction = lambda spec, x, project, h0, c0, w, lengths, reverse: fused_direction(
            spec, call.static_batch, x, h0, c0, w, reverse)
    elif call.static_batch is not None:  # TFLite: one plain loop, as its converter is known to take it
        direction = lambda spec, x, project, h0, c0, w, lengths, reverse: run_direction(
            spec, project(), h0, c0, w, lengths, reverse, static_batch=call.static_batch)
    elif BLOCK_LSTM and block_lstm.applies(spec, compute):  # BlockLSTMV2 (block_lstm.py)
        direction = _block_or_loop
    else:
        direction = _loop
    layers = lambda x, h0, c0, lengths, direction: _layers(call, by_layer, x, h0, c0, lengths, direction)
    if call.batch_halves and call.static_batch is None and not call.fused_lstm:
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
    parts = [layers(x[:, rows], h0[:, rows], c0[:, rows], None if lengths is None else lengths[rows], _loop_per_step)
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
            project = (lambda w=w, flat_in=flat_in: _project(spec, flat_in, w, steps, batch))
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

