"""--target tflite on TF1 graphs: tf.contrib.cudnn_rnn-style SavedModels, frozen GraphDefs, the
batch dimension found from the graph, and --verify through LiteRT.

Per contrib case (LSTM and GRU, uni- and bidirectional, 1 and 2 layers; time-major x [T, B, I]
with T and B open; params in a ref variable of unknown shape that only the saver's restore
fills, through CudnnRNNCanonicalToParams): the .tflite holds builtin ops only, the expected
ones (one UNIDIRECTIONAL_SEQUENCE_LSTM per LSTM layer and direction; a WHILE loop for GRU),
LiteRT (default XNNPack delegate) computes the numpy reference within 1e-5 for two sequence
lengths, and the TFLite-ready SavedModel does too on CPU (TF1 Session and TF2 loader).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from builders import raw_graphs
from builders.saved_models import call_signature, max_errors, read_proto, run_cli
from builders.tf1_contrib import save_tf1_contrib

from graphfix.cudnn import layout, reference
from graphfix.errors import UnsupportedError
from graphfix.targets import tflite
from graphfix.targets.tflite.batch_dim import find_batch_dims

pytestmark = pytest.mark.slow
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (test extra) not installed")

ATOL = 1e-5  # float32, absolute
LSTM_OP, WHILE = "UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"
BATCH = 2
FEEDS = ((5, BATCH), (3, BATCH))  # (T, B) per call: the time axis stays open


def run_litert(content: bytes, feeds: list[dict]) -> list[dict]:
    runner = litert.Interpreter(model_content=content).get_signature_runner("serving_default")
    return [{k: np.asarray(v) for k, v in runner(**f).items()} for f in feeds]


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2])
def test_contrib_savedmodel_to_litert(mode, bidirectional, layers, tmp_path):
    case = save_tf1_contrib(mode, tmp_path / "model", mode=mode, num_layers=layers, bidirectional=bidirectional,
                            seed=layers, feed_shapes=FEEDS)
    report = tflite.convert_for_tflite(case.path, tmp_path / "out", batch_size=BATCH,
                                       tflite_file=tmp_path / "m.tflite")
    assert any("TF1 graph frozen" in h for h in report.helpers), report.lines()
    content = (tmp_path / "m.tflite").read_bytes()
    ops = tflite.tflite_ops(content)
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op], ops
    directions = layers * (2 if bidirectional else 1)
    assert ops.count(LSTM_OP) == (directions if mode == "lstm" else 0), ops
    assert (WHILE in ops) == (mode == "gru"), ops
    assert "BIDIRECTIONAL_SEQUENCE_LSTM" not in ops  # the converter has no route to it: the report says so
    if mode == "lstm" and bidirectional:
        assert all("no BIDIRECTIONAL_SEQUENCE_LSTM" in h for h in report.helpers if "-> fused LSTM" in h), report.lines()
    for call in range(2):  # nothing carried from one invocation to the next
        errors = max_errors(run_litert(content, case.feeds), case.expected)
        assert max(errors.values()) <= ATOL, f"LiteRT vs reference, call {call}: {errors}"
    # the batch is dimension 1 (time-major), the time axis stays open
    (sig,) = [s for s in read_proto(tmp_path / "out").meta_graphs[0].signature_def.values() if s.inputs]
    assert [d.size for d in sig.inputs["x"].tensor_shape.dim] == [-1, BATCH, 3]
    for tf1 in (True, False):  # the ready SavedModel runs on CPU, weights restored (not the initializer's)
        errors = max_errors(call_signature(tmp_path / "out", dataclasses.replace(case, tf1=tf1)), case.expected)
        assert max(errors.values()) <= ATOL, f"SavedModel (tf1={tf1}) vs reference: {errors}"


def test_batch_dimension_found_from_the_graph(tmp_path):
    from builders.saved_models import save_tf_keras_cudnn
    contrib = save_tf1_contrib("gru", tmp_path / "contrib", mode="gru", num_layers=1, bidirectional=False, seed=1)
    found = find_batch_dims(read_proto(contrib.path).meta_graphs[0])["serving_default"]
    assert found.dims == {"x": 1} and found.static == {"x": None}
    for time_major, x_dim in ((True, 1), (False, 0)):
        path = tmp_path / f"tf_keras_{time_major}"
        save_tf_keras_cudnn("lstm", path, mode="lstm", seed=1, batch=None, time=4, features=3, units=2,
                            time_major=time_major, initial_state=True)
        found = find_batch_dims(read_proto(path).meta_graphs[0])["serving_default"]
        assert found.dims == {"x": x_dim, "h0": 0, "c0": 0}, (time_major, found)


def _reshaped_batch_graph(path):
    """x [?, 6] --Reshape [-1, 2, 3]--> CudnnRNNV2 (GRU): no input dimension is the op's batch."""
    graph = tf.Graph()
    spec = layout.RnnSpec("gru", 1, 4, 3, 1, "linear_input", 0)
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        h = tf.zeros([1, 2, 4])
        params = tf.constant(np.linspace(-0.5, 0.5, layout.params_size(spec)).astype(np.float32))
        out = tf.raw_ops.CudnnRNNV2(input=tf.reshape(x, [-1, 2, 3]), input_h=h, input_c=h, params=params,
                                    rnn_mode="gru", name="rnn")
        tf.identity(out[0], name="y")
    path.write_bytes(graph.as_graph_def().SerializeToString())


def test_batch_not_found_asks_for_help_in_one_line(tmp_path):
    _reshaped_batch_graph(tmp_path / "m.pb")
    with pytest.raises(UnsupportedError) as info:
        tflite.convert_for_tflite(tmp_path / "m.pb", tmp_path / "out", batch_size=2)
    message = str(info.value)
    assert "\n" not in message and "cannot tell which input dimension" in message and "please report" in message
    assert "x [?, 6]" in message, message
    assert not (tmp_path / "out").exists()


def test_frozen_graph_def_accepted(tmp_path):
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2, "linear_input", 0)
    case = raw_graphs.build(spec, op="CudnnRNNV2", params_source="const", feed_states=False, batch=BATCH)
    (tmp_path / "m.pb").write_bytes(case.graph_def.SerializeToString())
    report = tflite.convert_for_tflite(tmp_path / "m.pb", tmp_path / "out", batch_size=BATCH,
                                       tflite_file=tmp_path / "m.tflite")
    assert "GraphDef wrapped as a SavedModel" in report.helpers[0] and "outputs out0, out1, out2" in report.helpers[0]
    content = (tmp_path / "m.tflite").read_bytes()
    # out2 (the final cell state) is an output: the fused op cannot give it, so While loops
    assert WHILE in tflite.tflite_ops(content) and LSTM_OP not in tflite.tflite_ops(content)
    want = reference.forward(spec, layout.unpack(case.buffer, spec), case.x, case.h0, case.c0)
    (got,) = run_litert(content, [{"x": case.x}])
    for key, value in zip(("out0", "out1", "out2"), want):
        assert np.max(np.abs(got[key] - value)) <= ATOL, key


@pytest.mark.parametrize("directions", [1, 2], ids=["uni", "bi"])
def test_projection_lstm_runs_as_a_loop_and_says_why(directions, tmp_path):
    """An LSTM with num_proj (V3) has no fused form the converter makes: a While loop, exact."""
    spec = layout.RnnSpec("lstm", 1, 5, 3, directions, "linear_input", 3)
    case = raw_graphs.build(spec, op="CudnnRNNV3", params_source="const", feed_states=False, batch=BATCH)
    (tmp_path / "m.pb").write_bytes(case.graph_def.SerializeToString())
    report = tflite.convert_for_tflite(tmp_path / "m.pb", tmp_path / "out", batch_size=BATCH,
                                       tflite_file=tmp_path / "m.tflite")
    (line,) = [h for h in report.helpers if "-> While loop" in h]
    assert "LSTM with projection: the TFLite converter fuses only Keras-style LSTM functions" in line, line
    content = (tmp_path / "m.tflite").read_bytes()
    assert WHILE in tflite.tflite_ops(content) and LSTM_OP not in tflite.tflite_ops(content)
    want = reference.forward(spec, layout.unpack(case.buffer, spec), case.x, case.h0, case.c0)
    (got,) = run_litert(content, [{"x": case.x}])
    assert got["out0"].shape == (case.x.shape[0], BATCH, directions * 3)
    for key, value in zip(("out0", "out1", "out2"), want):
        assert np.max(np.abs(got[key] - value)) <= ATOL, key


def test_cli_verify_through_litert(tmp_path):
    save_tf1_contrib("lstm", tmp_path / "model", mode="lstm", num_layers=1, bidirectional=True, seed=4)
    proc = run_cli(tmp_path / "model", "-o", tmp_path / "out", "--target", "tflite", "--batch-size", BATCH,
                   "--verify", "--tflite", tmp_path / "m.tflite")
    assert proc.returncode == 0, proc.stderr
    assert "verify passed" in proc.stdout and "[LiteRT]" in proc.stdout, proc.stdout
    assert "whole model, signature 'serving_default' in LiteRT" in proc.stdout
    assert LSTM_OP in proc.stdout
