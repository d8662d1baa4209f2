"""GPU-only SavedModels made on a CPU machine, with CPU oracles, and checks on their conversion.

Test support, not a test module. Each ``save_*`` function writes one SavedModel directory
holding cuDNN RNN ops and returns a :class:`SavedCase`: where it is, which signature to call,
the feeds (one dict per call, e.g. two batch sizes) and what the CPU should compute for them.
How each kind is made on a machine without a GPU::

    Keras 3 model.export()          _is_gpu_available patched -> CudnnRNNV3 (batch-major) inside
                                    the exported functions; oracle: the same model, called
    tf_keras CuDNNLSTM / CuDNNGRU   tf.saved_model.save(tf.Module) -> CudnnRNNV3 (time-major);
                                    oracle: tf_keras LSTM / GRU with preprocess_weights_for_loading
    tf_keras LSTM / GRU             model.save(save_format="tf") -> the CPU variant is called;
                                    an uncalled GPU variant (and its gradient) holds CudnnRNN*V3
    TF1 graph                       tf.raw_ops.CudnnRNN / CudnnRNNV2 on an opaque params variable,
                                    SavedModelBuilder; oracle: graphfix.cudnn.reference.forward

Padded steps (Keras 3, Masking, forward return_sequences): cuDNN writes zeros at steps
t >= length (TensorFlow ``core/kernels/cudnn_rnn_ops.cc``, padding fill 0) where Keras's CPU
loop repeats the last valid output. ``expected`` holds what the cuDNN graph computes: the
Keras CPU result with those steps zeroed; ``keras`` keeps the raw CPU result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from builders import keras_graphs
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import find_cudnn_nodes

REPO = Path(__file__).resolve().parents[2]
ATOL = 1e-5  # float32, absolute


@dataclasses.dataclass
class SavedCase:
    """One GPU-only SavedModel and what its signature should compute on CPU.

    path: the SavedModel directory (holds Cudnn* ops; fails on CPU as it is).
    signature: the signature key to call; feeds/expected are keyed by its input/output keys.
    feeds: one dict per call (input key -> array); several calls may use different batch sizes.
    expected: per call, output key -> what the cuDNN graph computes (see module docstring).
    keras: per call, output key -> the raw Keras CPU result, when it differs from expected.
    tf1: load with tf.compat.v1.saved_model.load in a Session instead of tf.saved_model.load.
    """

    name: str
    path: Path
    signature: str
    feeds: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]]
    keras: list[dict[str, np.ndarray]] = dataclasses.field(default_factory=list)
    tf1: bool = False
    tags: tuple[str, ...] = ("serve",)


# ---------------------------------------------------------------------------------------------
# Files, protos, conversion


def dir_digest(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under path (directories implied)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def read_proto(path: Path) -> saved_model_pb2.SavedModel:
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    return proto


def cudnn_ops(proto: saved_model_pb2.SavedModel) -> list[tuple[str, str, str]]:
    """(where, node name, op) of every Cudnn* op in every MetaGraph (graph and library)."""
    return [(where, node.name, node.op) for meta in proto.meta_graphs
            for where, node in find_cudnn_nodes(meta.graph_def)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    """`python -m graphfix ARGS` in a subprocess; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "graphfix", *map(str, args)], env=cli_env(),
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def hidden_leftovers(parent: Path) -> list[str]:
    """Names of hidden entries (graphfix's temporary `.NAME.*.tmp` / `.NAME.old`) in parent."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Running a SavedModel on CPU


def call_signature(path: Path, case: SavedCase) -> list[dict[str, np.ndarray]]:
    """Call case.signature of the SavedModel at path once per feed dict, on CPU."""
    if case.tf1:
        return _call_tf1(path, case)
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures[case.signature]
    return [{k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}
            for feeds in case.feeds]


def _call_tf1(path: Path, case: SavedCase) -> list[dict[str, np.ndarray]]:
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.load(session, list(case.tags), str(path))
        sig = meta.signature_def[case.signature]
        keys = sorted(sig.outputs)
        out = []
        for feeds in case.feeds:
            values = session.run([sig.outputs[k].name for k in keys],
                                 {sig.inputs[k].name: v for k, v in feeds.items()})
            out.append(dict(zip(keys, values)))
        return out


def max_errors(got: Sequence[dict], want: Sequence[dict]) -> dict[str, float]:
    """Output key -> largest absolute difference over all calls; asserts matching keys/shapes."""
    errors: dict[str, float] = {}
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert sorted(g) == sorted(w), f"output keys {sorted(g)} != {sorted(w)}"
        for k in w:
            assert g[k].shape == w[k].shape, f"{k}: shape {g[k].shape} != {w[k].shape}"
            assert g[k].dtype == w[k].dtype, f"{k}: dtype {g[k].dtype} != {w[k].dtype}"
            errors[k] = max(errors.get(k, 0.0), float(np.max(np.abs(g[k].astype(np.float64) - w[k]))))
    return errors


# ---------------------------------------------------------------------------------------------
# Builders


def uniform(rng: np.random.Generator, shape, scale: float = 0.6) -> np.ndarray:
    """Distinct random float32 values in (-scale, scale); never constant fills."""
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


def random_weights(rng: np.random.Generator, weights) -> list[np.ndarray]:
    return [uniform(rng, np.shape(w)) for w in weights]


def keras3_gpu_path(enabled: bool):
    """Make Keras 3 trace its cuDNN branch (enabled) or its CPU loop, restoring it after."""
    return keras_graphs.keras3_cudnn_path(enabled)


def padding(lengths: Sequence[int], time: int) -> np.ndarray:
    """[B, T] bool, True at padded steps t >= lengths[b]."""
    return np.arange(time)[None, :] >= np.asarray(lengths)[:, None]


def masked_input(rng: np.random.Generator, lengths: Sequence[int], time: int, features: int) -> np.ndarray:
    """[B, T, F] random values, zero (Masking's mask value) after lengths[b] steps."""
    x = uniform(rng, (len(lengths), time, features), 1.0)
    x = np.where(x == 0, np.float32(0.5), x)  # a random exact zero row would mask a valid step
    return np.where(padding(lengths, time)[:, :, None], np.float32(0), x)


def save_keras3(name: str, path: Path, build_model: Callable, inputs: Callable, seed: int,
                padded_outputs: Sequence[int] = ()) -> SavedCase:
    """Export build_model() (a functional keras.Model on one Input) with its cuDNN path.

    The export's signature input "x" has the Input's shape (batch included, None or fixed).

    inputs(rng) -> list of feed arrays for the single input "x" (one per call, batch may vary)
    and the lengths of each (None: unmasked). padded_outputs: output indices where cuDNN
    writes zeros at padded steps and Keras's CPU loop does not.
    """
    import keras

    assert keras.backend.backend() == "tensorflow"
    rng = np.random.default_rng(seed)
    model = build_model()
    model.set_weights(random_weights(rng, model.get_weights()))
    # Keras exports with a None batch unless told otherwise: pass the Input's own shape
    (x_input,) = model.inputs
    signature = [tf.TensorSpec(x_input.shape, x_input.dtype, name="x")]
    with keras3_gpu_path(True):
        model.export(str(path), verbose=False, input_signature=signature)
    feeds, expected, raw = [], [], []
    for x, lengths in inputs(rng):
        with keras3_gpu_path(False), tf.device("/CPU:0"):
            result = model(tf.constant(x), training=False)
        result = [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
        cudnn = [r.copy() for r in result]
        for index in padded_outputs:
            cudnn[index][padding(lengths, x.shape[1])] = 0.0
        feeds.append({"x": x})
        expected.append({f"output_{i}": r for i, r in enumerate(cudnn)})
        raw.append({f"output_{i}": r for i, r in enumerate(result)})
    return SavedCase(name, path, "serving_default", feeds, expected, keras=raw)


def save_tf_keras_cudnn(name: str, path: Path, *, mode: str, seed: int, batch: int | None,
                        time: int, features: int, units: int, time_major: bool,
                        initial_state: bool, extra_signature: bool = False) -> SavedCase:
    """tf_keras CuDNNLSTM / CuDNNGRU(return_sequences, return_state) in a tf.Module's tf.function.

    Signature "serving_default": x [B, T, F] (or [T, B, F] when time_major), plus h0 (and c0
    for LSTM) [B, H] when initial_state; outputs "sequences", "h" (and "c").
    extra_signature adds "last_h": the same layer, only the final h.
    """
    import tf_keras
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    rng = np.random.default_rng(seed)
    kwargs = dict(return_sequences=True, return_state=True, time_major=time_major)
    if mode == "lstm":
        cudnn_layer = CuDNNLSTM(units, **kwargs)
        cpu_layer = tf_keras.layers.LSTM(units, **kwargs)
        state_names = ["h0", "c0"]
    else:
        cudnn_layer = CuDNNGRU(units, **kwargs)
        cpu_layer = tf_keras.layers.GRU(units, reset_after=True, recurrent_activation="sigmoid", **kwargs)
        state_names = ["h0"]
    x_shape = (time, batch, features) if time_major else (batch, time, features)
    cudnn_layer.build(x_shape)
    cpu_layer.build(x_shape)
    cudnn_layer.set_weights(random_weights(rng, cudnn_layer.get_weights()))
    cpu_layer.set_weights(preprocess_weights_for_loading(cpu_layer, cudnn_layer.get_weights()))
    output_names = ["sequences", "h", "c"][:1 + len(state_names)]

    signature = [tf.TensorSpec(x_shape, tf.float32, name="x")]
    if initial_state:
        signature += [tf.TensorSpec([batch, units], tf.float32, name=n) for n in state_names]

    def outputs(layer, x, states):
        return dict(zip(output_names, layer(x, initial_state=list(states) if states else None)))

    module = tf.Module()
    module.layer_variables = list(cudnn_layer.weights)  # only the variables, not the layer
    module.serve = tf.function(lambda x, *states: outputs(cudnn_layer, x, states), input_signature=signature)
    signatures = {"serving_default": module.serve}
    if extra_signature:
        module.last_h = tf.function(lambda x, *states: {"last_h": outputs(cudnn_layer, x, states)["h"]},
                                    input_signature=signature)
        signatures["last_h"] = module.last_h
    tf.saved_model.save(module, str(path), signatures=signatures)

    value_batch = batch or 3
    feeds, expected = [], []
    for b in ([value_batch] if batch else [3, 2]):
        x = uniform(rng, (time, b, features) if time_major else (b, time, features), 1.0)
        states = [uniform(rng, (b, units), 0.8) for _ in state_names] if initial_state else []
        feed = {"x": x, **dict(zip(state_names, states))}
        with tf.device("/CPU:0"):
            want = outputs(cpu_layer, tf.constant(x), [tf.constant(s) for s in states])
        feeds.append(feed)
        expected.append({k: np.asarray(v) for k, v in want.items()})
    return SavedCase(name, path, "serving_default", feeds, expected)


def save_tf1_cudnn(name: str, path: Path, *, op: str, spec: layout.RnnSpec, time: int, batch: int,
                   seed: int, use_resource: bool) -> SavedCase:
    """A TF1 graph as tf.contrib.cudnn_rnn left it: one opaque 1-D params variable -> op.

    Graph (time-major)::

        x [T, B, I] --+
        h [L*D, B, H] +--> CudnnRNN / CudnnRNNV2 --> y [T, B, D*H], h_n, (c_n)
        c [L*D, B, H] +        ^
        cudnn_params [N] ------+     (N = layout.params_size(spec), random uniform init)

    Saved with SavedModelBuilder (tags "serve", signature "serving_default": x, h, c ->
    y, h_n, c_n). The Session places only the subgraphs it runs (place_pruned_graph), so the
    initializer and the saver run on CPU although the Cudnn op has no CPU kernel.
    Oracle: graphfix.cudnn.reference.forward on layout.unpack(variable value).
    """
    rng = np.random.default_rng(seed)
    n_state = spec.num_layers * spec.num_dirs
    lstm = spec.mode == "lstm"
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(graph_options=tf.compat.v1.GraphOptions(place_pruned_graph=True))
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as session:
        x = tf.compat.v1.placeholder(tf.float32, [time, batch, spec.input_size], name="x")
        h = tf.compat.v1.placeholder(tf.float32, [n_state, batch, spec.num_units], name="h")
        c = tf.compat.v1.placeholder(tf.float32, [n_state, batch, spec.num_units], name="c") if lstm else None
        params = tf.compat.v1.get_variable(
            "cudnn_params", shape=[layout.params_size(spec)], dtype=tf.float32, use_resource=use_resource,
            initializer=tf.compat.v1.random_uniform_initializer(-0.5, 0.5, seed=seed))
        outs = getattr(tf.raw_ops, op)(
            input=x, input_h=h, input_c=c if lstm else tf.zeros([0]), params=params,
            rnn_mode=spec.mode, direction="bidirectional" if spec.num_dirs == 2 else "unidirectional",
            is_training=False, name="rnn")
        session.run(tf.compat.v1.global_variables_initializer())
        buffer = session.run(params)
        inputs = {"x": x, "h": h, **({"c": c} if lstm else {})}
        outputs = {"y": outs[0], "h_n": outs[1], **({"c_n": outs[2]} if lstm else {})}
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={
                "serving_default": tf.compat.v1.saved_model.predict_signature_def(inputs, outputs)})
        builder.save()

    feeds = {"x": uniform(rng, (time, batch, spec.input_size), 1.0),
             "h": uniform(rng, (n_state, batch, spec.num_units), 0.8)}
    if lstm:
        feeds["c"] = uniform(rng, (n_state, batch, spec.num_units), 0.8)
    y, h_n, c_n = reference.forward(spec, layout.unpack(buffer, spec), feeds["x"], feeds["h"], feeds.get("c"))
    # float64 maths rounded once: the float32 graph is compared within ATOL, far above this rounding
    expected = {"y": y, "h_n": h_n, **({"c_n": c_n} if lstm else {})}
    expected = {k: v.astype(np.float32) for k, v in expected.items()}
    return SavedCase(name, path, "serving_default", [feeds], [expected], tf1=True)
