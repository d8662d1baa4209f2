"""Keras CuDNNLSTM / CuDNNGRU layer weights -> the weights of Keras's CPU LSTM / GRU layers.

Pure numpy; importable without TensorFlow or Keras.

A CuDNN layer's arrays have the CPU layer's shapes and gate blocks, but not its layout: the
layer hands each gate block to cuDNN flattened as it is, untransposed (tf_keras
``layers/rnn/cudnn_lstm.py`` calls ``gru_lstm_utils.canonical_to_params`` without
``transpose_weights``; Keras 2's ``_canonical_to_params`` only reshapes), and cuDNN reads the
flat block as its own row-major [H, in] matrix. So, per gate block g of width H::

    cuDNN input matrix     W_g [H, I] = kernel[:, g].reshape(H, I)    (a reinterpretation, not .T)
    cuDNN recurrent matrix R_g [H, H] = recurrent_kernel[:, g]
    CPU kernel[:, g]           [I, H] = W_g.T
    CPU recurrent_kernel[:, g] [H, H] = R_g.T

which is what tf_keras does when a CPU model loads a CuDNN file (``saving/legacy/
hdf5_format.py``, ``_convert_rnn_weights``: ``kernel.T.reshape(kernel.shape, order="F")``).
Biases::

    CuDNNLSTM  bias [8H] = [bW | bR], gates i, f, c, o   ->  LSTM bias [4H] = bW + bR
    CuDNNGRU   bias [6H] = [bW | bR], gates z, r, h      ->  GRU(reset_after=True) bias [2, 3H] = [bW; bR]

The GRU keeps both biases: cuDNN applies the recurrent one inside the reset gate's product
(h~ = tanh(Wx + bW + r * (R h + bR))), which no single bias can express. Gate blocks keep
their order (CuDNNGRU hands cuDNN r, z, n by taking its z, r, h columns out of order).

    cpu_weights("CuDNNLSTM", cudnn_layer.get_weights())   # -> LSTM(units).set_weights(...)
"""

from __future__ import annotations

import numpy as np

from graphfix.cudnn.layout import LayerWeights, RnnSpec
from graphfix.errors import InputError, LayoutError

GATES = {"CuDNNLSTM": 4, "CuDNNGRU": 3}
CPU_CLASS = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}
MODE = {"CuDNNLSTM": "lstm", "CuDNNGRU": "gru"}
KERAS_GRU_TO_CUDNN = (1, 0, 2)  # cuDNN r, z, n taken from Keras z, r, h


def check_class(layer_class_name: str) -> str:
    """The bare class name ("CuDNNLSTM" from "keras.layers.CuDNNLSTM"); InputError if not a CuDNN layer."""
    name = str(layer_class_name).rsplit(".", 1)[-1]
    if name not in GATES:
        raise InputError(f"{layer_class_name!r} is not a CuDNN layer; expected one of {sorted(GATES)}")
    return name


def cudnn_shapes(layer_class_name: str, input_size: int, units: int) -> list[tuple]:
    """The shapes a CuDNN layer stores: [kernel [I, G*H], recurrent_kernel [H, G*H], bias [2*G*H]]."""
    G = GATES[check_class(layer_class_name)]
    return [(input_size, G * units), (units, G * units), (2 * G * units,)]


def check_weights(layer_class_name: str, weights, units: int | None = None) -> tuple[int, int]:
    """Check a CuDNN layer's [kernel, recurrent_kernel, bias] shapes; return (input size I, units H).

    units: the layer's configured units, checked too when given. Raises LayoutError saying
    which array does not fit and what was expected.
    """
    name = check_class(layer_class_name)
    G = GATES[name]
    if len(weights) != 3:
        raise LayoutError(f"{name} has 3 weights (kernel, recurrent_kernel, bias), got {len(weights)}")
    kernel, recurrent, bias = (np.asarray(w) for w in weights)
    if recurrent.ndim != 2 or recurrent.shape[1] != G * recurrent.shape[0] or recurrent.shape[0] < 1:
        raise LayoutError(f"{name} recurrent_kernel must be [units, {G} * units], got {list(recurrent.shape)}")
    H = recurrent.shape[0]
    if units is not None and H != units:
        raise LayoutError(f"{name} with units {units} needs recurrent_kernel [{units}, {G * units}], "
                          f"got {list(recurrent.shape)}")
    if kernel.ndim != 2 or kernel.shape[1] != G * H:
        raise LayoutError(f"{name} kernel must be [input size, {G * H}] for units {H}, got {list(kernel.shape)}")
    if bias.shape != (2 * G * H,):
        raise LayoutError(f"{name} bias must be [{2 * G * H}] (input and recurrent biases) for units {H}, "
                          f"got {list(bias.shape)}")
    return kernel.shape[0], H


def cpu_weights(layer_class_name: str, weights, units: int | None = None) -> list[np.ndarray]:
    """A CuDNNLSTM's / CuDNNGRU's get_weights() -> the list LSTM / GRU(reset_after=True).set_weights() takes.

    weights: [kernel [I, G*H], recurrent_kernel [H, G*H], bias [2*G*H]] (G 4 for LSTM, 3 for GRU).
    Returns new arrays, same dtype: LSTM [kernel, recurrent_kernel, bias [4H]] (the two biases
    summed); GRU [kernel, recurrent_kernel, bias [2, 3H]]. The GRU must be built with
    reset_after=True and recurrent_activation="sigmoid" (Keras 3's defaults; not tf_keras 1.x's).
    Raises InputError for another class, LayoutError for shapes that do not fit.
    """
    name = check_class(layer_class_name)
    check_weights(name, weights, units)
    kernel, recurrent, bias = (np.asarray(w) for w in weights)
    G, H = GATES[name], recurrent.shape[0]
    blocks = [slice(g * H, (g + 1) * H) for g in range(G)]
    cpu_kernel = np.concatenate([kernel[:, b].reshape(H, -1).T for b in blocks], axis=1)
    cpu_recurrent = np.concatenate([recurrent[:, b].T for b in blocks], axis=1)
    half = bias.shape[0] // 2
    cpu_bias = bias[:half] + bias[half:] if name == "CuDNNLSTM" else bias.reshape(2, half)
    return [np.ascontiguousarray(a, dtype=kernel.dtype if i < 2 else bias.dtype)
            for i, a in enumerate((cpu_kernel, cpu_recurrent, cpu_bias))]


def reference_weights(layer_class_name: str, weights) -> tuple[RnnSpec, LayerWeights]:
    """A CuDNN layer's Keras-layout weights -> (RnnSpec, LayerWeights) for `graphfix.cudnn.reference`.

    The matrices cuDNN is handed (module doc), in its gate order (GRU r, z, n): the reference
    then computes what the CuDNN layer computes on a GPU, independently of any CPU layer.
    """
    name = check_class(layer_class_name)
    I, H = check_weights(name, weights)
    G = GATES[name]
    kernel, recurrent, bias = (np.asarray(w) for w in weights)
    order = KERAS_GRU_TO_CUDNN if name == "CuDNNGRU" else tuple(range(G))
    W = np.stack([kernel[:, g * H:(g + 1) * H].reshape(H, I) for g in order])
    R = np.stack([recurrent[:, g * H:(g + 1) * H] for g in order])
    bW = np.stack([bias[g * H:(g + 1) * H] for g in order])
    bR = np.stack([bias[(G + g) * H:(G + g + 1) * H] for g in order])
    return RnnSpec(MODE[name], 1, H, I), LayerWeights(0, 0, W, R, bW, bR)


__all__ = ["CPU_CLASS", "GATES", "check_weights", "cpu_weights", "cudnn_shapes", "reference_weights"]
