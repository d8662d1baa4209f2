"""Inference latency of graphfix-converted Keras 3 LSTM/GRU SavedModels against CPU baselines.

Usage (from the repo root):
    .venv/bin/python scripts/bench_inference.py [--quick] [--rounds N] [--kinds lstm,gru]

Per case (LSTM and GRU; batch x steps, features -> units: 1x100, 64->128; 32x100, 128->256;
8x500, 256->512), one Keras 3 model with one layer (return_sequences=True):

    keras.Model --export, cuDNN path patched on--> SavedModel (CudnnRNNV3)
                --graphfix.convert--> SavedModel (standard ops) --tf.saved_model.load--> .serve

and the candidates timed against it, all holding the same weights, all in this process:

    graphfix       the converted SavedModel's `serve`
    gf_raw         diagnostic: graphfix on a frozen GraphDef holding one raw CudnnRNNV2 op with
                   the same weights as a Const buffer (packed by bench_common.pack_cudnn, not by
                   graphfix): params folded to constants at conversion, no sequence-lengths
                   masking, no per-call weight repacking. The gap graphfix - gf_raw is what the
                   Keras 3 SavedModel's in-graph params concat/slice and V3 masking cost.
                   Run in a TF1 Session (bench_common.GraphDefSession), so compare it with:
    k3_frozen      diagnostic: the Keras 3 CPU model frozen (convert_variables_to_constants_v2)
                   and run in a TF1 Session, the same runner as gf_raw.
    keras3_fn      tf.function(lambda x: model(x)) of the same Keras 3 model (CPU path)
    keras3_sm      the same model exported WITHOUT the patch (Keras's CPU loop) and reloaded
    tf_keras       tf.function of tf_keras.layers.LSTM / GRU(reset_after=True), same weights
    ort_keras3     onnxruntime on tf2onnx(keras3_fn)   (tf2onnx emits an ONNX Loop)
    ort_tf_keras   onnxruntime on tf2onnx(tf_keras)    (tf2onnx fuses to ONNX LSTM / GRU)

Timing: warm-up calls first, then rounds over the candidates (a random order per round,
a short pause before each candidate), each round a few calls per candidate; medians over
rounds are reported with the interquartile range and the minimum. Agreement: max abs difference of each candidate's output from
graphfix's on the same input. onnxruntime gets intra_op_num_threads = nproc and no
spin-waiting; TensorFlow keeps its defaults (which also use every core).
"""

from __future__ import annotations

import argparse
import os
import logging
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc

bc.quiet_tensorflow()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

CASES = [  # (batch, steps, features, units)
    (1, 100, 64, 128),
    (32, 100, 128, 256),
    (8, 500, 256, 512),
]
CANDIDATES = ["graphfix", "gf_raw", "k3_frozen", "keras3_fn", "keras3_sm", "tf_keras", "ort_keras3", "ort_tf_keras"]


def build_keras3(kind: str, steps: int, features: int, units: int, seed: int):
    import keras
    keras.utils.set_random_seed(seed)
    inp = keras.Input((steps, features))
    out = getattr(keras.layers, kind.upper())(units, return_sequences=True)(inp)
    return keras.Model(inp, out)


def export_and_convert(model, signature, work: Path, tag: str):
    """Export `model` on the cuDNN path and convert it. Returns (converted dir, report, source dir)."""
    import graphfix
    src, dst = work / f"{tag}_cudnn", work / f"{tag}_converted"
    with bc.keras3_cudnn_path():
        model.export(str(src), verbose=False, input_signature=signature)
    assert bc.count_ops(src) > 0, "the export did not take the cuDNN path"
    report = graphfix.convert(src, dst)
    left = bc.count_ops(dst)
    assert left == 0, f"{left} Cudnn op(s) left after conversion"
    return dst, report, src


def onnx_session(fn, signature):
    """tf2onnx-convert a tf.function and open it in onnxruntime; (session, note) or (None, reason)."""
    try:
        import onnxruntime as ort
        import tf2onnx
    except Exception as exc:  # not installed, or broken against this TF/protobuf
        return None, f"n/a ({type(exc).__name__}: {exc})"
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=17)
    except Exception as exc:
        return None, f"n/a (tf2onnx failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    # No spin-waiting after a run: in one process, a spinning pool steals a core from the
    # next candidate timed (this machine has 2). Costs onnxruntime a little wake-up latency.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rnn_ops = sorted({n.op_type for n in proto.graph.node} & {"LSTM", "GRU", "Loop", "Scan"})
    return session, "/".join(rnn_ops)


def tf_keras_twin(kind: str, keras3_layer, steps: int, features: int):
    """tf_keras LSTM / GRU(reset_after=True) holding the Keras 3 layer's weights.

    Both use kernel [I, G*H], recurrent_kernel [H, G*H] and bias [G*H] (LSTM) or [2, G*H]
    (GRU reset_after) with the same gate order; checked by shape here and by output below.
    """
    import tf_keras
    cls = getattr(tf_keras.layers, kind.upper())
    kwargs = {"reset_after": True} if kind == "gru" else {}
    layer = cls(keras3_layer.units, return_sequences=True, **kwargs)
    layer.build((None, steps, features))
    weights = [np.asarray(w) for w in keras3_layer.get_weights()]
    assert [w.shape for w in weights] == [tuple(w.shape) for w in layer.weights], "weight layouts differ"
    layer.set_weights(weights)
    return layer


def run_case(kind, case, rounds, seed, work: Path):
    batch, steps, features, units = case
    model = build_keras3(kind, steps, features, units, seed)
    rnn_layer = model.layers[-1]
    tag = f"{kind}_{batch}x{steps}x{features}x{units}"
    notes = []

    # Keras's default export signature has a free batch dimension. Try that first; if
    # graphfix refuses it, fall back to a fixed batch and say so in the output.
    signature = [tf.TensorSpec([None, steps, features], tf.float32, name="x")]
    start = time.perf_counter()
    try:
        converted_dir, report, _ = export_and_convert(model, signature, work, tag + "_dyn")
        sig_note = "batch None"
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        notes.append(f"{tag}: free-batch export failed to convert ({type(exc).__name__}: {first}); "
                     "fell back to a fixed-batch signature")
        signature = [tf.TensorSpec([batch, steps, features], tf.float32, name="x")]
        converted_dir, report, _ = export_and_convert(model, signature, work, tag + "_fixed")
        sig_note = f"batch {batch} (fixed)"
    export_convert_s = time.perf_counter() - start
    params_note = report.ops[0].params if report.ops else "?"

    converted = tf.saved_model.load(str(converted_dir))
    serve = converted.serve

    keras3_fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
    cpu_dir = work / f"{tag}_cpu"
    model.export(str(cpu_dir), verbose=False, input_signature=signature)
    assert bc.count_ops(cpu_dir) == 0
    cpu_loaded = tf.saved_model.load(str(cpu_dir))  # keep the object: it owns the variables
    keras3_sm = cpu_loaded.serve

    twin = tf_keras_twin(kind, rnn_layer, steps, features)
    tf_keras_fn = tf.function(lambda x: twin(x), input_signature=signature)

    import graphfix
    raw_weights = [[[np.asarray(w) for w in rnn_layer.get_weights()]]]
    raw = bc.raw_cudnn_graph_def(kind, bc.pack_cudnn(kind, raw_weights), batch, steps, features, units,
                                 name=f"rnn_{tag}")
    raw_converted, _ = graphfix.convert_graph_def(raw)
    gf_raw = bc.GraphDefSession(raw_converted)
    k3_frozen = bc.GraphDefSession(*bc.freeze_keras3(model, signature))

    x = np.random.default_rng(seed).standard_normal((batch, steps, features)).astype(np.float32)
    xt = tf.constant(x)
    calls = {
        "graphfix": lambda: serve(xt).numpy(),
        "gf_raw": lambda: gf_raw(x),
        "k3_frozen": lambda: k3_frozen(x),
        "keras3_fn": lambda: keras3_fn(xt).numpy(),
        "keras3_sm": lambda: keras3_sm(xt).numpy(),
        "tf_keras": lambda: tf_keras_fn(xt).numpy(),
    }
    ort_notes = {}
    for name, fn in (("ort_keras3", keras3_fn), ("ort_tf_keras", tf_keras_fn)):
        session, note = onnx_session(fn, signature)
        ort_notes[name] = note
        if session is not None:
            input_name = session.get_inputs()[0].name
            calls[name] = (lambda s, n: lambda: s.run(None, {n: x})[0])(session, input_name)

    reference = calls["graphfix"]()
    diffs = {name: float(np.max(np.abs(np.asarray(fn()) - reference))) for name, fn in calls.items()}
    samples = bc.interleave(calls, rounds=rounds, warmup=2, min_round_s=0.3 if rounds > 5 else 0.1)
    del converted, cpu_loaded
    return dict(kind=kind, case=case, samples=samples, diffs=diffs, ort_notes=ort_notes,
                notes=notes, sig_note=sig_note, params_note=params_note,
                export_convert_s=export_convert_s)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds, short rounds: a smoke run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 3)")
    parser.add_argument("--kinds", default="lstm,gru", help="comma list of lstm, gru")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 15)
    kinds = [k.strip().lower() for k in args.kinds.split(",") if k.strip()]

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for kind in kinds:
            for case in CASES:
                print(f"... {kind} {case}", file=sys.stderr, flush=True)
                results.append(run_case(kind, case, rounds, args.seed, Path(tmp)))

    print(f"# bench_inference ({'quick' if args.quick else 'full'}: {rounds} rounds)\n")
    print("\n".join(bc.machine_lines()))
    print("- TensorFlow: default thread pools; onnxruntime: intra_op_num_threads = nproc, allow_spinning 0")
    print("- shared machine: timings are noisy; candidates are interleaved so noise hits all alike\n")

    header = ["model", "B x T, I -> H"] + [f"{c} ms" for c in CANDIDATES]
    rows = []
    for r in results:
        b, t, i, h = r["case"]
        cells = [r["kind"].upper(), f"{b} x {t}, {i} -> {h}"]
        for c in CANDIDATES:
            if c in r["samples"]:
                lo, hi = bc.quartiles(r["samples"][c])
                cells.append(f"{bc.fmt_ms(bc.median(r['samples'][c]))} ({bc.fmt_ms(lo)}-{bc.fmt_ms(hi)}) "
                             f"min {bc.fmt_ms(min(r['samples'][c]))}")
            else:
                cells.append(r["ort_notes"].get(c, "n/a"))
        rows.append(cells)
    print("## Latency per call: median (interquartile range) and min over rounds, ms\n")
    print(bc.markdown_table(header, rows))

    def ratio(r, num, den, stat):
        if num not in r["samples"] or den not in r["samples"]:
            return "n/a"
        a, b = (stat(r["samples"][num]), stat(r["samples"][den]))
        return bc.fmt_ratio(a / b)

    pairs = [("gf_raw", "k3_frozen")] + [("graphfix", c) for c in CANDIDATES[3:]]
    header = ["model", "B x T, I -> H"] + [f"{'gf' if a == 'graphfix' else a}/{b}" for a, b in pairs]
    rows = []
    for r in results:
        b, t, i, h = r["case"]
        rows.append([r["kind"].upper(), f"{b} x {t}, {i} -> {h}"]
                    + [f"{ratio(r, n, d, bc.median)} ({ratio(r, n, d, min)})" for n, d in pairs])
    print("\n## Ratios: of medians (of mins); graphfix / other. Target <= 1.0 vs Keras's CPU layer, "
          "aim <= 0.8\n")
    print(bc.markdown_table(header, rows))

    header = ["model", "B x T, I -> H", "signature"] + CANDIDATES[1:]
    rows = []
    for r in results:
        b, t, i, h = r["case"]
        rows.append([r["kind"].upper(), f"{b} x {t}, {i} -> {h}", r["sig_note"]]
                    + [f"{r['diffs'][c]:.1e}" if c in r["diffs"] else "n/a" for c in CANDIDATES[1:]])
    print("\n## Agreement: max abs difference from graphfix's output, same input (float32)\n")
    print(bc.markdown_table(header, rows))

    print("\n## Notes\n")
    for r in results:
        b, t, i, h = r["case"]
        onnx = ", ".join(f"{k}: {v}" for k, v in r["ort_notes"].items())
        print(f"- {r['kind'].upper()} {b}x{t},{i}->{h}: export+convert {r['export_convert_s']:.1f} s; "
              f"params {r['params_note']}; ONNX RNN ops: {onnx}")
        for note in r["notes"]:
            print(f"  - {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
