"""Keras 3's ReverseSequence ops around a converted op, rewritten as a row gather
(graphfix/rewrite/reverse_sequence.py).

Oracles: TensorFlow's own ReverseSequence (bit for bit, random lengths including 0 and T, both
layouts, ranks 2-4) and Keras's CPU layers (the frozen Keras 3 go_backwards and Bidirectional
graphs, masked and not).
"""

import numpy as np
import pytest
import tensorflow as tf
from builders import keras_graphs

import graphfix
from graphfix.graph.bodies import bodies
from graphfix.rewrite import convert_graph_def
from graphfix.rewrite.reverse_sequence import reverse_rows
from graphfix.targets.tflite import TfliteTarget

KERAS_REVERSING = ["keras3_bidirectional_lstm", "keras3_lstm_go_backwards_state",
                   "keras3_bidirectional_lstm_masked", "keras3_lstm_go_backwards_masked"]


@pytest.mark.parametrize("seq_dim", [0, 1])
@pytest.mark.parametrize("shape", [(7, 5), (7, 5, 3), (6, 4, 2, 3), (0, 3, 2), (4, 0, 2)])
@pytest.mark.parametrize("dtype,length_dtype", [(np.float32, np.int32), (np.float16, np.int64), (np.int32, np.int64)])
def test_reverse_rows_equals_reverse_sequence(seq_dim, shape, dtype, length_dtype):
    rng = np.random.default_rng(sum(shape) + seq_dim)
    shape = shape if seq_dim == 0 else (shape[1], shape[0]) + shape[2:]
    steps, batch = shape[seq_dim], shape[1 - seq_dim]
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    lengths = rng.integers(0, steps + 1, batch).astype(length_dtype)
    if batch >= 2:
        lengths[:2] = [0, steps]
    want = tf.reverse_sequence(x, lengths, seq_axis=seq_dim, batch_axis=1 - seq_dim).numpy()
    got = tf.function(lambda x, n: reverse_rows(x, n, seq_dim))(x, lengths).numpy()
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [[3, 6], [-1, 2]])
def test_lengths_outside_the_steps_fail_as_reverse_sequence_does(bad):
    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(5, 2, 3)
    lengths = np.array(bad, np.int64)
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.reverse_sequence(x, lengths, seq_axis=0, batch_axis=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="seq_lengths must be in"):
        tf.function(lambda x, n: reverse_rows(x, n, 0))(x, lengths)


def _reverse_sequences(graph_def) -> list[str]:
    return [n.name for body in bodies(graph_def) for n in body.nodes if n.op == "ReverseSequence"]


@pytest.mark.parametrize("name", KERAS_REVERSING)
def test_keras_reversals_become_gathers_and_match_keras(name):
    case = keras_graphs.BUILDERS[name](1)
    assert _reverse_sequences(case.graph_def), "fixture must reverse with ReverseSequence"
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert _reverse_sequences(converted) == []
    rewritten = [h for h in report.helpers if h.startswith("ReverseSequence")]
    assert len(rewritten) == len(_reverse_sequences(case.graph_def)), report.lines()
    got = keras_graphs.run_graph_def(converted, case.feeds, case.fetches)
    keras_graphs.assert_matches(case, got, rtol=0, atol=1e-5)
    keras_graphs.assert_matches(case, got, reference=case.cudnn_expected, rtol=0, atol=1e-5)


def test_other_reverse_sequences_and_other_targets_keep_them():
    case = keras_graphs.BUILDERS["keras3_bidirectional_lstm"](1)
    # The TFLite target has a REVERSE_SEQUENCE builtin and keeps its graph as it was.
    converted, _ = convert_graph_def(case.graph_def, TfliteTarget(batch=2))
    assert len(_reverse_sequences(converted)) == len(_reverse_sequences(case.graph_def))
    # A ReverseSequence on lengths no converted op reads is not Keras's: left alone.
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [5, 2, 3], name="other_x")
        tf.reverse_sequence(x, tf.constant([5, 2], tf.int64), seq_axis=0, batch_axis=1, name="mine")
    graph_def = graph.as_graph_def()
    graph_def.MergeFrom(case.graph_def)
    converted, _ = graphfix.convert_graph_def(graph_def)
    assert _reverse_sequences(converted) == ["mine"]
