"""How graphfix's conversion time and the converted graph's latency grow with the model.

Usage (from the repo root):
    .venv/bin/python scripts/bench_scaling.py [--quick] [--rounds N] [--mode lstm|gru]

Base: batch 8, 32 steps, 64 features -> 64 units, 1 layer (unidirectional). Three sweeps,
each doubling one dimension from the base (full: steps and units 4 doublings, layers 3;
--quick: 2 doublings each, fewer rounds):

    steps   32 -> 512        units   64 -> 1024        layers  1 -> 8

Per point:

    Keras 3 model (L stacked LSTM/GRU layers, return_sequences) --weights-->
      bench_common.pack_cudnn --> frozen GraphDef, ONE raw CudnnRNNV2 op (num_layers=L,
      Const params) --graphfix.convert(src.pb, dst.pb)--> converted GraphDef

  convert ms   median wall time of graphfix.convert on the .pb files, in this process
               (TensorFlow already imported and warm; repeats: full 3, quick 1)
  graphfix ms  median latency of the converted GraphDef, run in a TF1 Session
  k3_frozen ms the Keras 3 model on its CPU path, frozen and run in a TF1 Session (same runner)
  k3_fn ms     tf.function(model) on Keras 3's CPU path, same weights
  ratios       graphfix / k3_frozen and graphfix / k3_fn (target <= 1.0, aim <= 0.8)

Latencies are interleaved (bench_common.interleave: random order per round) and agreement is checked
(max abs difference).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc

bc.quiet_tensorflow()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

BASE = dict(batch=8, steps=32, features=64, units=64, layers=1)


def sweeps(doublings_steps_units: int, doublings_layers: int):
    for dim, n in (("steps", doublings_steps_units), ("units", doublings_steps_units),
                   ("layers", doublings_layers)):
        for k in range(n + 1):
            point = dict(BASE)
            point[dim] = BASE[dim] * 2 ** k
            yield dim, point


def run_point(mode: str, point: dict, rounds: int, convert_repeats: int, work: Path, index: int):
    import graphfix
    import keras
    keras.utils.set_random_seed(index)
    B, T, I, H, L = (point[k] for k in ("batch", "steps", "features", "units", "layers"))
    inp = keras.Input((T, I))
    y = inp
    for _ in range(L):
        y = getattr(keras.layers, mode.upper())(H, return_sequences=True)(y)
    model = keras.Model(inp, y)
    rnn_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.RNN)]
    weights = [[[np.asarray(w) for w in layer.get_weights()]] for layer in rnn_layers]

    name = f"rnn_{index}"  # one function name per point: they all live in one eager context
    graph_def = bc.raw_cudnn_graph_def(mode, bc.pack_cudnn(mode, weights), B, T, I, H, num_layers=L, name=name)
    src, dst = work / f"{name}.pb", work / f"{name}_cpu.pb"
    src.write_bytes(graph_def.SerializeToString())
    convert_s = []
    for _ in range(convert_repeats):
        start = time.perf_counter()
        report = graphfix.convert(src, dst, force=True)
        convert_s.append(time.perf_counter() - start)
    assert len(report.ops) == 1
    converted = tf.compat.v1.GraphDef()
    converted.ParseFromString(dst.read_bytes())
    assert not any(n.op.startswith("Cudnn") for n in converted.node)
    gf = bc.GraphDefSession(converted)

    signature = [tf.TensorSpec([B, T, I], tf.float32)]
    keras_fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
    k3_frozen = bc.GraphDefSession(*bc.freeze_keras3(model, signature))
    x = np.random.default_rng(index).standard_normal((B, T, I)).astype(np.float32)
    xt = tf.constant(x)
    calls = {"graphfix": lambda: gf(x), "k3_frozen": lambda: k3_frozen(x), "k3_fn": lambda: keras_fn(xt).numpy()}
    diff = max(float(np.max(np.abs(calls["graphfix"]() - calls[k]()))) for k in ("k3_frozen", "k3_fn"))
    samples = bc.interleave(calls, rounds=rounds, warmup=2, min_round_s=0.2 if rounds > 3 else 0.1)
    return dict(point=point, convert_s=convert_s, samples=samples, diff=diff,
                params_mb=sum(w.nbytes for layer in weights for d in layer for w in d) / 1e6)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 doublings per sweep, 3 rounds, 1 conversion")
    parser.add_argument("--rounds", type=int, help="latency rounds (default 9, quick 3)")
    parser.add_argument("--mode", default="lstm", choices=["lstm", "gru"])
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    doublings = (2, 2) if args.quick else (4, 3)
    convert_repeats = 1 if args.quick else 3

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        for index, (dim, point) in enumerate(sweeps(*doublings)):
            print(f"... {dim}: {point}", file=sys.stderr, flush=True)
            results.append((dim, run_point(args.mode, point, rounds, convert_repeats, Path(tmp), index)))

    print(f"# bench_scaling ({'quick' if args.quick else 'full'}: {rounds} latency rounds, "
          f"{convert_repeats} conversion(s) per point), {args.mode.upper()}\n")
    print("\n".join(bc.machine_lines()))
    print(f"- base: batch {BASE['batch']}, {BASE['steps']} steps, {BASE['features']} features -> "
          f"{BASE['units']} units, {BASE['layers']} layer; one raw CudnnRNNV2 op per model (frozen GraphDef)")
    print("- shared machine: timings are noisy; the three candidates are interleaved\n")
    header = ["sweep", "steps", "units", "layers", "params MB", "convert ms", "graphfix ms",
              "k3_frozen ms", "k3_fn ms", "gf/k3_frozen", "gf/k3_fn", "graphfix us/step", "max abs diff"]
    rows = []
    for dim, r in results:
        p = r["point"]
        g, kz, kf = (bc.median(r["samples"][k]) for k in ("graphfix", "k3_frozen", "k3_fn"))
        rows.append([dim, p["steps"], p["units"], p["layers"], f"{r['params_mb']:.2f}",
                     f"{bc.median(r['convert_s']) * 1e3:.0f}", bc.fmt_ms(g), bc.fmt_ms(kz), bc.fmt_ms(kf),
                     bc.fmt_ratio(g / kz), bc.fmt_ratio(g / kf), f"{g / p['steps'] * 1e6:.0f}", f"{r['diff']:.1e}"])
    print(bc.markdown_table(header, rows))

    print("\n## Growth per doubling (value at this point / value at the previous point of the sweep)\n")
    header = ["sweep", "from -> to", "convert x", "graphfix latency x", "k3_frozen latency x"]
    rows, prev = [], {}
    for dim, r in results:
        if dim in prev:
            q = prev[dim]
            rows.append([dim, f"{q['point'][dim]} -> {r['point'][dim]}",
                         bc.fmt_ratio(bc.median(r["convert_s"]) / bc.median(q["convert_s"])),
                         bc.fmt_ratio(bc.median(r["samples"]["graphfix"]) / bc.median(q["samples"]["graphfix"])),
                         bc.fmt_ratio(bc.median(r["samples"]["k3_frozen"]) / bc.median(q["samples"]["k3_frozen"]))])
        prev[dim] = r
    print(bc.markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
