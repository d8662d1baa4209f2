"""Check a conversion before it is written: `python -m graphfix MODEL --verify`.

Two checks, both on CPU:

1. Every rewritten op, as it sits in the converted graph (its standard-op function and its
   weights: the folded Consts, or the in-graph slicing of the params tensor), is cut out
   and run on random inputs of the op's real shapes (static dimensions of the model; 3 for
   an unknown batch, 5 for unknown time; the model's sequence lengths when constant, else
   random ones in 1..T). Its outputs (output, output_h, and output_c for LSTM) are compared
   with `reference.forward`, the numpy model of cuDNN's semantics, fed the op's params
   buffer from the *input* model (unpacked by `layout.unpack`, independent of the code
   that built the converted weights). Params known only at run time (fed, or variables
   that cannot be read) are replaced by a random buffer, fed to both sides, and said so.

       original params --gates.to_cudnn_order--> layout.unpack --> reference.forward --.
                                                                                      compare
       converted graph: [Consts | unpack_params(params)] --> PartitionedCall(op fn) --'

2. The whole converted model runs once on random inputs (every unknown dimension 3; integer
   inputs 1, valid ids for any embedding; booleans true): a GraphDef's placeholders are fed
   and every output nothing consumes is fetched; a SavedModel (staged in a temporary folder,
   its variables linked, not copied) is loaded and each signature called.

Errors: largest absolute error max|got - want| and normwise relative error
max|got - want| / max|want| over all outputs of the op. An op passes when its absolute
error is within TOLERANCE of its dtype (bfloat16 carries 8 significant bits, hence 5e-2).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from graphfix import rewrite
from graphfix.cudnn import gates, layout, reference
from graphfix.graph.bodies import Body, bodies, reachable_functions
from graphfix.graph.saved_values import ValueFinder
from graphfix.io import saved_model_dir
from graphfix.report import Report, plural
from graphfix.targets import cpu
from graphfix.tools.inspect import FoundOp, survey_graph_def

TOLERANCE = {"float16": 1e-2, "bfloat16": 5e-2, "float32": 1e-5, "float64": 1e-10}
DEFAULT_BATCH, DEFAULT_TIME, DEFAULT_DIM = 3, 5, 3  # unknown sizes: batch and time of one op; any model input
PREFIX = "graphfix_verify"


@dataclasses.dataclass
class OpCheck:
    """The comparison of one rewritten op with the reference."""

    where: str
    node: str
    op: str
    dtype: str
    inputs: str               # e.g. "input [3, 5, 4], sequence lengths [5, 2, 4] (constant)"
    params: str               # "the model's (constant)" | "the model's (saved variables)" | "random: ..."
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    error: str | None = None  # why the op could not be run

    @property
    def tolerance(self) -> float:
        return TOLERANCE[self.dtype]

    @property
    def ok(self) -> bool:
        return self.error is None and self.max_abs <= self.tolerance

    def line(self) -> str:
        head = f"{self.op} {self.node!r} ({self.where}), {self.dtype}"
        if self.error:
            return f"FAIL {head}: could not run: {self.error}"
        return (f"{'ok  ' if self.ok else 'FAIL'} {head}: max abs error {self.max_abs:.2e} "
                f"(tolerance {self.tolerance:.0e}), max rel error {self.max_rel:.2e}; {self.inputs}; "
                f"params {self.params}")


@dataclasses.dataclass
class ModelRun:
    """One run of the whole converted model (a GraphDef, or one SavedModel signature)."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} whole model, {self.name}: {self.detail}"


@dataclasses.dataclass
class Verification:
    checks: list[OpCheck]
    runs: list[ModelRun]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and all(r.ok for r in self.runs)

    def lines(self) -> list[str]:
        out = [f"verify: {plural(len(self.checks), 'op')} against the numpy reference of cuDNN, on CPU"]
        out += [f"  {c.line()}" for c in self.checks]
        out += [f"  {r.line()}" for r in self.runs]
        largest = max((c.max_abs for c in self.checks if c.error is None), default=None)
        verdict = "passed" if self.ok else "FAILED"
        out.append(f"verify {verdict}" + (f": largest abs error {largest:.2e}" if largest is not None else ""))
        return out

    def failure(self) -> str:
        """One line naming what failed, for the error message."""
        bad = [f"{c.node!r} ({c.error or f'max abs error {c.max_abs:.2e} > {c.tolerance:.0e}'})"
               for c in self.checks if not c.ok]
        bad += [f"the whole model ({r.name}: {r.detail})" for r in self.runs if not r.ok]
        return "verification failed: " + "; ".join(bad)


# --- per-op checks ------------------------------------------------------------------------

def check_ops(original: graph_pb2.GraphDef, converted: graph_pb2.GraphDef, report: Report,
              gate_order: str = gates.CUDNN, saved_dir: Path | None = None, meta=None,
              seed: int = 0, run=None) -> tuple[list[OpCheck], dict]:
    """Check every op the report says was converted (see the module doc).

    Returns the checks, and the sizes of placeholders that feed a params input directly
    (for `run_graph_def`). run: how to run one op's graph (`_run`: a TensorFlow Session;
    `verify_tflite`: LiteRT).
    """
    converted_ops = {(op.where, op.node) for op in report.ops}
    found = [op for op in survey_graph_def(original, gate_order, "", saved_dir, meta)
             if (op.where, op.node) in converted_ops and op.forward is not None]
    by_where = {b.where: b for b in bodies(converted)}
    rng = np.random.default_rng(seed)
    finder = ValueFinder(converted, saved_dir, meta)  # the values a weights call reads (below)
    checks = [check_op(op, by_where[op.where], converted, rng, run or _run, finder) for op in found]
    sizes = {}
    for op in found:
        ref = op.forward.params_ref
        node = None if ref.is_arg else op.body.node(ref.node)
        if op.where == "graph" and node is not None and node.op == "Placeholder":
            sizes[node.name] = [layout.params_size(op.forward.spec)]
    return checks, sizes


def check_op(found: FoundOp, body: Body, converted: graph_pb2.GraphDef, rng: np.random.Generator,
             run=None, finder: ValueFinder | None = None) -> OpCheck:
    """Run one converted op (node `found.node` of `body`) and compare it with the reference.
    run(graph_def, feeds, fetches) -> values: `_run` (a Session) unless given.
    finder: values in `converted`, for weights read straight from the model's variables
    (`rewrite.weight_sources`); without it, or for random params, that call is replaced by
    the target's params slicing, fed the same buffer as the reference."""
    fop = found.forward
    spec, dtype = fop.spec, fop.dtype
    np_dtype = dtype.as_numpy_dtype
    T, B, lengths, lengths_note = _sizes(fop, rng)
    LD = spec.num_layers * spec.num_dirs
    x = rng.uniform(-1, 1, (T, B, spec.input_size))
    h0 = rng.uniform(-0.5, 0.5, (LD, B, spec.hidden_size))
    c0 = rng.uniform(-0.5, 0.5, (LD, B, spec.num_units))
    if not fop.time_major:  # batch-major states are [L*D, B, .] in memory (CUDNN_FACTS §1)
        x, h0, c0 = x.transpose(1, 0, 2), h0.reshape(B, LD, -1), c0.reshape(B, LD, -1)
    x, h0, c0 = (a.astype(np_dtype) for a in (x, h0, c0))
    if found.params is not None and found.params.value is not None:
        buf = found.params.value
        params_note = "the model's (saved variables)" if found.params.variables else "the model's (constant)"
    else:
        buf = (rng.standard_normal(layout.params_size(spec)) * 0.3).astype(np_dtype)
        why = found.params.why_not if found.params is not None else "not constant"
        params_note = f"random (the model's are known only at run time: {why})"
    shape = list(x.shape)
    check = OpCheck(found.where, found.node, fop.op, dtype.name,
                    f"input {shape}, sequence lengths {lengths_note}" if lengths is not None else f"input {shape}",
                    params_note)
    try:
        model_params = found.params is not None and found.params.value is not None
        graph_def, feeds, sources = _op_graph(body, found.node, fop, converted, finder if model_params else None)
        values = {"x": x, "h": h0, "c": c0, "lengths": lengths, "params": buf, **sources}
        feed_dict = {f"{PREFIX}/{name}:0": values[name] for name in feeds}
        fetches = [f"{PREFIX}/op:{i}" for i in range(3 if spec.mode == "lstm" else 2)]
        got = (run or _run)(graph_def, feed_dict, fetches)
    except (tf.errors.OpError, ValueError, KeyError) as exc:
        check.error = _first_line(exc)
        return check
    weights = layout.unpack(gates.to_cudnn_order(np.asarray(buf).astype(np.float64), spec, fop.gate_order), spec)
    ref_lengths = None if lengths is None else np.minimum(lengths, T)
    want = reference.forward(spec, weights, x, h0, c0, ref_lengths, time_major=fop.time_major)
    diffs, scale = [], 0.0
    for g, w in zip(got, want):
        g = np.asarray(g).astype(np.float64)
        if g.shape != w.shape:
            check.error = f"output shape {list(g.shape)}, the reference's {list(w.shape)}"
            return check
        diffs.append(float(np.max(np.abs(g - w))) if w.size else 0.0)
        scale = max(scale, float(np.max(np.abs(w))) if w.size else 0.0)
    check.max_abs = max(diffs)
    check.max_rel = check.max_abs / scale if scale > 0 else check.max_abs
    return check


def _sizes(fop: rewrite.ForwardOp, rng):
    """(T, B, lengths or None, description) from the op's static input shape and lengths."""
    dims = fop.x_shape.as_list() if fop.x_shape.rank == 3 else [None, None, None]
    T, B = (dims[0], dims[1]) if fop.time_major else (dims[1], dims[0])
    T = T or DEFAULT_TIME
    if fop.lengths is not None:
        lengths = np.asarray(fop.lengths, np.int32).reshape(-1)
        return T, lengths.size, lengths, f"{lengths.tolist()} (constant)"
    B = B or DEFAULT_BATCH
    if fop.lengths_ref is None:
        return T, B, None, None
    lengths = rng.integers(1, T + 1, B).astype(np.int32)
    lengths[0] = T
    return T, B, lengths, f"{lengths.tolist()} (random)"


def _op_graph(body: Body, node_name: str, fop: rewrite.ForwardOp, converted: graph_pb2.GraphDef,
              finder: ValueFinder | None = None):
    """A GraphDef holding only the converted op: placeholders -> [weights] -> call.

    Returns (graph_def, feeds, values of the weights call's sources when they were found)."""
    call = body.node(node_name)
    if call is None or call.op != "PartitionedCall":
        raise ValueError(f"the converted graph has no call named {node_name!r}")
    refs = body.data_inputs(call)
    n_data = 4 if fop.has_sequence_lengths else 3
    out = graph_pb2.GraphDef()
    feeds = ["x", "h", "c"] + (["lengths"] if n_data == 4 else [])
    dtypes = {"x": fop.dtype, "h": fop.dtype, "c": fop.dtype, "lengths": tf.int32, "params": fop.dtype}
    inputs = [f"{PREFIX}/{name}" for name in feeds]
    copied: dict[str, str] = {}
    sources: dict[str, np.ndarray] = {}
    extra_functions = []
    for ref in refs[n_data:]:
        source = body.node(ref.node) if not ref.is_arg else None
        if source is None or source.op not in ("Const", "PartitionedCall"):
            raise ValueError(f"weight input {ref.node!r} of the converted op is not a Const or the params unpacking")
        if ref.node not in copied:
            node = out.node.add()
            node.CopyFrom(source)
            node.name = f"{PREFIX}/w{len(copied)}"
            node.device = ""
            found = None
            if source.op == "PartitionedCall" and source.attr["f"].func.name.endswith("_weights"):
                found = [finder.find(body, r) for r in body.data_inputs(source)] if finder else None
                if found is None or any(f.value is None for f in found):  # slice the reference's buffer instead
                    unpack = cpu.trace_params_unpack(fop.spec, fop.dtype, f"{PREFIX}_unpack_params", fop.gate_order)
                    extra_functions += unpack.function_defs
                    node.attr["f"].func.name = unpack.name
                    node.attr["Tin"].list.type[:] = [t.as_datatype_enum for t in unpack.input_types]
                    found = None
                else:  # the weights call itself, fed the model's values of what it reads
                    del node.input[:]
                    for i, f in enumerate(found):
                        sources[f"source{i}"] = f.value
                        node.input.append(f"{PREFIX}/source{i}")
                        feeds.append(f"source{i}")
                        dtypes[f"source{i}"] = tf.as_dtype(f.value.dtype)
            if source.op == "PartitionedCall" and found is None:
                del node.input[:]
                node.input.append(f"{PREFIX}/params")
                feeds.append("params")
            copied[ref.node] = node.name
        inputs.append(f"{copied[ref.node]}:{ref.index}")
    for name in feeds:
        node = out.node.add()
        node.name, node.op = f"{PREFIX}/{name}", "Placeholder"
        node.attr["dtype"].type = dtypes[name].as_datatype_enum
    node = out.node.add()
    node.CopyFrom(call)
    node.name, node.device = f"{PREFIX}/op", ""
    del node.input[:]
    node.input.extend(inputs)
    view = graph_pb2.GraphDef()
    view.node.extend(out.node)
    view.library.CopyFrom(converted.library)
    view.library.function.extend(extra_functions)
    needed = reachable_functions(view)
    out.library.function.extend(f for f in view.library.function if f.signature.name in needed)
    out.versions.CopyFrom(converted.versions)
    return out, feeds, sources


def _run(graph_def: graph_pb2.GraphDef, feeds: dict, fetches: list):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        return session.run(fetches, feed_dict=feeds)


# --- whole-model runs ----------------------------------------------------------------------

def run_graph_def(converted: graph_pb2.GraphDef, seed: int = 0, sizes: dict | None = None) -> ModelRun:
    """Feed every placeholder random values and fetch every output nothing consumes.

    sizes: placeholder name -> shape, for inputs whose size the graph does not say (a fed
    params buffer).
    """
    rng = np.random.default_rng(seed)
    try:
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(converted, name="")
        consumed = {t.op.name for op in graph.get_operations() for t in op.inputs}
        consumed |= {c.name for op in graph.get_operations() for c in op.control_inputs}
        feeds, described = {}, []
        for op in graph.get_operations():
            if op.type == "Placeholder":
                shape = tf.TensorShape((sizes or {}).get(op.name, op.outputs[0].shape))
                value = _random_value(shape, op.outputs[0].dtype, rng, op.name)
                feeds[op.outputs[0]] = value
                described.append(f"{op.name} {list(value.shape)}")
        fetches = [t for op in graph.get_operations() if op.type not in ("Placeholder", "Const")
                   and op.name not in consumed for t in op.outputs]
        if not fetches:
            return ModelRun("graph", False, "found no output to fetch")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            values = session.run(fetches, feed_dict=feeds)
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        return ModelRun("graph", False, f"failed: {_first_line(exc)}")
    return ModelRun("graph", True, f"fed {', '.join(described) or 'nothing'}; {_outputs(fetches, values)}")


def run_saved_model(src: Path, converted: saved_model_pb2.SavedModel, seed: int = 0) -> list[ModelRun]:
    """Load the converted SavedModel (staged beside nothing: a temporary folder) and call every signature."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="graphfix_verify_") as tmp:
        stage = Path(tmp) / "model"
        stage.mkdir()
        for entry in Path(src).iterdir():
            if entry.name not in (saved_model_dir.PB, saved_model_dir.PBTXT, saved_model_dir.FINGERPRINT):
                os.symlink(entry.resolve(), stage / entry.name)
        (stage / saved_model_dir.PB).write_bytes(converted.SerializeToString(deterministic=True))
        tags = list(converted.meta_graphs[0].meta_info_def.tags) or None
        try:
            loaded = tf.saved_model.load(str(stage), tags=tags)
        except Exception as exc:  # the loader raises many types; all mean "does not load"
            return [ModelRun("load", False, f"failed to load: {_first_line(exc)}")]
        runs = []
        for key in sorted(loaded.signatures):
            function = loaded.signatures[key]
            try:
                _, specs = function.structured_input_signature
                inputs = {name: tf.constant(_random_value(spec.shape, spec.dtype, rng, name))
                          for name, spec in sorted(specs.items())}
                outputs = function(**inputs)
            except Exception as exc:  # a failing signature is the finding, whatever its type
                runs.append(ModelRun(f"signature {key!r}", False, f"failed: {_first_line(exc)}"))
                continue
            described = ", ".join(f"{k} {list(v.shape)}" for k, v in inputs.items())
            names = sorted(outputs)
            runs.append(ModelRun(f"signature {key!r}", True,
                                 f"fed {described}; {_outputs(names, [outputs[n].numpy() for n in names])}"))
        if not runs:
            runs.append(ModelRun("signatures", False, "the SavedModel has no signature to call"))
        return runs


def _random_value(shape: tf.TensorShape, dtype: tf.DType, rng, name: str) -> np.ndarray:
    if shape.rank is None:
        raise ValueError(f"input {name!r} has unknown rank; cannot make a random value for it")
    # One size for every unknown dimension: batch and time often appear unknown in several
    # inputs (x [None, None, I], h [L, None, H]) and must agree.
    dims = [d if d is not None else DEFAULT_DIM for d in shape.as_list()]
    if dtype.is_floating:
        return rng.uniform(-1, 1, dims).astype(dtype.as_numpy_dtype)
    if dtype.is_integer:  # ids: 1 is valid for any embedding with two rows, and never a mask's 0
        return np.ones(dims, dtype.as_numpy_dtype)
    if dtype == tf.bool:
        return np.ones(dims, bool)
    raise ValueError(f"input {name!r} has dtype {dtype.name}; cannot make a random value for it")


def _outputs(names, values) -> str:
    bad = sum(int(np.size(v) - np.count_nonzero(np.isfinite(v))) for v in values
              if np.issubdtype(np.asarray(v).dtype, np.floating))
    shapes = ", ".join(f"{getattr(n, 'name', n)} {list(np.shape(v))}" for n, v in zip(names, values))
    return f"ran on CPU, got {shapes}" + (f" ({bad} non-finite values)" if bad else "")


def _first_line(exc: BaseException) -> str:
    """The informative line of an error message (TensorFlow's start with "Graph execution error:")."""
    text = str(getattr(exc, "message", None) or exc).strip()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("Detected at node") and line.strip() != "Graph execution error:"]
    if len(lines) > 1 and lines[0].startswith("Node: "):  # "Node: 'rnn'" then the reason
        lines = [f"{lines[0][len('Node: '):]}: {lines[1]}"]
    return (lines or [type(exc).__name__])[0][:300]


# --- entry points used by api.convert -------------------------------------------------------

def verify_graph_def(original: graph_pb2.GraphDef, converted: graph_pb2.GraphDef, report: Report,
                     gate_order: str = gates.CUDNN) -> Verification:
    """Both checks for a converted GraphDef."""
    checks, sizes = check_ops(original, converted, report, gate_order)
    return Verification(checks, [run_graph_def(converted, sizes=sizes)])


def verify_saved_model(src: Path, original: saved_model_pb2.SavedModel, converted: saved_model_pb2.SavedModel,
                       report: Report, gate_order: str = gates.CUDNN) -> Verification:
    """Both checks for a converted SavedModel (every MetaGraph)."""
    checks = []
    for meta, new_meta in zip(original.meta_graphs, converted.meta_graphs):
        checks += check_ops(meta.graph_def, new_meta.graph_def, report, gate_order, Path(src), meta)[0]
    return Verification(checks, run_saved_model(src, converted))
