"""The CPU target's batch halves, at batch sizes on both sides of SPLIT_MIN_BATCH.

    x [T, B, I] --> [unidirectional, no forward op beside it, and B >= SPLIT_MIN_BATCH ?]
                      --yes--> every layer on rows [0, B//2) and on rows [B//2, B), side by
                               side (the While loop, input part per step), outputs concatenated
                      '--no---> every layer on the whole batch (BlockLSTMV2 or the loop)

("Beside": another forward op of the graph that neither feeds nor reads from this one, as
in Keras's Bidirectional, which is two ops; `graphfix.graph.side_by_side`.)

Oracles: the numpy reference of cuDNN on raw cuDNN graphs, and Keras 3's own CPU layers
(frozen Keras graphs with a batch that takes the halves: odd, so the halves differ in size).
"""

import numpy as np
import pytest
import tensorflow as tf
from builders import keras_graphs
from builders.converted_functions import comparisons_with
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import GraphBody, find_cudnn_nodes
from graphfix.graph.side_by_side import side_by_side
from graphfix.targets import cpu

TOL = 1e-5
BATCHES = [cpu.SPLIT_MIN_BATCH - 1, cpu.SPLIT_MIN_BATCH + 1]


def _batch_tests(converted) -> int:
    """How many `batch >= SPLIT_MIN_BATCH` tests the converted graph's functions hold."""
    return comparisons_with(converted, "GreaterEqual", cpu.SPLIT_MIN_BATCH)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("lengths", ["none", "short"])
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("spec", [
    layout.RnnSpec("lstm", 2, 5, 3, 1),
    layout.RnnSpec("gru", 1, 4, 3, 1),
    layout.RnnSpec("lstm", 1, 6, 3, 1, num_proj=4),
    layout.RnnSpec("rnn_relu", 1, 4, 3, 1),
], ids=lambda s: f"{s.mode}-{s.num_layers}x{s.num_dirs}-proj{s.num_proj}")
def test_halves_match_reference(spec, time_major, lengths, batch):
    steps = 6
    # Short lengths in both halves (rows 1, 2 and the last), one of them zero.
    lens = None if lengths == "none" else np.array([steps, 0, 3] + [steps - 2] * (batch - 4) + [1])
    case = build(spec, op="CudnnRNNV3", time_major=time_major, lengths=lens, batch=batch, steps=steps,
                 seed=batch + spec.num_layers)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert _batch_tests(converted) == 1
    got = run_graph_def(converted, case.feeds, case.fetches)
    weights = layout.unpack(case.buffer.astype(np.float64), spec)
    LD = spec.num_layers * spec.num_dirs
    # The case holds x [T, B, I] and states [L*D, B, .]; the op's batch-major shapes are [B, ...].
    x = case.x if time_major else case.x.transpose(1, 0, 2)
    h0 = case.h0 if time_major else case.h0.reshape(batch, LD, -1)
    c0 = case.c0 if time_major else case.c0.reshape(batch, LD, -1)
    expected = reference.forward(spec, weights, x, h0, c0, case.lengths, time_major=time_major)
    for name, g, e in zip(("output", "output_h", "output_c"), got, expected):
        if e is None:  # output_c of a non-LSTM: a dummy
            continue
        assert g.shape == e.shape, name
        assert float(np.max(np.abs(g - e))) <= TOL, name


def test_bidirectional_ops_keep_the_whole_batch():
    """Their two directions already run side by side: no halves (no batch test) in the graph."""
    spec = layout.RnnSpec("lstm", 1, 4, 3, 2)
    case = build(spec, op="CudnnRNNV3", batch=cpu.SPLIT_MIN_BATCH + 1, steps=4, seed=3)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert _batch_tests(converted) == 0
    got = run_graph_def(converted, case.feeds, case.fetches)
    expected = reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec), case.x, case.h0,
                                 case.c0, case.lengths)
    for g, e in zip(got, expected):
        assert float(np.max(np.abs(g - e))) <= TOL


def _stacked_masked_lstm_case(batch: int) -> keras_graphs.FrozenCase:
    """Keras 3 Masking -> LSTM(5, return_sequences) -> LSTM(4, return_sequences, return_state),
    batch `batch`, every third example shorter (lengths 2-7 of 7)."""
    import keras

    steps = 7
    lengths = [steps if b % 3 else 2 + b % 5 for b in range(batch)]
    pad = keras_graphs._padding(lengths, steps)

    def model():
        x = keras.Input((steps, 3), batch_size=batch, name="x")
        m = keras.layers.Masking(0.0, name="masking")(x)
        h = keras.layers.LSTM(5, return_sequences=True, name="lstm_a")(m)
        y = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm_b")(h)
        return keras.Model(x, y, name="model")

    def values(rng):
        x = keras_graphs._uniform(rng, (batch, steps, 3), 1.0)
        return [np.where(pad, np.float32(0), x)]

    return keras_graphs._keras3_case("keras3_stacked_lstm_masked_halves", _stacked_masked_lstm_case.__doc__,
                                     seed=batch, build_model=model, values=values,
                                     padded_zero=lambda _: {0: pad})


def _gru_initial_state_case(batch: int) -> keras_graphs.FrozenCase:
    """Keras 3 GRU(6, return_sequences, return_state) with an h0 input, batch `batch`."""
    import keras

    def model():
        x = keras.Input((5, 4), batch_size=batch, name="x")
        h0 = keras.Input((6,), batch_size=batch, name="h0")
        y = keras.layers.GRU(6, return_sequences=True, return_state=True, name="gru")(x, initial_state=h0)
        return keras.Model([x, h0], y, name="model")

    def values(rng):
        return [keras_graphs._uniform(rng, (batch, 5, 4), 1.0), keras_graphs._uniform(rng, (batch, 6), 0.8)]

    return keras_graphs._keras3_case("keras3_gru_initial_state_halves", _gru_initial_state_case.__doc__,
                                     seed=batch, build_model=model, values=values)


@pytest.mark.parametrize("make_case", [_stacked_masked_lstm_case, _gru_initial_state_case],
                         ids=["stacked_masked_lstm", "gru_initial_state"])
def test_halves_match_keras(make_case):
    """Keras 3's CPU layers hold the same weights; the batch (odd) takes the halves."""
    case = make_case(cpu.SPLIT_MIN_BATCH + 3)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert _batch_tests(converted) >= 1
    got = keras_graphs.run_graph_def(converted, case.feeds, case.fetches)
    keras_graphs.assert_matches(case, got, reference=case.cudnn_expected, rtol=0, atol=TOL)


def _bidirectional_then_lstm_case(batch: int) -> keras_graphs.FrozenCase:
    """Keras 3 Bidirectional(LSTM(4, return_sequences)) -> LSTM(5, return_sequences): the
    Bidirectional layer is two cuDNN ops that both read x; the last LSTM reads both."""
    import keras

    def model():
        x = keras.Input((6, 3), batch_size=batch, name="x")
        h = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True, name="lstm_a"), name="bi")(x)
        return keras.Model(x, keras.layers.LSTM(5, return_sequences=True, name="lstm_b")(h), name="model")

    return keras_graphs._keras3_case("keras3_bidirectional_then_lstm_halves", _bidirectional_then_lstm_case.__doc__,
                                     seed=batch, build_model=model,
                                     values=lambda rng: [keras_graphs._uniform(rng, (batch, 6, 3), 1.0)])


def test_ops_side_by_side_keep_the_whole_batch():
    """Keras's Bidirectional: its two ops keep the whole batch (four chains on two cores were
    slower), the LSTM after them takes the halves; the numbers are Keras's either way."""
    case = _bidirectional_then_lstm_case(cpu.SPLIT_MIN_BATCH + 1)
    assert len(case.cudnn) == 3
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert _batch_tests(converted) == 1  # the last LSTM's function only (the two directions share one)
    got = keras_graphs.run_graph_def(converted, case.feeds, case.fetches)
    keras_graphs.assert_matches(case, got, reference=case.cudnn_expected, rtol=0, atol=TOL)


def _node(name, op, *inputs):
    return tf.compat.v1.NodeDef(name=name, op=op, input=list(inputs))


def test_side_by_side_finds_nodes_neither_feeds():
    """x feeds a and (through r) b; c reads a and b; d reads c. e waits on a by a control edge.
    The loop (m <-> n) reads b."""
    graph = tf.compat.v1.GraphDef(node=[
        _node("x", "Placeholder"), _node("a", "Op", "x"), _node("r", "Op", "x:1"), _node("b", "Op", "r"),
        _node("c", "Op", "a", "b:2"), _node("d", "Op", "c"), _node("e", "Op", "x", "^a"),
        _node("m", "Merge", "b", "n"), _node("n", "NextIteration", "m")])
    body = GraphBody(graph)
    assert side_by_side(body, ["a", "b", "d"]) == {"a", "b"}
    assert side_by_side(body, ["a", "e"]) == set()
    assert side_by_side(body, ["b", "e"]) == {"b", "e"}
    assert side_by_side(body, ["b", "m"]) == set()  # m reads b; the cycle through m is no peer
    assert side_by_side(body, ["d"]) == set()
    assert side_by_side(body, ["c", "d"]) == set()
