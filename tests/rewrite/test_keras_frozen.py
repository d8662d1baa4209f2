"""Frozen GraphDefs made by Keras's own cuDNN code paths, converted and checked against Keras.

Each case (tests/builders/keras_graphs.py) freezes a tf_keras CuDNNLSTM/CuDNNGRU or Keras 3
LSTM/GRU model traced on its cuDNN path. The converted graph must run on CPU and match:
  * Keras's CPU layers holding the same weights (`expected`) at every valid step, and
  * what cuDNN computes (`cudnn_expected`: zeros at padded steps) at every step.
"""

import numpy as np
import pytest

import graphfix
from builders import keras_graphs
from graphfix.graph.bodies import find_cudnn_nodes


@pytest.fixture(scope="module", params=sorted(keras_graphs.BUILDERS))
def case(request):
    return keras_graphs.BUILDERS[request.param](0)


def test_converts_and_matches_keras(case):
    assert find_cudnn_nodes(case.graph_def), "fixture must hold a cuDNN op"
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert len(report.ops) == len(case.cudnn)
    assert {op.node for op in report.ops} == {n.name for n in case.cudnn}
    got = keras_graphs.run_graph_def(converted, case.feeds, case.fetches)
    keras_graphs.assert_matches(case, got, rtol=0, atol=1e-5)
    keras_graphs.assert_matches(case, got, reference=case.cudnn_expected, rtol=0, atol=1e-5)


def test_report_describes_keras_ops(case):
    _, report = graphfix.convert_graph_def(case.graph_def)
    for op, node in zip(sorted(report.ops, key=lambda o: o.node), sorted(case.cudnn, key=lambda n: n.name)):
        assert op.mode == node.attrs["rnn_mode"]
        assert op.time_major == node.attrs.get("time_major", True)
        assert op.params == "folded to constants"
        assert op.sequence_lengths in ("constant", "run time")


def test_batch_size_can_change_when_dynamic():
    case = keras_graphs.BUILDERS["keras3_gru_state_dynamic_batch"](1)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    feeds = {k: np.concatenate([v, v[:1]]) for k, v in case.feeds.items()}  # batch + 1
    got = keras_graphs.run_graph_def(converted, feeds, case.fetches)
    for g, e in zip(got, case.expected):
        np.testing.assert_allclose(g[:-1], e, atol=1e-5, rtol=0)
        np.testing.assert_allclose(g[-1], e[0], atol=1e-5, rtol=0)
