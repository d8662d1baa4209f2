"""Tests for graphfix.cudnn.weights: cuDNN buffer pieces -> the CPU function's weight slots.

Buffers are np.arange, so every value names its own index. For a 1-layer LSTM, H 2, I 3
(G 4; gates i, f, c, o), the buffer and the slots it gives::

    buf: [ W i,f,c,o: 4 x [2, 3] | R i,f,c,o: 4 x [2, 2] | bW: 4 x [2] | bR: 4 x [2] ]
          0 ............... 23     24 ............. 39     40 ..... 47   48 ..... 55
    kernel           [3, 8]  = buf[0:24].reshape(8, 3).T        a transposed view, no copy
    recurrent_kernel [2, 8]  = buf[24:40].reshape(8, 2).T       a transposed view

GRU slots hold their gates in Keras's order z, r, n (cuDNN stores r, z, n).
    bias             [8]     = buf[40:48] + buf[48:56]
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from graphfix.cudnn import gates, layout, weights
from graphfix.targets import cpu
from graphfix.cudnn.layout import RnnSpec


def test_lstm_slots_by_index():
    spec = RnnSpec("lstm", 1, 2, 3)
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    kernel, rec, bias = weights.graph_weights_from_buffer(buf, spec)
    np.testing.assert_array_equal(kernel, buf[0:24].reshape(8, 3).T)
    np.testing.assert_array_equal(rec, buf[24:40].reshape(8, 2).T)
    np.testing.assert_array_equal(bias, buf[40:48] + buf[48:56])
    # No copy of the (possibly gigabyte) buffer at conversion: matrices are views of it.
    assert np.shares_memory(kernel, buf) and np.shares_memory(rec, buf)
    assert [s.shape for s in weights.weight_slots(spec)] == [(3, 8), (2, 8), (8,)]


def test_gru_slots_hold_keras_gate_order():
    """GRU slots are z, r, n (Keras's order): each block is the cuDNN gate it should be."""
    spec = RnnSpec("gru", 1, 2, 3)
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    (w,) = layout.unpack(buf, spec)  # w.W [3, H, in] in cuDNN's r, z, n
    kernel, rec, bW, bR = weights.graph_weights_from_buffer(buf, spec)
    for position, cudnn_gate in enumerate((1, 0, 2)):  # z, r, n
        block = slice(position * 2, position * 2 + 2)
        np.testing.assert_array_equal(kernel[:, block], w.W[cudnn_gate].T)
        np.testing.assert_array_equal(rec[:, block], w.R[cudnn_gate].T)
        np.testing.assert_array_equal(bW[block], w.bW[cudnn_gate])
        np.testing.assert_array_equal(bR[block], w.bR[cudnn_gate])


@pytest.mark.parametrize("spec", [RnnSpec("gru", 2, 3, 4, 2), RnnSpec("lstm", 2, 4, 3, 2, num_proj=2),
                                  RnnSpec("rnn_relu", 1, 3, 2)], ids=str)
def test_layer_weights_from_graph_inverts_slots(spec):
    buf = np.random.default_rng(0).standard_normal(layout.params_size(spec))
    back = weights.layer_weights_from_graph(weights.graph_weights_from_buffer(buf, spec), spec)
    for got, want in zip(back, layout.unpack(buf, spec)):
        np.testing.assert_array_equal(got.W, want.W)
        np.testing.assert_array_equal(got.R, want.R)
        if spec.mode == "gru":
            np.testing.assert_array_equal(got.bW, want.bW)
            np.testing.assert_array_equal(got.bR, want.bR)
        else:
            np.testing.assert_allclose(got.bW + got.bR, want.bW + want.bR)


@pytest.mark.parametrize("spec", [RnnSpec("gru", 2, 3, 4, 2), RnnSpec("lstm", 2, 4, 3, 2, num_proj=2),
                                  RnnSpec("rnn_tanh", 2, 3, 3, 1, "skip_input")], ids=str)
def test_slots_match_layout_unpack(spec):
    """Every slot against layout.unpack's per-gate pieces, in the orientation weights.py documents."""
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    G, H = spec.gates, spec.num_units
    order = list(weights.slot_gates(spec))
    values = dict(zip(weights.weight_slots(spec), weights.graph_weights_from_buffer(buf, spec)))
    for w in layout.unpack(buf, spec):
        got = {s.kind: v for s, v in values.items() if (s.layer, s.direction) == (w.layer, w.direction)}
        if w.W is None:
            assert "kernel" not in got
        else:
            np.testing.assert_array_equal(got["kernel"], w.W[order].reshape(G * H, -1).T)
        np.testing.assert_array_equal(got["recurrent_kernel"], w.R[order].reshape(G * H, -1).T)
        if spec.mode == "gru":
            np.testing.assert_array_equal(got["input_bias"], w.bW[order].reshape(-1))
            np.testing.assert_array_equal(got["recurrent_bias"], w.bR[order].reshape(-1))
        else:
            np.testing.assert_array_equal(got["bias"], (w.bW + w.bR).reshape(-1))
        if spec.num_proj:
            np.testing.assert_array_equal(got["projection"], w.P.T)
    for slot, value in values.items():
        assert value.shape == slot.shape, slot.name


def test_spans_merge_adjacent_pieces():
    spec = RnnSpec("lstm", 1, 2, 3)
    W = [p for p in layout.pieces(spec) if p.kind == "W"]
    assert weights.spans(W) == [(0, 24)]
    stored = gates.stored_pieces(spec, "ifoc")
    assert weights.spans([stored[p] for p in W]) == [(0, 12), (18, 6), (12, 6)]  # i f | c (at o) | o (at c)


@pytest.mark.parametrize("order", ["ifco", "ifoc"])
def test_in_graph_unpack_equals_numpy(order):
    """cpu.unpack_params_tensor (run-time params) == numpy slots of the buffer put in cuDNN order."""
    spec = RnnSpec("lstm", 2, 3, 4, 2, num_proj=2)
    buf = np.arange(layout.params_size(spec), dtype=np.float32)
    want = weights.graph_weights_from_buffer(gates.to_cudnn_order(buf, spec, order), spec)
    got = cpu.unpack_params_tensor(tf.constant(buf), spec, order)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)
