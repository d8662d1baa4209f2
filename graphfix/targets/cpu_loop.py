"""One pseudo-layer of the CPU target as a While loop over time steps.

`graphfix.targets.cpu` decides, per call, which computation runs each layer and direction
(BlockLSTMV2, this loop, the TFLite target's fused LSTM); this module is the loop:

    x [T, B, in]
    batch < IN_LOOP_MIN_BATCH: x_proj = x @ kernel + bias for all steps (one MatMul), then the loop
    else:                      x_proj[t] = x[t] @ kernel + bias inside the loop (run ahead on the other core),
                               and, when split_product, h @ recurrent_kernel as two column halves
    every length >= T (or none):  While: UNROLL steps per iteration, then T % UNROLL single steps:
                                      gates = x_proj[t] + h @ recurrent_kernel; cell update
    else:                          the same loops, masked past each example's length

Weights are the slots of `graphfix.cudnn.weights` (Keras's layout and gate order).
"""

from __future__ import annotations

import tensorflow as tf

from graphfix.cudnn.layout import RnnSpec


def cell_step(spec: RnnSpec, x_t, h, c, recurrent_kernel, recurrent_bias, projection):
    """One step for a batch. x_t: [B, G*H] (input part, biases added). h: [B, Hh]. c: [B, H].

    Gates in the slots' order (`cudnn.weights`: LSTM i, f, c, o; GRU z, r, n). GRU splits
    both products into three equal parts (Split) and takes two sigmoids: measured 2-5%
    faster at batch 1-32 than one sigmoid over z and r after two unequal SplitVs.
    """
    if isinstance(recurrent_kernel, tuple):  # column parts (see SPLIT_PRODUCT_MIN_BYTES)
        rec = tf.concat([tf.matmul(h, part) for part in recurrent_kernel], axis=1)
    else:
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
UNROLL = 4
# Iterations the executor may run at once (TensorFlow's default is 10). With 2 (8 steps in
# flight) the per-step input products still run ahead of the recurrent chain, and fewer in
# flight measured faster (not profiled; presumably less contention with the chain for the
# cores). Against 10, interleaved in one process (11 rounds, median):
# GRU 16 x 80, 96 -> 192: 0.92; 32 x 100, 128 -> 256: 0.93; 32 x 80, 64 -> 512: 0.93;
# 1 x 100, 64 -> 128: 0.96; 4 x 120, 128 -> 512: 0.98; 4 x 300, 40 -> 320: 1.02 (noise);
# LSTM loop 16 x 80, 96 -> 192: 0.97; 32 x 100, 128 -> 256: 1.00; 32 x 80, 64 -> 512: 0.98.
# 1 was slower (GRU 16 x 80: 1.19), 32 too (1.05-1.07). The TFLite loop keeps the default.
PARALLEL_ITERATIONS = 2


def run_direction(spec, x_proj, h0, c0, w, lengths, reverse, static_batch=None, project_step=None):
    """One pseudo-layer. x_proj: [T, B, G*H]; h0 [B, Hh]; c0 [B, H]; lengths [B] (<= T) or None.

    project_step: None when x_proj is the input part of every gate already; else x_proj is
    the layer's input x [T, B, in] and project_step(x_t [B, in]) -> [B, G*H] runs inside the
    loop, step by step (see `loop_per_step`).
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
        h_new, c_new = cell_step(spec, read(t), h, c, w["recurrent_kernel"],
                                  w.get("recurrent_bias"), w.get("projection"))
        if lengths is None:
            return t + 1, h_new, c_new, outputs.write(t, h_new)
        # Past its length an example keeps its state and outputs zeros (cuDNN padding_fill 0).
        valid = tf.expand_dims(t < lengths, 1)
        y = tf.where(valid, h_new, tf.zeros_like(h_new))
        return t + 1, tf.where(valid, h_new, h), tf.where(valid, c_new, c), outputs.write(t, y)

    def unrolled(*state):
        for _ in range(UNROLL):
            state = step(*state)
        return state

    state = (tf.constant(0), h0, c0, outputs)
    if tflite:  # one plain loop, as the TFLite converter is known to take it
        _, h_n, c_n, outputs = tf.while_loop(lambda t, *_: t < steps, step, state, maximum_iterations=steps)
    else:
        # All whole blocks of UNROLL steps, then the T % UNROLL steps left one at a time.
        # No maximum_iterations: it adds two ops per iteration, and nothing here needs it.
        blocks_end = steps - steps % UNROLL
        state = tf.while_loop(lambda t, *_: t < blocks_end, unrolled, state,
                              parallel_iterations=PARALLEL_ITERATIONS)
        _, h_n, c_n, outputs = tf.while_loop(lambda t, *_: t < steps, step, state,
                                             parallel_iterations=PARALLEL_ITERATIONS)
    # An empty TensorArray cannot stack without a fully static element shape (batch is
    # dynamic), so zero time steps take the other branch.
    y = (outputs.stack() if static_batch is not None  # static element shape: stacks even when empty
         else tf.cond(steps > 0, outputs.stack,
                      lambda: tf.zeros([0, tf.shape(h0)[0], spec.hidden_size], x_proj.dtype)))
    if reverse:
        y = tf.reverse(y, [0]) if lengths is None else tf.reverse_sequence(y, lengths, seq_axis=0, batch_axis=1)
    return y, h_n, c_n


def project_all(spec, flat_in, w, steps, batch):
    """The input part of every gate for all steps at once: [T*B, in] -> x_proj [T, B, G*H]."""
    return tf.reshape(project_rows(spec, flat_in, w), [steps, batch, spec.gates * spec.num_units])


def project_rows(spec, rows, w):
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


def loop_direction(spec, x, project, h0, c0, w, lengths, reverse, split_product=False):
    """A pseudo-layer as a While loop, its input part computed per call (one MatMul for all
    steps, below IN_LOOP_MIN_BATCH examples) or per step (from it on, with the recurrent
    product in two column parts when `split_product`). x: [T, B, in]."""
    at_once = lambda: run_direction(spec, project(), h0, c0, w, lengths, reverse)
    return tf.cond(tf.shape(x)[1] >= IN_LOOP_MIN_BATCH,
                   lambda: loop_per_step(spec, x, project, h0, c0, w, lengths, reverse, split_product),
                   at_once)


def loop_per_step(spec, x, project, h0, c0, w, lengths, reverse, split_product=False):
    """The While loop with each step's input part computed inside it. x: [T, B, in]; project:
    unused (each step is projected inside the loop), taken to be a direction of
    `graphfix.targets.cpu`'s layers. split_product: see SPLIT_PRODUCT_MIN_BYTES."""
    if split_product:  # once per call, outside the loop: the parts stay the same every step
        kernel = w["recurrent_kernel"]
        half = kernel.shape[1] // 2
        w = {**w, "recurrent_kernel": (kernel[:, :half], kernel[:, half:])}
    return run_direction(spec, x, h0, c0, w, lengths, reverse,
                         project_step=lambda rows: project_rows(spec, rows, w))


# A recurrent kernel of this many bytes (from MIN to MAX) is multiplied as two column halves:
# two MatMuls that the executor runs on the two cores at once, each half staying in its
# core's L2 cache from step to step (1 MB a core on the machine measured). One oneDNN MatMul
# over such a kernel ran 2-3x slower. A loop of 100 products h [B, H] @ [H, G*H], median of 7
# rounds, halves against one: LSTM (G 4) B 4-32, H 256-320: 0.32-0.44; GRU (G 3) H 256:
# 0.58-0.84, H 320: 0.32-0.41. A whole layer (scripts/bench_choices.py, against the choices
# made without it): LSTM 4 x 150, 64 -> 256: 0.52; 8 x 100: 0.53; 16 x 80, 128 -> 256: 0.60;
# 32 x 100: 0.58; GRU 4 x 300, 40 -> 320: 0.29; 12 x 100, 64 -> 320: 0.43; 16 x 80,
# 128 -> 256: 0.91; 32 x 100: 0.93. Below MIN halves cost more (LSTM H 192, B 4: 1.04; GRU
# H 192: 0.83-1.25; H 128: up to 1.27), as they do at batch 1-3 (GRU H 256, B 1: 1.12), where
# the loop keeps one product (loop_direction's at-once branch). Above MAX each half nears or
# passes L2: LSTM 4 x 300, 40 -> 320 (1.6 MB) level with BlockLSTMV2; 24 x 60, 32 -> 352
# (2 MB) 1.18x the batch halves' time; 4 x 120, 128 -> 512 (4 MB) 1.5x BlockLSTMV2's, 32 x 80,
# 64 -> 512 1.26x the batch halves'; GRU H 512: level.
SPLIT_PRODUCT_MIN_BYTES = 768 * 1024
SPLIT_PRODUCT_MAX_BYTES = 1536 * 1024


def _kernel_bytes(spec: RnnSpec, dtype: tf.DType) -> int:
    return spec.hidden_size * spec.gates * spec.num_units * dtype.size


def splits_product(spec: RnnSpec, dtype: tf.DType) -> bool:
    """Whether the recurrent kernel [Hh, G*H] of `dtype` is of a size to split in two."""
    return SPLIT_PRODUCT_MIN_BYTES <= _kernel_bytes(spec, dtype) <= SPLIT_PRODUCT_MAX_BYTES


# Above SPLIT_PRODUCT_MAX_BYTES a GRU's split still beats (or matches) its one product at the
# batches the batch halves do not take (IN_LOOP_MIN_BATCH to cpu.SPLIT_MIN_BATCH - 1), the GRU
# having no BlockLSTMV2 to fall back on. scripts/bench_choices.py, split / one product, median (IQR) of
# 9-11 interleaved rounds: 4 x 150, 64 -> 384 (1.7 MB): 0.32 (0.28-0.33); 5 x 100, 32 -> 416:
# 0.80; 4 x 100, 64 -> 448: 0.81; 6 x 80, 96 -> 480: 0.86; 4 x 120, 128 -> 512 (3 MB): 0.84
# (0.82-0.91), 0.87 another run; 10 x 80, 96 -> 512: 0.89; 8 x 100, 128 -> 512: 0.96;
# 7 x 90, 48 -> 544: 0.99 (0.88-1.04); 4 x 80, 64 -> 640: 0.89; 8 x 80: 0.91; 4 x 60, 64 -> 768
# (7 MB): 0.89. Not an LSTM's loop (projected or float64 layers): 4 x 120, 128 -> 512: 1.14;
# 6 x 80, 64 -> 448: 1.02; 8 x 80, 64 -> 640: 1.08. From SPLIT_MIN_BATCH on the batch halves
# stay (GRU 32 x 80, 64 -> 512: the split took 1.21x their time; 12 x 60: 0.98, level).
def splits_large_gru_product(spec: RnnSpec, dtype: tf.DType) -> bool:
    """Whether a GRU's recurrent kernel is above SPLIT_PRODUCT_MAX_BYTES (split below the batch halves' range)."""
    return spec.mode == "gru" and _kernel_bytes(spec, dtype) > SPLIT_PRODUCT_MAX_BYTES
