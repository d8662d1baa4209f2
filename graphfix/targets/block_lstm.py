"""An LSTM layer/direction in one op: TensorFlow's `BlockLSTMV2` (the CPU target's fast path).

`BlockLSTMV2` (core CPU kernel) runs a whole sequence in one kernel, so a call pays no
per-step op dispatch and no While-loop control ops. It computes cuDNN's LSTM (CUDNN_FACTS
§4, §7): gates ordered i, f, c, o like cuDNN's (`BlockLSTM` V1 is i, c, f, o), with
`use_peephole=False` and `cell_clip=0` (no clipping: checked with |c| past 40 in
tests/targets/test_cpu_block_lstm.py). It has no projection, so the CPU target uses it for unprojected LSTM layers. It has no
per-example lengths either (only `seq_len_max`), but the first len[b] steps of an example
do not depend on what follows them, so lengths cost a mask and a gather::

    x [T, B, I] --(backward: reverse each example's valid steps)-->
      BlockLSTMV2(seq_len_max = max(lengths), w = [kernel ; recurrent_kernel], b = bias)
      -> h [T, B, H] (its 7 outputs are i, cs, f, o, ci, co, h) -> zeros at t >= len[b]
      -> (backward: reverse each example's valid steps back)
    h_n = h[len[b]-1, b], c_n = cs[len[b]-1, b]   (h0, c0 for a zero length)

Its CPU kernel takes half and float only: float64 stays on the While loop.
"""

from __future__ import annotations

import tensorflow as tf

from graphfix.cudnn.layout import RnnSpec

SUPPORTED = (tf.float32,)  # compute dtypes (float16/bfloat16 are computed in float32 already)


def applies(spec: RnnSpec, compute_dtype: tf.DType) -> bool:
    """Whether `BlockLSTMV2` can compute this configuration's pseudo-layers (given full lengths)."""
    return (spec.mode == "lstm" and not spec.num_proj and compute_dtype in SUPPORTED
            and all(spec.has_input_weights(layer) for layer in range(spec.num_layers)))


def block_direction(spec: RnnSpec, x, h0, c0, w: dict, reverse: bool, lengths=None):
    """One pseudo-layer. x: [T, B, I] (the layer's input, not projected); h0, c0: [B, H];
    w: its weight slots (kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]);
    lengths: [B] (<= T) or None (all T).

    Returns (y [T, B, H], h_n [B, H], c_n [B, H]). With lengths, as cuDNN: y is zero at steps
    t >= lengths[b], (h_n, c_n) is the state at each example's last valid step (h0, c0 for a
    zero length), and the backward direction runs over each example's valid steps only.
    """
    steps = tf.shape(x)[0]
    if reverse:
        x = tf.reverse(x, [0]) if lengths is None else tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)
    # The op multiplies [x_t, h] by w every step: one copy of the weights per call.
    stacked = tf.concat([w["kernel"], w["recurrent_kernel"]], 0)
    no_peephole = tf.zeros([spec.num_units], x.dtype)
    run = steps if lengths is None else tf.reduce_max(tf.concat([lengths, [0]], 0))
    out = tf.raw_ops.BlockLSTMV2(
        seq_len_max=tf.cast(run, tf.int64), x=x, cs_prev=c0, h_prev=h0, w=stacked,
        wci=no_peephole, wcf=no_peephole, wco=no_peephole, b=w["bias"],
        cell_clip=0.0, use_peephole=False)
    y = out.h  # zero at steps >= seq_len_max (the kernel fills them so)
    if lengths is None:
        # Zero steps: the final state is the initial one (y[-1] would not exist).
        h_n, c_n = tf.cond(steps > 0, lambda: (y[-1], out.cs[-1]), lambda: (h0, c0))
        return (tf.reverse(y, [0]) if reverse else y), h_n, c_n
    # Each example ran on past its own length (on its zero padding, or a reversed neighbour's
    # steps): its outputs there are replaced by zeros, its state is taken at its last valid step.
    valid = tf.expand_dims(tf.transpose(tf.sequence_mask(lengths, steps)), 2)  # [T, B, 1]
    y = tf.where(valid, y, tf.zeros([], y.dtype))

    def last_state():
        at = tf.stack([tf.maximum(lengths - 1, 0), tf.range(tf.shape(lengths)[0])], axis=1)
        some = tf.expand_dims(lengths > 0, 1)
        return tf.where(some, tf.gather_nd(y, at), h0), tf.where(some, tf.gather_nd(out.cs, at), c0)

    h_n, c_n = tf.cond(run > 0, last_state, lambda: (h0, c0))
    if reverse:
        y = tf.reverse_sequence(y, lengths, seq_axis=0, batch_axis=1)
    return y, h_n, c_n
