"""Latency of graphfix's ONNX output in onnxruntime against tf2onnx's ONNX of the Keras CPU model
and against graphfix's converted TensorFlow graph.

Usage (from the repo root):
    .venv/bin/python scripts/bench_onnx.py [--quick] [--rounds N]

Per case (Keras 3 LSTM or GRU, one layer, return_sequences=True; batch x steps, features -> units),
one model, its weights random, then in this process, all with the same weights:

    graphfix_onnx   model.export on the cuDNN path (patched on, as tests/builders/saved_models.py
                    does) -> graphfix --target onnx -> onnxruntime (CPU provider)
    tf2onnx_keras   tf2onnx.convert.from_function of the same model traced on its CPU path (what a
                    user converts today without a GPU model) -> onnxruntime (CPU provider)
    tf_cpu          graphfix --target cpu SavedModel, tf.saved_model.load(...).serve
    keras_cpu       tf.function of the Keras 3 model on its CPU path

Timing: `bench_common.interleave` (warm-up, then rounds visiting the candidates in random order);
median per-call time over rounds, and ratios to graphfix_onnx. Agreement: max abs difference
of each candidate's output from keras_cpu. Both onnxruntime sessions use the same default
options. The ops line names tf2onnx's recurrent op (a fused LSTM/GRU, or a Loop).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

import bench_common as bc

bc.quiet_tensorflow()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CASES = [(1, 100, 64, 128), (16, 80, 96, 192)]  # (batch, steps, features, units)
QUICK = [(1, 20, 8, 16)]


@contextlib.contextmanager
def cpu_path():
    import keras  # noqa: F401
    module = sys.modules[bc.KERAS3_RNN_MODULE]
    original = module._is_gpu_available
    module._is_gpu_available = lambda: False
    try:
        yield
    finally:
        module._is_gpu_available = original


def build(kind: str, batch: int, steps: int, features: int, units: int, root: Path):
    import keras
    from tf2onnx import convert

    from graphfix import api
    from graphfix.targets import onnx as onnx_target

    x = keras.Input((steps, features))
    layer = (keras.layers.LSTM if kind == "lstm" else keras.layers.GRU)(units, return_sequences=True)
    model = keras.Model(x, layer(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.uniform(-0.3, 0.3, np.shape(w)).astype(np.float32) for w in model.get_weights()])
    signature = [tf.TensorSpec((None, steps, features), tf.float32, name="x")]
    with bc.keras3_cudnn_path():
        model.export(str(root / "cudnn"), verbose=False, input_signature=signature)
    onnx_target.convert_to_onnx(root / "cudnn", root / "graphfix.onnx")
    api.convert(root / "cudnn", root / "cpu")
    with cpu_path():
        fn = tf.function(lambda t: model(t, training=False))
        proto, _ = convert.from_function(fn, input_signature=signature, output_path=str(root / "tf2onnx.onnx"))
    ops = sorted({n.op_type for n in proto.graph.node} & {"LSTM", "GRU", "Loop", "Scan"})
    return model, ops


def candidates(model, root: Path, feed: np.ndarray, ort_threads: int = 0) -> dict:
    import onnxruntime as ort

    out = {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    for name, file in (("graphfix_onnx", "graphfix.onnx"), ("tf2onnx_keras", "tf2onnx.onnx")):
        session = ort.InferenceSession(str(root / file), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        out[name] = lambda s=session, n=input_name: s.run(None, {n: feed})[0]
    loaded = tf.saved_model.load(str(root / "cpu"))  # kept alive by the closure: it owns the variables
    x = tf.constant(feed)
    out["tf_cpu"] = lambda: loaded.serve(x).numpy()
    with cpu_path():
        keras_fn = tf.function(lambda t: model(t, training=False))
        keras_fn(x)  # trace on the CPU path while the patch is off
    out["keras_cpu"] = lambda: keras_fn(x).numpy()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, few rounds (a smoke run)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ort-threads", type=int, default=0,
                        help="onnxruntime intra-op threads for both ONNX candidates (0: its default, one per core; "
                             "1 is steadier on a busy shared machine, where spinning threads wait on each other)")
    args = parser.parse_args()
    cases = QUICK if args.quick else CASES
    rounds = 3 if args.quick else args.rounds
    print("\n".join(bc.machine_lines()))
    print(f"\nmedian ms per call over {rounds} interleaved rounds; ratio = time / graphfix_onnx's; "
          f"onnxruntime intra-op threads {args.ort_threads or 'default'}\n")
    rows = []
    for kind in ("lstm", "gru"):
        for batch, steps, features, units in cases:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                model, tf2onnx_ops = build(kind, batch, steps, features, units, root)
                feed = np.random.default_rng(1).uniform(-1, 1, (batch, steps, features)).astype(np.float32)
                cands = candidates(model, root, feed, args.ort_threads)
                want = cands["keras_cpu"]()
                errors = {name: float(np.max(np.abs(fn() - want))) for name, fn in cands.items()}
                samples = bc.interleave(cands, rounds)
                times = {name: bc.median(v) for name, v in samples.items()}
                base = times["graphfix_onnx"]
                rows.append([f"{kind} {batch} x {steps}, {features} -> {units}",
                             *(f"{bc.fmt_ms(times[n])} ({bc.fmt_ratio(times[n] / base)})" for n in cands),
                             ", ".join(tf2onnx_ops) or "-",
                             f"{max(errors['graphfix_onnx'], errors['tf_cpu']):.1e}"])
                print(rows[-1], flush=True)
    header = ["case", *(f"{n} ms (ratio)" for n in cands), "tf2onnx's op", "max abs diff vs keras_cpu"]
    print("\n" + bc.markdown_table(header, rows))


if __name__ == "__main__":
    main()
