"""Test support for the inspect, extract and verify tests: a real SavedModel, ROCm-ordered buffers, the CLI.

    save_keras3_lstm_gru(path)   Keras 3: Input [B, 5, 3] -> LSTM(4, return_sequences) -> GRU(2),
                                 exported with its cuDNN path taken (two batch-major CudnnRNNV3
                                 nodes inside a library function, params read from variables).
                                 Returns the weights it was given, so a test can rebuild it.
    to_ifoc(buf, spec)           a cuDNN-ordered LSTM buffer rewritten as ROCm Keras exports it
                                 (gates i, f, o, c), built by unpack -> permute -> pack, not by
                                 graphfix.cudnn.gates.
    run_cli(args, cwd)           `python -m graphfix ...` in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from graphfix.cudnn import layout

REPO = Path(__file__).resolve().parents[2]
KERAS3_SHAPE = (5, 3)  # time, features


def keras3_lstm_gru():
    """The Keras 3 model of save_keras3_lstm_gru, freshly built (random weights)."""
    import keras

    x = keras.Input(KERAS3_SHAPE, name="x")
    y = keras.layers.LSTM(4, return_sequences=True, name="lstm")(x)
    y = keras.layers.GRU(2, name="gru")(y)
    return keras.Model(x, y, name="model")


def save_keras3_lstm_gru(path: Path, seed: int = 0) -> list[np.ndarray]:
    """Export the model with random weights through Keras's cuDNN path; return the weights."""
    from builders import keras_graphs

    rng = np.random.default_rng(seed)
    model = keras3_lstm_gru()
    weights = [rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    with keras_graphs.keras3_cudnn_path():
        model.export(str(path), verbose=False)
    return weights


def to_ifoc(buf: np.ndarray, spec: layout.RnnSpec) -> np.ndarray:
    """The same LSTM weights in a buffer whose gates are ordered i, f, o, c (ROCm/MIOpen)."""
    assert spec.mode == "lstm"
    swap = [0, 1, 3, 2]
    weights = layout.unpack(buf, spec)
    for w in weights:
        w.W = None if w.W is None else w.W[swap]
        w.R, w.bW, w.bR = w.R[swap], w.bW[swap], w.bR[swap]
    return layout.pack(weights, spec, dtype=buf.dtype)


def env() -> dict:
    out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), out.get("PYTHONPATH")]))
    return out


def run_cli(args, cwd: Path | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """`python -m graphfix *args` (or `python -c code *args`) in a subprocess; text output."""
    command = [sys.executable, "-m", "graphfix"] if code is None else [sys.executable, "-c", code]
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=300)
