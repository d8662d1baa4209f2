"""End-to-end GraphDef conversion of raw cuDNN ops, checked against the numpy reference.

Each case builds a TF1 graph around tf.raw_ops.CudnnRNN* (see raw_graphs.py), converts it,
runs the result on CPU and compares with graphfix.cudnn.reference (itself checked against Keras
in test_reference.py). Structure is asserted too: no Cudnn* op is left anywhere.
"""

import difflib

import numpy as np
import pytest
from google.protobuf import text_format
import tensorflow as tf

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.errors import LayoutError, UnsupportedError
from graphfix.graph.bodies import find_cudnn_nodes
from builders.raw_graphs import build, run_graph_def, training_graph_def

TOLERANCE = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-10}
LARGEST_ERROR: dict = {}  # dtype -> largest error seen, printed at the end with -s


def convert_and_check(case, dtype=np.float32):
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    assert report.ops and report.ops[0].node == "rnn"
    got = run_graph_def(converted, case.feeds, case.fetches)
    spec = case.spec
    weights = layout.unpack(case.buffer.astype(np.float64), spec)
    x = case.x if case.time_major else case.x.transpose(1, 0, 2)
    LD, B = spec.num_layers * spec.num_dirs, case.x.shape[1]
    h0 = case.h0 if case.time_major else case.h0.reshape(B, LD, -1)
    c0 = case.c0 if case.time_major else case.c0.reshape(B, LD, -1)
    expected = reference.forward(spec, weights, x, h0, c0, case.lengths, time_major=case.time_major)
    for name, g, e in zip(("output", "output_h", "output_c"), got, expected):
        assert g.shape == e.shape, name
        err = float(np.max(np.abs(g.astype(np.float64) - e))) if e.size else 0.0
        LARGEST_ERROR[np.dtype(dtype).name] = max(err, LARGEST_ERROR.get(np.dtype(dtype).name, 0.0))
        assert err <= TOLERANCE[dtype], f"{name}: max abs error {err}"
    return converted, report


MODES = ["lstm", "gru", "rnn_tanh", "rnn_relu"]


@pytest.mark.parametrize("op", ["CudnnRNN", "CudnnRNNV2", "CudnnRNNV3"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layers,dirs", [(1, 1), (2, 2), (3, 1)])
def test_modes_layers_directions(op, mode, layers, dirs):
    spec = layout.RnnSpec(mode, layers, 5, 3, dirs)
    convert_and_check(build(spec, op=op, seed=layers * 10 + dirs))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("input_mode,input_size", [("skip_input", 4), ("auto_select", 4), ("auto_select", 3)])
def test_input_modes(mode, input_mode, input_size):
    resolved = layout.resolve_input_mode(input_mode, input_size, 4)
    spec = layout.RnnSpec(mode, 2, 4, input_size, 2, resolved)
    _, report = convert_and_check(build(spec, op="CudnnRNNV2", input_mode=input_mode))
    assert report.ops[0].input_mode == resolved


@pytest.mark.parametrize("layers,dirs", [(1, 1), (2, 2)])
@pytest.mark.parametrize("time_major", [True, False])
def test_lstm_projection(layers, dirs, time_major):
    spec = layout.RnnSpec("lstm", layers, 6, 3, dirs, num_proj=4)
    _, report = convert_and_check(build(spec, time_major=time_major))
    assert report.ops[0].num_proj == 4


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_dtypes(dtype, mode):
    spec = layout.RnnSpec(mode, 2, 4, 3, 2)
    converted, _ = convert_and_check(build(spec, dtype=dtype, seed=3), dtype)
    # Weights stay in the model's dtype (float16 is upcast inside the function, not in storage).
    const_types = {n.attr["dtype"].type for n in converted.node if n.name.startswith("rnn/graphfix/")}
    assert const_types == {tf.as_dtype(dtype).as_datatype_enum}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("lengths_fed", [False, True])
def test_sequence_lengths(mode, time_major, lengths_fed):
    spec = layout.RnnSpec(mode, 2, 4, 3, 2)
    lengths = np.array([5, 2, 0, 4], np.int32)
    case = build(spec, time_major=time_major, lengths=lengths, lengths_fed=lengths_fed, batch=4)
    converted, report = convert_and_check(case)
    assert report.ops[0].sequence_lengths == ("run time" if lengths_fed else "constant")
    out = run_graph_def(converted, case.feeds, case.fetches)[0]
    padded = out[2:, 1] if time_major else out[1, 2:]
    assert np.all(padded == 0), "outputs past a sequence's length must be exactly zero"


def test_sequence_lengths_change_between_runs():
    spec = layout.RnnSpec("lstm", 1, 4, 3, 2)
    case = build(spec, lengths=np.array([5, 5, 5], np.int32), lengths_fed=True)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    for lengths in ([5, 5, 5], [1, 3, 5]):
        feeds = dict(case.feeds, **{"seq:0": np.array(lengths, np.int32)})
        got = run_graph_def(converted, feeds, case.fetches)
        exp = reference.forward(spec, layout.unpack(case.buffer, spec), case.x, case.h0, case.c0, np.array(lengths))
        assert max(np.abs(g - e).max() for g, e in zip(got, exp)) < 1e-5


@pytest.mark.parametrize("source", ["const", "concat", "canonical", "fed"])
@pytest.mark.parametrize("mode,proj", [("lstm", 0), ("gru", 0), ("lstm", 3)])
def test_params_sources(source, mode, proj):
    spec = layout.RnnSpec(mode, 2, 5, 3, 2, num_proj=proj)
    converted, report = convert_and_check(build(spec, params_source=source))
    if source == "fed":
        assert report.ops[0].params.startswith("sliced in-graph")
        assert "Placeholder" in report.ops[0].params
    else:
        assert report.ops[0].params == "folded to constants"
        assert report.removed_nodes >= 1
        assert not any(n.name.startswith("piece") for n in converted.node), "old params subgraph left behind"


def test_zero_initial_states_built_in_graph():
    spec = layout.RnnSpec("lstm", 1, 4, 3, 1)
    convert_and_check(build(spec, feed_states=False))


def test_output_c_both_uses():
    """LSTM: output_c is the final cell state; other modes: a scalar dummy, as the GPU kernel makes."""
    lstm = build(layout.RnnSpec("lstm", 1, 4, 3, 1))
    converted, _ = graphfix.convert_graph_def(lstm.graph_def)
    assert run_graph_def(converted, lstm.feeds, ["out2:0"])[0].shape == (1, 3, 4)
    gru = build(layout.RnnSpec("gru", 1, 4, 3, 1))
    converted, _ = graphfix.convert_graph_def(gru.graph_def)
    assert run_graph_def(converted, gru.feeds, ["out2:0"])[0].shape == ()


def test_input_graph_not_modified_and_output_deterministic():
    case = build(layout.RnnSpec("gru", 2, 4, 3, 2), params_source="concat")
    before = case.graph_def.SerializeToString(deterministic=True)
    first, _ = graphfix.convert_graph_def(case.graph_def)
    second, _ = graphfix.convert_graph_def(case.graph_def)
    assert case.graph_def.SerializeToString(deterministic=True) == before
    if first.SerializeToString(deterministic=True) != second.SerializeToString(deterministic=True):
        diff = difflib.unified_diff(text_format.MessageToString(first).splitlines(),
                                    text_format.MessageToString(second).splitlines(), n=3, lineterm="")
        pytest.fail("two conversions of one graph differ:\n" + "\n".join(list(diff)[:80]))


# --- refusals ---------------------------------------------------------------------------

def _with_params_size(case, size):
    graph_def = tf.compat.v1.GraphDef()
    graph_def.CopyFrom(case.graph_def)
    for node in graph_def.node:
        if node.name == "params":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros(size, np.float32)))
    return graph_def


def test_refuses_params_that_fit_no_layout():
    case = build(layout.RnnSpec("lstm", 1, 4, 3, 1))
    n = layout.params_size(case.spec)
    with pytest.raises(LayoutError) as info:
        graphfix.convert_graph_def(_with_params_size(case, n + 1))
    message = str(info.value)
    assert "'rnn'" in message and str(n + 1) in message and str(n) in message
    assert "rnn_mode=lstm" in message


def test_refuses_training_graph_consuming_reserve_space():
    with pytest.raises(UnsupportedError) as info:
        graphfix.convert_graph_def(training_graph_def())
    assert "training graph" in str(info.value) and "keep_reserve" in str(info.value)


def test_dropout_in_training_mode_converts_with_warning():
    spec = layout.RnnSpec("lstm", 2, 4, 3, 1)
    _, report = convert_and_check(build(spec, is_training=True, dropout=0.3))
    assert any("dropout=0.3" in w and "'rnn'" in w for w in report.warnings)


def test_params_helpers_converted():
    """CudnnRNNParamsSize -> Const; ParamsToCanonical -> slices that match the numpy layout."""
    spec = layout.RnnSpec("gru", 2, 4, 3, 2)
    buf = np.arange(layout.params_size(spec), dtype=np.float32)
    graph = tf.Graph()
    with graph.as_default():
        kw = dict(num_layers=2, num_units=4, input_size=3, rnn_mode="gru", direction="bidirectional")
        size = tf.raw_ops.CudnnRNNParamsSize(T=tf.float32, S=tf.int32, name="size", **kw)
        tf.identity(size, name="size_out")
        n_w = sum(1 for p in layout.pieces(spec) if p.kind in ("W", "R"))
        w, b = tf.raw_ops.CudnnRNNParamsToCanonical(params=tf.constant(buf), num_params=n_w, name="canon", **kw)
        for i, t in enumerate(w + b):
            tf.identity(t, name=f"canon_out{i}")
    converted, report = graphfix.convert_graph_def(graph.as_graph_def())
    assert find_cudnn_nodes(converted) == [] and len(report.helpers) == 2
    fetches = ["size_out:0"] + [f"canon_out{i}:0" for i in range(2 * n_w)]
    got = run_graph_def(converted, {}, fetches)
    assert got[0].tolist() == [layout.params_size(spec)]
    ordered = [p for p in layout.pieces(spec) if p.kind in ("W", "R")] + \
              [p for p in layout.pieces(spec) if p.kind in ("bW", "bR")]
    for value, piece in zip(got[1:], ordered):
        np.testing.assert_array_equal(value, buf[piece.offset:piece.offset + piece.size].reshape(piece.shape))


def test_no_cudnn_op_reports_nothing_changed():
    graph = tf.Graph()
    with graph.as_default():
        tf.identity(tf.compat.v1.placeholder(tf.float32, [2], name="x"), name="y")
    converted, report = graphfix.convert_graph_def(graph.as_graph_def())
    assert not report.changed and len(converted.node) == 2


def test_largest_errors_summary(capsys):
    """Runs last in this module: prints the largest error per dtype (for the closing note)."""
    with capsys.disabled():
        print("\nlargest abs error per dtype:", {k: f"{v:.2e}" for k, v in LARGEST_ERROR.items()})
