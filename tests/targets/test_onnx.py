"""--target onnx end to end: cuDNN graphs -> graphfix -> ONNX (native LSTM/GRU/RNN) -> onnxruntime (CPU).

    emit          each op configuration alone (emit.standalone_model) against reference.forward
    frozen Keras  every tests/builders/keras_graphs case (tf_keras CuDNNLSTM/GRU, Keras 3 on its
                  cuDNN path: masks, go_backwards, Bidirectional, stacked, initial states) as a
                  GraphDef file, against Keras's CPU layers (padded steps zeroed, as cuDNN does)
    SavedModels   Keras 3 model.export and tf_keras CuDNN layers in a tf.Module, against Keras CPU;
                  the signature's input and output names kept; TF1 SavedModels (params variable,
                  tf.contrib.cudnn_rnn's canonical restore) against reference.forward
    raw graphs    tf.raw_ops CudnnRNN/V2/V3 (tests/builders/raw_graphs.py) against reference.forward
    refusals      num_proj, params fed at run time, float64: the node named, nothing written

Structure asserted each time: ONNX LSTM/GRU/RNN nodes present, no Loop or Scan, no TensorFlow op
left, onnx.checker passes. float32 within 1e-5 absolute.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install \"graphfix[onnx]\"")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from builders import keras_graphs, raw_graphs, tf1_contrib  # noqa: E402
from builders.saved_models import (  # noqa: E402
    max_errors,
    run_cli,
    save_keras3,
    save_tf1_cudnn,
    save_tf_keras_cudnn,
    uniform,
)
from graphfix import cli  # noqa: E402
from graphfix.cudnn import layout, reference  # noqa: E402
from graphfix.errors import UnsupportedError  # noqa: E402
from graphfix.targets import onnx as onnx_target  # noqa: E402
from graphfix.targets.onnx import emit, plan  # noqa: E402

ATOL = 1e-5  # float32, absolute
RNN_OPS = {"LSTM", "GRU", "RNN"}


def run_onnx(path_or_model, feeds: dict) -> dict:
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(str(path_or_model))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def assert_structure(path, expected_ops: set[str]) -> onnx.ModelProto:
    """Native recurrent ops present, no loop, only standard ONNX ops, checker passes."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert expected_ops <= ops, f"expected {expected_ops} among {sorted(ops)}"
    assert not ops & {"Loop", "Scan", "If"}, sorted(ops)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    return model


# --- each configuration alone, against the numpy reference -----------------------------------

CONFIGS = [  # mode, layers, directions, input size, time_major, lengths, input_mode, dtype
    ("lstm", 1, 1, 3, True, False, "linear_input", "float32"),
    ("lstm", 2, 2, 3, False, True, "linear_input", "float32"),
    ("lstm", 3, 1, 4, True, True, "skip_input", "float32"),
    ("gru", 1, 1, 3, False, False, "linear_input", "float32"),
    ("gru", 3, 2, 5, True, True, "linear_input", "float32"),
    ("gru", 2, 2, 4, False, True, "skip_input", "float32"),
    ("rnn_tanh", 2, 1, 3, False, True, "linear_input", "float32"),
    ("rnn_relu", 2, 2, 3, True, False, "linear_input", "float32"),
    ("lstm", 1, 2, 3, False, True, "linear_input", "float16"),
    ("gru", 2, 1, 3, True, False, "linear_input", "float16"),
]


@pytest.mark.parametrize("mode,L,D,I,time_major,with_lengths,input_mode,dtype", CONFIGS)
def test_emitted_nodes_match_reference(mode, L, D, I, time_major, with_lengths, input_mode, dtype):
    H, T, B = 4, 6, 5
    spec = layout.RnnSpec(mode, L, H, I, D, input_mode)
    rng = np.random.default_rng(L * 10 + D)
    buf = (rng.standard_normal(layout.params_size(spec)) * 0.4).astype(dtype)  # distinct values, never fills
    rnn = plan.from_buffer(spec, buf, dtype, time_major, with_lengths)
    model = emit.standalone_model(rnn)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count(plan.ONNX_OP[mode]) == L  # one node per layer

    LD = L * D
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = ((rng.standard_normal((LD, B, H)) * 0.5).astype(dtype) for _ in range(2))
    # padded, full, zero (initial state kept) and over-long (clamped to T) lengths
    lengths = np.array([6, 3, 0, 9, 1], np.int32)
    feeds = {"x": x if time_major else x.transpose(1, 0, 2), "h": h0 if time_major else h0.reshape(B, LD, H)}
    if mode == "lstm":
        feeds["c"] = c0 if time_major else c0.reshape(B, LD, H)
    if with_lengths:
        feeds["lengths"] = lengths
    got = list(run_onnx(model, feeds).values())
    want = reference.forward(spec, layout.unpack(buf.astype(np.float64), spec), feeds["x"], feeds["h"],
                             feeds.get("c"), np.minimum(lengths, T) if with_lengths else None, time_major=time_major)
    atol = ATOL if dtype == "float32" else 2e-3  # float16 inputs and outputs round to 11 bits
    for g, w in zip(got, [w for w in want if w is not None]):
        assert g.dtype == np.dtype(dtype) and g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float64), w, rtol=0, atol=atol)


def test_gate_orders_are_onnxs():
    """Known-index check: cuDNN gate g of the buffer lands in ONNX's slot for that gate."""
    for mode, order in (("lstm", "iofc"), ("gru", "zrn")):
        spec = layout.RnnSpec(mode, 1, 2, 1)
        buf = np.arange(layout.params_size(spec), dtype=np.float32)
        w = layout.unpack(buf, spec)[0]
        layer = plan.from_buffer(spec, buf).layers[0]
        cudnn = "ifco" if mode == "lstm" else "rzn"
        for slot, gate in enumerate(order):
            g = cudnn.index(gate)
            np.testing.assert_array_equal(layer.W[0, slot * 2:(slot + 1) * 2, :], w.W[g])
            np.testing.assert_array_equal(layer.B[0, slot * 2:(slot + 1) * 2], w.bW[g])
            np.testing.assert_array_equal(layer.B[0, spec.gates * 2 + slot * 2:][:2], w.bR[g])


# --- frozen Keras graphs (GraphDef files) ------------------------------------------------------

@pytest.fixture(scope="module", params=sorted(keras_graphs.BUILDERS))
def keras_case(request):
    return keras_graphs.BUILDERS[request.param](0)


@pytest.mark.slow
def test_keras_frozen_graph(keras_case, tmp_path):
    src = tmp_path / f"{keras_case.name}.pb"
    src.write_bytes(keras_case.graph_def.SerializeToString())
    report = onnx_target.convert_to_onnx(src, tmp_path / "model.onnx")
    assert len(report.ops) == len(keras_case.cudnn)
    modes = {("LSTM" if "lstm" in n.attrs.get("rnn_mode", "") else "GRU") for n in keras_case.cudnn}
    assert_structure(tmp_path / "model.onnx", modes)
    got = run_onnx(tmp_path / "model.onnx", {k.split(":")[0]: v for k, v in keras_case.feeds.items()})
    outputs = [got[f.removesuffix(":0")] for f in keras_case.fetches]
    keras_graphs.assert_matches(keras_case, outputs, reference=keras_case.cudnn_expected, rtol=0, atol=ATOL)


# --- SavedModels: signature names kept ---------------------------------------------------------

def _keras3_model():
    import keras
    x = keras.Input((7, 5))
    y = keras.layers.LSTM(6, return_sequences=True)(x)
    y = keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(y)
    y = keras.layers.LSTM(3, go_backwards=True)(y)
    return keras.Model(x, keras.layers.Dense(2)(y))


@pytest.mark.slow
def test_keras3_saved_model(tmp_path):
    case = save_keras3("keras3_mixed", tmp_path / "k3", _keras3_model,
                       lambda rng: [(uniform(rng, (b, 7, 5), 1.0), None) for b in (1, 3)], seed=1)
    out = tmp_path / "k3.onnx"
    result = run_cli(case.path, "--target", "onnx", "-o", out, "--verify")
    assert result.returncode == 0, result.stderr
    assert "verify passed" in result.stdout
    model = assert_structure(out, {"LSTM", "GRU"})
    assert [i.name for i in model.graph.input] == ["x"] and [o.name for o in model.graph.output] == ["output_0"]
    errors = max_errors([run_onnx(out, f) for f in case.feeds], case.expected)
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("mode,time_major,initial_state", [("lstm", False, True), ("gru", True, False)])
def test_tf_keras_cudnn_saved_model(tmp_path, mode, time_major, initial_state):
    case = save_tf_keras_cudnn(f"tf_keras_{mode}", tmp_path / "sm", mode=mode, seed=2, batch=None, time=6,
                               features=4, units=5, time_major=time_major, initial_state=initial_state)
    onnx_target.convert_to_onnx(case.path, tmp_path / "m.onnx")
    model = assert_structure(tmp_path / "m.onnx", {mode.upper()})
    assert sorted(o.name for o in model.graph.output) == sorted(case.expected[0])
    errors = max_errors([run_onnx(tmp_path / "m.onnx", f) for f in case.feeds], case.expected)
    assert max(errors.values()) <= ATOL, errors


@pytest.mark.slow
@pytest.mark.parametrize("style", ["resource_variable", "ref_variable", "contrib_canonical_restore"])
def test_tf1_saved_model(tmp_path, style):
    """TF1 SavedModels: an opaque params variable (resource or ref), or tf.contrib.cudnn_rnn's saver,
    which restores through CudnnRNNCanonicalToParams (no CPU kernel: graphfix's twin runs it)."""
    if style == "contrib_canonical_restore":
        case = tf1_contrib.save_tf1_contrib("contrib", tmp_path / "sm", mode="gru", num_layers=2, bidirectional=True,
                                            seed=3)
        expected_op = "GRU"
    else:
        case = save_tf1_cudnn("tf1", tmp_path / "sm", op="CudnnRNNV2", spec=layout.RnnSpec("lstm", 2, 4, 3, 2),
                              time=5, batch=2, seed=3, use_resource=style == "resource_variable")
        expected_op = "LSTM"
    onnx_target.convert_to_onnx(case.path, tmp_path / "m.onnx")
    assert_structure(tmp_path / "m.onnx", {expected_op})
    errors = max_errors([run_onnx(tmp_path / "m.onnx", f) for f in case.feeds], case.expected)
    assert max(errors.values()) <= ATOL, errors


# --- raw-op graphs (V1, V2, V3; every mode) ----------------------------------------------------

RAW = {  # name -> (spec, raw_graphs.build arguments)
    "v1_gru_bidirectional_2_layers": (layout.RnnSpec("gru", 2, 5, 3, 2), dict(op="CudnnRNN")),
    "v2_lstm_canonical_to_params": (layout.RnnSpec("lstm", 2, 4, 3, 1), dict(op="CudnnRNNV2", params_source="canonical")),
    "v2_rnn_tanh_bidirectional": (layout.RnnSpec("rnn_tanh", 2, 4, 3, 2), dict(op="CudnnRNNV2", params_source="concat")),
    "v3_rnn_relu_batch_major_lengths": (layout.RnnSpec("rnn_relu", 1, 4, 3, 2),
                                        dict(time_major=False, lengths=np.array([5, 2, 0], np.int32))),
    "v3_lstm_bidirectional_fed_lengths": (layout.RnnSpec("lstm", 2, 4, 3, 2),
                                          dict(lengths_fed=True, lengths=np.array([5, 3, 4], np.int32))),
    "v3_lstm_skip_input_zero_state": (layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input"), dict(feed_states=False)),
    "v3_gru_float16": (layout.RnnSpec("gru", 1, 4, 3, 1), dict(dtype=np.float16)),
}


@pytest.mark.parametrize("name", sorted(RAW))
def test_raw_graph(name, tmp_path):
    spec, kwargs = RAW[name]
    case = raw_graphs.build(spec, **kwargs)
    src = tmp_path / f"{name}.pb"
    src.write_bytes(case.graph_def.SerializeToString())
    onnx_target.convert_to_onnx(src, tmp_path / "m.onnx")
    assert_structure(tmp_path / "m.onnx", {plan.ONNX_OP[spec.mode]})
    got = run_onnx(tmp_path / "m.onnx", {k.split(":")[0]: v for k, v in case.feeds.items()})
    B = case.x.shape[1]
    state = (lambda a: a) if case.time_major else (lambda a: a.reshape(B, spec.num_layers * spec.num_dirs, -1))
    want = reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec),
                             case.x if case.time_major else case.x.transpose(1, 0, 2), state(case.h0), state(case.c0),
                             case.lengths, time_major=case.time_major)
    atol = ATOL if case.x.dtype == np.float32 else 2e-3
    for fetch, w in zip(case.fetches, want):
        g = got[fetch.removesuffix(":0")]
        assert g.dtype == case.x.dtype and g.shape == w.shape, fetch
        np.testing.assert_allclose(g.astype(np.float64), w, rtol=0, atol=atol, err_msg=fetch)


# --- refusals: the node named, the reason given, nothing written -------------------------------

@pytest.mark.parametrize("what,spec,kwargs,reason", [
    ("num_proj", layout.RnnSpec("lstm", 1, 6, 3, 1, num_proj=4), {}, "num_proj=4"),
    ("fed params", layout.RnnSpec("gru", 1, 4, 3), dict(params_source="fed"), "not constant"),
    ("float64", layout.RnnSpec("lstm", 1, 4, 3), dict(dtype=np.float64), "float64"),
])
def test_refused(what, spec, kwargs, reason, tmp_path):
    case = raw_graphs.build(spec, **kwargs)
    src = tmp_path / "g.pb"
    src.write_bytes(case.graph_def.SerializeToString())
    with pytest.raises(UnsupportedError) as info:
        onnx_target.convert_to_onnx(src, tmp_path / "m.onnx")
    assert "'rnn'" in str(info.value) and reason in str(info.value), str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pb"]


def test_without_the_extra_says_how_to_install(tmp_path, monkeypatch, capsys):
    case = raw_graphs.build(layout.RnnSpec("lstm", 1, 4, 3))
    src = tmp_path / "g.pb"
    src.write_bytes(case.graph_def.SerializeToString())
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx now raises ImportError
    assert cli.main([str(src), "--target", "onnx", "-o", str(tmp_path / "m.onnx")]) == 4
    assert 'pip install "graphfix[onnx]"' in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.pb"]
