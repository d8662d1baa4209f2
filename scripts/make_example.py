"""Build the bundled example: a GPU-only frozen GraphDef and the numbers it must give.

examples/cudnn_lstm_gru.pb   tf_keras CuDNNLSTM (bidirectional) -> CuDNNGRU -> Dense, frozen
examples/cudnn_lstm_gru.npz  an input batch and the outputs of Keras's CPU layers (LSTM,
                             GRU(reset_after=True)) holding the same weights: the oracle

Runs on a CPU machine: the graph is traced and frozen, never executed. Deterministic.
Usage: python scripts/make_example.py [OUT_DIR]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402
from tf_keras.src.layers.rnn import cudnn_gru, cudnn_lstm  # noqa: E402
from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading  # noqa: E402

STEPS, FEATURES, BATCH = 12, 8, 4


def build_models(seed=0):
    """(cudnn_model, cpu_model) with identical weights."""
    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers

    def model(lstm, gru, **gru_kwargs):
        inputs = tf_keras.Input((STEPS, FEATURES), batch_size=None, name="features")
        x = layers.Bidirectional(lstm(16, return_sequences=True))(inputs)
        x = gru(8, **gru_kwargs)(x)
        return tf_keras.Model(inputs, layers.Dense(3, name="scores")(x))

    # tf.compat.v1.keras.layers.CuDNNLSTM/CuDNNGRU: exported only under the v1 API.
    gpu = model(cudnn_lstm.CuDNNLSTM, cudnn_gru.CuDNNGRU)
    cpu = model(layers.LSTM, layers.GRU, reset_after=True, recurrent_activation="sigmoid")
    rng = np.random.default_rng(seed)
    gpu.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in gpu.get_weights()])
    for g_layer, c_layer in zip(gpu.layers, cpu.layers):
        if g_layer.weights:
            c_layer.set_weights(preprocess_weights_for_loading(c_layer, g_layer.get_weights()))
    return gpu, cpu


def main(out_dir="examples"):
    gpu, cpu = build_models()
    fn = tf.function(lambda x: gpu(x, training=False),
                     input_signature=[tf.TensorSpec([None, STEPS, FEATURES], tf.float32, "features")])
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    x = np.random.default_rng(1).standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
    expected = cpu(x, training=False).numpy()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "cudnn_lstm_gru.pb"), "wb") as handle:
        handle.write(graph_def.SerializeToString(deterministic=True))
    np.savez(os.path.join(out_dir, "cudnn_lstm_gru.npz"), x=x, expected=expected,
             input_name=frozen.inputs[0].name, output_name=frozen.outputs[0].name)
    cudnn = sorted({n.op for n in graph_def.node if n.op.startswith("Cudnn")} |
                   {n.op for f in graph_def.library.function for n in f.node_def if n.op.startswith("Cudnn")})
    print(f"wrote {out_dir}/cudnn_lstm_gru.pb ({', '.join(cudnn)}) and {out_dir}/cudnn_lstm_gru.npz; "
          f"input {frozen.inputs[0].name}, output {frozen.outputs[0].name}")


if __name__ == "__main__":
    main(*sys.argv[1:])
