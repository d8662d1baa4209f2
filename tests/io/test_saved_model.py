"""End to end: GPU-only SavedModels built here, converted, loaded and run on this CPU machine.

Each case saves a model whose graph holds cuDNN RNN ops, converts it (through the CLI in a
subprocess for a few, with graphfix.convert in-process for the rest), then checks:

* the original holds a Cudnn* op and fails on CPU; the converted saved_model.pb holds none;
* the converted model, loaded with tf.saved_model.load (TF1: tf.compat.v1.saved_model.load),
  computes what the CPU oracle gives for the same weights, float32 within 1e-5 absolute;
* every MetaGraph, tag set, SignatureDef (keys, tensor names, dtypes, shapes) and object graph
  is unchanged, so are the loaded signatures' structured inputs/outputs, and variables/ is
  copied byte for byte;
* the input directory is unchanged (every file hashed before and after).

Model builders and oracles: tests/builders/saved_models.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import graphfix
from graphfix.cudnn import layout
from builders.saved_models import (ATOL, REPO, SavedCase, call_signature, cli_env, cudnn_ops, dir_digest, hidden_leftovers,
                          masked_input, max_errors, read_proto, run_cli, save_keras3, save_tf1_cudnn,
                          save_tf_keras_cudnn, uniform)

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------
# Shared checks


def convert_checked(src: Path, dst: Path, via_cli: bool):
    """Convert src -> dst and check everything that must hold whatever the model. Returns the
    converted SavedModel proto."""
    before = dir_digest(src)
    src_proto = read_proto(src)
    assert cudnn_ops(src_proto), f"{src}: the fixture holds no Cudnn op"
    if via_cli:
        proc = run_cli(src, "-o", dst)
        assert proc.returncode == 0, proc.stderr
        assert f"wrote {dst}" in proc.stdout, proc.stdout
    else:
        report = graphfix.convert(src, dst)
        assert report.changed and report.output == str(dst)
        assert report.ops, report.lines()

    assert dir_digest(src) == before, "the input directory was modified"
    out_proto = read_proto(dst)
    assert cudnn_ops(out_proto) == []
    assert len(out_proto.meta_graphs) == len(src_proto.meta_graphs)
    for old, new in zip(src_proto.meta_graphs, out_proto.meta_graphs):
        assert list(new.meta_info_def.tags) == list(old.meta_info_def.tags)
        assert sorted(new.signature_def) == sorted(old.signature_def)
        for key, sig in old.signature_def.items():
            assert new.signature_def[key] == sig, f"SignatureDef {key!r} changed"
        assert new.object_graph_def == old.object_graph_def
        assert new.saver_def == old.saver_def
    after = dir_digest(dst)
    assert sorted(after) == sorted(before), "the converted directory holds other files"
    copied = {k: v for k, v in before.items() if k.split("/")[0] in ("variables", "assets")}
    assert copied and {k: after[k] for k in copied} == copied, "variables/ not copied byte for byte"
    assert hidden_leftovers(dst.parent) == []
    return out_proto


def signature_structures(loaded) -> dict:
    return {k: (f.structured_input_signature, f.structured_outputs) for k, f in loaded.signatures.items()}


def assert_fails_on_cpu(case: SavedCase) -> None:
    with pytest.raises(Exception, match="Cudnn"):
        call_signature(case.path, SavedCase(case.name, case.path, case.signature, case.feeds[:1],
                                            case.expected[:1], tf1=case.tf1))


def assert_close(case: SavedCase, got) -> dict[str, float]:
    errors = max_errors(got, case.expected)
    assert max(errors.values()) <= ATOL, f"{case.name}: max abs errors {errors}"
    return errors


# ---------------------------------------------------------------------------------------------
# 1. Keras 3 LSTM / GRU exported with the cuDNN path


LENGTHS3, LENGTHS2 = (5, 1, 3), (4, 2)  # one example masked after its first step


def lstm(k, x):
    return k.layers.LSTM(5)(x)


def gru_sequences(k, x):
    return k.layers.GRU(4, return_sequences=True)(x)


def stacked_lstm(k, x):
    return k.layers.LSTM(3)(k.layers.LSTM(6, return_sequences=True)(x))


def bidirectional_lstm(k, x):
    return k.layers.Bidirectional(k.layers.LSTM(3, return_sequences=True))(x)


def bidirectional_gru_state(k, x):
    layer = k.layers.GRU(4, return_sequences=True, return_state=True)
    return k.layers.Bidirectional(layer, merge_mode="sum")(x)  # [sum of directions, h_fw, h_bw]


def lstm_go_backwards(k, x):
    return k.layers.LSTM(4, go_backwards=True, return_sequences=True)(x)


def lstm_gru_return_state(k, x):
    sequences, h, c = k.layers.LSTM(5, return_sequences=True, return_state=True)(x)
    last, h2 = k.layers.GRU(3, return_state=True)(sequences)
    return [sequences, h, c, last, h2]


def masked_lstm(k, x):
    """cuDNN zeros the padded steps of output 0; Keras's CPU loop repeats the last output there."""
    return k.layers.LSTM(4, return_sequences=True, return_state=True)(k.layers.Masking(0.0)(x))


def masked_bidirectional_gru(k, x):
    """Bidirectional forces zero_output_for_mask: both paths give zeros at padded steps."""
    return k.layers.Bidirectional(k.layers.GRU(3, return_sequences=True))(k.layers.Masking(0.0)(x))


def _model(body, time, features, batch):
    def build():
        import keras
        x = keras.Input((time, features), batch_size=batch, name="x")
        return keras.Model(x, body(keras, x))
    return build


def _plain(time, features, batches):
    def inputs(rng):
        return [(uniform(rng, (b, time, features), 1.0), None) for b in batches]
    return inputs


def _masked(features):
    def inputs(rng):
        return [(masked_input(rng, lengths, 5, features), lengths) for lengths in (LENGTHS3, LENGTHS2)]
    return inputs


UNMASKED = [(lstm, 5, 3), (gru_sequences, 4, 3), (stacked_lstm, 6, 2), (bidirectional_lstm, 5, 4),
            (bidirectional_gru_state, 4, 3), (lstm_go_backwards, 6, 3), (lstm_gru_return_state, 4, 2)]
# name -> (build_model, inputs, padded outputs, via CLI). Keras exports a None batch by
# default: every case but one keeps it and is called with batches 2 and 3; lstm_batch2 fixes
# it (then Keras's tf.shape(x) is a constant when traced).
KERAS3_CASES = {"lstm_batch2": (_model(lstm, 5, 3, 2), _plain(5, 3, [2]), (), True)}
for body, time, features in UNMASKED:
    KERAS3_CASES[body.__name__] = (_model(body, time, features, None), _plain(time, features, [2, 3]), (), False)
KERAS3_CASES["masked_lstm"] = (_model(masked_lstm, 5, 3, None), _masked(3), (0,), True)
KERAS3_CASES["masked_bidirectional_gru"] = (_model(masked_bidirectional_gru, 5, 2, None), _masked(2), (), False)


@pytest.mark.parametrize("name", list(KERAS3_CASES))
def test_keras3_export(name, tmp_path):
    build, inputs, padded, via_cli = KERAS3_CASES[name]
    case = save_keras3(name, tmp_path / "model", build, inputs, seed=sorted(KERAS3_CASES).index(name),
                       padded_outputs=padded)
    original = tf.saved_model.load(str(case.path))
    assert_fails_on_cpu(case)

    dst = tmp_path / "model_cpu"
    convert_checked(case.path, dst, via_cli=via_cli)
    loaded = tf.saved_model.load(str(dst))
    assert signature_structures(loaded) == signature_structures(original)
    errors = assert_close(case, call_signature(dst, case))

    # the exported endpoint itself (not only its SignatureDef wrapper)
    for feeds, want in zip(case.feeds, case.expected):
        got = tf.nest.flatten(loaded.serve(tf.constant(feeds["x"])))
        assert len(got) == len(want)
        for i, g in enumerate(got):
            np.testing.assert_allclose(g.numpy(), want[f"output_{i}"], rtol=0, atol=ATOL)
    print(f"{name}: max abs error {max(errors.values()):.2e}")


def test_keras3_masked_padding_is_cudnn_zeros_not_keras_repeat(tmp_path):
    """The masked case really exercises the padded steps: Keras CPU and cuDNN differ there,
    and the converted model follows cuDNN (zeros), which is what the GPU model computed."""
    build, inputs, padded, _ = KERAS3_CASES["masked_lstm"]
    case = save_keras3("masked_lstm", tmp_path / "model", build, inputs, seed=7, padded_outputs=padded)
    convert_checked(case.path, tmp_path / "model_cpu", via_cli=False)
    got = call_signature(tmp_path / "model_cpu", case)
    for g, raw, feeds in zip(got, case.keras, case.feeds):
        pad = np.all(feeds["x"] == 0, axis=-1)
        assert pad.any() and np.abs(raw["output_0"][pad]).min() > 0  # Keras repeats a non-zero h
        np.testing.assert_array_equal(g["output_0"][pad], 0.0)
        np.testing.assert_allclose(g["output_0"][~pad], raw["output_0"][~pad], rtol=0, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# 2. tf_keras CuDNNLSTM / CuDNNGRU in a tf.Module


TF_KERAS_CASES = {
    "lstm_batch_major": dict(mode="lstm", batch=2, time=5, features=3, units=4, time_major=False,
                             initial_state=False, extra_signature=True),
    "gru_time_major": dict(mode="gru", batch=3, time=4, features=4, units=5,
                           time_major=True, initial_state=False),
    "lstm_time_major_initial_state": dict(mode="lstm", batch=3, time=6, features=2, units=3,
                                          time_major=True, initial_state=True),
    "gru_initial_state_dynamic_batch": dict(mode="gru", batch=None, time=5, features=2, units=4,
                                            time_major=False, initial_state=True),
}
TF_KERAS_CLI = {"lstm_batch_major"}


@pytest.mark.parametrize("name", list(TF_KERAS_CASES))
def test_tf_keras_cudnn_layer(name, tmp_path):
    case = save_tf_keras_cudnn(name, tmp_path / "model", seed=10 + sorted(TF_KERAS_CASES).index(name),
                               **TF_KERAS_CASES[name])
    original = tf.saved_model.load(str(case.path))
    assert_fails_on_cpu(case)
    dst = tmp_path / "model_cpu"
    convert_checked(case.path, dst, via_cli=name in TF_KERAS_CLI)
    loaded = tf.saved_model.load(str(dst))
    assert signature_structures(loaded) == signature_structures(original)
    errors = assert_close(case, call_signature(dst, case))
    if "last_h" in loaded.signatures:  # a second signature over the same layer
        for feeds, want in zip(case.feeds, case.expected):
            got = loaded.signatures["last_h"](**{k: tf.constant(v) for k, v in feeds.items()})
            np.testing.assert_allclose(got["last_h"].numpy(), want["h"], rtol=0, atol=ATOL)
    else:
        assert not TF_KERAS_CASES[name].get("extra_signature")
    print(f"{name}: max abs error {max(errors.values()):.2e}")


# ---------------------------------------------------------------------------------------------
# 3. tf_keras (Keras 2) LSTM / GRU saved whole: an uncalled GPU variant in the library


@pytest.fixture(scope="module")
def keras2_saved(tmp_path_factory):
    """tf_keras x [None, 5, 3] -> LSTM(4, return_sequences) -> GRU(3), model.save(save_format="tf").

    Returns (path, x [2, 5, 3], Keras's own output [2, 3])."""
    import tf_keras

    rng = np.random.default_rng(20)
    x = tf_keras.Input((5, 3), name="x")
    y = tf_keras.layers.GRU(3)(tf_keras.layers.LSTM(4, return_sequences=True)(x))
    model = tf_keras.Model(x, y)
    model.set_weights([uniform(rng, w.shape) for w in model.get_weights()])
    path = tmp_path_factory.mktemp("keras2") / "model"
    model.save(str(path), save_format="tf")
    values = uniform(rng, (2, 5, 3), 1.0)
    return path, values, model(values).numpy()


def _keras2_output(path: Path, x: np.ndarray) -> np.ndarray:
    out = tf.saved_model.load(str(path)).signatures["serving_default"](x=tf.constant(x))
    (value,) = out.values()
    return value.numpy()


def _is_gpu_variant(where: str) -> bool:
    return "gpu_lstm_with_fallback" in where or "gpu_gru_with_fallback" in where


def test_keras2_fixture_has_uncalled_cudnn_and_runs_on_cpu(keras2_saved):
    path, x, keras_out = keras2_saved
    ops = cudnn_ops(read_proto(path))
    assert {op for _, _, op in ops} >= {"CudnnRNNV3"}
    assert all(_is_gpu_variant(where) for where, _, _ in ops), ops
    np.testing.assert_allclose(_keras2_output(path, x), keras_out, rtol=0, atol=ATOL)


def test_keras2_saved_model_needs_no_conversion(keras2_saved, tmp_path):
    """Only uncalled functions hold cuDNN ops: graphfix leaves them, says the model already runs
    on CPU and exits 0; it writes nothing unless -o asks for an output, which then holds the
    model as it is (documented in graphfix/cli.py)."""
    path, x, keras_out = keras2_saved
    before = dir_digest(path)
    proc = run_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert "already runs on CPU" in proc.stdout and "nothing written" in proc.stdout, proc.stdout
    assert not path.with_name(f"{path.name}_cpu").exists() and hidden_leftovers(path.parent) == []
    dst = tmp_path / "model_cpu"
    asked = run_cli(path, "-o", dst)
    assert asked.returncode == 0, asked.stderr
    assert f"wrote it as it is to {dst}" in asked.stdout, asked.stdout
    np.testing.assert_allclose(_keras2_output(dst, x), keras_out, rtol=0, atol=ATOL)
    assert hidden_leftovers(tmp_path) == []
    assert dir_digest(path) == before


# ---------------------------------------------------------------------------------------------
# 4. TF1 tf.contrib.cudnn_rnn-style graphs (opaque params variable) via SavedModelBuilder


TF1_CASES = {
    "CudnnRNN_lstm_2layer_bidirectional_ref_variable": dict(
        op="CudnnRNN", spec=layout.RnnSpec("lstm", 2, 4, 3, num_dirs=2), use_resource=False),
    "CudnnRNNV2_lstm_2layer_bidirectional_resource_variable": dict(
        op="CudnnRNNV2", spec=layout.RnnSpec("lstm", 2, 3, 5, num_dirs=2), use_resource=True),
    "CudnnRNNV2_gru_2layer_unidirectional": dict(
        op="CudnnRNNV2", spec=layout.RnnSpec("gru", 2, 4, 2), use_resource=True),
}
TF1_CLI = {"CudnnRNN_lstm_2layer_bidirectional_ref_variable"}


@pytest.mark.parametrize("name", list(TF1_CASES))
def test_tf1_opaque_params(name, tmp_path):
    case = save_tf1_cudnn(name, tmp_path / "model", time=5, batch=2, seed=30 + sorted(TF1_CASES).index(name),
                          **TF1_CASES[name])
    assert_fails_on_cpu(case)
    dst = tmp_path / "model_cpu"
    convert_checked(case.path, dst, via_cli=name in TF1_CLI)
    errors = assert_close(case, call_signature(dst, case))
    print(f"{name}: max abs error {max(errors.values()):.2e}")


# ---------------------------------------------------------------------------------------------
# 5. Errors through the CLI, and saved_model_cli on a converted model


@pytest.fixture(scope="module")
def keras3_export(tmp_path_factory):
    """A Keras 3 LSTM(5) (batch 2) exported with its cuDNN path, and its in-process conversion."""
    build, inputs, _, _ = KERAS3_CASES["lstm_batch2"]
    root = tmp_path_factory.mktemp("keras3")
    case = save_keras3("lstm", root / "model", build, inputs, seed=40)
    graphfix.convert(case.path, root / "model_cpu")
    return case.path, root / "model_cpu"


def _truncate(file: Path, size: int) -> None:
    file.write_bytes(file.read_bytes()[:size])


def _truncate_shard(model: Path) -> None:
    shard = model / "variables" / "variables.data-00000-of-00001"
    _truncate(shard, shard.stat().st_size // 2)


def _truncate_pb(model: Path) -> None:
    """Cut saved_model.pb where it no longer parses (some cuts fall on a field boundary)."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    data = (model / "saved_model.pb").read_bytes()
    for size in range(len(data) // 2, 0, -1):
        try:
            saved_model_pb2.SavedModel().ParseFromString(data[:size])
        except DecodeError:
            _truncate(model / "saved_model.pb", size)
            return
    raise AssertionError("no truncation of saved_model.pb fails to parse")


ERROR_CASES = {
    # name: (breaker(model_dir), exit code, text the message must hold, path it names, relative)
    "missing_variables": (lambda d: shutil.rmtree(d / "variables"), 2,
                          "has variables but", "variables/variables.index"),
    "truncated_variables_shard": (_truncate_shard, 2, "variables/ cannot be read", ""),
    "no_saved_model_pb": (lambda d: (d / "saved_model.pb").unlink(), 2, "without saved_model.pb", ""),
    "truncated_saved_model_pb": (_truncate_pb, 2, "not a valid SavedModel protobuf", "saved_model.pb"),
}


@pytest.fixture(scope="module")
def cli_error_runs(keras3_export, tmp_path_factory):
    """Each ERROR_CASES breakage applied to a copy of the GPU export, then the CLI run on it.

    The CLI processes run at the same time (each spends seconds importing TensorFlow).
    Returns name -> (broken dir, its digest before, output path, returncode, stderr)."""
    runs = {}
    for name, (breaker, *_) in ERROR_CASES.items():
        root = tmp_path_factory.mktemp(name)
        src = root / "model"
        shutil.copytree(keras3_export[0], src)
        breaker(src)
        dst = root / "model_cpu"
        process = subprocess.Popen([sys.executable, "-m", "graphfix", str(src), "-o", str(dst)], env=cli_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        runs[name] = (src, dir_digest(src), dst, process)
    results = {}
    for name, (src, digest, dst, process) in runs.items():
        _, stderr = process.communicate(timeout=300)
        results[name] = (src, digest, dst, process.returncode, stderr)
    return results


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_cli_error(name, cli_error_runs):
    _, code, reason, named = ERROR_CASES[name]
    src, before, dst, returncode, stderr = cli_error_runs[name]
    assert returncode == code, (returncode, stderr)
    assert f"graphfix: error: {src}" in stderr, stderr
    assert reason in stderr and str(src / named) in stderr, stderr
    assert "nothing was written" in stderr
    assert "Traceback" not in stderr
    assert not dst.exists()
    assert hidden_leftovers(dst.parent) == []
    assert dir_digest(src) == before


def test_saved_model_cli_shows_converted_model(keras3_export):
    src, converted = keras3_export
    assert not cudnn_ops(read_proto(converted)) and cudnn_ops(read_proto(src))
    tool = Path(sys.executable).parent / "saved_model_cli"
    proc = subprocess.run([str(tool), "show", "--all", "--dir", str(converted)], env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "signature_def['serving_default']" in proc.stdout
    assert "Concrete Functions" in proc.stdout, proc.stdout[-3000:]
