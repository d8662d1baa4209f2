"""One LSTM layer/direction as a composite function that becomes one UNIDIRECTIONAL_SEQUENCE_LSTM.

The converter (tensorflow `compiler/mlir/lite/transforms/prepare_composite_functions_tf.cc`,
`utils/lstm_utils.cc`) replaces the body of a function whose `api_implements` attribute
starts with "lstm_" by one UNIDIRECTIONAL_SEQUENCE_LSTM, if the function has exactly this
signature (Keras's gate order i, f, c, o; CUDNN_FACTS §7)::

    args:    input [T, B, I] (time_major), init_h [B, H], init_c [B, H],
             kernel [I, 4H], recurrent_kernel [H, 4H], bias [4H]       (B, H, I static)
    results: last_output [B, H], outputs [T, B, H], h_n, c_n, runtime   (only 0 and 1 may be
             used by any caller, else the converter leaves the function unfused)

In TensorFlow the function runs its body: the same While loop as every other graphfix RNN,
so the SavedModel keeps computing exactly what it computed before. The converter's own
fusion of it clips the cell state to [-10, 10] (cell_clip 10, hard-coded): that is what
`TFLiteConverter.from_saved_model` makes of the output folder. graphfix's .tflite instead
turns each call into TFLite's stub op (`stub_lstm.py`), without clipping.

An LSTM with projection gets a function with one more argument, projection [H, Hh], and
api_implements "graphfix_projected_lstm_...", which the converter's fusion ignores (its
While loop converts as it is); only `stub_lstm.py` fuses it.
"""

from __future__ import annotations

import functools

import tensorflow as tf

from graphfix.cudnn.layout import RnnSpec
from graphfix.targets.cpu_loop import run_direction


PLAIN_PREFIX = "lstm_graphfix"  # "lstm_": the converter's Keras-LSTM fusion takes it
PROJECTED_PREFIX = "graphfix_projected_lstm"  # not "lstm_": the converter leaves it alone


@functools.cache
def _composite(batch: int, input_size: int, units: int, dtype: tf.DType, num_proj: int = 0):
    """The tf.function for one static configuration (cached: one library function per shape)."""
    spec = RnnSpec("lstm", 1, units, input_size, 1, "linear_input", num_proj)
    out = num_proj or units
    signature = [tf.TensorSpec([None, batch, input_size], dtype, "input"),
                 tf.TensorSpec([batch, out], dtype, "init_h"),
                 tf.TensorSpec([batch, units], dtype, "init_c"),
                 tf.TensorSpec([input_size, 4 * units], dtype, "kernel"),
                 tf.TensorSpec([out, 4 * units], dtype, "recurrent_kernel"),
                 tf.TensorSpec([4 * units], dtype, "bias")]
    if num_proj:
        signature.append(tf.TensorSpec([units, num_proj], dtype, "projection"))
        api = f"{PROJECTED_PREFIX}_b{batch}_i{input_size}_h{units}_p{num_proj}"
    else:
        api = f"{PLAIN_PREFIX}_b{batch}_i{input_size}_h{units}"
    attributes = {"api_implements": api, "time_major": True, "go_backwards": False}

    def lstm(x, h0, c0, kernel, recurrent_kernel, bias, projection=None):
        steps = tf.shape(x)[0]
        proj = tf.reshape(tf.matmul(tf.reshape(x, [-1, input_size]), kernel) + bias, [steps, batch, 4 * units])
        w = {"recurrent_kernel": recurrent_kernel, "projection": projection}
        y, h_n, c_n = run_direction(spec, proj, h0, c0, w, None, reverse=False, static_batch=batch)
        return h_n, y, h_n, c_n, tf.zeros([], dtype)

    return tf.function(lstm, input_signature=signature, autograph=False, experimental_attributes=attributes)


def fused_direction(spec: RnnSpec, batch: int, x, h0, c0, w: dict, reverse: bool):
    """x [T, B, I] -> (y [T, B, H], h_n [B, H], c_n [B, H]) through the fusable function.

    h_n is the last processed step of y (result 0, which the converter keeps); c_n is zeros
    (results 2 and 3 must stay unused): graphfix fuses only when output_c is unused.
    The backward direction reverses time around the call (cuDNN aligns its output with the input).
    """
    fn = _composite(batch, int(x.shape[-1]), spec.num_units, x.dtype, spec.num_proj)
    if reverse:
        x = tf.reverse(x, [0])
    I, H, Hh = int(x.shape[-1]), spec.num_units, spec.hidden_size
    # TFLite turns a constant initial state of the fused op into a variable tensor that the
    # op overwrites with its final state, so the next invocation would start from the last
    # one's state (until interpreter.reset_all_variables()). A zero that depends on the input
    # ([B, 1]: min(|x|, 0) summed over at most one step, so T = 0 works) is recomputed on
    # every invocation instead; it cannot be folded away, and is 0 for every non-NaN input.
    zero = tf.reduce_sum(tf.minimum(tf.abs(x[:1, :, :1]), tf.zeros([], x.dtype)), axis=0)
    h0, c0 = h0 + zero, c0 - zero  # two ops: one tensor feeding both states would need duplicating
    # Static shapes at the call site too: the converter types the function from its callers
    # (the weight slots have theirs already: rnn_forward reshapes them for a static batch).
    args = [tf.reshape(x, [-1, batch, I]), tf.reshape(h0, [batch, Hh]), tf.reshape(c0, [batch, H]),
            w["kernel"], w["recurrent_kernel"], w["bias"]] + ([w["projection"]] if spec.num_proj else [])
    last, y, _, _, _ = fn(*args)
    if reverse:
        y = tf.reverse(y, [0])
    # The converter fuses only if no caller uses results 2 and 3 (CheckFusableKerasLstm), so
    # the final cell state is not available: graphfix fuses only where output_c is unused.
    return y, last, tf.zeros([batch, H], y.dtype)
