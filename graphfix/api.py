"""The public entry points. The CLI is a thin layer over these; they never print or exit.

    graph_def, report = graphfix.convert_graph_def(graph_def)     # in memory
    report = graphfix.convert("model.pb", "model_cpu.pb")         # files
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorflow.core.framework import graph_pb2

from graphfix import model_io, rewrite
from graphfix.errors import GraphfixError, InputError
from graphfix.report import Report


def convert_graph_def(graph_def: graph_pb2.GraphDef, source: str = "<graph>") -> tuple[graph_pb2.GraphDef, Report]:
    """Return a new GraphDef with every cuDNN RNN op replaced by standard ops, and a Report.

    `graph_def` is not modified. Raises GraphfixError (LayoutError, UnsupportedError, ...)
    naming the node when an op cannot be converted.
    """
    return rewrite.convert_graph_def(graph_def, source=source)


def default_output_path(src: Path) -> Path:
    """model.pb -> model_cpu.pb; model.pbtxt -> model_cpu.pbtxt."""
    return src.with_name(f"{src.stem}_cpu{src.suffix}")


def convert(src: str | os.PathLike, dst: str | os.PathLike | None = None, force: bool = False) -> Report:
    """Convert the model file at `src` and write the result to `dst` (default: `*_cpu.*`).

    The input is never modified; the output is written atomically and only when the whole
    conversion succeeded. Raises GraphfixError on any refusal, with nothing written.
    A model without cuDNN ops is reported (`report.changed` is False) and nothing is written.
    """
    src = Path(src)
    if src.is_dir():
        raise InputError("SavedModel directories are not supported yet; pass a frozen GraphDef (.pb/.pbtxt)",
                         str(src))
    dst = Path(dst) if dst is not None else default_output_path(src)
    model_io.check_output_path(dst, force, source=src)
    graph_def = model_io.read_graph_def(src)
    try:
        converted, report = convert_graph_def(graph_def, source=str(src))
    except GraphfixError as exc:
        raise exc.at(str(src)) from None
    if report.changed:
        model_io.write_graph_def(converted, dst)
        report.output = str(dst)
    return report
