"""The TFLite target's files: a SavedModel that converts with TFLITE_BUILTINS alone, and its .tflite.

    src (cuDNN ops, any batch)
      -> which input dimension is the batch, per signature (batch_dim.py: the one that
         reaches a cuDNN op's batch under shape inference; time-major x [T, B, I] -> 1)
      -> rewrite with a fixed batch B: every loop state static; each LSTM layer/direction
         whose sequence lengths are full and whose output_c is unused becomes a call of the
         composite function (fused_lstm.py; plan.py decides); the rest (GRU, SimpleRNN,
         masked or return_state LSTMs) a While loop with static TensorList element shapes
      -> TF1 SavedModels only: frozen in a Session (tf1_freeze.py: ref variables that the
         saver's restore fills would be lost by the re-save)
      -> saved again with every signature input's batch dimension fixed to B
         (tf.saved_model.load + tf.function(input_signature=...) + tf.saved_model.save):
         TFLite needs the states' shapes static, and they derive from the input's batch;
         frozen (variables folded into constants) when no LSTM is fused, since TF 2.21's
         from_saved_model lowers the loops' TensorList ops only so (`_save_for_tflite`)
      -> optionally TFLITE_BUILTINS-only conversion of the signature -> FILE.tflite, each
         composite call a UNIDIRECTIONAL_SEQUENCE_LSTM (stub_lstm.py: no cell_clip, projections)
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from graphfix import rewrite
from graphfix.cudnn import gates
from graphfix.errors import (
    GraphfixError,
    OutputError,
    UnsupportedError,
    VerificationError,
)
from graphfix.io import output_paths, saved_model_dir
from graphfix.io.output_paths import parents_made, resolve_output
from graphfix.report import Report
from graphfix.targets.tflite import batch_dim, graph_def_input, stub_lstm, tf1_freeze
from graphfix.targets.tflite.plan import TfliteTarget


def signature_batch(proto) -> set[int | None]:
    """Sizes of the batch dimension (found from the graph, `batch_dim`) of every signature input
    that reaches a cuDNN op's batch (None: open)."""
    return {size for sig in signature_batches(proto).values() for size in sig.static.values()}


def signature_batches(proto) -> dict[str, batch_dim.SignatureBatch]:
    """Signature key -> which input dimension is the batch (`batch_dim.find_batch_dims`); the
    first MetaGraph holding a key wins. Signatures without inputs are left out."""
    found: dict[str, batch_dim.SignatureBatch] = {}
    for meta in proto.meta_graphs:
        for key, sig in batch_dim.find_batch_dims(meta).items():
            if meta.signature_def[key].inputs:
                found.setdefault(key, sig)
    return found


def choose_batch(proto, batch_size: int | None, where: str, found: dict | None = None) -> int | None:
    """The batch to fix: batch_size; None when every input dimension that is a batch is static
    already (each op's static batch is used). found: `signature_batches(proto)`, if known.

    A signature with a cuDNN op whose batch no input dimension reaches cannot have its batch
    fixed: refused in one line that asks for help, when a batch must be fixed.
    """
    found = signature_batches(proto) if found is None else found
    if batch_size is not None and batch_size < 1:
        raise UnsupportedError(f"--batch-size must be at least 1, got {batch_size}", where)
    open_batch = any(size is None for sig in found.values() for size in sig.static.values())
    if batch_size is None and not open_batch:
        return None
    for key, sig in sorted(found.items()):
        if sig.unmarked:
            meta = next(m for m in proto.meta_graphs if key in m.signature_def)
            raise UnsupportedError(
                f"cannot tell which input dimension of signature {key!r} ({sig.describe(meta.signature_def[key])}) "
                f"is the batch of {sig.unmarked[0]}: TensorFlow's shape inference carries none of them to it "
                "unchanged; please report it (with `python -m graphfix inspect MODEL --json`), or re-export the "
                "model with a static batch in its signature", where)
    if batch_size is None:
        raise UnsupportedError(
            "the TFLite target needs a fixed batch size (the fused LSTM and TFLite's loops need static "
            "state shapes), and the model's signatures leave it open: pass --batch-size N", where)
    return batch_size


def default_output(src: Path) -> Path:
    """model_dir/ -> model_dir_tflite/; model.pb -> model_tflite/ (a SavedModel folder beside the input)."""
    return src.with_name(f"{src.stem if src.is_file() else src.resolve().name}_tflite")


def default_tflite_file(src: Path) -> Path:
    """model_dir/ -> model_dir.tflite; model.pb -> model.tflite (beside the input)."""
    return src.with_name(f"{src.stem if src.is_file() else src.resolve().name}.tflite")


def convert_for_tflite(src, dst=None, batch_size: int | None = None, tflite_file=None, force: bool = False,
                       gate_order: str = gates.CUDNN, fuse_lstm: bool = True, check=None) -> Report:
    """SavedModel `src` -> SavedModel `dst` (default MODEL_tflite/) for the TFLite converter.

    The output's signatures take a fixed batch. tflite_file: also write the TFLite model
    (TFLITE_BUILTINS only). fuse_lstm=False: LSTMs as While loops too (no cell_clip).
    check: `--verify`, called before anything is written as check(original proto, converted
    proto, ready SavedModel dir, .tflite bytes, report, batch) -> a Verification
    (`graphfix.tools.verify_tflite.verify_tflite`); kept in report.verification, and a failed
    one raises VerificationError.
    Raises GraphfixError, writing nothing, on any refusal.
    """
    src = Path(src)
    dst = default_output(src) if dst is None else resolve_output(dst, default_output(src), folder_output=True)
    if tflite_file is not None:
        tflite_file = resolve_output(tflite_file, default_tflite_file(src), folder_output=False)
    if src.is_file():  # a frozen GraphDef: given the signature graph_def_input.py describes
        with tempfile.TemporaryDirectory(prefix="graphfix_graph_def_") as tmp:
            note = graph_def_input.wrap_graph_def(src, Path(tmp) / "model")
            try:
                report = convert_for_tflite(Path(tmp) / "model", dst, batch_size, tflite_file, force, gate_order,
                                            fuse_lstm, check)
            except GraphfixError as exc:
                raise type(exc)(exc.reason.replace(str(Path(tmp) / "model"), str(src)),
                                (exc.where or "").replace(str(Path(tmp) / "model"), str(src)) or None) from None
        report.source = str(src)
        report.helpers.insert(0, note)
        return report
    if not saved_model_dir.is_saved_model_dir(src):
        raise UnsupportedError("the TFLite target takes a SavedModel directory or a frozen GraphDef file", str(src))
    output_paths.check_output(dst, force, source=src)
    if tflite_file is not None:
        output_paths.check_output(Path(tflite_file), force, source=src)
    proto = saved_model_dir.read_saved_model(src)
    found = signature_batches(proto)
    batch = choose_batch(proto, batch_size, str(src), found)
    tf1 = tf1_freeze.is_tf1(proto)
    if tf1:
        tf1_freeze.check_freezable(proto, str(src))
    converted, report = _convert_proto(proto, str(src), gate_order, TfliteTarget(batch, fuse_lstm))
    with parents_made(dst):
        content = _write_outputs(src, proto, converted, report, dst, tflite_file, force, batch, found, tf1, check)
    report.output = str(dst)
    if batch is not None:
        report.helpers.append(f"TFLite: signatures fixed to batch {batch}")
    if content is not None and tflite_file is not None:
        report.helpers.append(f"TFLite: wrote {tflite_file} ({len(content)} bytes; ops: "
                              f"{', '.join(sorted(set(tflite_ops(content))))})")
    return report


def _write_outputs(src: Path, proto, converted, report: Report, dst: Path, tflite_file, force: bool, batch,
                   found, tf1: bool, check) -> bytes | None:
    """Re-save the converted proto for the converter in a work folder beside dst, convert it,
    check it; then write the .tflite and move the folder into place. Returns the .tflite bytes.

    All or nothing: a .tflite written before the folder's move fails is removed again.
    """
    parent = dst.parent if str(dst.parent) else Path(".")
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".work", dir=parent))
    try:
        saved_model_dir.write_saved_model(src, converted, work / "cpu", force=False)
        fused = [h for h in report.helpers if "-> fused LSTM" in h]
        loops = [h for h in report.helpers if "-> While loop" in h]
        ready = work / "cpu"
        if tf1:  # see tf1_freeze: a re-save would lose what the saver restores into ref variables
            tf1_freeze.freeze_tf1(ready, work / "frozen", converted)
            ready = work / "frozen"
            report.helpers.append("TFLite: TF1 graph frozen (variables restored by its saver, folded into constants)")
        # TF1 graphs with static signatures stay as frozen
        if batch is not None or not tf1:
            _save_for_tflite(ready, work / "ready", batch, {k: sig.dims for k, sig in found.items()},
                             freeze=not fused and not tf1)
            ready = work / "ready"
        if fused and loops:
            report.warnings.append(
                "this model has both fused LSTMs and While loops: TFLiteConverter.from_saved_model (TF 2.21) "
                "cannot convert the output folder with builtins only; use the .tflite graphfix writes, or "
                "graphfix.targets.tflite.to_tflite(folder)")
        content = to_tflite(ready) if tflite_file is not None or check is not None else None
        if check is not None:
            report.verification = check(proto, converted, ready, content, report, batch)
            if not report.verification.ok:
                raise VerificationError(report.verification.failure(), str(src), report=report)
        if content is not None and tflite_file is not None:
            output_paths.write_bytes_atomic(Path(tflite_file), content)
        try:
            saved_model_dir._move_into_place(ready, dst, force)
        except BaseException:
            if content is not None and tflite_file is not None:
                Path(tflite_file).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", str(dst)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return content


def _convert_proto(proto, source, gate_order, target: TfliteTarget):
    out = saved_model_pb2.SavedModel()
    out.CopyFrom(proto)
    report = Report(source=source)
    for meta in out.meta_graphs:
        fetches = frozenset(_tensor_name(info.name) for sig in meta.signature_def.values()
                            for info in sig.outputs.values())
        target = dataclasses.replace(target, fetches=fetches)
        try:
            converted, part = rewrite.convert_graph_def(
                meta.graph_def, target, source=source, roots=list(meta.object_graph_def.concrete_functions),
                gate_order=gate_order)
        except GraphfixError as exc:
            raise exc.at(source) from None
        meta.graph_def.CopyFrom(converted)
        report.merge(part)
    if not report.changed:
        raise UnsupportedError("no cuDNN RNN op runs in the model; convert it with the TFLite converter as it is",
                               source)
    return out, report


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _save_for_tflite(src: Path, dst: Path, batch: int | None, dims: dict, freeze: bool) -> None:
    """Re-save the SavedModel at src with each signature input's batch dimension = batch
    (unless None); dims: signature key -> {input key: its batch dimension} (`batch_dim`);
    freeze: with its variables folded into constants.

    `TFLiteConverter.from_saved_model` (TF 2.21) lowers the While loops' TensorList ops only
    when their weights are constants; but freezing inlines functions, which loses the fused
    LSTMs' composite functions. So: frozen when no LSTM is fused, not frozen otherwise.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    loaded = tf.saved_model.load(str(src))
    signatures = {}
    for key, fn in loaded.signatures.items():
        frozen = convert_variables_to_constants_v2(fn) if freeze else fn
        specs = fn.structured_input_signature[1]
        names = sorted(specs)
        fixed = [tf.TensorSpec(_with_batch(specs[n].shape, dims.get(key, {}).get(n), batch), specs[n].dtype, name=n)
                 for n in names]

        call = _caller(frozen, names, fn.structured_outputs)
        signatures[key] = tf.function(call, input_signature=fixed).get_concrete_function()
    module = tf.Module()
    if not freeze:
        module.model = loaded  # keeps its variables tracked
    tf.saved_model.save(module, str(dst), signatures=signatures)


def _with_batch(shape: tf.TensorShape, dim: int | None, batch: int | None) -> tf.TensorShape:
    if batch is None or dim is None or shape.rank is None:
        return shape
    return tf.TensorShape(shape.as_list()[:dim] + [batch] + shape.as_list()[dim + 1:])


def _caller(fn, names, structure):
    """fn(**inputs) as a function of positional args; outputs packed as `structure` (a
    frozen signature answers a flat list). A closure, since tf.function would take default
    arguments for inputs."""
    def call(*args):
        return tf.nest.pack_sequence_as(structure, tf.nest.flatten(fn(**dict(zip(names, args)))))
    return call


def to_tflite(saved_model_dir, signature: str = "serving_default") -> bytes:
    """TFLITE_BUILTINS-only conversion (no Flex, no TF ops) of one signature of a SavedModel
    that `convert_for_tflite` wrote.

    With fused LSTMs (graphfix's composite functions), through TFLite's stub op
    (`stub_lstm.py`: no cell_clip, projections fused); otherwise through the loaded
    signature's concrete function, which converts every output (`from_saved_model`
    converts those without both fused LSTMs and While loops, see `_save_for_tflite`).
    """
    where = str(saved_model_dir)
    try:
        marked = stub_lstm.marked_proto(saved_model_dir)
        if marked is not None:  # fused LSTMs: without cell_clip, with projections
            return stub_lstm.convert(saved_model_dir, marked, signature)
        loaded = tf.saved_model.load(where)
        fn = stub_lstm.signature_function(loaded, signature, where)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        return converter.convert()
    except GraphfixError:  # said already (a missing signature)
        raise
    except Exception as exc:  # the converter raises ConverterError with MLIR diagnostics
        lines = str(exc).strip().splitlines()
        said = [line for line in lines if "error" in line.lower()] or lines[:1]
        raise UnsupportedError("the TFLite converter (TFLITE_BUILTINS only) refused the converted model: "
                               + " | ".join(said)[:2000], where) from None


def tflite_ops(content: bytes) -> list[str]:
    """The operator of every node of every subgraph of a .tflite flatbuffer, e.g. 'WHILE'."""
    from tensorflow.lite.python import schema_py_generated as schema
    model = schema.Model.GetRootAsModel(content, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        codes.append(names.get(builtin, str(builtin)) if builtin != schema.BuiltinOperator.CUSTOM
                     else f"CUSTOM:{code.CustomCode().decode()}")
    ops = []
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        ops += [codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength())]
    return ops
