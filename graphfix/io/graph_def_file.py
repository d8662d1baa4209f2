"""Reading and writing model files: the only module that touches the file system.

GraphDefs come in as binary (`.pb`) or text (`.pbtxt`) protobuf and leave the same way.
Writes are atomic: a temporary file in the destination folder, then `os.replace`, so a
failure never leaves a half-written output.
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2

from graphfix.errors import InputError
from graphfix.graph.detached import ConstStore, detach
from graphfix.io import stream_read, stream_write
from graphfix.io.output_paths import write_atomic, write_bytes_atomic
from graphfix.io.wire import WireError

TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")


def is_text_path(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


def read_graph_def(path: str | os.PathLike) -> graph_pb2.GraphDef:
    """Parse a frozen GraphDef from `path` (binary, or text for .pbtxt)."""
    path = _existing_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    graph_def = graph_pb2.GraphDef()
    try:
        if is_text_path(path):
            text_format.Parse(data.decode("utf-8"), graph_def)
        else:
            graph_def.ParseFromString(data)
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        kind = "text" if is_text_path(path) else "binary"
        raise InputError(f"not a valid {kind} GraphDef ({type(exc).__name__}: {exc})", str(path)) from None
    _require_nodes(graph_def, path)
    return graph_def


def _existing_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a directory, not a GraphDef file", str(path))
    return path


def _require_nodes(graph_def: graph_pb2.GraphDef, path: Path) -> None:
    if not graph_def.node and not graph_def.library.function:
        raise InputError("parsed as a GraphDef but holds no nodes; is it really a frozen graph?", str(path))


def read_graph_def_detached(path: str | os.PathLike) -> tuple[graph_pb2.GraphDef, ConstStore]:
    """Read a GraphDef with its large Const values detached (`graphfix.graph.detached`): (slim graph, values).

    Binary files are read in one pass (`graphfix.io.stream_read`), so a large value is in
    memory once. Text files, and binary ones that reader refuses, are parsed whole by
    protobuf (which then also gives the error message for a malformed file).
    """
    path = _existing_file(path)
    if is_text_path(path):
        return detach(read_graph_def(path))
    try:
        with open(path, "rb") as handle:
            slim, store = stream_read.read_detached(handle, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(path)) from None
    except (WireError, message.DecodeError, ValueError):
        return detach(read_graph_def(path))
    _require_nodes(slim, path)
    return slim, store


def serialize_graph_def(graph_def: graph_pb2.GraphDef, text: bool) -> bytes:
    if text:
        return text_format.MessageToString(graph_def).encode("utf-8")
    return graph_def.SerializeToString(deterministic=True)


def write_graph_def(graph_def: graph_pb2.GraphDef, path: Path, consts: ConstStore | None = None) -> None:
    """Write a GraphDef atomically, binary or text by the path's suffix.

    consts: values detached from `graph_def` (`graphfix.graph.detached`). A binary file is then
    written node by node, each value put back only while its node is written, so memory
    never holds the whole serialized model; the bytes are those of the complete proto's
    deterministic serialization.
    """
    text = is_text_path(path)
    if consts is None or not len(consts):
        write_bytes_atomic(path, serialize_graph_def(graph_def, text))
    elif text:
        write_bytes_atomic(path, serialize_graph_def(consts.attach(graph_def), text))
    else:
        write_atomic(path, lambda handle: stream_write.write_graph(graph_def, consts, handle))
