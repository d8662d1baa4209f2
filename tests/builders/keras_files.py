"""Keras 2 (tf_keras) models with CuDNNLSTM / CuDNNGRU layers, saved as HDF5, and their CPU twins.

Each builder takes a `layers` adapter that makes either the CuDNN layers (tf_keras only; they
build and save on a CPU, only running them needs a GPU) or the CPU LSTM / GRU(reset_after=True)
layers, in tf_keras or in Keras 3, so one function describes a model and its twins::

    seq:          x [B,6,3] -> CuDNNLSTM(4, seq, l2) -> Bidirectional(CuDNNGRU(3, seq))
                             -> CuDNNGRU(2, go_backwards) -> Dense(2)
    functional:   x -> CuDNNLSTM(3, seq, state) -> (s, h, c);  s -> Bidirectional(CuDNNLSTM(2)) -> z
                  x -> CuDNNGRU(2, state) -> (o, h2);          outputs [z, h, c, o, h2]
    nested_seq:   x -> Sequential(inner: CuDNNLSTM(4, seq)) -> CuDNNGRU(2) -> Dense(1)      (Sequential)
    nested_fun:   the same inner model, in a Functional model                          (Functional)
    stateful:     x [2,6,3] (fixed batch) -> CuDNNLSTM(3, stateful, seq) -> CuDNNGRU(2, stateful)

Weights are seeded random normals (never constant fills), biases included.
"""

from __future__ import annotations

import numpy as np

T, F = 6, 3


class Layers:
    """Make LSTM / GRU layers: CuDNN ones (tf_keras), or the CPU layers of `module` (tf_keras or keras)."""

    def __init__(self, module, cudnn: bool):
        self.K, self.cudnn = module, cudnn

    def lstm(self, units, **kw):
        if self.cudnn:
            from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM
            return CuDNNLSTM(units, **kw)
        return self.K.layers.LSTM(units, **kw)

    def gru(self, units, **kw):
        if self.cudnn:
            from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
            return CuDNNGRU(units, **kw)
        return self.K.layers.GRU(units, reset_after=True, recurrent_activation="sigmoid", **kw)


def seq(L: Layers):
    K = L.K
    return K.Sequential([
        K.Input(shape=(T, F)),
        L.lstm(4, return_sequences=True, kernel_regularizer=K.regularizers.L2(0.01),
               recurrent_constraint=K.constraints.MaxNorm(3.0)),
        K.layers.Bidirectional(L.gru(3, return_sequences=True)),
        L.gru(2, go_backwards=True),
        K.layers.Dense(2),
    ], name="seq")


def functional(L: Layers):
    K = L.K
    x = K.Input(shape=(T, F))
    s, h, c = L.lstm(3, return_sequences=True, return_state=True)(x)
    z = K.layers.Bidirectional(L.lstm(2))(s)
    o, h2 = L.gru(2, return_state=True)(x)
    return K.Model(x, [z, h, c, o, h2], name="functional")


def _inner(L: Layers):
    K = L.K
    return K.Sequential([K.Input(shape=(T, F)), L.lstm(4, return_sequences=True, name="enc")], name="inner")


def nested_seq(L: Layers):
    K = L.K
    return K.Sequential([K.Input(shape=(T, F)), _inner(L), L.gru(2), K.layers.Dense(1)], name="nested_seq")


def nested_fun(L: Layers):
    K = L.K
    x = K.Input(shape=(T, F))
    return K.Model(x, K.layers.Dense(1)(L.gru(2)(_inner(L)(x))), name="nested_fun")


def stateful(L: Layers):
    K = L.K
    return K.Sequential([K.Input(batch_shape=(2, T, F)), L.lstm(3, stateful=True, return_sequences=True),
                         L.gru(2, stateful=True)], name="stateful")


MODELS = {"seq": seq, "functional": functional, "nested_seq": nested_seq, "nested_fun": nested_fun,
          "stateful": stateful}


def build_cudnn(name: str, seed: int):
    """The tf_keras CuDNN model `name`, with seeded random weights."""
    import tf_keras
    # Layer names ("cu_dnnlstm", "bidirectional") come from per-process counters: start them
    # afresh, so the file's layout does not depend on which tests ran before.
    tf_keras.backend.clear_session()
    model = MODELS[name](Layers(tf_keras, cudnn=True))
    rng = np.random.default_rng(seed)
    model.set_weights([(0.5 * rng.standard_normal(w.shape)).astype(w.dtype) for w in model.get_weights()])
    return model


def build_twin(name: str, module):
    """The CPU twin of model `name` in `module` (tf_keras or keras), weights not loaded."""
    return MODELS[name](Layers(module, cudnn=False))


def outputs(model, x) -> list[np.ndarray]:
    """The model's outputs on x, as a list of float64 arrays (Keras 3 and tf_keras alike)."""
    y = model(x, training=False)
    return [np.asarray(v, dtype=np.float64) for v in (y if isinstance(y, (list, tuple)) else [y])]
