"""The CPU target's recurrent product in two column halves (`cpu_loop.splits_product`).

    recurrent kernel [Hh, G*H] of SPLIT_PRODUCT_MIN_BYTES .. SPLIT_PRODUCT_MAX_BYTES, the op
    with both cores to itself (unidirectional, nothing beside it), B >= IN_LOOP_MIN_BATCH:
        per step: h @ kernel[:, :G*H/2] and h @ kernel[:, G*H/2:], side by side, concatenated
        (LSTM: the While loop instead of BlockLSTMV2; no batch halves from SPLIT_MIN_BATCH on)
    a GRU's kernel above SPLIT_PRODUCT_MAX_BYTES: the same split, below SPLIT_MIN_BATCH only
        (the batch halves from it on, as before)
    otherwise: one product, as before

Oracles: the numpy reference of cuDNN on raw CudnnRNNV3 graphs (real sizes: the split only
exists for kernels of 768 KB and more), and Keras 3's own CPU layers.
"""

import numpy as np
import pytest
import tensorflow as tf
from builders import keras_graphs
from builders.converted_functions import comparisons_with, matmuls_per_function
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import find_cudnn_nodes
from graphfix.targets import cpu, cpu_loop

TOL = 1e-5  # float32, absolute
BATCHES = [cpu_loop.IN_LOOP_MIN_BATCH - 1, cpu_loop.IN_LOOP_MIN_BATCH + 1, cpu.SPLIT_MIN_BATCH + 1]


def _split_loops(converted, spec) -> int:
    """How many While bodies multiply by a split kernel: per unrolled step the input part,
    two halves (and the projection) are (3 + P) MatMuls; unsplit, (2 + P)."""
    per_step = (3 + bool(spec.num_proj)) * cpu_loop.UNROLL
    return matmuls_per_function(converted).count(per_step)


def _case(spec, batch, steps, lengths=None, time_major=True, seed=0):
    """A raw CudnnRNNV3 graph with weights of Keras's initial scale (uniform, 1/sqrt(H)), so
    that sums over hundreds of units stay in the range where float32 holds 1e-5."""
    rng = np.random.default_rng(seed)
    LD = spec.num_layers * spec.num_dirs
    values = {
        "buffer": (rng.uniform(-1, 1, layout.params_size(spec)) / np.sqrt(spec.num_units)).astype(np.float32),
        "x": rng.uniform(-1, 1, (steps, batch, spec.input_size)).astype(np.float32),
        "h0": rng.uniform(-0.5, 0.5, (LD, batch, spec.hidden_size)).astype(np.float32),
        "c0": rng.uniform(-0.5, 0.5, (LD, batch, spec.num_units)).astype(np.float32),
    }
    return build(spec, op="CudnnRNNV3", lengths=lengths, time_major=time_major, values=values)


def _check(spec, case, converted):
    assert find_cudnn_nodes(converted) == []
    got = run_graph_def(converted, case.feeds, case.fetches)
    B = case.x.shape[1]
    state = (lambda a: a) if case.time_major else (lambda a: a.reshape(B, spec.num_layers * spec.num_dirs, -1))
    expected = reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec),
                                 case.x if case.time_major else case.x.transpose(1, 0, 2),
                                 state(case.h0), state(case.c0), case.lengths, time_major=case.time_major)
    for name, g, e in zip(("output", "output_h", "output_c"), got, expected):
        assert g.shape == e.shape, name
        assert float(np.max(np.abs(g - e))) <= TOL, name


SPLIT_SPECS = [
    layout.RnnSpec("lstm", 1, 256, 8),               # 1 MB
    layout.RnnSpec("gru", 1, 256, 8),                # 768 KB: the lower bound itself
    layout.RnnSpec("gru", 2, 320, 8),                # 1.2 MB, a second layer reading 320
    layout.RnnSpec("lstm", 1, 300, 8, num_proj=200),  # [200, 1200]: 960 KB
    layout.RnnSpec("rnn_relu", 1, 480, 8),           # 900 KB, one gate
]
LARGE_GRU_SPECS = [
    layout.RnnSpec("gru", 1, 512, 8),   # 3 MB
    layout.RnnSpec("gru", 2, 448, 8),   # 2.3 MB, a second layer reading 448
]
# (spec, the batch-halves tests its function holds): in the range the split replaces the
# halves; a GRU above it splits below SPLIT_MIN_BATCH only and keeps the halves from there on.
SPLIT_CASES = [(spec, 0) for spec in SPLIT_SPECS] + [(spec, 1) for spec in LARGE_GRU_SPECS]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("spec,halves_tests", SPLIT_CASES,
                         ids=[f"{s.mode}-{s.num_layers}x{s.num_units}-proj{s.num_proj}" for s, _ in SPLIT_CASES])
def test_split_product_matches_reference(spec, halves_tests, batch):
    assert cpu_loop.splits_product(spec, tf.float32) == (halves_tests == 0)
    assert cpu_loop.splits_large_gru_product(spec, tf.float32) == (halves_tests == 1)
    steps = 5
    # Short lengths (one zero) from the split batches on; batch-major at the largest batch.
    lens = None if batch < cpu_loop.IN_LOOP_MIN_BATCH else np.array([steps, 0, 3] + [steps - 1] * (batch - 3))
    case = _case(spec, batch, steps, lens, time_major=batch != BATCHES[-1], seed=batch + spec.num_units)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    # Both paths are in the function (one test per call picks); the split loops, full and
    # masked, each as the unrolled and the remainder loop: 4 per layer, the 2 unrolled counted.
    assert _split_loops(converted, spec) == 2 * spec.num_layers
    assert comparisons_with(converted, "GreaterEqual", cpu.SPLIT_MIN_BATCH) == halves_tests
    _check(spec, case, converted)


@pytest.mark.parametrize("spec,why", [
    (layout.RnnSpec("lstm", 1, 192, 8), "576 KB: below the lower bound"),
    (layout.RnnSpec("lstm", 1, 448, 8), "3 MB: above the upper bound (an LSTM's loop is not split there)"),
    (layout.RnnSpec("lstm", 1, 256, 8, 2), "bidirectional: the other direction takes the second core"),
], ids=["small", "large", "bidirectional"])
def test_no_split_outside_its_range(spec, why):
    case = _case(spec, cpu.SPLIT_MIN_BATCH + 1, 4, seed=7)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert _split_loops(converted, spec) == 0, why
    _check(spec, case, converted)


def _keras_case(kind: str, units: int, batch: int) -> keras_graphs.FrozenCase:
    """Keras 3 Masking -> {LSTM|GRU}(units, return_sequences, return_state), every third
    example shorter."""
    import keras

    steps, features = 6, 5
    lengths = [steps if b % 3 else 2 + b % 4 for b in range(batch)]
    pad = keras_graphs._padding(lengths, steps)
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]

    def model():
        x = keras.Input((steps, features), batch_size=batch, name="x")
        m = keras.layers.Masking(0.0, name="masking")(x)
        y = layer(units, return_sequences=True, return_state=True, name=kind)(m)
        return keras.Model(x, y, name="model")

    def values(rng):
        x = keras_graphs._uniform(rng, (batch, steps, features), 1.0)
        return [np.where(pad, np.float32(0), x)]

    return keras_graphs._keras3_case(f"keras3_{kind}_{units}_split", _keras_case.__doc__, seed=batch,
                                     build_model=model, values=values, padded_zero=lambda _: {0: pad})


# The Keras cases' weights are uniform in +-0.6 at every size (keras_graphs._uniform), so a
# GRU(512)'s pre-activations sum 500 terms of that size: the two sides' float32 sums (in
# different orders) differ by 1.19e-5 there, the same with the split as without it (measured).
@pytest.mark.parametrize("kind,units,batch,atol", [("lstm", 256, 6, TOL), ("gru", 288, cpu.SPLIT_MIN_BATCH + 1, TOL),
                                                    ("gru", 512, 6, 3 * TOL)], ids=["lstm", "gru", "large-gru"])
def test_split_product_matches_keras(kind, units, batch, atol):
    """Keras 3's CPU layers hold the same weights (an LSTM at a batch BlockLSTMV2 took before;
    a GRU at a batch that took the batch halves before; a GRU above 1.5 MB at a batch that
    took one product before)."""
    case = _keras_case(kind, units, batch)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert _split_loops(converted, layout.RnnSpec(kind, 1, units, 5)) == 2
    got = keras_graphs.run_graph_def(converted, case.feeds, case.fetches)
    keras_graphs.assert_matches(case, got, reference=case.cudnn_expected, rtol=0, atol=atol)
