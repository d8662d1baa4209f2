"""A numpy forward pass with cuDNN RNN semantics: the second oracle for tests and --verify.

Pure numpy; importable without TensorFlow. Computes in float64 whatever the input dtype.

Equations: cuDNN developer guide, ``cudnnRNNMode_t``::

    rnn:   h = act(W x + R h' + bW + bR)
    lstm:  i, f, o = sigmoid(W. x + R. h' + bW. + bR.);  c~ = tanh(Wc x + Rc h' + bWc + bRc)
           c = f*c' + i*c~;  h = o*tanh(c);  with num_proj: h = P h
    gru:   r, z = sigmoid(...);  n = tanh(Wn x + bWn + r*(Rn h' + bRn));  h = (1-z)*n + z*h'

Sequence lengths (CudnnRNNV3): steps t >= len[b] give zero output and leave the state
alone, so the final state is the one at step len[b]-1; the backward direction runs over
steps len[b]-1 ... 0 only.
"""

from __future__ import annotations

import numpy as np

from graphfix.cudnn.layout import LayerWeights, RnnSpec


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cell_step(spec: RnnSpec, w: LayerWeights, x_proj: np.ndarray, h: np.ndarray, c: np.ndarray):
    """One time step for a batch. x_proj: [G, B, H] (W x + bW already added). h: [B, Hh]. c: [B, H].

    Returns (h_new [B, Hh], c_new [B, H]).
    """
    rec = np.einsum("gij,bj->gbi", w.R, h) + w.bR[:, None, :]
    if spec.mode == "lstm":
        i, f, g, o = (x_proj[k] + rec[k] for k in range(4))
        c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h_new = _sigmoid(o) * np.tanh(c_new)
        if w.P is not None:
            h_new = h_new @ w.P.T
        return h_new, c_new
    if spec.mode == "gru":
        r = _sigmoid(x_proj[0] + rec[0])
        z = _sigmoid(x_proj[1] + rec[1])
        n = np.tanh(x_proj[2] + r * rec[2])
        return (1.0 - z) * n + z * h, c
    pre = x_proj[0] + rec[0]
    return (np.tanh(pre) if spec.mode == "rnn_tanh" else np.maximum(pre, 0.0)), c


def run_direction(spec: RnnSpec, w: LayerWeights, x: np.ndarray, h0: np.ndarray, c0: np.ndarray,
                  lengths: np.ndarray, reverse: bool):
    """Run one pseudo-layer over a time-major batch.

    x: [T, B, in]; h0: [B, Hh]; c0: [B, H]; lengths: [B] int.
    Returns (y [T, B, Hh] with zeros past each length, h_n [B, Hh], c_n [B, H]).
    """
    T, B, _ = x.shape
    if w.W is None:  # skip_input: the input enters every gate as itself
        x_proj = np.broadcast_to(x[None], (spec.gates,) + x.shape) + w.bW[:, None, None, :]
    else:
        x_proj = np.einsum("gij,tbj->gtbi", w.W, x) + w.bW[:, None, None, :]
    y = np.zeros((T, B, spec.hidden_size))
    h, c = h0.copy(), c0.copy()
    for step in range(T):
        # Backward runs t = len-1 ... 0 per example; forward runs t = 0 ... len-1.
        t = np.where(lengths - 1 - step >= 0, lengths - 1 - step, 0) if reverse else np.full(B, step)
        valid = step < lengths
        xp = x_proj[:, t, np.arange(B), :]
        h_new, c_new = cell_step(spec, w, xp, h, c)
        h = np.where(valid[:, None], h_new, h)
        c = np.where(valid[:, None], c_new, c)
        y[t[valid], np.arange(B)[valid]] = h[valid]
    return y, h, c


def forward(spec: RnnSpec, weights: list[LayerWeights], x: np.ndarray, h0: np.ndarray,
            c0: np.ndarray | None = None, sequence_lengths: np.ndarray | None = None,
            time_major: bool = True):
    """The whole op, as CudnnRNN/V2/V3 compute it for inference.

    x: [T, B, I] (time_major) or [B, T, I].
    h0: [L*D, B, Hh]; c0: [L*D, B, H] (LSTM). Batch-major states are [B, L*D, ...] in shape
    but read as [L*D, B, ...] from memory, as TensorFlow does (reshape, not transpose).
    sequence_lengths: [B] or None (all T).
    Returns (output, output_h, output_c) in the op's shapes; output_c is None unless LSTM.
    """
    x = np.asarray(x, dtype=np.float64)
    if not time_major:
        x = x.transpose(1, 0, 2)
    T, B, _ = x.shape
    LD = spec.num_layers * spec.num_dirs
    h0 = np.asarray(h0, dtype=np.float64).reshape(LD, B, spec.hidden_size)
    c0 = (np.zeros((LD, B, spec.num_units)) if c0 is None or spec.mode != "lstm"
          else np.asarray(c0, dtype=np.float64).reshape(LD, B, spec.num_units))
    lengths = np.full(B, T) if sequence_lengths is None else np.asarray(sequence_lengths).astype(np.int64)
    weights64 = [_as_float64(w) for w in weights]
    layer_in = x
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    for layer in range(spec.num_layers):
        outs = []
        for d in range(spec.num_dirs):
            k = layer * spec.num_dirs + d
            y, h_n[k], c_n[k] = run_direction(spec, weights64[k], layer_in, h0[k], c0[k], lengths, reverse=d == 1)
            outs.append(y)
        layer_in = np.concatenate(outs, axis=-1)
    output = layer_in if time_major else layer_in.transpose(1, 0, 2)
    if not time_major:
        h_n = h_n.reshape(B, LD, spec.hidden_size)
        c_n = c_n.reshape(B, LD, spec.num_units)
    return output, h_n, (c_n if spec.mode == "lstm" else None)


def _as_float64(w: LayerWeights) -> LayerWeights:
    conv = lambda a: None if a is None else np.asarray(a, dtype=np.float64)
    return LayerWeights(w.layer, w.direction, conv(w.W), conv(w.R), conv(w.bW), conv(w.bR), conv(w.P))
