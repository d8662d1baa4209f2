"""Where a converted model's inference time goes, op type by op type, beside Keras's CPU path.

Usage (from the repo root):
    .venv/bin/python scripts/bench_profile.py [--kind lstm|gru] [--case B,T,I,H] [--bidirectional] [--runs N]

A diagnostic for bench_inference.py. One Keras 3 layer (return_sequences=True) is exported
twice: on the cuDNN path, then converted by graphfix, and on Keras's own CPU path. Each
SavedModel is loaded into a TF1 Session (tf.compat.v1.saved_model.load) and run with
RunOptions(trace_level=FULL_TRACE); the RunMetadata step stats give every executed node's
time, summed here per op type, per call. Also printed: untraced wall time per call (median,
interleaved) and node executions per call (loop bodies count once per step).
Tracing adds overhead per node, so the traced totals overstate small ops; compare shares.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path

import bench_common as bc

bc.quiet_tensorflow()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def op_type(node_stats) -> str:
    # timeline_label looks like "name = Op(inputs)"; some nodes (e.g. _SOURCE) have none.
    label = node_stats.timeline_label
    if " = " in label:
        return label.split(" = ", 1)[1].split("(", 1)[0]
    return node_stats.node_name.split(":")[0]


class SessionModel:
    """A SavedModel's serving signature in its own Graph and Session (CPU only)."""

    def __init__(self, path: Path):
        self.graph = tf.Graph()
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        with self.graph.as_default():
            meta = tf.compat.v1.saved_model.load(self.session, ["serve"], str(path))
        sig = meta.signature_def["serving_default"]
        self.feed = next(iter(sig.inputs.values())).name
        self.fetch = next(iter(sig.outputs.values())).name

    def __call__(self, x, options=None, metadata=None):
        return self.session.run(self.fetch, {self.feed: x}, options=options, run_metadata=metadata)

    def profile(self, x, runs: int):
        """Per op type: (microseconds per call, executions per call), and traced ms per call."""
        totals, counts, nodes = collections.Counter(), collections.Counter(), collections.Counter()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        traced = []
        for _ in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            start = time.perf_counter()
            self(x, options, metadata)
            traced.append(time.perf_counter() - start)
            for dev in metadata.step_stats.dev_stats:
                for ns in dev.node_stats:
                    kind = op_type(ns)
                    totals[kind] += ns.all_end_rel_micros
                    counts[kind] += 1
                    nodes[(kind, ns.node_name)] += ns.all_end_rel_micros
        self.node_times = {k: v / runs for k, v in nodes.items()}
        return ({k: (totals[k] / runs, counts[k] / runs) for k in totals}, bc.median(traced))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="lstm", choices=["lstm", "gru"])
    parser.add_argument("--case", default="32,100,128,256", help="batch,steps,features,units")
    parser.add_argument("--runs", type=int, default=5, help="traced runs per model")
    parser.add_argument("--rounds", type=int, default=9, help="untraced interleaved rounds")
    parser.add_argument("--top", type=int, default=14)
    parser.add_argument("--nodes", default="", help="comma list of op types whose costliest nodes to list")
    parser.add_argument("--bidirectional", action="store_true", help="the layer in keras.layers.Bidirectional")
    args = parser.parse_args(argv)
    B, T, I, H = (int(v) for v in args.case.split(","))

    import graphfix
    import keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, I))
    layer = getattr(keras.layers, args.kind.upper())(H, return_sequences=True)
    model = keras.Model(inp, (keras.layers.Bidirectional(layer) if args.bidirectional else layer)(inp))
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench_profile_") as tmp:
        work = Path(tmp)
        with bc.keras3_cudnn_path():
            model.export(str(work / "cudnn"), verbose=False)
        graphfix.convert(work / "cudnn", work / "converted")
        model.export(str(work / "cpu"), verbose=False)
        models = {"graphfix": SessionModel(work / "converted"), "keras3 CPU": SessionModel(work / "cpu")}
    diff = float(np.max(np.abs(models["graphfix"](x) - models["keras3 CPU"](x))))
    samples = bc.interleave({k: (lambda m: lambda: m(x))(m) for k, m in models.items()}, rounds=args.rounds)
    profiles = {k: m.profile(x, args.runs) for k, m in models.items()}

    kind = ("bidirectional " if args.bidirectional else "") + args.kind.upper()
    print(f"# bench_profile: {kind} batch {B} x {T} steps, {I} -> {H} (TF1 Session, FULL_TRACE)\n")
    print("\n".join(bc.machine_lines()))
    print(f"- max abs difference graphfix vs keras3 CPU: {diff:.1e}\n")
    rows = []
    for name in models:
        per_op, traced = profiles[name]
        rows.append([name, bc.fmt_ms(bc.median(samples[name])), bc.fmt_ms(traced),
                     f"{sum(v[1] for v in per_op.values()):.0f}",
                     f"{sum(v[0] for v in per_op.values()) / 1e3:.1f}"])
    print(bc.markdown_table(["model", "untraced ms/call (median)", "traced ms/call",
                             "node executions/call", "sum of node times ms/call"], rows))
    for name in models:
        per_op, _ = profiles[name]
        total = sum(v[0] for v in per_op.values()) or 1.0
        top = sorted(per_op.items(), key=lambda kv: -kv[1][0])[:args.top]
        print(f"\n## {name}: top op types by summed node time per call\n")
        print(bc.markdown_table(["op", "ms/call", "share", "executions/call", "us/execution"],
                                [[k, f"{us / 1e3:.2f}", f"{us / total:.0%}", f"{n:.0f}", f"{us / max(n, 1):.1f}"]
                                 for k, (us, n) in top]))
        for op in filter(None, args.nodes.split(",")):
            top_nodes = sorted(((us, name) for (kind, name), us in models[name].node_times.items() if kind == op),
                               reverse=True)[:args.top]
            print(f"\n{name}: costliest {op} nodes, ms/call: "
                  + "; ".join(f"{node} {us / 1e3:.2f}" for us, node in top_nodes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
