"""Smoke tests for tests/builders/keras_graphs.py: the fixtures are what they claim to be.

Each case must hold a CudnnRNNV3 node that really fails on CPU, its params input must be
computable on CPU, and `expected` must be what the same computation frozen through Keras's
CPU path returns for the same feeds and fetch names.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from builders import keras_graphs as kg

GATES = {"lstm": 4, "gru": 3}


@pytest.fixture(scope="module")
def cases() -> dict[str, kg.FrozenCase]:
    return {case.name: case for case in kg.build_all(seed=0)}


@pytest.fixture(params=list(kg.BUILDERS))
def case(request, cases) -> kg.FrozenCase:
    return cases[request.param]


def test_case_has_top_level_cudnn_rnn_v3(case):
    assert kg.BUILDERS[case.name]  # each builder names its case after itself
    assert case.cudnn, case.name
    for node in case.cudnn:
        assert node.op == "CudnnRNNV3"
        assert node.location == "", f"{node.name} is in library function {node.location}"
        assert node.attrs["direction"] == "unidirectional"
        assert node.attrs["input_mode"] == "linear_input"
        assert node.attrs["time_major"] is case.name.startswith("tf_keras")
        assert node.params_ops[0] == "ConcatV2"
    assert not case.graph_def.library.function
    ops = {n.op for n in case.graph_def.node}
    assert not ops & {"VarHandleOp", "ReadVariableOp", "VariableV2"}, ops


def test_cudnn_graph_fails_on_cpu(case):
    with pytest.raises(tf.errors.OpError, match=r"No OpKernel was registered to support Op 'Cudnn"):
        kg.run_graph_def(case.graph_def, case.feeds, case.fetches)


def test_params_input_is_computable_on_cpu_with_cudnn_size(case):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(case.graph_def, name="")
    for node in case.cudnn:
        rnn = graph.get_operation_by_name(node.name)
        inputs, units = rnn.inputs[0].shape[-1], rnn.inputs[1].shape[-1]
        (params,) = kg.run_graph_def(case.graph_def, case.feeds, [rnn.inputs[3].name])
        g = GATES[node.attrs["rnn_mode"]]
        assert params.shape == (g * (units * inputs + units * units + 2 * units),), node.name
        if case.name.startswith("keras3") and node.attrs["rnn_mode"] == "lstm":
            # _cudnn_lstm sets the input biases bW to zero; CuDNNLSTM has its own 8H bias.
            matrices = g * (units * inputs + units * units)
            assert not params[matrices : matrices + g * units].any()
        assert len(np.unique(params[params != 0])) > params.size // 2, "constant fills?"


def test_expected_matches_keras_cpu_graph(case):
    got = kg.run_graph_def(case.cpu_graph_def, case.feeds, case.fetches)
    assert len(case.expected) == len(case.valid) == len(case.cudnn_expected)
    kg.assert_matches(case, got)
    for index, e in enumerate(case.expected):
        np.testing.assert_allclose(got[index], e, rtol=1e-5, atol=1e-6)  # padded steps too
        assert np.all(np.isfinite(e)) and np.abs(e).max() > 1e-3, (case.name, index)


def test_deterministic():
    a = kg.build_keras3_stacked_lstm(seed=3)
    b = kg.build_keras3_stacked_lstm(seed=3)
    serialize = lambda gd: gd.SerializeToString(deterministic=True)  # noqa: E731
    assert serialize(a.graph_def) == serialize(b.graph_def)
    np.testing.assert_array_equal(a.feeds["x:0"], b.feeds["x:0"])
    c = kg.build_keras3_stacked_lstm(seed=4)
    assert not np.array_equal(a.feeds["x:0"], c.feeds["x:0"])


def test_padded_steps_keras_cpu_repeats_cudnn_zeros(cases):
    """Forward, non-Bidirectional, masked, return_sequences: CPU repeats, cuDNN gives zeros."""
    lengths = kg.MASKED_LENGTHS
    for name in ("keras3_lstm_masked", "keras3_gru_embedding_mask"):
        case = cases[name]
        seq, valid, cudnn = case.expected[0], case.valid[0], case.cudnn_expected[0]
        for b, n in enumerate(lengths):
            assert valid[b, :n].all() and not valid[b, n:].any()
            repeated = np.broadcast_to(seq[b, n - 1], seq[b, n:].shape)
            np.testing.assert_array_equal(seq[b, n:], repeated)
            assert not cudnn[b, n:].any()
            np.testing.assert_array_equal(cudnn[b, :n], seq[b, :n])
        assert all(v is None for v in case.valid[1:])


def test_padded_steps_agree_for_go_backwards_and_bidirectional(cases):
    lengths = kg.MASKED_LENGTHS
    backwards = cases["keras3_lstm_go_backwards_masked"].expected[0]
    bidirectional = cases["keras3_bidirectional_lstm_masked"].expected[0]
    for b, n in enumerate(lengths):
        t = backwards.shape[1]
        assert not backwards[b, : t - n].any() and backwards[b, t - n :].all()
        assert not bidirectional[b, n:].any() and bidirectional[b, :n].all()
    for name in ("keras3_lstm_go_backwards_masked", "keras3_bidirectional_lstm_masked"):
        assert all(v is None for v in cases[name].valid)


def test_masked_final_state_is_last_valid_output(cases):
    case = cases["keras3_lstm_masked"]
    seq, h = case.expected[0], case.expected[1]
    for b, n in enumerate(kg.MASKED_LENGTHS):
        np.testing.assert_array_equal(h[b], seq[b, n - 1])


def test_assert_matches_skips_padded_steps_only_against_expected(cases):
    case = cases["keras3_lstm_masked"]
    kg.assert_matches(case, case.cudnn_expected)
    with pytest.raises(AssertionError):
        kg.assert_matches(case, case.expected, reference=case.cudnn_expected)
