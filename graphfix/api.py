"""The public entry points. The CLI is a thin layer over these; they never print or exit.

    graph_def, report = graphfix.convert_graph_def(graph_def)     # in memory
    report = graphfix.convert("model.pb", "model_cpu.pb")         # frozen GraphDef files
    report = graphfix.convert("model_dir", "model_dir_cpu")       # SavedModel directories
    report = graphfix.convert("legacy.h5")                       # Keras HDF5 with CuDNNLSTM/GRU layers
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import saved_model_pb2

from graphfix import rewrite
from graphfix.cudnn import gates
from graphfix.errors import (
    GraphfixError,
    InputError,
    UnsupportedError,
    VerificationError,
)
from graphfix.graph.interface import graph_interface, signature_lines
from graphfix.io import graph_def_file, keras_h5, output_paths, saved_model_dir
from graphfix.io.output_paths import resolve_output
from graphfix.report import Report
from graphfix.targets.cpu import CpuTarget


def convert_graph_def(graph_def: graph_pb2.GraphDef, source: str = "<graph>",
                      gate_order: str = gates.CUDNN) -> tuple[graph_pb2.GraphDef, Report]:
    """Return a new GraphDef with every cuDNN RNN op replaced by standard ops, and a Report.

    `graph_def` is not modified. Raises GraphfixError (LayoutError, UnsupportedError, ...)
    naming the node when an op cannot be converted. gate_order: "ifoc" for LSTM params
    exported by ROCm builds of Keras (`graphfix.cudnn.gates`).
    """
    return rewrite.convert_graph_def(graph_def, CpuTarget(), source=source, gate_order=gate_order)


def default_output_path(src: Path) -> Path:
    """model.pb -> model_cpu.pb; model.pbtxt -> model_cpu.pbtxt."""
    return src.with_name(f"{src.stem}_cpu{src.suffix}")


def convert(src: str | os.PathLike, dst: str | os.PathLike | None = None, force: bool = False,
            gate_order: str = gates.CUDNN, verify: bool = False) -> Report | keras_h5.KerasConversion:
    """Convert the model file at `src` and write the result to `dst` (default: `*_cpu.*`).

    The input is never modified; the output is written atomically and only when the whole
    conversion succeeded. Raises GraphfixError on any refusal, with nothing written.
    A model without cuDNN ops is reported (`report.changed` is False); nothing is written
    then, unless `dst` was given: then the model is written as it is, so the output exists.
    dst: a folder (a trailing slash, or an existing folder) for a file output means
    `dst/<default name>`; a SavedModel's dst must be a folder name (`io.output_paths`).
    verify: check the conversion first (`graphfix.tools.verify`, result in `report.verification`);
    raise VerificationError, writing nothing, if it fails.
    A Keras HDF5 file (.h5/.hdf5: `model.save` or `save_weights` of Keras 2 / tf_keras) gets its
    CuDNNLSTM / CuDNNGRU layers made LSTM / GRU (`graphfix.io.keras_h5`; a `.keras` dst writes
    Keras 3's format) and returns a `keras_h5.KerasConversion`.
    """
    src = Path(src)
    gates.check(gate_order)
    if src.is_dir():
        return _convert_saved_model(src, dst, force, gate_order, verify)
    _refuse_likely_mistakes(src)
    asked = dst is not None
    dst = resolve_output(dst, default_output_path(src), folder_output=False)
    if keras_h5.is_hdf5_path(src):
        return _convert_keras(src, dst, asked, force, gate_order, verify)
    output_paths.check_output(dst, force, source=src)
    # Large Const values live outside the proto while converting (graphfix.graph.detached): a
    # gigabyte params buffer then exists once or twice in memory, not five to seven times.
    graph_def, consts = graph_def_file.read_graph_def_detached(src)
    try:
        converted, converted_consts, report = rewrite.convert_detached(
            graph_def, consts, CpuTarget(), source=str(src), gate_order=gate_order)
    except GraphfixError as exc:
        raise exc.at(str(src)) from None
    if report.changed and verify:
        from graphfix.tools import verify as checks
        _require(report, checks.verify_graph_def(consts.attach(graph_def), converted_consts.attach(converted),
                                                 report, gate_order), src)
    del graph_def, consts  # the input's values that the output no longer needs can go now
    if report.changed or asked:
        graph_def_file.write_graph_def(converted, dst, converted_consts)
        report.output = str(dst)
        report.interface = graph_interface(converted)
    return report


def _refuse_likely_mistakes(src: Path) -> None:
    """Inputs people pass by mistake, refused with what to do instead of a protobuf error."""
    if src.name in (saved_model_dir.PB, saved_model_dir.PBTXT) and src.is_file():
        folder = str(src.parent) if str(src.parent) != "." else "."
        raise InputError(f"this is the graph file of the SavedModel folder {folder!r}: pass the folder, "
                         f"graphfix {folder}/", str(src))
    if src.suffix.lower() == ".keras" and src.is_file():
        raise InputError("a .keras file is Keras 3's own format: its LSTM/GRU layers run on CPU as they are, and it "
                         "holds no cuDNN op; graphfix converts SavedModels, frozen GraphDefs and Keras HDF5 (.h5) "
                         "files with CuDNNLSTM/CuDNNGRU layers", str(src))


def convert_saved_model_proto(proto: saved_model_pb2.SavedModel, source: str = "<saved model>",
                              gate_order: str = gates.CUDNN):
    """Return a converted copy of a SavedModel proto (every MetaGraph) and one merged Report."""
    out = saved_model_pb2.SavedModel()
    out.CopyFrom(proto)
    report = Report(source=source)
    for meta in out.meta_graphs:
        tags = ",".join(meta.meta_info_def.tags) or "untagged"
        where = source if len(out.meta_graphs) == 1 else f"{source} [MetaGraph {tags}]"
        try:
            converted, part = rewrite.convert_graph_def(
                meta.graph_def, CpuTarget(), source=where, roots=list(meta.object_graph_def.concrete_functions),
                gate_order=gate_order)
        except GraphfixError as exc:
            raise exc.at(where) from None
        meta.graph_def.CopyFrom(converted)
        report.merge(part)
    return out, report


def _require(report: Report, verification, src: Path) -> None:
    """Attach a verification to the report; raise VerificationError if it failed."""
    report.verification = verification
    if not verification.ok:
        raise VerificationError(verification.failure(), str(src), report=report)


def _convert_keras(src: Path, dst: Path, asked: bool, force: bool, gate_order: str,
                   verify: bool) -> keras_h5.KerasConversion:
    if verify:
        raise UnsupportedError("--verify runs converted cuDNN ops of a graph; a Keras HDF5 file has none (its "
                               "layers' weights are converted by the rule tf_keras itself applies)", str(src))
    if gate_order != gates.CUDNN:
        raise UnsupportedError("--gate-order is for params buffers in graphs; a Keras file's CuDNN layers keep "
                               "Keras's gate order", str(src))
    return keras_h5.convert_file(src, dst, force, write_unchanged=asked)


def _convert_saved_model(src: Path, dst, force: bool, gate_order: str = gates.CUDNN, verify: bool = False) -> Report:
    asked = dst is not None
    dst = resolve_output(dst, saved_model_dir.default_output_dir(src), folder_output=True)
    output_paths.check_output(dst, force, source=src)
    proto = saved_model_dir.read_saved_model(src)
    converted, report = convert_saved_model_proto(proto, source=str(src), gate_order=gate_order)
    if report.changed and verify:
        from graphfix.tools import verify as checks
        _require(report, checks.verify_saved_model(src, proto, converted, report, gate_order), src)
    if report.changed or asked:
        saved_model_dir.write_saved_model(src, converted, dst, force)
        report.interface = signature_lines(converted.meta_graphs)
        report.output = str(dst)
    return report
