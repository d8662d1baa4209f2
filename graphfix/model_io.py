"""Reading and writing model files: the only module that touches the file system.

GraphDefs come in as binary (`.pb`) or text (`.pbtxt`) protobuf and leave the same way.
Writes are atomic: a temporary file in the destination folder, then `os.replace`, so a
failure never leaves a half-written output.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from google.protobuf import message, text_format
from tensorflow.core.framework import graph_pb2

from graphfix.errors import InputError, OutputError

TEXT_SUFFIXES = (".pbtxt", ".txt", ".prototxt")


def is_text_path(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES


def read_graph_def(path: str | os.PathLike) -> graph_pb2.GraphDef:
    """Parse a frozen GraphDef from `path` (binary, or text for .pbtxt)."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a directory, not a GraphDef file", str(path))
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
    if not graph_def.node and not graph_def.library.function:
        raise InputError("parsed as a GraphDef but holds no nodes; is it really a frozen graph?", str(path))
    return graph_def


def serialize_graph_def(graph_def: graph_pb2.GraphDef, text: bool) -> bytes:
    if text:
        return text_format.MessageToString(graph_def).encode("utf-8")
    return graph_def.SerializeToString(deterministic=True)


def check_output_path(path: Path, force: bool, source: Path | None = None) -> None:
    """Refuse before any work is done: an existing output without force, or the input itself."""
    if source is not None and path.exists() and path.resolve() == source.resolve():
        raise OutputError("the output would overwrite the input; choose another -o", str(path))
    if path.exists() and not force:
        raise OutputError("already exists; pass --force to overwrite it", str(path))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder {str(parent)!r} does not exist", str(path))
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the folder {str(parent)!r} is not writable", str(path))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename; leave nothing behind on failure.

    The file gets the usual mode for new files (0666 less the umask), not mkstemp's 0600,
    so that a serving process under another account can read it.
    """
    parent = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"cannot write: {exc.strerror or exc}", str(path)) from None


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_graph_def(graph_def: graph_pb2.GraphDef, path: Path) -> None:
    write_bytes_atomic(path, serialize_graph_def(graph_def, is_text_path(path)))
