"""The CPU target's BlockLSTMV2 path (graphfix/targets/block_lstm.py), against the numpy
reference, TensorFlow's own loop of standard ops, and by the op types it emits.

    x --> [full lengths and batch <= BLOCK_LSTM_MAX_BATCH ?] --yes--> BlockLSTMV2 (one op per direction)
                                                           '--no---> While loop (masked if needed)
"""

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.cudnn.weights import graph_weights_from_buffer, weight_slots
from graphfix.graph.bodies import find_cudnn_nodes
from graphfix.targets import block_lstm, cpu, cpu_loop

TOL = 1e-5


def _op_types(graph_def) -> set[str]:
    types = {n.op for n in graph_def.node}
    for f in graph_def.library.function:
        types |= {n.op for n in f.node_def}
    return types


def _check(case, converted):
    got = run_graph_def(converted, case.feeds, case.fetches)
    spec = case.spec
    weights = layout.unpack(case.buffer.astype(np.float64), spec)
    expected = reference.forward(spec, weights, case.x, case.h0, case.c0, case.lengths)
    for name, g, e in zip(("output", "output_h", "output_c"), got, expected):
        assert g.shape == e.shape, name
        err = float(np.max(np.abs(g - e))) if e.size else 0.0
        assert err <= TOL, f"{name}: max abs error {err}"
    return got


def _direction_inputs(spec, seed, steps, batch, saturate=False):
    rng = np.random.default_rng(seed)
    buf = rng.standard_normal(layout.params_size(spec)) * 0.4
    if saturate:  # input and forget gates open, candidate near +1: c grows by about 1 a step
        for p in layout.pieces(spec):
            if p.kind == "bR":
                buf[p.offset:p.offset + p.size] += 0.0 if p.gate == 3 else 20.0
    buf = buf.astype(np.float32)
    x = rng.standard_normal((steps, batch, spec.input_size)).astype(np.float32)
    h0 = (rng.standard_normal((batch, spec.num_units)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((batch, spec.num_units)) * 0.5).astype(np.float32)
    return buf, x, h0, c0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("saturate", [False, True])
def test_block_direction_matches_reference(reverse, saturate):
    # cell_clip=0 must mean no clipping: the saturated case drives |c| far past 1 (to about 40).
    spec = layout.RnnSpec("lstm", 1, 6, 4, 1)
    steps, batch = 40, 3
    buf, x, h0, c0 = _direction_inputs(spec, 1, steps, batch, saturate)
    w = dict(zip((s.kind for s in weight_slots(spec)), (tf.constant(v) for v in graph_weights_from_buffer(buf, spec))))
    y, h_n, c_n = block_lstm.block_direction(spec, tf.constant(x), tf.constant(h0), tf.constant(c0), w, reverse)
    lw = layout.unpack(buf.astype(np.float64), spec)[0]
    ey, eh, ec = reference.run_direction(spec, lw, x.astype(np.float64), h0, c0, np.full(batch, steps), reverse)
    if saturate:
        assert np.abs(ec).max() > 30
    assert np.abs(y.numpy() - ey).max() <= TOL
    assert np.abs(h_n.numpy() - eh).max() <= TOL
    assert np.abs(c_n.numpy() - ec).max() / max(1.0, np.abs(ec).max()) <= TOL

    # TensorFlow's own ops (the target's While loop) agree too.
    proj = tf.reshape(tf.matmul(tf.reshape(x, [-1, spec.input_size]), w["kernel"]) + w["bias"],
                      [steps, batch, 4 * spec.num_units])
    ly, _, _ = cpu_loop.run_direction(spec, proj, tf.constant(h0), tf.constant(c0), w, None, reverse)
    assert np.abs(y.numpy() - ly.numpy()).max() <= TOL


def test_block_direction_zero_steps_keeps_state():
    spec = layout.RnnSpec("lstm", 1, 5, 3, 1)
    buf, x, h0, c0 = _direction_inputs(spec, 2, 0, 2)
    w = dict(zip((s.kind for s in weight_slots(spec)), (tf.constant(v) for v in graph_weights_from_buffer(buf, spec))))
    y, h_n, c_n = block_lstm.block_direction(spec, tf.constant(x), tf.constant(h0), tf.constant(c0), w, False)
    assert y.shape == (0, 2, 5)
    np.testing.assert_array_equal(h_n.numpy(), h0)
    np.testing.assert_array_equal(c_n.numpy(), c0)


@pytest.mark.parametrize("layers,dirs", [(1, 1), (2, 2)])
@pytest.mark.parametrize("batch", [3, cpu.BLOCK_LSTM_MAX_BATCH + 3])
@pytest.mark.parametrize("lengths", ["none", "full", "short", "all_short"])
def test_converted_lstm_paths(layers, dirs, batch, lengths):
    spec = layout.RnnSpec("lstm", layers, 5, 3, dirs)
    steps = 7
    lens = {"none": None, "full": np.full(batch, steps),
            "short": np.array([steps, 0, 3] + [steps - 1] * (batch - 3)),
            "all_short": np.array([4, 0, 2] + [1] * (batch - 3))}[lengths]  # seq_len_max < T
    case = build(spec, op="CudnnRNNV3" if lens is not None else "CudnnRNNV2", lengths=lens,
                 batch=batch, steps=steps, seed=layers * 7 + batch)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    # Both paths are in the function; which runs is chosen per call (batch size, lengths).
    types = _op_types(converted)
    assert "BlockLSTMV2" in types and types & {"While", "StatelessWhile"}
    _check(case, converted)


@pytest.mark.parametrize("spec,why", [
    (layout.RnnSpec("gru", 1, 5, 3, 1), "GRU"),
    (layout.RnnSpec("lstm", 1, 6, 3, 1, num_proj=4), "projection"),
    (layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input"), "skip_input"),
])
def test_no_block_lstm_where_it_does_not_apply(spec, why):
    case = build(spec, op="CudnnRNNV3", seed=5)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert "BlockLSTMV2" not in _op_types(converted), why
    _check(case, converted)


def test_no_block_lstm_for_float64():
    spec = layout.RnnSpec("lstm", 1, 5, 3, 1)
    case = build(spec, op="CudnnRNNV3", dtype=np.float64, seed=6)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert "BlockLSTMV2" not in _op_types(converted)


def test_float16_goes_through_block_lstm_in_float32():
    spec = layout.RnnSpec("lstm", 1, 5, 3, 1)
    case = build(spec, op="CudnnRNNV3", dtype=np.float16, seed=7)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert "BlockLSTMV2" in _op_types(converted)
    got = run_graph_def(converted, case.feeds, case.fetches)
    expected = reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec),
                                 case.x, case.h0, case.c0)
    assert np.abs(got[0].astype(np.float64) - expected[0]).max() <= 1e-2


def test_static_batch_calls_keep_the_loop():
    # The TFLite target (static_batch) has no BlockLSTMV2 builtin: its functions keep the While loop.
    spec = layout.RnnSpec("lstm", 1, 5, 3, 1)
    call = cpu.RnnCall(spec, tf.float32, time_major=True, has_sequence_lengths=True, num_outputs=5, static_batch=2)
    traced = cpu.trace_rnn(call, "graphfix_test_static")
    types = {n.op for f in traced.function_defs for n in f.node_def}
    assert types & {"While", "StatelessWhile"} and "BlockLSTMV2" not in types
