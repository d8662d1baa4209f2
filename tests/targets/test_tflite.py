"""--target tflite end to end: Keras 3 model exported with its cuDNN path -> graphfix ->
TFLite converter (TFLITE_BUILTINS only) -> LiteRT interpreter, against the Keras CPU twin.

Per case: the .tflite holds only builtin ops (no Flex, no custom), the expected ones (fused
UNIDIRECTIONAL_SEQUENCE_LSTM where graphfix fuses, WHILE where it cannot), and LiteRT
computes what the cuDNN graph computes (`SavedCase.expected`: the Keras CPU result, with
padded steps zeroed where cuDNN zeroes them), float32 within 1e-4 absolute. The converted
SavedModel still runs in TensorFlow and gives the same.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from graphfix.targets import tflite
from graphfix.errors import UnsupportedError
from builders.saved_models import call_signature, keras3_gpu_path, masked_input, max_errors, run_cli, save_keras3, uniform

pytestmark = pytest.mark.slow
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert (test extra) not installed")

ATOL = 1e-4  # float32, absolute: TFLite's kernels (XNNPACK) sum in another order than TF
BATCH, TIME, FEATURES = 3, 6, 4
LSTM_OP, WHILE = "UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE"
LENGTHS = (6, 2, 4)


def run_litert(content: bytes, feeds: dict) -> dict:
    interpreter = litert.Interpreter(model_content=content)
    runner = interpreter.get_signature_runner("serving_default")
    return {k: np.asarray(v) for k, v in runner(**feeds).items()}


def _plain(rng):
    return [(uniform(rng, (BATCH, TIME, FEATURES), 1.0), None)]


def _masked(rng):
    return [(masked_input(rng, LENGTHS, TIME, FEATURES), LENGTHS)]


# name -> (layers on x, inputs, cuDNN-zeroed output indices, fused LSTM ops, WHILE expected)
CASES = {
    "lstm": (lambda k, x: k.layers.LSTM(5)(x), _plain, (), 1, False),
    "lstm_sequences_go_backwards": (lambda k, x: k.layers.LSTM(4, return_sequences=True, go_backwards=True)(x),
                                    _plain, (), 1, False),
    "stacked_lstm": (lambda k, x: k.layers.LSTM(3)(k.layers.LSTM(6, return_sequences=True)(x)), _plain, (), 2, False),
    "bidirectional_lstm": (lambda k, x: k.layers.Bidirectional(k.layers.LSTM(3, return_sequences=True))(x),
                           _plain, (), 2, False),
    "gru": (lambda k, x: k.layers.GRU(4, return_sequences=True)(x), _plain, (), 0, True),
    "bidirectional_gru": (lambda k, x: k.layers.Bidirectional(k.layers.GRU(3))(x), _plain, (), 0, True),
    # return_state: the final cell state is an output, which the fused op cannot give: While loop
    "lstm_return_state": (lambda k, x: k.layers.LSTM(5, return_state=True)(x), _plain, (), 0, True),
    # Masking -> sequence lengths, which the fused op has not: While loop
    "masked_lstm": (lambda k, x: k.layers.LSTM(5)(k.layers.Masking()(x)), _masked, (), 0, True),
    # mixed: converts through --tflite; from_saved_model cannot (warned)
    "lstm_then_gru": (lambda k, x: k.layers.GRU(3)(k.layers.LSTM(5, return_sequences=True)(x)), _plain, (), 1, True),
    "masked_lstm_sequences": (lambda k, x: k.layers.LSTM(3, return_sequences=True)(k.layers.Masking()(x)),
                              _masked, (0,), 0, True),
}


def _build(layers):
    def build():
        import keras
        x = keras.Input((TIME, FEATURES))  # batch open, as Keras exports by default
        return keras.Model(x, layers(keras, x))
    return build


@pytest.mark.parametrize("name", sorted(CASES))
def test_keras3_to_litert(name, tmp_path):
    layers, inputs, padded, fused, has_while = CASES[name]
    case = save_keras3(name, tmp_path / "model", _build(layers), inputs, seed=sorted(CASES).index(name),
                       padded_outputs=padded)
    report = tflite.convert_for_tflite(case.path, tmp_path / "out", batch_size=BATCH,
                                       tflite_file=tmp_path / "m.tflite")
    content = (tmp_path / "m.tflite").read_bytes()
    ops = tflite.tflite_ops(content)
    assert not [op for op in ops if op.startswith("CUSTOM") or "FLEX" in op], ops
    assert ops.count(LSTM_OP) == fused, ops
    assert (WHILE in ops) == has_while, ops
    assert not any(n.startswith("TENSOR_LIST") for n in ops)
    assert len([h for h in report.helpers if "fused LSTM" in h]) == fused, report.lines()
    mixed = fused and has_while
    assert any("from_saved_model" in w for w in report.warnings) == bool(mixed), report.warnings
    if not mixed:  # the written SavedModel converts through the converter's own entry point too, as fused
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "out"), signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        own = tflite.tflite_ops(converter.convert())
        assert own.count(LSTM_OP) == fused and (WHILE in own) == has_while, own

    interpreter = litert.Interpreter(model_content=content)
    runner = interpreter.get_signature_runner("serving_default")
    for call in range(2):  # no state carried from one invocation to the next
        got = [{k: np.asarray(v) for k, v in runner(**feeds).items()} for feeds in case.feeds]
        errors = max_errors(got, case.expected)
        assert max(errors.values()) <= ATOL, f"{name}: LiteRT vs Keras CPU, call {call}: {errors}"
    # the TFLite-ready SavedModel still runs in TensorFlow, with the fixed batch
    errors = max_errors(call_signature(tmp_path / "out", case), case.expected)
    assert max(errors.values()) <= 1e-5, f"{name}: TF vs Keras CPU: {errors}"


def test_cli_batch_size_needed_then_given(tmp_path):
    case = save_keras3("lstm", tmp_path / "model", _build(CASES["lstm"][0]), _plain, seed=1)
    proc = run_cli(case.path, "-o", tmp_path / "out", "--target", "tflite")
    assert proc.returncode == 4 and "--batch-size" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
    proc = run_cli(case.path, "-o", tmp_path / "out", "--target", "tflite", "--batch-size", BATCH,
                   "--tflite", tmp_path / "m.tflite")
    assert proc.returncode == 0, proc.stderr
    assert "fused LSTM" in proc.stdout and LSTM_OP in proc.stdout
    # the written SavedModel converts with builtins only through the converter's own entry point too
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "out"))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    assert LSTM_OP in tflite.tflite_ops(converter.convert())


def test_refusals(tmp_path):
    case = save_keras3("lstm", tmp_path / "model", _build(CASES["lstm"][0]), _plain, seed=2)
    with pytest.raises(UnsupportedError, match="--batch-size N"):
        tflite.convert_for_tflite(case.path, tmp_path / "out")
    with pytest.raises(UnsupportedError, match="at least 1"):
        tflite.convert_for_tflite(case.path, tmp_path / "out", batch_size=0)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# cell_clip: the converter's own LSTM fusion clips the cell state to +-10; graphfix's stub op does not


def _saturated_lstm(tmp_path, time):
    """LSTM(1) whose gates saturate: i, f, o ~ 1, g = tanh(20 x). Fed +1 for the first 2/3 of
    the steps then -1, c climbs by ~1 a step, then falls: with the clip it falls from 10."""
    import keras
    x = keras.Input((time, 1))
    model = keras.Model(x, keras.layers.LSTM(1, return_sequences=True)(x))
    kernel = np.array([[0.0, 0.0, 20.0, 0.0]], np.float32)
    bias = np.array([20.0, 20.0, 0.0, 20.0], np.float32)
    model.set_weights([kernel, np.zeros((1, 4), np.float32), bias])
    with keras3_gpu_path(True):
        model.export(str(tmp_path / "model"), verbose=False,
                     input_signature=[tf.TensorSpec((1, time, 1), tf.float32, name="x")])
    up = 2 * time // 3
    feed = np.concatenate([np.ones(up), -np.ones(time - up)]).astype(np.float32).reshape(1, time, 1)
    with keras3_gpu_path(False), tf.device("/CPU:0"):
        want = np.asarray(model(feed))
    return feed, want


def test_no_cell_clip_past_ten_steps(tmp_path):
    """graphfix's .tflite (the stub op, cell_clip 0) computes Keras's numbers where the
    converter's own fusion of the output folder (cell_clip 10) visibly does not."""
    time = 30
    feed, want = _saturated_lstm(tmp_path, time)
    report = tflite.convert_for_tflite(tmp_path / "model", tmp_path / "fused", tflite_file=tmp_path / "fused.tflite")
    assert not report.warnings, report.warnings
    (note,) = [h for h in report.helpers if "does not clip" in h]  # (the tmp path holds "cell_clip" too)
    assert "from_saved_model" in note and "(cell_clip)" in note, note
    content = (tmp_path / "fused.tflite").read_bytes()
    assert LSTM_OP in tflite.tflite_ops(content)
    got = run_litert(content, {"x": feed})["output_0"]
    assert np.max(np.abs(got - want)) <= ATOL
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "fused"), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    own = converter.convert()
    assert LSTM_OP in tflite.tflite_ops(own)
    clipped = run_litert(own, {"x": feed})["output_0"]
    # Keras: c reaches ~20, falls to ~10 after 10 down steps, h stays ~ +0.76 = tanh(1)... ~1;
    # clipped at 10, c falls through 0: h turns negative. A visible, large difference.
    assert np.max(np.abs(clipped - want)) > 0.5
    assert np.max(np.abs(clipped[:, :10] - want[:, :10])) <= ATOL  # within 10 steps: no clip possible


def test_no_cell_clip_note_within_ten_steps(tmp_path):
    feed, want = _saturated_lstm(tmp_path, 9)
    report = tflite.convert_for_tflite(tmp_path / "model", tmp_path / "out", tflite_file=tmp_path / "m.tflite")
    assert not any("does not clip" in line for line in report.warnings + report.helpers)
    got = run_litert((tmp_path / "m.tflite").read_bytes(), {"x": feed})["output_0"]
    assert np.max(np.abs(got - want)) <= ATOL


# ---------------------------------------------------------------------------------------------
# TF1 graphs (time-major, batch static in the signature): plain RNN, GRU, and an LSTM whose
# final cell state is a signature output (so it cannot be fused)


@pytest.mark.parametrize("mode, fused", [("rnn_tanh", 0), ("gru", 0), ("lstm", 0)])
def test_tf1_bidirectional_two_layers(mode, fused, tmp_path):
    from graphfix.cudnn import layout
    from builders.saved_models import save_tf1_cudnn

    spec = layout.RnnSpec(mode, 2, 4, 3, 2, "linear_input", 0)
    case = save_tf1_cudnn(mode, tmp_path / "model", op="CudnnRNNV2", spec=spec, time=5, batch=2, seed=3,
                          use_resource=True)
    report = tflite.convert_for_tflite(case.path, tmp_path / "out", tflite_file=tmp_path / "m.tflite")
    assert not any("fixed to batch" in h for h in report.helpers)  # its signature's batch is static already
    content = (tmp_path / "m.tflite").read_bytes()
    ops = tflite.tflite_ops(content)
    assert ops.count(LSTM_OP) == fused and WHILE in ops, ops
    assert not [op for op in ops if op.startswith("CUSTOM")], ops
    errors = max_errors([run_litert(content, case.feeds[0])], case.expected)
    assert max(errors.values()) <= ATOL, errors


def test_keras3_static_batch_needs_no_option(tmp_path):
    import keras

    def build():
        x = keras.Input((TIME, FEATURES), batch_size=2)
        return keras.Model(x, keras.layers.GRU(3, return_sequences=True)(x))

    inputs = lambda rng: [(uniform(rng, (2, TIME, FEATURES), 1.0), None)]  # noqa: E731
    case = save_keras3("static_gru", tmp_path / "model", build, inputs, seed=5)
    tflite.convert_for_tflite(case.path, tmp_path / "out", tflite_file=tmp_path / "m.tflite")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "out"), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    content = converter.convert()
    assert WHILE in tflite.tflite_ops(content)
    errors = max_errors([run_litert(content, case.feeds[0])], case.expected)
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.parametrize("kind, op", [("LSTM", LSTM_OP), ("GRU", WHILE)])
def test_open_sequence_length(kind, op, tmp_path):
    """Only the batch must be fixed: one .tflite runs 7 and 3 steps (LiteRT resizes its input)."""
    def build():
        import keras
        x = keras.Input((None, FEATURES))
        return keras.Model(x, getattr(keras.layers, kind)(5, return_sequences=True)(x))

    inputs = lambda rng: [(uniform(rng, (2, t, FEATURES), 1.0), None) for t in (7, 3)]  # noqa: E731
    case = save_keras3(kind, tmp_path / "model", build, inputs, seed=6)
    report = tflite.convert_for_tflite(case.path, tmp_path / "out", batch_size=2, tflite_file=tmp_path / "m.tflite")
    assert any("does not clip" in h for h in report.helpers) == (kind == "LSTM")  # open T: noted for from_saved_model
    content = (tmp_path / "m.tflite").read_bytes()
    assert op in tflite.tflite_ops(content)
    runner = litert.Interpreter(model_content=content).get_signature_runner("serving_default")
    got = [{k: np.asarray(v) for k, v in runner(**feeds).items()} for feeds in case.feeds]
    errors = max_errors(got, case.expected)
    assert max(errors.values()) <= ATOL, errors


def test_bundled_example_in_one_command(tmp_path):
    """A first try of the TFLite target: the bundled frozen GraphDef, one command, and the
    .tflite it writes by default (beside the input) gives Keras's CPU numbers in LiteRT."""
    import shutil

    from builders.saved_models import REPO
    example = REPO / "examples"
    shutil.copy(example / "cudnn_lstm_gru.pb", tmp_path / "cudnn_lstm_gru.pb")
    proc = run_cli(tmp_path / "cudnn_lstm_gru.pb", "--target", "tflite", "--batch-size", 1)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cudnn_lstm_gru.pb", "cudnn_lstm_gru.tflite",
                                                          "cudnn_lstm_gru_tflite"]
    content = (tmp_path / "cudnn_lstm_gru.tflite").read_bytes()
    assert tflite.tflite_ops(content).count(LSTM_OP) == 2 and WHILE in tflite.tflite_ops(content)
    data = np.load(example / "cudnn_lstm_gru.npz")
    for row in range(len(data["x"])):  # 12 steps: |c| stays below the fused op's cell_clip of 10 here
        (got,) = run_litert(content, {"features": data["x"][row:row + 1]}).values()
        np.testing.assert_allclose(got, data["expected"][row:row + 1], rtol=0, atol=1e-5)
