"""`--verify` with `--target tflite`: the converted ops and the whole model run in LiteRT, on CPU.

Two checks, before anything is written (`convert_for_tflite(check=...)`):

1. Every rewritten op, cut out of the converted graph as `graphfix.tools.verify` does (its
   function, its weights as Consts: a fed params buffer is folded in, as TFLite wants its
   LSTM weights), converted alone with TFLITE_BUILTINS and run in LiteRT (default XNNPack
   delegate) on random inputs of the op's shapes with the target's fixed batch; compared with
   `reference.forward`, the numpy model of cuDNN. A fused LSTM gives no final cell state
   (graphfix fuses only where it is unused), so output_c is not compared there.
2. The whole .tflite runs in LiteRT on random inputs for every signature; its outputs are
   compared with the TFLite-ready SavedModel's (TensorFlow, same inputs) within WHOLE_ATOL.

    op graph --TFLiteConverter--> .tflite --LiteRT--> y, h (, c) --compare-- reference.forward
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from graphfix.cudnn import gates
from graphfix.errors import GraphfixError
from graphfix.graph.bodies import bodies, reachable_functions
from graphfix.report import Report
from graphfix.targets.tflite import to_tflite
from graphfix.targets.tflite.stub_lstm import is_composite
from graphfix.tools import verify
from graphfix.tools.inspect import survey_graph_def

WHOLE_ATOL = 1e-4  # float32, LiteRT against TensorFlow: XNNPack sums in another order


def verify_tflite(original, converted, ready_dir: Path, content: bytes, report: Report, batch: int | None,
                  gate_order: str = gates.CUDNN, src: Path | None = None) -> verify.Verification:
    """Both checks (module doc). original/converted: SavedModel protos before and after the
    rewrite; ready_dir: the TFLite-ready SavedModel; content: its .tflite; batch: the fixed batch."""
    checks = []
    src = src if src is not None and Path(src).is_dir() else None  # a GraphDef file has no checkpoint
    rng = np.random.default_rng(0)
    converted_ops = {(op.where, op.node) for op in report.ops}
    for meta, new_meta in zip(original.meta_graphs, converted.meta_graphs):
        by_where = {b.where: b for b in bodies(new_meta.graph_def)}
        for found in survey_graph_def(meta.graph_def, gate_order, "", src, meta):
            if (found.where, found.node) not in converted_ops or found.forward is None:
                continue
            found = dataclasses.replace(found, forward=_with_batch(found.forward, batch))
            checks.append(verify.check_op(found, by_where[found.where], new_meta.graph_def, rng, run_litert_op))
    for check in checks:
        check.where += " [LiteRT]"
    return verify.Verification(checks, run_whole(ready_dir, content))


def _with_batch(fop, batch):
    """The op with the target's fixed batch in its input shape (the converted function has it built in)."""
    if batch is None or fop.x_shape.rank != 3:
        return fop
    dims = fop.x_shape.as_list()
    dims[1 if fop.time_major else 0] = batch
    return dataclasses.replace(fop, x_shape=tf.TensorShape(dims))


def run_litert_op(graph_def: graph_pb2.GraphDef, feeds: dict, fetches: list) -> list[np.ndarray]:
    """`verify._run` through TFLite: placeholders get the feeds' static shapes, a fed params
    buffer becomes a Const; the op is saved as a one-signature TF1 SavedModel and converted as
    the target converts models (`to_tflite`: TFLITE_BUILTINS), then run in LiteRT."""
    from ai_edge_litert import interpreter as litert

    graph_def = _static_graph(graph_def, feeds)
    inputs = {name.split("/")[-1].split(":")[0]: name for name in feeds
              if not name.startswith(f"{verify.PREFIX}/params")}
    fetches = fetches[:2] if _is_fused(graph_def) else fetches  # a fused LSTM leaves output_c zero (module doc)
    # The signature's outputs need their static shapes: the converter types the fused LSTM's
    # results from them, and leaves it unfused (a While loop) when they are unknown.
    shapes = [np.shape(v) for v in verify._run(graph_def, feeds, fetches)]
    with tempfile.TemporaryDirectory(prefix="graphfix_verify_tflite_") as tmp:
        _write_op_model(Path(tmp) / "op", graph_def, inputs, dict(zip(fetches, shapes)), feeds)
        try:
            content = to_tflite(Path(tmp) / "op")
        except GraphfixError as exc:
            raise ValueError(exc.reason) from None
    try:
        runner = litert.Interpreter(model_content=content).get_signature_runner("serving_default")
        got = runner(**{key: np.asarray(feeds[name]) for key, name in inputs.items()})
    except (RuntimeError, ValueError) as exc:  # LiteRT's kernels and delegates raise RuntimeError
        raise ValueError(f"LiteRT failed: {verify._first_line(exc)}") from None
    return [np.asarray(got[f"out{i}"]) for i in range(len(fetches))]


def _write_op_model(path: Path, graph_def, inputs: dict, fetches: dict, feeds: dict) -> None:
    """A TF1 SavedModel (no variables) of graph_def: signature "serving_default", inputs
    {key: placeholder tensor} -> outputs out0, out1, ... ({tensor: static shape})."""
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.append("serve")
    meta.graph_def.CopyFrom(graph_def)
    sig = meta.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    for key, name in inputs.items():
        value = np.asarray(feeds[name])
        info = sig.inputs[key]
        info.name, info.dtype = name, tf.as_dtype(value.dtype).as_datatype_enum
        info.tensor_shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
    dtype = tf.as_dtype(np.asarray(feeds[next(iter(inputs.values()))]).dtype).as_datatype_enum
    for i, (name, shape) in enumerate(fetches.items()):
        info = sig.outputs[f"out{i}"]
        info.name, info.dtype = name, dtype
        info.tensor_shape.CopyFrom(tf.TensorShape(shape).as_proto())
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(
        saved_model_pb2.SavedModel(saved_model_schema_version=1, meta_graphs=[meta]).SerializeToString())


def _static_graph(graph_def: graph_pb2.GraphDef, feeds: dict) -> graph_pb2.GraphDef:
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    for node in out.node:
        value = feeds.get(f"{node.name}:0")
        if node.op != "Placeholder" or value is None:
            continue
        value = np.asarray(value)
        if node.name == f"{verify.PREFIX}/params":
            dtype = node.attr["dtype"].type
            node.op = "Const"
            node.attr.clear()
            node.attr["dtype"].type = dtype
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value.astype(tf.as_dtype(dtype).as_numpy_dtype)))
        else:
            node.attr["shape"].shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
    return out


def _is_fused(graph_def: graph_pb2.GraphDef) -> bool:
    """Whether the op's function calls a fused-LSTM composite (`stub_lstm.is_composite`)."""
    used = reachable_functions(graph_def)
    return any(f.signature.name in used and is_composite(f) for f in graph_def.library.function)


def _open_dims(detail) -> tf.TensorShape:
    """LiteRT's input shape with its open dimensions (-1 in shape_signature) open again."""
    dims = detail.get("shape_signature", detail["shape"])
    return tf.TensorShape([int(d) if d >= 0 else None for d in dims])


def run_whole(ready_dir: Path, content: bytes, seed: int = 0) -> list[verify.ModelRun]:
    """Every signature of the .tflite in LiteRT against the ready SavedModel in TensorFlow, same random inputs."""
    from ai_edge_litert import interpreter as litert

    rng = np.random.default_rng(seed)
    runs = []
    try:
        interpreter = litert.Interpreter(model_content=content)
        loaded = tf.saved_model.load(str(ready_dir))
    except Exception as exc:  # noqa: BLE001 (either side failing to load is the finding)
        return [verify.ModelRun("LiteRT", False, f"failed to load: {verify._first_line(exc)}")]
    for key, spec in sorted(interpreter.get_signature_list().items()):
        name = f"signature {key!r} in LiteRT"
        try:
            runner = interpreter.get_signature_runner(key)
            details = runner.get_input_details()
            feeds = {k: verify._random_value(_open_dims(d), tf.as_dtype(d["dtype"]), rng, k)
                     for k, d in sorted(details.items())}
            got = {k: np.asarray(v) for k, v in runner(**feeds).items()}
            want = {k: v.numpy() for k, v in loaded.signatures[key](**{k: tf.constant(v) for k, v in feeds.items()}).items()}
        except Exception as exc:  # noqa: BLE001 (a failing signature is the finding, whatever its type)
            runs.append(verify.ModelRun(name, False, f"failed: {verify._first_line(exc)}"))
            continue
        errors = {k: float(np.max(np.abs(got[k].astype(np.float64) - want[k]))) if want[k].size else 0.0
                  for k in want if k in got and got[k].shape == want[k].shape}
        bad = sorted(set(want) - set(errors))
        worst = max(errors.values(), default=0.0)
        ok = not bad and worst <= WHOLE_ATOL
        detail = (f"fed {', '.join(f'{k} {list(v.shape)}' for k, v in feeds.items())}; max abs error against "
                  f"TensorFlow {worst:.2e} (tolerance {WHOLE_ATOL:.0e})"
                  + (f"; outputs missing or of another shape: {bad}" if bad else ""))
        runs.append(verify.ModelRun(name, ok, detail))
    return runs or [verify.ModelRun("LiteRT", False, "the .tflite has no signature to run")]
