"""Inference latency of graphfix-converted Keras 3 LSTM/GRU SavedModels against CPU baselines.

Usage (from the repo root):
    .venv/bin/python scripts/bench_inference.py [--quick] [--rounds N] [--kinds lstm,gru]
                                                [--only SUBSTRING] [--diagnostics]

The matrix (CASES): LSTM and GRU; batch 1, 4, 16, 32; 80 to 500 steps; 128 to 512 units;
unidirectional, bidirectional and 2-layer stacked models; unmasked and masked (a Masking
layer, some examples shorter). Each case is marked `tuned` when the CPU target's choices
(BlockLSTMV2 up to batch 8) were measured on it, `unseen` otherwise. --quick runs one case
per topology and mask with 5 rounds.

Per case, one Keras 3 model (return_sequences=True), and the candidates, all holding the
same weights, all in this process:

    keras.Model --export, cuDNN path patched on--> SavedModel (CudnnRNNV3)
                --graphfix.convert--> SavedModel (standard ops) --tf.saved_model.load--> .serve

    graphfix       the converted SavedModel's `serve`
    keras3_sm      the same model exported WITHOUT the patch (Keras's CPU loop) and reloaded
    keras3_fn      tf.function(lambda x: model(x)) of the same Keras 3 model (CPU path)
    tf_keras       tf.function of the same model built with tf_keras layers (GRU reset_after)
    ort            onnxruntime on tf2onnx(tf_keras) (tf2onnx fuses to ONNX LSTM / GRU): the bar
  frozen GraphDefs (unidirectional unmasked cases):
    gf_raw         graphfix on a frozen GraphDef holding one raw CudnnRNNV2 op with the same
                   weights as a Const buffer (packed by bench_common.pack_cudnn, not by graphfix),
                   run in a TF1 Session (bench_common.GraphDefSession); compare with:
    k3_frozen      the Keras 3 CPU model frozen (convert_variables_to_constants_v2), same runner
  --diagnostics adds:
    ort_keras3     onnxruntime on tf2onnx(keras3_fn)   (tf2onnx emits an ONNX Loop)

Timing: warm-up calls first, then rounds over the candidates (a random order per round, a
short pause before each candidate), each round a few calls per candidate. Ratios are paired:
graphfix's time over the other's in the same round, median and interquartile range over the
rounds. A case whose graphfix / keras3_sm spread (IQR / median) passes 10% is timed again
and the narrower run kept (marked "rerun"). The load average is read around each case.
Agreement: max abs difference of each candidate's output from graphfix's on the same input
(masked cases: valid steps only; Keras's CPU path repeats the last output past a sequence's
end where cuDNN writes zeros). onnxruntime gets intra_op_num_threads = nproc and no
spin-waiting; TensorFlow keeps its defaults (which also use every core).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc

bc.quiet_tensorflow()
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    topo: str  # uni | bi | stacked2
    batch: int
    steps: int
    features: int
    units: int
    masked: bool = False
    tuned: bool = False  # the CPU target's choices were measured on this shape

    @property
    def label(self) -> str:
        mask = ", masked" if self.masked else ""
        return f"{self.kind.upper()} {self.topo} {self.batch} x {self.steps}, {self.features} -> {self.units}{mask}"


def _cases() -> list[Case]:
    out = []
    for kind in ("lstm", "gru"):
        out += [
            Case(kind, "uni", 1, 100, 64, 128, tuned=True),
            Case(kind, "uni", 4, 300, 40, 320, tuned=True),
            Case(kind, "uni", 16, 80, 96, 192, tuned=True),
            Case(kind, "uni", 32, 100, 128, 256, tuned=True),
            Case(kind, "uni", 1, 500, 32, 256),
            Case(kind, "uni", 4, 120, 128, 512, tuned=kind == "gru"),  # the GRU split above 1.5 MB (session 8)
            Case(kind, "uni", 32, 80, 64, 512),
            Case(kind, "bi", 1, 100, 64, 128),
            Case(kind, "bi", 16, 80, 96, 192),
            Case(kind, "stacked2", 4, 150, 64, 256),
            Case(kind, "stacked2", 32, 80, 64, 128),
            Case(kind, "uni", 4, 200, 64, 256, masked=True),
            Case(kind, "uni", 16, 80, 96, 192, masked=True),
            Case(kind, "bi", 1, 100, 64, 128, masked=True),
        ]
    return out


CASES = _cases()
QUICK = [(kind, topo, masked, batch) for kind in ("lstm", "gru")
         for topo, masked, batch in (("uni", False, 1), ("uni", False, 16), ("bi", False, 1),
                                     ("stacked2", False, 4), ("uni", True, 4))]
CANDIDATES = ["graphfix", "keras3_sm", "keras3_fn", "tf_keras", "ort", "gf_raw", "k3_frozen", "ort_keras3"]
TARGETS = "converted / Keras <= 0.8 for LSTM at batch <= 4, <= 0.9 for GRU at batch 1, <= 1.0 for every shape"


def target_for(case: Case) -> float:
    if case.kind == "lstm" and case.batch <= 4:
        return 0.8
    if case.kind == "gru" and case.batch == 1:
        return 0.9
    return 1.0


def build_models(case: Case, seed: int):
    """(Keras 3 model, tf_keras twin with the same weights)."""
    import keras
    import tf_keras
    keras.utils.set_random_seed(seed)

    def stack(layers, inp):
        h = layers.Masking(0.0)(inp) if case.masked else inp
        rnn = lambda: getattr(layers, case.kind.upper())(case.units, return_sequences=True)
        if case.topo == "bi":
            return layers.Bidirectional(rnn())(h)
        h = rnn()(h)
        return rnn()(h) if case.topo == "stacked2" else h

    inp = keras.Input((case.steps, case.features))
    model = keras.Model(inp, stack(keras.layers, inp))
    tinp = tf_keras.Input((case.steps, case.features))
    twin = tf_keras.Model(tinp, stack(tf_keras.layers, tinp))  # GRU: reset_after=True, as Keras 3
    weights = [np.asarray(w) for w in model.get_weights()]
    assert [w.shape for w in weights] == [tuple(w.shape) for w in twin.get_weights()], "weight layouts differ"
    twin.set_weights(weights)
    return model, twin


def export_and_convert(model, signature, work: Path, tag: str):
    """Export `model` on the cuDNN path and convert it. Returns (converted dir, report)."""
    import graphfix
    src, dst = work / f"{tag}_cudnn", work / f"{tag}_converted"
    with bc.keras3_cudnn_path():
        model.export(str(src), verbose=False, input_signature=signature)
    assert bc.count_ops(src) > 0, "the export did not take the cuDNN path"
    report = graphfix.convert(src, dst)
    left = bc.count_ops(dst)
    assert left == 0, f"{left} Cudnn op(s) left after conversion"
    return dst, report


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
    return session, "/".join(rnn_ops) or "no RNN op"


def case_input(case: Case, seed: int):
    """x [B, T, I] and, when masked, the valid-step mask [B, T] (every other example 3/4 long; batch 1: short)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case.batch, case.steps, case.features)).astype(np.float32)
    if not case.masked:
        return x, None
    lengths = np.array([case.steps if b % 2 else (3 * case.steps) // 4 for b in range(case.batch)])
    valid = np.arange(case.steps)[None, :] < lengths[:, None]
    return np.where(valid[:, :, None], x, np.float32(0)), valid


def paired_ratios(samples, num: str, den: str) -> list[float]:
    return [a / b for a, b in zip(samples[num], samples[den])]


def spread(xs) -> tuple[float, float, float]:
    lo, hi = bc.quartiles(xs)
    return bc.median(xs), lo, hi


def run_case(case: Case, rounds: int, seed: int, work: Path, diagnostics: bool) -> dict:
    model, twin = build_models(case, seed)
    tag = f"{case.kind}_{case.topo}_{case.batch}x{case.steps}x{case.features}x{case.units}{'_m' if case.masked else ''}"
    notes = []
    load_before = os.getloadavg()[0]

    # Keras's default export signature has a free batch dimension. Try that first; if
    # graphfix refuses it, fall back to a fixed batch and say so in the output.
    signature = [tf.TensorSpec([None, case.steps, case.features], tf.float32, name="x")]
    start = time.perf_counter()
    try:
        converted_dir, report = export_and_convert(model, signature, work, tag + "_dyn")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        notes.append(f"free-batch export failed to convert ({type(exc).__name__}: {first}); fixed batch")
        signature = [tf.TensorSpec([case.batch, case.steps, case.features], tf.float32, name="x")]
        converted_dir, report = export_and_convert(model, signature, work, tag + "_fixed")
    export_convert_s = time.perf_counter() - start
    params_note = report.ops[0].params if report.ops else "?"

    converted = tf.saved_model.load(str(converted_dir))
    keras3_fn = tf.function(lambda x: model(x, training=False), input_signature=signature)
    cpu_dir = work / f"{tag}_cpu"
    model.export(str(cpu_dir), verbose=False, input_signature=signature)
    assert bc.count_ops(cpu_dir) == 0
    cpu_loaded = tf.saved_model.load(str(cpu_dir))  # keep the object: it owns the variables
    tf_keras_fn = tf.function(lambda x: twin(x, training=False), input_signature=signature)

    x, valid = case_input(case, seed)
    xt = tf.constant(x)
    calls = {
        "graphfix": lambda: converted.serve(xt).numpy(),
        "keras3_sm": lambda: cpu_loaded.serve(xt).numpy(),
        "keras3_fn": lambda: keras3_fn(xt).numpy(),
        "tf_keras": lambda: tf_keras_fn(xt).numpy(),
    }
    if case.topo == "uni" and not case.masked:
        import graphfix
        raw = bc.raw_cudnn_graph_def(case.kind, bc.pack_cudnn(case.kind, [[model.layers[-1].get_weights()]]),
                                     case.batch, case.steps, case.features, case.units, name=f"rnn_{tag}")
        gf_raw = bc.GraphDefSession(graphfix.convert_graph_def(raw)[0])
        k3_frozen = bc.GraphDefSession(*bc.freeze_keras3(model, signature))
        calls["gf_raw"], calls["k3_frozen"] = (lambda: gf_raw(x)), (lambda: k3_frozen(x))
    ort_notes = {}
    for name, fn in (("ort", tf_keras_fn),) + ((("ort_keras3", keras3_fn),) if diagnostics else ()):
        session, note = onnx_session(fn, signature)
        ort_notes[name] = note
        if session is not None:
            input_name = session.get_inputs()[0].name
            calls[name] = (lambda s, n: lambda: s.run(None, {n: x})[0])(session, input_name)

    reference = calls["graphfix"]()
    keep = (lambda a: a) if valid is None else (lambda a: np.asarray(a)[valid])
    diffs = {name: float(np.max(np.abs(keep(fn()) - keep(reference)))) for name, fn in calls.items()}
    min_round_s = 0.3 if rounds > 5 else 0.15
    samples = bc.interleave(calls, rounds=rounds, warmup=2, min_round_s=min_round_s)
    _, lo, hi = spread(paired_ratios(samples, "graphfix", "keras3_sm"))
    width = (hi - lo) / bc.median(paired_ratios(samples, "graphfix", "keras3_sm"))
    if width > 0.10:
        again = bc.interleave(calls, rounds=rounds, warmup=1, min_round_s=min_round_s, seed=1)
        _, lo2, hi2 = spread(paired_ratios(again, "graphfix", "keras3_sm"))
        width2 = (hi2 - lo2) / bc.median(paired_ratios(again, "graphfix", "keras3_sm"))
        notes.append(f"rerun: ratio spread {width:.0%} of the median, then {width2:.0%}; kept the narrower")
        if width2 < width:
            samples = again
    return dict(case=case, samples=samples, diffs=diffs, ort_notes=ort_notes, notes=notes,
                params_note=params_note, export_convert_s=export_convert_s,
                load=(load_before, os.getloadavg()[0]))


def verdict(ratios: list[float], target: float) -> str:
    med, lo, hi = spread(ratios)
    if hi <= target:
        return "met"
    if lo > target:
        return "missed"
    return "met (within noise)" if med <= target else "missed (within noise)"


def fmt_ratio_spread(ratios: list[float]) -> str:
    med, lo, hi = spread(ratios)
    return f"{med:.2f} ({lo:.2f}-{hi:.2f})"


def report(results: list[dict], rounds: int, quick: bool) -> None:
    print(f"# bench_inference ({'quick' if quick else 'full'}: {rounds} rounds)\n")
    print("\n".join(bc.machine_lines()))
    print("- TensorFlow: default thread pools; onnxruntime: intra_op_num_threads = nproc, allow_spinning 0")
    print("- shared machine: candidates are interleaved so noise hits all alike; ratios are paired per round\n")

    names = [c for c in CANDIDATES if any(c in r["samples"] for r in results)]
    header = ["case", "tuned"] + [f"{c} ms" for c in names]
    rows = []
    for r in results:
        cells = [r["case"].label, "tuned" if r["case"].tuned else "unseen"]
        for c in names:
            if c in r["samples"]:
                med, lo, hi = spread(r["samples"][c])
                cells.append(f"{bc.fmt_ms(med)} ({bc.fmt_ms(lo)}-{bc.fmt_ms(hi)})")
            else:
                cells.append(r["ort_notes"].get(c, "-"))
        rows.append(cells)
    print("## Latency per call: median (interquartile range) over rounds, ms\n")
    print(bc.markdown_table(header, rows))

    pairs = [("graphfix", "keras3_sm"), ("graphfix", "keras3_fn"), ("graphfix", "tf_keras"), ("graphfix", "ort"),
             ("gf_raw", "k3_frozen")]
    header = (["case", "target"] + [f"{'gf' if a == 'graphfix' else a} / {b}" for a, b in pairs]
              + ["vs keras3_sm", "vs keras3_fn", "load avg"])
    rows = []
    for r in results:
        s, case = r["samples"], r["case"]
        target = target_for(case)
        cells = [case.label, f"<= {target}"]
        for a, b in pairs:
            cells.append(fmt_ratio_spread(paired_ratios(s, a, b)) if a in s and b in s else "-")
        cells += [verdict(paired_ratios(s, "graphfix", "keras3_sm"), target),
                  verdict(paired_ratios(s, "graphfix", "keras3_fn"), target),
                  f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}"]
        rows.append(cells)
    print(f"\n## Ratios, paired per round: median (interquartile range). Targets: {TARGETS}\n")
    print(bc.markdown_table(header, rows))

    header = ["case"] + [c for c in names if c != "graphfix"]
    rows = [[r["case"].label] + [f"{r['diffs'][c]:.1e}" if c in r["diffs"] else "-" for c in names if c != "graphfix"]
            for r in results]
    print("\n## Agreement: max abs difference from graphfix's output, same input (float32; masked: valid steps)\n")
    print(bc.markdown_table(header, rows))

    print("\n## Notes\n")
    for r in results:
        onnx = ", ".join(f"{k}: {v}" for k, v in r["ort_notes"].items())
        print(f"- {r['case'].label}: export+convert {r['export_convert_s']:.1f} s; params {r['params_note']}; "
              f"ONNX RNN ops: {onnx}")
        for note in r["notes"]:
            print(f"  - {note}")
    missed = [r for r in results
              if "missed" in verdict(paired_ratios(r["samples"], "graphfix", "keras3_sm"), target_for(r["case"]))]
    print(f"\n{len(results) - len(missed)} of {len(results)} cases meet their target against keras3_sm "
          "(within noise counted by the median)" + (": missed " + "; ".join(r["case"].label for r in missed)
                                                    if missed else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one case per topology and mask, 5 rounds")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 5)")
    parser.add_argument("--kinds", default="lstm,gru", help="comma list of lstm, gru")
    parser.add_argument("--only", default="", help="run only cases whose label contains this (case-insensitive)")
    parser.add_argument("--diagnostics", action="store_true", help="also onnxruntime on tf2onnx(Keras 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    kinds = {k.strip().lower() for k in args.kinds.split(",") if k.strip()}
    cases = [c for c in CASES if c.kind in kinds and args.only.lower() in c.label.lower()]
    if args.quick:
        seen, picked = set(), []
        for c in cases:
            key = (c.kind, c.topo, c.masked, c.batch)
            if key in QUICK and key not in seen:
                seen.add(key)
                picked.append(c)
        cases = picked

    results = []
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for case in cases:
            print(f"... {case.label}", file=sys.stderr, flush=True)
            results.append(run_case(case, rounds, args.seed, Path(tmp), args.diagnostics))
    report(results, rounds, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
