"""Tests for graphfix.cudnn.keras_weights: CuDNNLSTM / CuDNNGRU weights -> LSTM / GRU weights.

Three checks that do not trust the code under test: known indices (np.arange weights, the
per-gate reinterpretation written out by hand), tf_keras's own conversion
(`preprocess_weights_for_loading`), and the numpy cuDNN reference run against Keras 3's and
tf_keras's CPU layers holding the converted weights. For an LSTM, I 2, H 3 (gate blocks of 3
columns), each block is handed to cuDNN flat and read back as [H, I]::

    kernel[:, 0:3] = [[0, 1, 2],      cuDNN W_i = [[0, 1],      CPU kernel[:, 0:3] = W_i.T
                      [12, 13, 14]]                [2, 12],   = [[0, 2, 13],
                                                   [13, 14]]     [1, 12, 14]]
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from graphfix.cudnn import keras_weights, reference
from graphfix.errors import InputError, LayoutError

I, H, T, B = 3, 4, 5, 2


def _random(class_name, seed, I=I, H=H):
    rng = np.random.default_rng(seed)
    return [(0.5 * rng.standard_normal(s)).astype(np.float32) for s in keras_weights.cudnn_shapes(class_name, I, H)]


def test_known_indices_lstm():
    kernel = np.arange(2 * 12, dtype=np.float64).reshape(2, 12)
    recurrent = np.arange(100, 100 + 3 * 12, dtype=np.float64).reshape(3, 12)
    bias = np.arange(200, 224, dtype=np.float64)
    k, r, b = keras_weights.cpu_weights("CuDNNLSTM", [kernel, recurrent, bias])
    np.testing.assert_array_equal(k[:, 0:3], [[0, 2, 13], [1, 12, 14]])
    np.testing.assert_array_equal(r[:, 3:6], recurrent[:, 3:6].T)  # f gate block, transposed
    np.testing.assert_array_equal(b, bias[:12] + bias[12:])
    assert [a.shape for a in (k, r, b)] == [(2, 12), (3, 12), (12,)]


def test_known_indices_gru_bias_keeps_both_halves():
    kernel, recurrent, bias = (np.arange(np.prod(s), dtype=np.float32).reshape(s)
                               for s in keras_weights.cudnn_shapes("CuDNNGRU", 2, 3))
    _, _, b = keras_weights.cpu_weights("keras.layers.CuDNNGRU", [kernel, recurrent, bias])
    np.testing.assert_array_equal(b, bias.reshape(2, 9))
    assert b.dtype == np.float32


@pytest.mark.parametrize("class_name", ["CuDNNLSTM", "CuDNNGRU"])
def test_matches_tf_keras_own_conversion(class_name):
    import tf_keras
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    layer = (tf_keras.layers.LSTM(H) if class_name == "CuDNNLSTM"
             else tf_keras.layers.GRU(H, reset_after=True, recurrent_activation="sigmoid"))
    layer.build((None, T, I))
    weights = _random(class_name, 3)
    for ours, theirs in zip(keras_weights.cpu_weights(class_name, weights),
                            preprocess_weights_for_loading(layer, weights)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("class_name", ["CuDNNLSTM", "CuDNNGRU"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_reference_against_keras3_and_tf_keras(class_name, go_backwards):
    """cuDNN's equations on the cuDNN matrices vs the CPU layers of both Keras versions on the converted weights."""
    import keras
    import tf_keras

    weights = _random(class_name, 7)
    x = np.random.default_rng(8).standard_normal((B, T, I)).astype(np.float32)
    spec, lw = keras_weights.reference_weights(class_name, weights)
    xs = x[:, ::-1] if go_backwards else x
    seq, h, _ = reference.forward(spec, [lw], xs, np.zeros((1, B, H)), time_major=False)
    cpu = keras_weights.cpu_weights(class_name, weights)
    for module in (keras, tf_keras):
        kw = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
        layer = (module.layers.LSTM(H, **kw) if class_name == "CuDNNLSTM"
                 else module.layers.GRU(H, reset_after=True, recurrent_activation="sigmoid", **kw))
        layer.build((None, T, I))
        layer.set_weights(cpu)
        got_seq, got_h = (np.asarray(v) for v in layer(x)[:2])
        np.testing.assert_allclose(got_seq, seq, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got_h, h.reshape(B, H), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weights, units, error, match", [
    (_random("CuDNNLSTM", 1)[:2], None, LayoutError, "has 3 weights"),
    (_random("CuDNNLSTM", 1), H + 1, LayoutError, "units 5"),
    (_random("CuDNNLSTM", 1)[:2] + [np.zeros(4 * H, np.float32)], None, LayoutError, r"bias must be \[32\]"),
    (_random("CuDNNGRU", 1), None, LayoutError, r"recurrent_kernel must be \[units, 4 \* units\]"),
    ([np.zeros((I, 4 * H)), np.zeros((H, 4 * H, 1)), np.zeros(8 * H)], None, LayoutError, "recurrent_kernel"),
    ([np.zeros((I, 3 * H)), np.zeros((H, 4 * H)), np.zeros(8 * H)], None, LayoutError, "kernel must be"),
], ids=["count", "units", "bias", "gru-as-lstm", "rank", "kernel"])
def test_shape_errors(weights, units, error, match):
    with pytest.raises(error, match=match):
        keras_weights.cpu_weights("CuDNNLSTM", weights, units)


def test_not_a_cudnn_class():
    with pytest.raises(InputError, match="not a CuDNN layer"):
        keras_weights.cpu_weights("LSTM", _random("CuDNNLSTM", 1))


def test_public_alias_and_imports_without_tensorflow_keras_h5py():
    import graphfix.keras
    assert graphfix.keras.cpu_weights is keras_weights.cpu_weights
    code = ("import sys; [sys.modules.__setitem__(m, None) for m in ('tensorflow', 'keras', 'tf_keras', 'h5py')]; "
            "import graphfix.keras, graphfix.cudnn.keras_weights; "
            "assert not {'tensorflow', 'keras', 'h5py'} & {m for m in sys.modules if sys.modules[m] is not None}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
