"""The CPU target's per-call choices, timed against each other on one layer.

    .venv/bin/python scripts/bench_choices.py [--kind lstm|gru] [--case B,T,I,H ...] [--rounds N]

`graphfix.targets.cpu` picks, per call, between BlockLSTMV2 (LSTM, batch <=
BLOCK_LSTM_MAX_BATCH), a While loop that multiplies each step's input inside the loop
(batch >= IN_LOOP_MIN_BATCH), one that multiplies all steps' inputs in one MatMul first,
and (unidirectional, batch >= SPLIT_MIN_BATCH) two halves of the batch side by side, each
a loop of the first kind.
This script traces the CPU function (`cpu.rnn_forward`, one layer, constant weights) once
per variant, with the module's switches set for that variant, checks that every variant
gives the same numbers, and times them interleaved in one process (`bench_common.interleave`).
Ratios are paired per round against the first variant: median (interquartile range).

Use it to move a threshold: run the shapes on both sides of it, here and on another day.
Whole-model timings against Keras are `bench_inference.py`'s; the weight stacking BlockLSTMV2
does per call when weights are variables is not in these numbers (constant weights fold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_common as bc  # noqa: E402

bc.quiet_tensorflow()
import tensorflow as tf  # noqa: E402

from graphfix.cudnn.layout import RnnSpec, params_size  # noqa: E402
from graphfix.cudnn.weights import graph_weights_from_buffer  # noqa: E402
from graphfix.targets import cpu, cpu_loop  # noqa: E402

# variant -> the switches it runs under: (module, name) -> value
NO_SPLIT = {(cpu_loop, "SPLIT_PRODUCT_MIN_BYTES"): 10**15}  # one recurrent MatMul a step
WHOLE = {**NO_SPLIT, (cpu, "SPLIT_MIN_BATCH"): 10**9}  # the whole batch in one computation
VARIANTS = {
    "block": {**WHOLE, (cpu, "BLOCK_LSTM"): True, (cpu, "BLOCK_LSTM_MAX_BATCH"): 10**9},
    "loop_per_step": {**WHOLE, (cpu, "BLOCK_LSTM"): False, (cpu_loop, "IN_LOOP_MIN_BATCH"): 1},
    "loop_one_matmul": {**WHOLE, (cpu, "BLOCK_LSTM"): False, (cpu_loop, "IN_LOOP_MIN_BATCH"): 10**9},
    "halves": {**NO_SPLIT, (cpu, "SPLIT_MIN_BATCH"): 2},  # two halves of the batch side by side, each a per-step loop
    # the recurrent product as two column halves (per-step loop, from IN_LOOP_MIN_BATCH on)
    "split": {(cpu_loop, "SPLIT_PRODUCT_MIN_BYTES"): 1},
    "no_split": NO_SPLIT,  # the CPU target's choices, the recurrent product never split
    "default": {},  # what the CPU target chooses
}
DEFAULT_CASES = ["1,100,64,128", "4,120,128,512", "16,80,96,192", "32,100,128,256"]


def traced_variant(spec: RnnSpec, weights: list, switches: dict):
    """cpu.rnn_forward for one layer, traced with the modules' switches set to `switches`.

    Returns a concrete function (x [T, B, I], h0 [1, B, H], c0 [1, B, H]) -> y [T, B, H].
    """
    saved = {(module, name): getattr(module, name) for module, name in switches}
    call = cpu.RnnCall(spec, tf.float32, batch_halves=True)  # halves only where SPLIT_MIN_BATCH allows
    try:
        for (module, name), value in switches.items():
            setattr(module, name, value)
        signature = [tf.TensorSpec([None, None, spec.input_size]), tf.TensorSpec([1, None, spec.num_units]),
                     tf.TensorSpec([1, None, spec.num_units])]
        fn = tf.function(lambda x, h0, c0: cpu.rnn_forward(call, x, h0, c0, None, weights)[0])
        return fn.get_concrete_function(*signature)
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


def run_case(kind: str, case: str, variants: list[str], rounds: int) -> list[list[str]]:
    """Table rows (variant, ms, ratio to the first variant) for one B,T,I,H case."""
    B, T, I, H = (int(v) for v in case.split(","))
    spec = RnnSpec(kind, 1, H, I)
    rng = np.random.default_rng(0)
    buf = (rng.standard_normal(params_size(spec)) * 0.1).astype(np.float32)
    weights = [tf.constant(np.ascontiguousarray(v)) for v in graph_weights_from_buffer(buf, spec)]
    x = tf.constant(rng.standard_normal((T, B, I)).astype(np.float32))
    h0 = tf.constant(rng.standard_normal((1, B, H)).astype(np.float32))
    c0 = tf.constant(rng.standard_normal((1, B, H)).astype(np.float32))
    fns = {v: traced_variant(spec, weights, VARIANTS[v]) for v in variants}
    outs = {v: fn(x, h0, c0).numpy() for v, fn in fns.items()}
    worst = max(float(np.abs(outs[v] - outs[variants[0]]).max()) for v in variants)
    if worst > 1e-5:
        raise SystemExit(f"{kind} {case}: variants disagree by {worst:.2e} (> 1e-5)")
    samples = bc.interleave({v: (lambda fn=fn: fn(x, h0, c0)) for v, fn in fns.items()}, rounds=rounds)
    base = np.array(samples[variants[0]])
    rows = []
    for v in variants:
        times, ratios = np.array(samples[v]), np.array(samples[v]) / base
        q1, q3 = bc.quartiles(list(ratios))
        rows.append([f"{kind} {B} x {T}, {I} -> {H}", v, bc.fmt_ms(bc.median(list(times))),
                     f"{bc.fmt_ratio(bc.median(list(ratios)))} ({q1:.2f}-{q3:.2f})",
                     f"{worst:.1e}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["lstm", "gru"], default="lstm")
    parser.add_argument("--case", action="append", help="B,T,I,H (repeatable; default: four shapes)")
    parser.add_argument("--variants", help=f"comma list of {', '.join(VARIANTS)} "
                                           "(default: all for LSTM; for GRU all but block)")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    default = list(VARIANTS) if args.kind == "lstm" else [v for v in VARIANTS if v != "block"]
    variants = args.variants.split(",") if args.variants else default
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; expected {', '.join(VARIANTS)}")
    if args.kind == "gru" and "block" in variants:
        parser.error("BlockLSTMV2 is an LSTM op: no 'block' variant for GRU")
    print(f"# bench_choices: {args.kind}, {args.rounds} interleaved rounds\n")
    print("\n".join(bc.machine_lines()) + "\n")
    rows = []
    for case in args.case or DEFAULT_CASES:
        print(f"... {case}", file=sys.stderr, flush=True)
        rows += run_case(args.kind, case, variants, args.rounds)
    print(bc.markdown_table(["case", "variant", "ms", f"/ {variants[0]}", "max diff"], rows))


if __name__ == "__main__":
    main()
