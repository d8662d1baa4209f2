"""The CPU target's While loop, at batch sizes on both sides of IN_LOOP_MIN_BATCH.

    x --> [batch >= IN_LOOP_MIN_BATCH ?] --yes--> loop: x_t @ kernel inside each step
                                         '--no---> one MatMul for all steps, then the loop

(LSTMs that BlockLSTMV2 computes take the loop only above BLOCK_LSTM_MAX_BATCH: see
test_cpu_block_lstm.py.) Oracles: Keras's own CPU layers (frozen Keras graphs fed a batch
large enough for the per-step branch) and the numpy reference of cuDNN.
"""

import numpy as np
import pytest
import tensorflow as tf
from builders import keras_graphs
from builders.converted_functions import matmuls_per_function
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import find_cudnn_nodes
from graphfix.targets import cpu, cpu_loop

TOL = 1e-5
BATCHES = [cpu_loop.IN_LOOP_MIN_BATCH - 1, cpu_loop.IN_LOOP_MIN_BATCH + 2]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("lengths", ["none", "short"])
@pytest.mark.parametrize("spec", [
    layout.RnnSpec("gru", 2, 5, 3, 2),
    layout.RnnSpec("rnn_tanh", 1, 4, 3, 2),
    layout.RnnSpec("rnn_relu", 1, 4, 3, 1),
    layout.RnnSpec("lstm", 1, 6, 3, 2, num_proj=4),
    layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input"),
    layout.RnnSpec("gru", 1, 4, 4, 2, "skip_input"),
], ids=lambda s: f"{s.mode}-{s.num_layers}x{s.num_dirs}-proj{s.num_proj}-{s.input_mode}")
def test_loop_matches_reference_on_both_sides(spec, lengths, batch):
    steps = 6
    lens = None if lengths == "none" else np.array([steps, 0, 3] + [steps - 2] * (batch - 3))
    case = build(spec, op="CudnnRNNV3", lengths=lens, batch=batch, steps=steps, seed=batch * 3 + len(spec.mode))
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    if spec.input_mode != "skip_input":  # both loops are in the graph; the per-step one multiplies x_t too
        per_step = (2 + bool(spec.num_proj)) * cpu_loop.UNROLL  # x_t, h (and the projection) per unrolled step
        counts = set(matmuls_per_function(converted))
        assert per_step in counts and per_step - cpu_loop.UNROLL in counts, counts
    got = run_graph_def(converted, case.feeds, case.fetches)
    weights = layout.unpack(case.buffer.astype(np.float64), spec)
    expected = reference.forward(spec, weights, case.x, case.h0, case.c0, case.lengths)
    for name, g, e in zip(("output", "output_h", "output_c"), got, expected):
        assert g.shape == e.shape, name
        assert float(np.max(np.abs(g - e))) <= TOL, name


@pytest.mark.parametrize("name", ["keras3_gru_state_dynamic_batch", "tf_keras_cudnn_gru_initial_state_dynamic_batch"])
def test_keras_gru_at_a_larger_batch(name):
    """Keras's CPU GRU (the case's expected values) against the converted graph, with the
    case's examples repeated to a batch that takes the per-step branch."""
    case = keras_graphs.BUILDERS[name](2)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    rows = len(next(iter(case.feeds.values())))
    repeat = -(-(cpu_loop.IN_LOOP_MIN_BATCH + 1) // rows)
    feeds = {k: np.concatenate([v] * repeat) for k, v in case.feeds.items()}
    assert len(next(iter(feeds.values()))) >= cpu_loop.IN_LOOP_MIN_BATCH
    got = keras_graphs.run_graph_def(converted, feeds, case.fetches)
    for g, e in zip(got, case.expected):
        np.testing.assert_allclose(g, np.concatenate([e] * repeat), atol=TOL, rtol=0)


def test_cpu_loops_run_few_iterations_at_once():
    """Every While loop of the CPU target runs at most cpu_loop.PARALLEL_ITERATIONS iterations at
    once (measured faster than TensorFlow's default 10); the TFLite target's loop keeps 10."""
    spec = layout.RnnSpec("gru", 1, 4, 3, 2)
    case = build(spec, op="CudnnRNNV3", lengths=np.array([6, 2]), batch=2, steps=6, seed=1)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    loops = [n for f in converted.library.function for n in f.node_def if n.op in ("While", "StatelessWhile")]
    assert loops and {n.attr["parallel_iterations"].i for n in loops} == {cpu_loop.PARALLEL_ITERATIONS}
    tflite = cpu.trace_rnn(cpu.RnnCall(spec, tf.float32, has_sequence_lengths=True, num_outputs=5,
                                       static_batch=2), "tflite_loop")
    tflite_loops = [n for f in tflite.function_defs for n in f.node_def if n.op in ("While", "StatelessWhile")]
    assert tflite_loops and {n.attr["parallel_iterations"].i for n in tflite_loops} == {10}
