"""`graphfix extract`: cuDNN weights in Keras's layout, proven by Keras layers that reproduce the converted model.

    cuDNN params --extract--> {op}/layer{l}/{fw|bw}/{kernel, recurrent_kernel, bias}
                                  |
          keras.layers.LSTM / GRU / SimpleRNN (+ Bidirectional).set_weights
                                  |
          outputs == the converted graph's outputs (atol 1e-5, float32)

In-process on raw-op graphs (multi-layer, bidirectional, every mode); end to end through
the CLI on a Keras 3 SavedModel whose params are read from its variables/ checkpoint.
"""

import concurrent.futures
import json

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, run_graph_def
from builders.tool_models import KERAS3_SHAPE, keras3_lstm_gru, run_cli, save_keras3_lstm_gru, to_ifoc

import graphfix
from graphfix.cudnn import layout
from graphfix.errors import UnsupportedError
from graphfix.tools.extract import MANIFEST, extract_survey, keras_weights
from graphfix.tools.inspect import Part, Survey, survey_graph_def


def _extract(graph_def, gate_order="ifco"):
    survey = Survey("<graph>", "GraphDef", gate_order, [Part("", graph_def, None,
                                                             survey_graph_def(graph_def, gate_order))])
    return extract_survey(survey)


def _piece(buf, spec, kind, layer, direction, gate):
    p = next(p for p in layout.pieces(spec)
             if (p.kind, p.layer, p.direction, p.gate) == (kind, layer, direction, gate))
    return buf[p.offset:p.offset + p.size].reshape(p.shape)


def test_lstm_layout_known_indices():
    spec = layout.RnnSpec("lstm", 2, 3, 2, 2)
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    out = keras_weights(spec, layout.unpack(buf, spec))
    for k, (layer, d) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        for g in range(4):  # Keras LSTM gate order i, f, c, o is cuDNN's
            block = slice(g * 3, (g + 1) * 3)
            np.testing.assert_array_equal(out[k]["kernel"][:, block], _piece(buf, spec, "W", layer, d, g).T)
            np.testing.assert_array_equal(out[k]["recurrent_kernel"][:, block], _piece(buf, spec, "R", layer, d, g).T)
            np.testing.assert_array_equal(out[k]["bias"][block], _piece(buf, spec, "bW", layer, d, g)
                                          + _piece(buf, spec, "bR", layer, d, g))
    assert out[2]["kernel"].shape == (6, 12)  # layer 1 reads [fw, bw] of layer 0


def test_gru_layout_swaps_r_and_z():
    spec = layout.RnnSpec("gru", 1, 3, 2)
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    (out,) = keras_weights(spec, layout.unpack(buf, spec))
    assert out["bias"].shape == (2, 9)
    for keras_gate, cudnn_gate in enumerate([1, 0, 2]):  # Keras z, r, n <- cuDNN r, z, n
        block = slice(keras_gate * 3, (keras_gate + 1) * 3)
        np.testing.assert_array_equal(out["kernel"][:, block], _piece(buf, spec, "W", 0, 0, cudnn_gate).T)
        np.testing.assert_array_equal(out["recurrent_kernel"][:, block], _piece(buf, spec, "R", 0, 0, cudnn_gate).T)
        np.testing.assert_array_equal(out["bias"][0, block], _piece(buf, spec, "bW", 0, 0, cudnn_gate))
        np.testing.assert_array_equal(out["bias"][1, block], _piece(buf, spec, "bR", 0, 0, cudnn_gate))


def test_skip_input_gets_identity_kernels_and_projection_is_kept():
    spec = layout.RnnSpec("lstm", 1, 3, 3, 1, "skip_input")
    (out,) = keras_weights(spec, layout.unpack(np.arange(layout.params_size(spec), dtype=np.float32), spec))
    np.testing.assert_array_equal(out["kernel"], np.tile(np.eye(3), 4))
    spec = layout.RnnSpec("lstm", 1, 5, 3, 1, num_proj=2)
    buf = np.arange(layout.params_size(spec), dtype=np.float32)
    (out,) = keras_weights(spec, layout.unpack(buf, spec))
    np.testing.assert_array_equal(out["projection"], _piece(buf, spec, "P", 0, 0, 0).T)
    assert out["recurrent_kernel"].shape == (2, 20)


def test_num_proj_equal_to_units_is_extracted_without_projection():
    """[CudnnRNNV3 num_proj=4] over a 4-unit LSTM: TensorFlow does not project, so neither does extract."""
    spec = layout.RnnSpec("lstm", 1, 4, 3, 1)
    case = build(spec, num_proj=4)
    (op,) = _extract(case.graph_def).ops
    assert op.manifest()["num_proj"] == 0 and not any(k.endswith("projection") for k in op.arrays)
    np.testing.assert_array_equal(op.arrays["rnn/layer0/fw/recurrent_kernel"][:, :4],
                                  _piece(case.buffer, spec, "R", 0, 0, 0).T)


def _keras_stack(mode, spec, steps, weights):
    """Keras 3 layers equivalent to the cuDNN op, loaded with the extracted per-pseudo-layer weights."""
    import keras

    x = keras.Input((steps, spec.input_size))
    y, k = x, 0
    for _ in range(spec.num_layers):
        def make(**kw):
            if mode == "lstm":
                return keras.layers.LSTM(spec.num_units, return_sequences=True, **kw)
            if mode == "gru":
                return keras.layers.GRU(spec.num_units, return_sequences=True, reset_after=True, **kw)
            return keras.layers.SimpleRNN(spec.num_units, return_sequences=True,
                                          activation="tanh" if mode == "rnn_tanh" else "relu", **kw)
        layer = keras.layers.Bidirectional(make()) if spec.num_dirs == 2 else make()
        y = layer(y)
        if spec.num_dirs == 2:
            layer.forward_layer.set_weights(weights[k])
            layer.backward_layer.set_weights(weights[k + 1])
        else:
            layer.set_weights(weights[k])
        k += spec.num_dirs
    return keras.Model(x, y)


@pytest.mark.parametrize("mode,layers,dirs", [("lstm", 2, 2), ("gru", 2, 2), ("rnn_tanh", 1, 1), ("rnn_relu", 2, 1)])
def test_keras_layers_loaded_with_extracted_weights_reproduce_the_converted_graph(mode, layers, dirs):
    spec = layout.RnnSpec(mode, layers, 4, 3, dirs)
    case = build(spec, op="CudnnRNNV2", feed_states=False, seed=layers + dirs)
    result = _extract(case.graph_def)
    (op,) = result.ops
    arrays = [[op.arrays[f"rnn/layer{w.layer}/{'bw' if w.direction else 'fw'}/{name}"]
               for name in ("kernel", "recurrent_kernel", "bias")] for w in layout.unpack(case.buffer, spec)]
    model = _keras_stack(mode, spec, case.x.shape[0], arrays)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    want = run_graph_def(converted, case.feeds, ["out0:0"])[0].transpose(1, 0, 2)  # [B, T, D*H]
    got = np.asarray(model(case.x.transpose(1, 0, 2)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_gate_order_ifoc_gives_the_same_keras_weights():
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec)
    rocm = tf.compat.v1.GraphDef()
    rocm.CopyFrom(case.graph_def)
    for node in rocm.node:
        if node.name == "params":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(to_ifoc(case.buffer, spec)))
    plain, ifoc = _extract(case.graph_def).ops[0].arrays, _extract(rocm, "ifoc").ops[0].arrays
    assert sorted(plain) == sorted(ifoc)
    for key in plain:
        np.testing.assert_array_equal(plain[key], ifoc[key])
    misread = _extract(rocm).ops[0].arrays  # the same file read in cuDNN order: c and o swapped
    assert not np.array_equal(misread["rnn/layer0/fw/kernel"], plain["rnn/layer0/fw/kernel"])


def test_params_only_known_at_run_time_is_refused_naming_the_node():
    case = build(layout.RnnSpec("lstm", 1, 4, 3, 1), params_source="fed")
    with pytest.raises(UnsupportedError) as info:
        _extract(case.graph_def)
    assert "'rnn'" in str(info.value) and "Placeholder" in str(info.value)


# --- end to end through the CLI -------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    weights = save_keras3_lstm_gru(root / "k3", seed=3)
    (root / "taken.npz").write_bytes(b"keep me")
    runs = {"extract": ["extract", "k3", "-o", "weights.npz"], "convert": ["k3", "-o", "k3_cpu"],
            "exists": ["extract", "k3", "-o", "taken.npz"]}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_cli, v, root) for k, v in runs.items()}
        return root, weights, {k: f.result() for k, f in futures.items()}


def test_cli_extract_saved_model_variables(saved):
    root, weights, runs = saved
    proc = runs["extract"]
    assert proc.returncode == 0, proc.stderr
    assert "extracted the weights of 2 cuDNN ops from k3" in proc.stdout and "wrote weights.npz" in proc.stdout
    data = np.load(root / "weights.npz")
    manifest = json.loads(str(data[MANIFEST]))
    layers = {op["mode"]: op for op in manifest["ops"]}
    assert layers["lstm"]["keras_layer"] == "LSTM" and layers["gru"]["keras_layer"] == "GRU(reset_after=True)"
    assert "saved variables" in layers["lstm"]["params"]
    lstm_keys = [f"{layers['lstm']['key']}/layer0/fw/{n}" for n in ("kernel", "recurrent_kernel", "bias")]
    gru_keys = [f"{layers['gru']['key']}/layer0/fw/{n}" for n in ("kernel", "recurrent_kernel", "bias")]
    assert sorted(layers["lstm"]["arrays"]) == sorted(lstm_keys)
    # Keras exported these very weights: LSTM [kernel, recurrent, bias], then GRU's.
    for key, want in zip(lstm_keys + gru_keys, weights):
        np.testing.assert_array_equal(data[key], want)


def test_keras_rebuilt_from_extracted_weights_reproduces_the_converted_saved_model(saved):
    root, _, runs = saved
    assert runs["convert"].returncode == 0, runs["convert"].stderr
    data = np.load(root / "weights.npz")
    manifest = {op["mode"]: op["key"] for op in json.loads(str(data[MANIFEST]))["ops"]}
    model = keras3_lstm_gru()  # fresh layers on Keras's CPU path
    for name in ("lstm", "gru"):
        model.get_layer(name).set_weights(
            [data[f"{manifest[name]}/layer0/fw/{n}"] for n in ("kernel", "recurrent_kernel", "bias")])
    x = np.random.default_rng(7).uniform(-1, 1, (4,) + KERAS3_SHAPE).astype(np.float32)
    served = tf.saved_model.load(str(root / "k3_cpu")).signatures["serving_default"]
    want = next(iter(served(x=tf.constant(x)).values())).numpy()
    np.testing.assert_allclose(np.asarray(model(x)), want, rtol=0, atol=1e-5)


def test_cli_extract_refuses_existing_output(saved):
    root, _, runs = saved
    proc = runs["exists"]
    assert proc.returncode == 5, proc.stderr
    assert "taken.npz: already exists" in proc.stderr and "nothing was written" in proc.stderr
    assert (root / "taken.npz").read_bytes() == b"keep me"


def test_readme_example_rebuilds_the_bundled_model(tmp_path, monkeypatch):
    """The extract example in docs/tools.md (linked from the README), run as written, matches
    the converted example's GRU state."""
    from builders.tool_models import REPO

    from graphfix.tools.extract import extract

    doc = (REPO / "docs" / "tools.md").read_text()
    block = doc.split("<!-- extract-example -->\n```python\n", 1)[1].split("```", 1)[0]
    example = REPO / "examples" / "cudnn_lstm_gru.pb"
    extract(example, tmp_path / "weights.npz")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(block, namespace)  # noqa: S102 (our own docs)
    graph_def = tf.compat.v1.GraphDef.FromString(example.read_bytes())
    converted, _ = graphfix.convert_graph_def(graph_def)
    x = np.random.default_rng(2).standard_normal((3, 12, 8)).astype(np.float32)
    (state,) = run_graph_def(converted, {"features:0": x}, ["model/cu_dnngru/CudnnRNNV3:1"])
    np.testing.assert_allclose(np.asarray(namespace["model"](x)), state[0], rtol=0, atol=1e-5)
