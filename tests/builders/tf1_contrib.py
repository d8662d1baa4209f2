"""TF1 SavedModels as `tf.contrib.cudnn_rnn.CudnnLSTM` / `CudnnGRU` layers left them, made on CPU.

Test support, not a test module. What the contrib layer (TF 1.x
`contrib/cudnn_rnn/python/layers/cudnn_rnn.py`, `ops/cudnn_rnn_ops.py`) put in a graph, and
what this builder reproduces::

    x [T, B, I] (time-major; T, B open) --+-- Shape -> [1] = B --> zeros [L*D, B, H] (h0, c0)
                                          v
    scope/opaque_kernel  (ref VariableV2, shape unknown: validate_shape=False)
         | read                             initializer: CudnnRNNCanonicalToParams(random canonical)
         v
    CudnnRNN / CudnnRNNV2 (is_training=True) --> y [T, B, D*H], h_n [L*D, B, H], (c_n)

    saver (CudnnOpaqueParamsSaveable):
      save:    CudnnRNNParamsToCanonical(opaque_kernel) -> TF-canonical tensors -> SaveV2
      restore: RestoreV2 (TF-canonical tensors) -> cuDNN canonical -> CudnnRNNCanonicalToParams
               -> Assign(opaque_kernel, validate_shape=False)      (save/restore_all)

The checkpoint holds only TF-canonical weights (the cells `CudnnCompatibleLSTMCell` /
`CudnnCompatibleGRUCell` read), never the opaque buffer. The initializer's weights differ from
the checkpoint's, so a converted model that loses the restore computes visibly wrong numbers.
Nothing here runs a cuDNN op: the graph is written as a MetaGraphDef and the checkpoint from
numpy (through eager CPU ops). Oracle: graphfix.cudnn.reference.forward on the weights the
restore path rebuilds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2, saver_pb2

from builders.saved_models import SavedCase, uniform
from graphfix.cudnn import layout, reference

LSTM_TF_ORDER = (0, 2, 1, 3)  # cuDNN's i, f, c, o -> the TF cells' i, c, f, o


def _cell_prefix(scope: str, spec: layout.RnnSpec, layer: int, d: int) -> str:
    cell = "cudnn_compatible_lstm_cell" if spec.mode == "lstm" else "cudnn_compatible_gru_cell"
    if spec.num_dirs == 1:
        return f"{scope}/rnn/multi_rnn_cell/cell_{layer}/{cell}"
    return f"{scope}/stack_bidirectional_rnn/cell_{layer}/bidirectional_rnn/{'fbw'[d]}w/{cell}"


def _pseudo_layers(spec):
    return [(layer, d) for layer in range(spec.num_layers) for d in range(spec.num_dirs)]


def cudnn_to_tf(spec: layout.RnnSpec, scope: str, weights: list, biases: list) -> dict:
    """cuDNN canonical (CudnnRNNParamsToCanonical's lists) -> {checkpoint key: TF-canonical tensor}.

    Per pseudo-layer, with W [H, in], R [H, H] per gate: LSTM kernel [in+H, 4H] (gates i, c, f, o),
    bias [4H] = bW + bR; GRU gates/kernel [in+H, 2H] (r, z), gates/bias [2H], candidate
    input_projection kernel [in, H] / bias, hidden_projection kernel [H, H] / bias.
    """
    G = spec.gates
    out = {}
    for k, (layer, d) in enumerate(_pseudo_layers(spec)):
        w, r = weights[2 * G * k:2 * G * k + G], weights[2 * G * k + G:2 * G * (k + 1)]
        bw, br = biases[2 * G * k:2 * G * k + G], biases[2 * G * k + G:2 * G * (k + 1)]
        prefix = _cell_prefix(scope, spec, layer, d)
        if spec.mode == "lstm":
            out[f"{prefix}/kernel"] = tf.transpose(tf.concat([tf.concat([w[g], r[g]], 1) for g in LSTM_TF_ORDER], 0))
            out[f"{prefix}/bias"] = tf.concat([bw[g] for g in LSTM_TF_ORDER], 0) + tf.concat(
                [br[g] for g in LSTM_TF_ORDER], 0)
        else:
            out[f"{prefix}/gates/kernel"] = tf.transpose(tf.concat([tf.concat([w[g], r[g]], 1) for g in (0, 1)], 0))
            out[f"{prefix}/gates/bias"] = tf.concat(bw[:2], 0) + tf.concat(br[:2], 0)
            out[f"{prefix}/candidate/input_projection/kernel"] = tf.transpose(w[2])
            out[f"{prefix}/candidate/input_projection/bias"] = bw[2]
            out[f"{prefix}/candidate/hidden_projection/kernel"] = tf.transpose(r[2])
            out[f"{prefix}/candidate/hidden_projection/bias"] = br[2]
    return out


def tf_to_cudnn(spec: layout.RnnSpec, scope: str, tensors: dict) -> tuple[list, list]:
    """Inverse of cudnn_to_tf: {key: tensor} -> (weights, biases) for CudnnRNNCanonicalToParams.

    The summed biases come back halved into bW and bR, as the contrib saveable did.
    """
    H, G = spec.num_units, spec.gates
    weights, biases = [], []
    for layer, d in _pseudo_layers(spec):
        prefix = _cell_prefix(scope, spec, layer, d)
        width = spec.layer_input_size(layer)
        if spec.mode == "lstm":
            by_tf_gate = tf.split(tf.transpose(tensors[f"{prefix}/kernel"]), 4, axis=0)
            gate_w = [by_tf_gate[LSTM_TF_ORDER.index(g)] for g in range(G)]
            by_tf_bias = tf.split(tensors[f"{prefix}/bias"] * 0.5, 4, axis=0)
            half = [by_tf_bias[LSTM_TF_ORDER.index(g)] for g in range(G)]
            split = [tf.split(m, [width, H], axis=1) for m in gate_w]
            weights += [s[0] for s in split] + [s[1] for s in split]
            biases += half + half
        else:
            gate_w = tf.split(tf.transpose(tensors[f"{prefix}/gates/kernel"]), 2, axis=0)
            split = [tf.split(m, [width, H], axis=1) for m in gate_w]
            weights += [split[0][0], split[1][0], tf.transpose(tensors[f"{prefix}/candidate/input_projection/kernel"]),
                        split[0][1], split[1][1], tf.transpose(tensors[f"{prefix}/candidate/hidden_projection/kernel"])]
            half = tf.split(tensors[f"{prefix}/gates/bias"] * 0.5, 2, axis=0)
            biases += [half[0], half[1], tensors[f"{prefix}/candidate/input_projection/bias"],
                       half[0], half[1], tensors[f"{prefix}/candidate/hidden_projection/bias"]]
    return weights, biases


def _size_args(spec):
    return {"num_layers": spec.num_layers, "num_units": spec.num_units, "input_size": spec.input_size,
            "rnn_mode": spec.mode, "direction": "bidirectional" if spec.num_dirs == 2 else "unidirectional"}


def _random_canonical(rng, spec):
    shapes_w, shapes_b = layout.canonical_shapes(spec)
    return [uniform(rng, s, 0.5) for s in shapes_w], [uniform(rng, s, 0.5) for s in shapes_b]


def save_tf1_contrib(name: str, path: Path, *, mode: str, num_layers: int, bidirectional: bool, seed: int,
                     input_size: int = 3, num_units: int = 4, op: str | None = None, time: int | None = None,
                     batch: int | None = None, feed_shapes=((5, 2),), outputs=("y", "h_n")) -> SavedCase:
    """A contrib-style TF1 SavedModel (see module docstring): signature "serving_default", x -> outputs.

    time/batch: the placeholder's static T and B (None: open). feed_shapes: (T, B) per call.
    outputs: a subset of "y", "h_n", "c_n" (LSTM). op: CudnnRNN or CudnnRNNV2 (default: V2 for
    LSTM, V1 otherwise, as the contrib layer chose by TF version).
    """
    spec = layout.RnnSpec(mode, num_layers, num_units, input_size, 2 if bidirectional else 1, "linear_input", 0)
    op = op or ("CudnnRNNV2" if mode == "lstm" else "CudnnRNN")
    scope = f"cudnn_{mode}"
    rng = np.random.default_rng(seed)
    init_w, init_b = _random_canonical(rng, spec)
    ckpt_w, ckpt_b = _random_canonical(rng, spec)
    n_state = spec.num_layers * spec.num_dirs
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [time, batch, input_size], name="x")
        with tf.compat.v1.variable_scope(scope):
            initial = tf.raw_ops.CudnnRNNCanonicalToParams(
                weights=[tf.constant(w) for w in init_w], biases=[tf.constant(b) for b in init_b],
                **_size_args(spec))
            kernel = tf.compat.v1.get_variable("opaque_kernel", initializer=initial, validate_shape=False,
                                               use_resource=False)
            batch_size = tf.shape(x)[1]
            zeros = tf.zeros(tf.stack([n_state, batch_size, num_units]), tf.float32)
            rnn = getattr(tf.raw_ops, op)(
                input=x, input_h=zeros, input_c=zeros, params=kernel, rnn_mode=mode, is_training=True,
                direction=_size_args(spec)["direction"], name="CudnnRNN")
        saver_def = _contrib_saver(spec, scope, kernel)
        produced = {"y": rnn[0], "h_n": rnn[1], "c_n": rnn[2]}
        signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {k: produced[k] for k in outputs})
        meta = tf.compat.v1.train.export_meta_graph(graph=graph, saver_def=saver_def, clear_devices=True)
    meta.meta_info_def.tags.append("serve")
    meta.signature_def["serving_default"].CopyFrom(signature)
    proto = saved_model_pb2.SavedModel(saved_model_schema_version=1, meta_graphs=[meta])
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())

    checkpoint = cudnn_to_tf(spec, scope, [tf.constant(w) for w in ckpt_w], [tf.constant(b) for b in ckpt_b])
    keys = sorted(checkpoint)
    with tf.device("/CPU:0"):
        tf.raw_ops.SaveV2(prefix=str(path / "variables" / "variables"), tensor_names=keys,
                          shape_and_slices=[""] * len(keys), tensors=[checkpoint[k] for k in keys])
        restored_w, restored_b = tf_to_cudnn(spec, scope, checkpoint)
    buffer = layout.pack_canonical([w.numpy() for w in restored_w], [b.numpy() for b in restored_b], np.float32)
    weights = layout.unpack(buffer, spec)

    feeds, expected = [], []
    for steps, b in feed_shapes:
        feed = {"x": uniform(rng, (steps, b, input_size), 1.0)}
        y, h_n, c_n = reference.forward(spec, weights, feed["x"], np.zeros((n_state, b, num_units)),
                                        np.zeros((n_state, b, num_units)) if mode == "lstm" else None)
        values = {"y": y, "h_n": h_n, "c_n": c_n}
        feeds.append(feed)
        expected.append({k: values[k].astype(np.float32) for k in outputs})
    return SavedCase(name, path, "serving_default", feeds, expected, tf1=True)


def _contrib_saver(spec: layout.RnnSpec, scope: str, kernel) -> saver_pb2.SaverDef:
    """The save and restore subgraphs of the contrib saveable (in the current graph), as a SaverDef."""
    with tf.name_scope("save"):
        filename = tf.compat.v1.placeholder_with_default("model", [], name="Const")
        weights, biases = tf.raw_ops.CudnnRNNParamsToCanonical(
            params=kernel, num_params=2 * spec.gates * spec.num_layers * spec.num_dirs, **_size_args(spec))
        to_save = cudnn_to_tf(spec, scope, weights, biases)
        keys = sorted(to_save)
        save = tf.raw_ops.SaveV2(prefix=filename, tensor_names=keys, shape_and_slices=[""] * len(keys),
                                 tensors=[to_save[k] for k in keys])
        with tf.control_dependencies([save]):
            saved = tf.identity(filename, name="control_dependency")
        restored = tf.raw_ops.RestoreV2(prefix=filename, tensor_names=keys, shape_and_slices=[""] * len(keys),
                                        dtypes=[tf.float32] * len(keys))
        weights, biases = tf_to_cudnn(spec, scope, dict(zip(keys, restored)))
        params = tf.raw_ops.CudnnRNNCanonicalToParams(weights=weights, biases=biases, **_size_args(spec))
        assign = tf.compat.v1.assign(kernel, params, validate_shape=False)
        restore_all = tf.group(assign, name="restore_all")
    return saver_pb2.SaverDef(filename_tensor_name=filename.name, save_tensor_name=saved.name,
                              restore_op_name=restore_all.name, max_to_keep=5, sharded=False,
                              keep_checkpoint_every_n_hours=10000.0, version=saver_pb2.SaverDef.V2)


