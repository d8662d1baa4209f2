"""Tests for graphfix.cudnn.reference: the numpy cuDNN forward pass against oracles we did not write.

The main oracle is tf_keras's CPU LSTM / GRU(reset_after=True) / SimpleRNN. Each test draws
random weights in Keras's format, loads them into the Keras layer, converts the same numbers
to a cuDNN buffer with `layout.pack`, and runs `layout.unpack` + `reference.forward` on it::

    keras weights ──set_weights──> tf_keras layer ─────────────> y_keras, h_keras, c_keras
          │                                                              ║ compare
          └─ gate reorder, transpose ─> layout.pack ─> buffer ─> unpack ─> reference.forward

So a test fails if the reference's equations, the buffer layout, or the gate order are wrong.

Keras -> cuDNN (CUDNN_FACTS.md sections 3-4):
  kernel [I, G*H], recurrent_kernel [H, G*H]; W[g] = kernel[:, k*H:(k+1)*H].T with k the
  Keras block of cuDNN gate g: LSTM i,f,c,o in both; GRU Keras z,r,n vs cuDNN r,z,n.
  LSTM / SimpleRNN bias [G*H]: only bW + bR matters, so it is split at random between them.
  GRU reset_after bias [2, 3H]: row 0 is bW, row 1 is bR (bR sits inside r * (R h + bR)).

Tolerance: Keras runs float32, the reference float64; float32 over a few steps: atol 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.cudnn import layout, reference
from graphfix.cudnn.layout import LayerWeights, RnnSpec

tf = pytest.importorskip("tensorflow", reason="TensorFlow runs the Keras oracle")
tf_keras = pytest.importorskip("tf_keras", reason="tf_keras is the CPU oracle for these tests")

ATOL = 1e-5  # float32 Keras vs float64 reference
RTOL = 1e-5

# cuDNN gate g comes from Keras gate block KERAS_BLOCK[mode][g].
KERAS_BLOCK = {"lstm": [0, 1, 2, 3], "gru": [1, 0, 2], "rnn_tanh": [0], "rnn_relu": [0]}
RNN_MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _keras_layer(mode, units, **kwargs):
    kwargs = dict(return_sequences=True, return_state=True, **kwargs)
    if mode == "lstm":
        return tf_keras.layers.LSTM(units, **kwargs)
    if mode == "gru":
        return tf_keras.layers.GRU(units, reset_after=True, **kwargs)
    return tf_keras.layers.SimpleRNN(units, activation="tanh" if mode == "rnn_tanh" else "relu", **kwargs)


def _keras_weights(rng, mode, in_size, units, scale=0.6):
    """Random distinct [kernel, recurrent_kernel, bias] in Keras's shapes, float32."""
    G = len(KERAS_BLOCK[mode])
    kernel = rng.uniform(-scale, scale, (in_size, G * units))
    rec = rng.uniform(-scale, scale, (units, G * units))
    bias = rng.uniform(-scale, scale, (2, G * units) if mode == "gru" else (G * units,))
    return [a.astype(np.float32) for a in (kernel, rec, bias)]


def _to_cudnn(rng, mode, layer, direction, keras_w) -> LayerWeights:
    """Keras [kernel, recurrent_kernel, bias] -> one cuDNN pseudo-layer, float32."""
    kernel, rec, bias = keras_w
    H = rec.shape[0]
    order = KERAS_BLOCK[mode]
    blocks = lambda m: np.stack([m[:, k * H:(k + 1) * H].T for k in order])
    if mode == "gru":
        bW = bias[0].reshape(-1, H)[order]
        bR = bias[1].reshape(-1, H)[order]
    else:
        b = bias.reshape(-1, H)[order]
        bW = rng.uniform(-1, 1, b.shape).astype(np.float32)  # arbitrary split, the sum is the bias
        bR = b - bW
    return LayerWeights(layer, direction, blocks(kernel), blocks(rec), bW, bR)


def _call(layer, x, initial_state=None, mask=None):
    """Run a Keras layer eagerly on numpy inputs; returns its outputs as numpy arrays."""
    init = None if initial_state is None else [tf.constant(s) for s in initial_state]
    mask = None if mask is None else tf.constant(mask)
    return [t.numpy() for t in layer(tf.constant(x), initial_state=init, mask=mask)]


def _reference(spec, weights, x, h0, c0=None, lengths=None, time_major=False):
    """Pack to a float32 buffer, unpack it again, run the reference: the buffer path is tested too."""
    buf = layout.pack(weights, spec, dtype=np.float32)
    assert buf.shape == (layout.params_size(spec),)
    return reference.forward(spec, layout.unpack(buf, spec), x, h0, c0, lengths, time_major=time_major)


def _close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected, dtype=np.float64), rtol=RTOL, atol=ATOL)


def _states(rng, B, n, units):
    return rng.uniform(-0.8, 0.8, (n, B, units)).astype(np.float32)


# --- one layer, one direction ---------------------------------------------------------------

@pytest.mark.parametrize("mode", RNN_MODES)
@pytest.mark.parametrize("given_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_one_layer_matches_keras(mode, given_state, time_major):
    """LSTM / GRU / SimpleRNN(tanh, relu) == rnn modes of the reference, outputs and final states."""
    rng = np.random.default_rng(101)
    B, T, I, H = 3, 6, 4, 5
    spec = RnnSpec(mode, 1, H, I)
    kw = _keras_weights(rng, mode, I, H)
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    h0 = _states(rng, B, 1, H) if given_state else np.zeros((1, B, H), np.float32)
    c0 = _states(rng, B, 1, H) if given_state else np.zeros((1, B, H), np.float32)

    layer = _keras_layer(mode, H)
    layer.build((None, T, I))
    layer.set_weights(kw)
    init = None if not given_state else ([h0[0], c0[0]] if mode == "lstm" else [h0[0]])
    k_out = _call(layer, x, init)

    w = [_to_cudnn(rng, mode, 0, 0, kw)]
    if time_major:
        y, h, c = _reference(spec, w, x.transpose(1, 0, 2), h0, c0, time_major=True)
        y, h = y.transpose(1, 0, 2), h[0]
        c = None if c is None else c[0]
    else:
        # batch-major states are [B, L*D, H]; with L*D == 1 reshape and transpose agree
        y, h, c = _reference(spec, w, x, h0.reshape(B, 1, H), c0.reshape(B, 1, H), time_major=False)
        assert h.shape == (B, 1, H)
        h = h[:, 0]
        c = None if c is None else c[:, 0]
    _close(y, k_out[0])
    _close(h, k_out[1])
    _close(y[:, -1], k_out[1])
    if mode == "lstm":
        _close(c, k_out[2])
    else:
        assert c is None


@pytest.mark.parametrize("mode", RNN_MODES)
def test_backward_direction_matches_keras_go_backwards(mode):
    """The reference's backward pseudo-layer == Keras go_backwards, with time put back in order.

    Keras go_backwards returns outputs in processing order (out[t] after x[T-1-t]); the cuDNN
    op returns them in time order, so reference y_bw == keras_out[:, ::-1]. The forward
    pseudo-layer gets unrelated weights and must not disturb the backward half.
    """
    rng = np.random.default_rng(202)
    B, T, I, H = 2, 5, 3, 4
    spec = RnnSpec(mode, 1, H, I, num_dirs=2)
    kw_bw = _keras_weights(rng, mode, I, H)
    kw_fw = _keras_weights(rng, mode, I, H)
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    h0, c0 = _states(rng, B, 2, H), _states(rng, B, 2, H)

    layer = _keras_layer(mode, H, go_backwards=True)
    layer.build((None, T, I))
    layer.set_weights(kw_bw)
    init = [h0[1], c0[1]] if mode == "lstm" else [h0[1]]
    k_out = _call(layer, x, init)

    w = [_to_cudnn(rng, mode, 0, 0, kw_fw), _to_cudnn(rng, mode, 0, 1, kw_bw)]
    y, h, c = _reference(spec, w, x.transpose(1, 0, 2), h0, c0, time_major=True)
    y = y.transpose(1, 0, 2)
    assert y.shape == (B, T, 2 * H)
    _close(y[:, :, H:], k_out[0][:, ::-1])
    _close(h[1], k_out[1])
    _close(y[:, 0, H:], k_out[1])  # the backward state ends at t = 0
    if mode == "lstm":
        _close(c[1], k_out[2])


# --- sequence lengths ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_sequence_lengths_match_keras_mask(mode):
    """V3 sequence_lengths == a Keras right-padded mask on the valid steps and final states.

        t:        0 1 2 3 4 5
        len 6:    x x x x x x
        len 3:    x x x . . .     Keras (zero_output_for_mask=False) repeats the last valid
        len 1:    x . . . . .     output at '.', cuDNN writes zeros: compare only 'x'.
    """
    rng = np.random.default_rng(303)
    B, T, I, H = 3, 6, 3, 4
    lengths = np.array([6, 3, 1], np.int32)
    mask = np.arange(T)[None, :] < lengths[:, None]
    spec = RnnSpec(mode, 1, H, I)
    kw = _keras_weights(rng, mode, I, H)
    # padding holds garbage, not zeros: it must not leak into the result
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    h0, c0 = _states(rng, B, 1, H), _states(rng, B, 1, H)

    layer = _keras_layer(mode, H)
    layer.build((None, T, I))
    layer.set_weights(kw)
    init = [h0[0], c0[0]] if mode == "lstm" else [h0[0]]
    k_out = _call(layer, x, init, mask)

    w = [_to_cudnn(rng, mode, 0, 0, kw)]
    y, h, c = _reference(spec, w, x, h0.reshape(B, 1, H), c0.reshape(B, 1, H), lengths=lengths,
                         time_major=False)
    _close(y[mask], k_out[0][mask])
    np.testing.assert_array_equal(y[~mask], 0.0)
    _close(h[:, 0], k_out[1])
    _close(h[:, 0], y[np.arange(B), lengths - 1])  # the state of the last valid step
    if mode == "lstm":
        _close(c[:, 0], k_out[2])


@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_sequence_lengths_bidirectional_match_keras_mask(mode):
    """Bidirectional with lengths: the backward half runs over steps len-1 ... 0 only.

    Keras's backward layer reverses the whole padded sequence and the mask skips the padding,
    which is the same thing; compare the valid steps and all four final states.
    """
    rng = np.random.default_rng(404)
    B, T, I, H = 3, 5, 2, 3
    lengths = np.array([2, 5, 4], np.int32)
    mask = np.arange(T)[None, :] < lengths[:, None]
    spec = RnnSpec(mode, 1, H, I, num_dirs=2)
    kw = [_keras_weights(rng, mode, I, H) for _ in range(2)]
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)

    bi = tf_keras.layers.Bidirectional(_keras_layer(mode, H), merge_mode="concat")
    bi.build((None, T, I))
    bi.forward_layer.set_weights(kw[0])
    bi.backward_layer.set_weights(kw[1])
    k_out = _call(bi, x, mask=mask)

    w = [_to_cudnn(rng, mode, 0, d, kw[d]) for d in range(2)]
    zeros = np.zeros((2, B, H), np.float32)
    y, h, c = _reference(spec, w, x.transpose(1, 0, 2), zeros, zeros, lengths=lengths, time_major=True)
    y = y.transpose(1, 0, 2)
    _close(y[mask], k_out[0][mask])
    np.testing.assert_array_equal(y[~mask], 0.0)
    if mode == "lstm":
        _, fh, fc, bh, bc = k_out
        _close(c[0], fc)
        _close(c[1], bc)
    else:
        _, fh, bh = k_out
    _close(h[0], fh)
    _close(h[1], bh)
    _close(h[1], y[:, 0, H:])  # backward ends at t = 0 whatever the length


def test_sequence_lengths_full_equals_none():
    """Lengths all equal to T change nothing; a shorter length leaves later steps out entirely."""
    rng = np.random.default_rng(505)
    spec = RnnSpec("gru", 2, 3, 2, num_dirs=2)
    buf = rng.uniform(-0.5, 0.5, layout.params_size(spec))
    w = layout.unpack(buf, spec)
    x = rng.uniform(-1, 1, (4, 2, 2))
    h0 = rng.uniform(-1, 1, (4, 2, 3))
    full = reference.forward(spec, w, x, h0)
    same = reference.forward(spec, w, x, h0, sequence_lengths=np.array([4, 4]))
    np.testing.assert_array_equal(full[0], same[0])
    np.testing.assert_array_equal(full[1], same[1])
    # example 0 cut to 2 steps == running only its first 2 steps
    cut = reference.forward(spec, w, x, h0, sequence_lengths=np.array([2, 4]))
    short = reference.forward(spec, w, x[:2, :1], h0[:, :1])
    np.testing.assert_allclose(cut[0][:2, :1], short[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cut[1][:, :1], short[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cut[0][2:, 0], 0.0)
    np.testing.assert_allclose(cut[0][:, 1], full[0][:, 1], rtol=1e-12, atol=1e-12)


# --- stacked, bidirectional -----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_two_layer_bidirectional_matches_stacked_keras(mode):
    """L=2, D=2 == two stacked Keras Bidirectional layers (concat), with given initial states.

        x ─> Bi(layer 0: fw pseudo-layer 0, bw 1) ─[fw|bw]─> Bi(layer 1: fw 2, bw 3) ─> y
        h0/c0 [L*D, B, H] index k = layer*D + direction, same for the returned states.
    Layer 1's W has input width D*H, and the buffer holds pseudo-layers in order 0, 1, 2, 3.
    """
    rng = np.random.default_rng(606)
    B, T, I, H, L, D = 2, 5, 3, 4, 2, 2
    spec = RnnSpec(mode, L, H, I, num_dirs=D)
    kw = {(l, d): _keras_weights(rng, mode, I if l == 0 else D * H, H, scale=0.5)
          for l in range(L) for d in range(D)}
    x = rng.uniform(-1, 1, (B, T, I)).astype(np.float32)
    h0, c0 = _states(rng, B, L * D, H), _states(rng, B, L * D, H)

    out, k_states = x, {}
    for l in range(L):
        bi = tf_keras.layers.Bidirectional(_keras_layer(mode, H), merge_mode="concat")
        bi.build((None, T, out.shape[-1]))
        bi.forward_layer.set_weights(kw[(l, 0)])
        bi.backward_layer.set_weights(kw[(l, 1)])
        if mode == "lstm":
            init = [h0[2 * l], c0[2 * l], h0[2 * l + 1], c0[2 * l + 1]]
            out, fh, fc, bh, bc = _call(bi, out, init)
            k_states[(l, 0)], k_states[(l, 1)] = (fh, fc), (bh, bc)
        else:
            out, fh, bh = _call(bi, out, [h0[2 * l], h0[2 * l + 1]])
            k_states[(l, 0)], k_states[(l, 1)] = (fh,), (bh,)

    w = [_to_cudnn(rng, mode, l, d, kw[(l, d)]) for l in range(L) for d in range(D)]
    assert w[2].W.shape == (spec.gates, H, D * H)
    y, h, c = _reference(spec, w, x.transpose(1, 0, 2), h0, c0, time_major=True)
    _close(y.transpose(1, 0, 2), out)
    for (l, d), states in k_states.items():
        _close(h[l * D + d], states[0])
        if mode == "lstm":
            _close(c[l * D + d], states[1])


# --- LSTM projection (no oracle: hand-written loop) -----------------------------------------

def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _hand_lstmp(x, W, R, bW, bR, P, h, c, reverse):
    """One direction of an LSTM with projection, one example, scalar loops over units.

    x: [T, in]; W: [4, H, in]; R: [4, H, P]; P: [P, H]; h: [P]; c: [H]. Gates i, f, c, o.
    Written straight from the cuDNN guide: h_t = P (o * tanh(c_t)), recurrent input h_{t-1}.
    """
    T = x.shape[0]
    H = W.shape[1]
    ys = np.zeros((T, P.shape[0]))
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        pre = np.zeros((4, H))
        for g in range(4):
            for u in range(H):
                pre[g, u] = (sum(W[g, u, j] * x[t, j] for j in range(x.shape[1])) + bW[g, u]
                             + sum(R[g, u, j] * h[j] for j in range(h.shape[0])) + bR[g, u])
        c = _sig(pre[1]) * c + _sig(pre[0]) * np.tanh(pre[2])
        m = _sig(pre[3]) * np.tanh(c)
        h = np.array([sum(P[p, u] * m[u] for u in range(H)) for p in range(P.shape[0])])
        ys[t] = h
    return ys, h, c


@pytest.mark.parametrize("num_layers, num_dirs", [(1, 1), (2, 2)])
def test_lstm_projection_matches_hand_loop(num_layers, num_dirs):
    """num_proj: Keras has no projected LSTM, so the oracle is the loop above (an independent
    restatement of the equations, not a copy of the reference's vectorised code).

    Shapes: h0/h_n [L*D, B, P], c0/c_n [L*D, B, H], output [T, B, D*P]; layer 1 input D*P.
    """
    rng = np.random.default_rng(707)
    T, B, I, H, Pn = 3, 2, 2, 3, 2
    spec = RnnSpec("lstm", num_layers, H, I, num_dirs=num_dirs, num_proj=Pn)
    buf = rng.uniform(-0.7, 0.7, layout.params_size(spec))
    w = layout.unpack(buf, spec)
    x = rng.uniform(-1, 1, (T, B, I))
    LD = num_layers * num_dirs
    h0 = rng.uniform(-1, 1, (LD, B, Pn))
    c0 = rng.uniform(-1, 1, (LD, B, H))
    y, h, c = reference.forward(spec, w, x, h0, c0)
    assert y.shape == (T, B, num_dirs * Pn) and h.shape == (LD, B, Pn) and c.shape == (LD, B, H)

    for b in range(B):
        inp = x[:, b]
        for l in range(num_layers):
            outs = []
            for d in range(num_dirs):
                k = l * num_dirs + d
                wk = w[k]
                ys, hn, cn = _hand_lstmp(inp, wk.W, wk.R, wk.bW, wk.bR, wk.P, h0[k, b], c0[k, b], d == 1)
                np.testing.assert_allclose(h[k, b], hn, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(c[k, b], cn, rtol=1e-12, atol=1e-12)
                outs.append(ys)
            inp = np.concatenate(outs, axis=-1)
        np.testing.assert_allclose(y[:, b], inp, rtol=1e-12, atol=1e-12)


# --- skip_input ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", RNN_MODES)
def test_skip_input_equals_identity_input_weights(mode):
    """skip_input adds x to every gate unprojected: the same as linear_input with W[g] = I_H.

    Only layer 0 skips; layer 1's W must still be applied (checked with L=2, D=2).
    """
    rng = np.random.default_rng(808)
    T, B, H, L, D = 4, 2, 3, 2, 2
    skip = RnnSpec(mode, L, H, H, D, "skip_input")
    lin = RnnSpec(mode, L, H, H, D, "linear_input")
    ws = layout.unpack(rng.uniform(-0.5, 0.5, layout.params_size(skip)), skip)
    eye = np.broadcast_to(np.eye(H), (skip.gates, H, H)).copy()
    wl = [LayerWeights(w.layer, w.direction, eye if w.layer == 0 else w.W, w.R, w.bW, w.bR) for w in ws]
    x = rng.uniform(-1, 1, (T, B, H))
    h0, c0 = rng.uniform(-1, 1, (L * D, B, H)), rng.uniform(-1, 1, (L * D, B, H))
    a = reference.forward(skip, ws, x, h0, c0)
    b = reference.forward(lin, wl, x, h0, c0)
    for u, v in zip(a, b):
        if u is None:
            assert v is None
        else:
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)


# --- batch-major state quirk ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("num_layers, num_dirs", [(1, 2), (2, 1)])
def test_batch_major_states_are_reshaped_not_transposed(mode, num_layers, num_dirs):
    """With L*D == 2 and time_major=False, h0 [B, L*D, Hh] is read as h0.reshape(L*D, B, Hh).

    TensorFlow only swaps the sizes in the cuDNN descriptor, not the data (CUDNN_FACTS.md 1).
        B=3, L*D=2:  memory h0[b, k] ... read as  state[k', b'] with k'*B + b' == b*L*D + k
    The outputs' states follow the same rule back, and a transpose would give another answer.
    """
    rng = np.random.default_rng(909)
    T, B, I, H = 4, 3, 2, 3
    LD = num_layers * num_dirs
    spec = RnnSpec(mode, num_layers, H, I, num_dirs=num_dirs)
    w = layout.unpack(rng.uniform(-0.6, 0.6, layout.params_size(spec)), spec)
    x_bm = rng.uniform(-1, 1, (B, T, I))
    h0_bm = rng.uniform(-1, 1, (B, LD, H))
    c0_bm = rng.uniform(-1, 1, (B, LD, H))
    lengths = np.array([4, 2, 3])

    y_bm, h_bm, c_bm = reference.forward(spec, w, x_bm, h0_bm, c0_bm, lengths, time_major=False)
    y_tm, h_tm, c_tm = reference.forward(spec, w, x_bm.transpose(1, 0, 2), h0_bm.reshape(LD, B, H),
                                         c0_bm.reshape(LD, B, H), lengths, time_major=True)
    assert y_bm.shape == (B, T, num_dirs * H) and h_bm.shape == (B, LD, H)
    np.testing.assert_allclose(y_bm, y_tm.transpose(1, 0, 2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h_bm, h_tm.reshape(B, LD, H), rtol=1e-12, atol=1e-12)
    if mode == "lstm":
        np.testing.assert_allclose(c_bm, c_tm.reshape(B, LD, H), rtol=1e-12, atol=1e-12)
    else:
        assert c_bm is None

    y_tr, h_tr, _ = reference.forward(spec, w, x_bm.transpose(1, 0, 2), h0_bm.transpose(1, 0, 2),
                                      c0_bm.transpose(1, 0, 2), lengths, time_major=True)
    assert not np.allclose(y_bm, y_tr.transpose(1, 0, 2), atol=1e-3)


# --- small properties ----------------------------------------------------------------------

def test_output_is_float64_and_inputs_untouched():
    """Whatever the input dtype, the reference computes in float64 and does not write its inputs."""
    rng = np.random.default_rng(1010)
    spec = RnnSpec("lstm", 1, 2, 2)
    buf = rng.uniform(-1, 1, layout.params_size(spec)).astype(np.float32)
    w = layout.unpack(buf, spec)
    x = rng.uniform(-1, 1, (3, 1, 2)).astype(np.float32)
    h0 = rng.uniform(-1, 1, (1, 1, 2)).astype(np.float32)
    c0 = rng.uniform(-1, 1, (1, 1, 2)).astype(np.float32)
    saved = (x.copy(), h0.copy(), c0.copy(), w[0].R.copy())
    y, h, c = reference.forward(spec, w, x, h0, c0)
    assert y.dtype == h.dtype == c.dtype == np.float64
    for a, b in zip((x, h0, c0, w[0].R), saved):
        np.testing.assert_array_equal(a, b)
