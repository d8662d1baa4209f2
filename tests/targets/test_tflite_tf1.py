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


def _projection_graph(spec: layout.RnnSpec, steps: int, seed: int):
    """x [T, B, I] (static) -> CudnnRNNV3 (num_proj, full constant lengths) -> out0 (y), out1 (h_n)."""
    rng = np.random.default_rng(seed)
    params = (rng.standard_normal(layout.params_size(spec)) * 0.4).astype(np.float32)
    LD = spec.num_layers * spec.num_dirs
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [steps, BATCH, spec.input_size], name="x")
        out = tf.raw_ops.CudnnRNNV3(
            input=x, input_h=tf.zeros([LD, BATCH, spec.hidden_size]), input_c=tf.zeros([LD, BATCH, spec.num_units]),
            params=tf.constant(params), sequence_lengths=tf.fill([BATCH], steps), rnn_mode="lstm",
            direction="bidirectional" if spec.num_dirs == 2 else "unidirectional", num_proj=spec.num_proj,
            is_training=False, name="rnn")
        tf.identity(out[0], name="out0")
        tf.identity(out[1], name="out1")
    return graph.as_graph_def(), params


@pytest.mark.parametrize("directions", [1, 2], ids=["uni", "bi"])
def test_projection_lstm_fuses_with_projection_weights(directions, tmp_path):
    """An LSTM with num_proj becomes UNIDIRECTIONAL_SEQUENCE_LSTM with its projection operand
    (through the stub op), one per direction, within 1e-5 of the numpy reference past 10 steps."""
    spec = layout.RnnSpec("lstm", 1, 5, 3, directions, "linear_input", 3)
    steps = 14
    graph_def, params = _projection_graph(spec, steps, seed=directions)
    (tmp_path / "m.pb").write_bytes(graph_def.SerializeToString())
    report = tflite.convert_for_tflite(tmp_path / "m.pb", tmp_path / "out", tflite_file=tmp_path / "m.tflite")
    (line,) = [h for h in report.helpers if "-> fused LSTM" in h]
    assert "with projection weights" in line, line
    content = (tmp_path / "m.tflite").read_bytes()
    ops = tflite.tflite_ops(content)
    assert ops.count(LSTM_OP) == directions and WHILE not in ops, ops
    model = tflite_model(content)
    assert all(op_inputs(model, i)[16] >= 0 for i in range(len(ops)) if ops[i] == LSTM_OP)  # the projection operand
    x = np.random.default_rng(7).standard_normal((steps, BATCH, 3)).astype(np.float32) * 2
    zeros = np.zeros((directions, BATCH, 5), np.float32)
    want = reference.forward(spec, layout.unpack(params, spec), x, zeros[..., :3], zeros)
    (got,) = run_litert(content, [{"x": x}])
    for key, value in zip(("out0", "out1"), want):
        assert got[key].shape == value.shape, key
        assert np.max(np.abs(got[key] - value)) <= ATOL, key


def test_cli_verify_projection_lstm(tmp_path):
    """--verify runs the fused projection LSTM alone in LiteRT against the numpy reference."""
    graph_def, _ = _projection_graph(layout.RnnSpec("lstm", 2, 5, 3, 2, "linear_input", 3), 12, seed=3)
    (tmp_path / "m.pb").write_bytes(graph_def.SerializeToString())
    proc = run_cli(tmp_path / "m.pb", "--target", "tflite", "--verify")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   CudnnRNNV3 'rnn' (graph [LiteRT])" in proc.stdout and "verify passed" in proc.stdout, proc.stdout
    assert tflite.tflite_ops((tmp_path / "m.tflite").read_bytes()).count(LSTM_OP) == 4


def tflite_model(content: bytes):
    from tensorflow.lite.python import schema_py_generated as schema
    return schema.Model.GetRootAsModel(content, 0)


def op_inputs(model, index: int) -> list[int]:
    op = model.Subgraphs(0).Operators(index)
    return [op.Inputs(i) for i in range(op.InputsLength())]


def test_cli_verify_through_litert(tmp_path):
    save_tf1_contrib("lstm", tmp_path / "model", mode="lstm", num_layers=1, bidirectional=True, seed=4)
    proc = run_cli(tmp_path / "model", "-o", tmp_path / "out", "--target", "tflite", "--batch-size", BATCH,
                   "--verify", "--tflite", tmp_path / "m.tflite")
    assert proc.returncode == 0, proc.stderr
    assert "verify passed" in proc.stdout and "[LiteRT]" in proc.stdout, proc.stdout
    assert "whole model, signature 'serving_default' in LiteRT" in proc.stdout
    assert LSTM_OP in proc.stdout
