"""`--target onnx --verify`: run the ONNX model in onnxruntime (CPU provider) before it is written.

1. Every cuDNN op, alone (`emit.standalone_model` of its plan), on random inputs of its
   static shapes (unknown batch 3, unknown time 5; random lengths in 0..T+1 for V3, so
   padding, zero and over-long lengths are all exercised), against `reference.forward`, the
   numpy model of cuDNN, fed the op's params buffer from the model, unpacked by
   `layout.unpack` (not by the code that built the ONNX weights).
2. The whole ONNX model, on random inputs (unknown dimensions 3; integers 1, booleans true),
   against graphfix's CPU conversion of the same frozen graph (`targets.cpu`) run by TensorFlow.

An op passes within its dtype's tolerance (float32 1e-5); the whole model within 1e-4 for
float32 (other layers add their own rounding), 2e-2 for float16.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from graphfix import rewrite
from graphfix.cudnn import gates, layout, reference
from graphfix.errors import GraphfixError
from graphfix.targets.cpu import CpuTarget
from graphfix.targets.onnx.emit import standalone_model

OP_TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-5}
MODEL_TOLERANCE = {"float16": 2e-2, "bfloat16": 1e-1, "float32": 1e-4, "float64": 1e-4}
BATCH, TIME, DIM = 3, 5, 3


@dataclasses.dataclass
class Result:
    """One comparison: a cuDNN op against the reference, or the whole model against the CPU target."""

    what: str
    tolerance: float
    max_abs: float = float("nan")
    error: str | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.max_abs <= self.tolerance

    def line(self) -> str:
        if self.error:
            return f"FAIL {self.what}: could not run: {self.error}"
        return (f"{'ok  ' if self.ok else 'FAIL'} {self.what}: max abs error {self.max_abs:.2e} "
                f"(tolerance {self.tolerance:.0e}){'; ' + self.note if self.note else ''}")


@dataclasses.dataclass
class OnnxVerification:
    """What `report.verification` holds for --target onnx (the interface of tools.verify.Verification)."""

    results: list[Result]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def lines(self) -> list[str]:
        out = ["verify: the ONNX model in onnxruntime (CPU), each cuDNN op against the numpy reference of cuDNN, "
               "the whole model against graphfix's CPU conversion"]
        out += [f"  {r.line()}" for r in self.results]
        largest = max((r.max_abs for r in self.results if r.error is None), default=None)
        out.append(f"verify {'passed' if self.ok else 'FAILED'}"
                   + (f": largest abs error {largest:.2e}" if largest is not None else ""))
        return out

    def failure(self) -> str:
        bad = [f"{r.what} ({r.error or f'max abs error {r.max_abs:.2e} > {r.tolerance:.0e}'})"
               for r in self.results if not r.ok]
        return "verification failed: " + "; ".join(bad)


def verify(model, plans: dict, frozen, gate_order: str, fops, seed: int = 0) -> OnnxVerification:
    """Both checks (module doc). model: the ONNX ModelProto; frozen: `frozen.Frozen`; fops: the ForwardOps."""
    rng = np.random.default_rng(seed)
    results = [check_op(plans[fop.node], fop, rng) for fop in fops]
    results.append(check_model(model, frozen, gate_order, rng))
    return OnnxVerification(results)


def _session(model):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def check_op(rnn, fop, rng) -> Result:
    """One op's standalone ONNX model against reference.forward (module doc, check 1)."""
    spec = rnn.spec
    dims = fop.x_shape.as_list() if fop.x_shape.rank == 3 else [None, None, None]
    T, B = (dims[0], dims[1]) if rnn.time_major else (dims[1], dims[0])
    T, B = T or TIME, B or BATCH
    LD = spec.num_layers * spec.num_dirs
    np_dtype = np.float32 if rnn.dtype == "bfloat16" else np.dtype(rnn.dtype)
    x = rng.uniform(-1, 1, (T, B, spec.input_size))
    h0 = rng.uniform(-0.5, 0.5, (LD, B, spec.hidden_size))
    c0 = rng.uniform(-0.5, 0.5, (LD, B, spec.num_units))
    if not rnn.time_major:  # batch-major states are [L*D, B, .] in memory (CUDNN_FACTS §1)
        x, h0, c0 = x.transpose(1, 0, 2), h0.reshape(B, LD, -1), c0.reshape(B, LD, -1)
    feeds = {"x": x.astype(np_dtype), "h": h0.astype(np_dtype)}
    if spec.mode == "lstm":
        feeds["c"] = c0.astype(np_dtype)
    lengths = None
    if rnn.has_lengths:
        lengths = rng.integers(0, T + 2, B).astype(np.int32)
        lengths[0] = T
        feeds["lengths"] = lengths
    what = f"{fop.op} {fop.node!r} -> ONNX {rnn.onnx_op}, {rnn.dtype}"
    note = f"input {list(feeds['x'].shape)}" + (f", lengths {lengths.tolist()}" if lengths is not None else "")
    result = Result(what, OP_TOLERANCE[rnn.dtype], note=note)
    try:
        got = _session(standalone_model(rnn)).run(None, feeds)
    except Exception as exc:  # onnxruntime raises its own types; any means "does not run"
        result.error = str(exc).splitlines()[0][:300]
        return result
    weights = layout.unpack(gates.to_cudnn_order(np.asarray(fop.params, np.float64), spec, fop.gate_order), spec)
    ref_lengths = None if lengths is None else np.minimum(lengths, T)
    want = reference.forward(spec, weights, feeds["x"], feeds["h"], feeds.get("c"), ref_lengths,
                             time_major=rnn.time_major)
    result.max_abs = max(float(np.max(np.abs(g.astype(np.float64) - w))) if w.size else 0.0
                         for g, w in zip(got, want) if w is not None)
    return result


def check_model(model, frozen, gate_order: str, rng) -> Result:
    """The whole ONNX model against the CPU target's conversion of the same graph (check 2)."""
    session = _session(model)
    feeds = {}
    for info in session.get_inputs():
        dims = [d if isinstance(d, int) else DIM for d in info.shape]
        feeds[info.name] = _random_value(info.type, dims, rng)
    by_name = dict((n, t) for t, n in frozen.inputs)
    result = Result("whole model", 0.0, note=", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items()))
    try:
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        converted, _ = rewrite.convert_graph_def(frozen.graph_def, CpuTarget(), gate_order=gate_order)
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(converted, name="")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            values = sess.run([t for t, _ in frozen.outputs], {by_name[k]: v for k, v in feeds.items()})
    except (GraphfixError, tf.errors.OpError, ValueError, KeyError) as exc:
        result.error = str(exc).strip().splitlines()[0][:300]
        return result
    except Exception as exc:  # onnxruntime's errors
        result.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
        return result
    errors, tolerance = [], 0.0
    for (_, name), want in zip(frozen.outputs, values):
        want = np.asarray(want)
        if not np.issubdtype(want.dtype, np.floating):
            errors.append(0.0 if np.array_equal(got[name], want) else float("inf"))
            continue
        tolerance = max(tolerance, MODEL_TOLERANCE.get(want.dtype.name, 1e-4))
        if got[name].shape != want.shape:
            result.error = f"output {name!r} has shape {list(got[name].shape)}, the CPU graph's {list(want.shape)}"
            return result
        errors.append(float(np.max(np.abs(got[name].astype(np.float64) - want))) if want.size else 0.0)
    result.tolerance = tolerance or MODEL_TOLERANCE["float32"]
    result.max_abs = max(errors, default=0.0)
    return result


def _random_value(onnx_type: str, dims: list[int], rng) -> np.ndarray:
    """tensor(float) -> uniform(-1, 1); integers 1 (a valid id for any embedding); booleans True."""
    kind = onnx_type[len("tensor("):-1]
    if kind in ("float", "float16", "double"):
        dtype = {"float": np.float32, "float16": np.float16, "double": np.float64}[kind]
        return rng.uniform(-1, 1, dims).astype(dtype)
    if kind == "bool":
        return np.ones(dims, bool)
    return np.ones(dims, {"int32": np.int32, "int64": np.int64}.get(kind, np.int64))
