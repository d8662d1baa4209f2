"""Latency of graphfix's TFLite output against the CPU SavedModel and the Keras CPU layer.

Usage (from the repo root):
    .venv/bin/python scripts/bench_tflite.py [--quick] [--rounds N]

Per case (LSTM, bidirectional LSTM and GRU, one layer, return_sequences=True; batch x steps,
features -> units), one Keras 3 model exported on its cuDNN path (patched on, as
tests/builders/saved_models.py does), then, all with the same weights, in this process:

    tflite        graphfix --target tflite -> .tflite (builtins only) in LiteRT (ai-edge-litert),
                  num_threads = nproc. LSTM: fused UNIDIRECTIONAL_SEQUENCE_LSTM; bidirectional
                  LSTM: two of them, the backward one between REVERSE_V2 ops; GRU: WHILE.
    tflite_loop   LSTMs only: the same with --no-fused-lstm (WHILE loops, no cell_clip)
    reverse_pair  bidirectional LSTM only: a .tflite of just the two REVERSE_V2 ops the backward
                  direction costs ([T, B, features] and [T, B, units]). TF 2.21's converter makes
                  no BIDIRECTIONAL_SEQUENCE_LSTM (whose kernel runs the same LSTM loop per
                  direction, lstm_eval.cc, without reversing), so this bounds what it could save.
    cpu_sm        graphfix (default target) SavedModel, tf.saved_model.load(...).serve
    keras         tf.function(lambda x: model(x)) of the Keras 3 model on its CPU path

Timing: warm-up calls, then rounds, each round every candidate (random order) a few calls;
the median per-call time over rounds is reported, and ratios to tflite. Agreement: the max
abs difference of each candidate's output from keras.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CASES = [(1, 100, 64, 128), (8, 100, 128, 256)]  # (batch, steps, features, units)
QUICK = [(1, 20, 8, 16)]


@contextlib.contextmanager
def cudnn_path(enabled: bool):
    import keras
    module = sys.modules["keras.src.backend.tensorflow.rnn"]
    original = module._is_gpu_available
    module._is_gpu_available = lambda: enabled
    try:
        yield keras
    finally:
        module._is_gpu_available = original


def build(kind, batch, steps, features, units, root: Path):
    import keras
    from graphfix import api
    from graphfix.targets import tflite

    x = keras.Input((steps, features))
    layer = (keras.layers.GRU if kind == "gru" else keras.layers.LSTM)(units, return_sequences=True)
    if kind == "bilstm":
        layer = keras.layers.Bidirectional(layer)
    model = keras.Model(x, layer(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.3, 0.3, np.shape(w)).astype(np.float32) for w in model.get_weights()])
    with cudnn_path(True):
        model.export(str(root / "cudnn"), verbose=False,
                     input_signature=[tf.TensorSpec((None, steps, features), tf.float32, name="x")])
    api.convert(root / "cudnn", root / "cpu")
    tflite.convert_for_tflite(root / "cudnn", root / "tfl", batch_size=batch, tflite_file=root / "m.tflite")
    files = {"tflite": root / "m.tflite"}
    if kind != "gru":
        tflite.convert_for_tflite(root / "cudnn", root / "tfl_loop", batch_size=batch,
                                  tflite_file=root / "loop.tflite", fuse_lstm=False)
        files["tflite_loop"] = root / "loop.tflite"
    if kind == "bilstm":
        files["reverse_pair"] = root / "reverse.tflite"
        files["reverse_pair"].write_bytes(reverse_pair(batch, steps, features, units))
    return model, files


def reverse_pair(batch, steps, features, units) -> bytes:
    """The backward direction's two REVERSE_V2 ops alone (its input [T, B, I], its output [T, B, H])."""
    module = tf.Module()
    module.reverse = tf.function(lambda x, y: {"x": tf.reverse(x, [0]), "y": tf.reverse(y, [0])},
                                 input_signature=[tf.TensorSpec([steps, batch, features], name="x"),
                                                  tf.TensorSpec([steps, batch, units], name="y")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.reverse.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def candidates(model, files, root: Path, feed: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter
    from graphfix.targets import tflite

    out = {}
    for name, path in files.items():
        interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count())
        runner = interpreter.get_signature_runner("serving_default")
        ops = sorted(set(tflite.tflite_ops(path.read_bytes())))
        if name == "reverse_pair":  # times the ops, computes nothing comparable (NaN difference)
            x = np.ascontiguousarray(feed.transpose(1, 0, 2))
            y = np.zeros(x.shape[:2] + (runner.get_input_details()["y"]["shape"][2],), np.float32)
            out[name] = (lambda r=runner, x=x, y=y: (r(x=x, y=y), np.nan)[1], ops)
            continue
        out[name] = (lambda r=runner: r(x=feed)["output_0"], ops)
    loaded = tf.saved_model.load(str(root / "cpu"))  # kept alive by the closure: it owns the variables
    x = tf.constant(feed)
    out["cpu_sm"] = (lambda: loaded.serve(x).numpy(), None)
    with cudnn_path(False):
        keras_fn = tf.function(lambda t: model(t, training=False))
        keras_fn(x)  # trace on the CPU path while the patch is off
    out["keras"] = (lambda: keras_fn(x).numpy(), None)
    return out


def time_all(cands, rounds, calls):
    for fn, _ in cands.values():
        for _ in range(3):
            fn()
    samples = {k: [] for k in cands}
    for _ in range(rounds):
        for name in random.sample(list(cands), len(cands)):
            fn = cands[name][0]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, few rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    cases = QUICK if args.quick else CASES
    rounds = 3 if args.quick else args.rounds
    print(f"TF {tf.__version__}, {os.cpu_count()} CPUs; median ms per call over {rounds} rounds")
    for kind in ("lstm", "bilstm", "gru"):
        for batch, steps, features, units in cases:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                model, files = build(kind, batch, steps, features, units, root)
                feed = np.random.default_rng(1).uniform(-1, 1, (batch, steps, features)).astype(np.float32)
                cands = candidates(model, files, root, feed)
                want = cands["keras"][0]()
                times = time_all(cands, rounds, 3 if args.quick else 5)
                print(f"\n{kind} batch {batch} x {steps} steps, {features} -> {units}")
                for name, (fn, ops) in cands.items():
                    err = float(np.max(np.abs(fn() - want)))
                    ratio = times[name] / times["tflite"]
                    print(f"  {name:12s} {times[name] * 1e3:9.3f} ms  x{ratio:5.2f} of tflite  "
                          f"max|diff| vs keras {err:.1e}" + (f"  ops: {', '.join(ops)}" if ops else ""))


if __name__ == "__main__":
    main()
