"""`--target onnx`: a SavedModel or frozen GraphDef with cuDNN RNNs -> one .onnx file.

    src --frozen.freeze--> GraphDef with Consts for weights, cuDNN ops still in it
        --tf2onnx_hook.prepare--> each cuDNN op planned (plan.py); refusals name the node
        --tf2onnx_hook.to_onnx--> tf2onnx converts the graph, graphfix's handler the cuDNN ops
        --(verify: check.py, onnxruntime against the numpy reference and the CPU target)-->
        --atomic write--> model.onnx
"""

from __future__ import annotations

import logging
from pathlib import Path

from graphfix.cudnn import gates
from graphfix.errors import GraphfixError, OutputError, UnsupportedError, VerificationError
from graphfix.io import output_paths
from graphfix.io.output_paths import resolve_output
from graphfix.report import ConvertedOp, Report
from graphfix.targets.onnx import frozen, tf2onnx_hook
from graphfix.targets.onnx.emit import OPSET

log = logging.getLogger(__name__)
_PROTO_LIMIT = 2 ** 31 - 1  # protobuf's limit on one serialized message


def default_output_path(src: Path) -> Path:
    """model_dir/ -> model_dir.onnx; model.pb -> model.onnx."""
    src = Path(str(src).rstrip("/"))
    return src.with_name(f"{src.name}.onnx") if src.is_dir() else src.with_suffix(".onnx")


def convert_to_onnx(src, dst=None, force: bool = False, gate_order: str = gates.CUDNN, verify: bool = False,
                    signature: str | None = None, opset: int = OPSET) -> Report:
    """Convert the model at `src` (SavedModel directory or frozen GraphDef) to an ONNX file `dst`.

    cuDNN RNNs become ONNX LSTM / GRU / RNN nodes; everything else is converted by tf2onnx.
    signature: which SavedModel signature (default: serving_default, or the only one).
    verify: run the ONNX model in onnxruntime first (`check.py`); raise VerificationError,
    writing nothing, if it fails. Raises GraphfixError on any refusal, with nothing written.
    """
    src = Path(src)
    gates.check(gate_order)
    dst = resolve_output(dst, default_output_path(src), folder_output=False)
    output_paths.check_output(dst, force, source=src)
    model_input = frozen.freeze(src, signature)
    left = frozen.cudnn_in_library(model_input.graph_def)
    if left:
        raise UnsupportedError("a cuDNN op sits in a function that freezing did not inline (" + left[0]
                               + "); the ONNX target converts cuDNN ops of the main graph", str(src))
    report = Report(source=str(src))
    try:
        prepared, plans, fops = tf2onnx_hook.prepare(model_input.graph_def, [t for t, _ in model_input.outputs],
                                                     gate_order)
    except GraphfixError as exc:
        raise exc.at(str(src)) from None
    if not plans:  # e.g. tf_keras LSTM SavedModels, whose GPU variant nothing calls: still a useful ONNX file
        report.warnings.append("no cuDNN RNN op runs in this model: tf2onnx converted all of it")
    for fop in fops:
        report.warnings += fop.warnings
        report.ops.append(_converted(fop))
    report.helpers += [rnn.summary() for rnn in plans.values()]
    try:
        model = tf2onnx_hook.to_onnx(prepared, model_input.inputs, model_input.outputs, plans, src.name, opset)
    except GraphfixError as exc:
        raise exc.at(str(src)) from None
    if model_input.signature:
        report.helpers.append(f"ONNX: signature {model_input.signature!r}: inputs "
                              f"{[n for _, n in model_input.inputs]}, outputs {[n for _, n in model_input.outputs]}")
    if verify:
        from graphfix.targets.onnx import check
        report.verification = check.verify(model, plans, model_input, gate_order, fops)
        if not report.verification.ok:
            raise VerificationError(report.verification.failure(), str(src), report=report)
    data = model.SerializeToString()
    if len(data) > _PROTO_LIMIT:
        raise OutputError("the ONNX model is over 2 GB, protobuf's limit for one file; graphfix does not write "
                          "ONNX external data yet", str(dst))
    output_paths.write_bytes_atomic(dst, data)
    report.output = str(dst)
    return report


def _converted(fop) -> ConvertedOp:
    spec = fop.spec
    return ConvertedOp(fop.where, fop.node, fop.op, spec.mode, spec.num_layers, spec.num_dirs == 2,
                       spec.input_size, spec.num_units, spec.num_proj, spec.input_mode, fop.dtype.name,
                       fop.time_major, fop.sequence_lengths, "folded into ONNX initializers", fop.gate_order)
