"""SavedModel directories in and out.

A converted SavedModel is the input directory with only `saved_model.pb` rewritten (and
`fingerprint.pb` recomputed from it). Variables stay variables: the cuDNN ops' params are
built from variable reads at run time, and the CPU graph slices them in-graph the same
way, so `variables/` and `assets/` are copied byte for byte and every signature, object
and checkpoint key is untouched.

The output is assembled in a temporary sibling directory and renamed into place only
after everything succeeded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from google.protobuf import message, text_format
from tensorflow.core.protobuf import saved_model_pb2

from graphfix.errors import InputError, OutputError
from graphfix.io.output_paths import current_umask, parents_made

PB, PBTXT = "saved_model.pb", "saved_model.pbtxt"
FINGERPRINT = "fingerprint.pb"


def is_saved_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / PB).is_file() or (path / PBTXT).is_file())


def read_saved_model(path: Path) -> saved_model_pb2.SavedModel:
    """Parse `path/saved_model.pb` (or .pbtxt) and check that its variables can be read."""
    if not path.is_dir():
        raise InputError("no such directory", str(path))
    if not is_saved_model_dir(path):
        raise InputError(f"is a directory without {PB}: not a SavedModel", str(path))
    proto = saved_model_pb2.SavedModel()
    file = path / PB if (path / PB).is_file() else path / PBTXT
    try:
        data = file.read_bytes()
        if file.name == PBTXT:
            text_format.Parse(data.decode("utf-8"), proto)
        else:
            proto.ParseFromString(data)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", str(file)) from None
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not a valid SavedModel protobuf ({type(exc).__name__}: {exc})", str(file)) from None
    if not proto.meta_graphs:
        raise InputError("the SavedModel holds no MetaGraph", str(file))
    _check_variables(path, proto)
    return proto


def _has_variables(proto: saved_model_pb2.SavedModel) -> bool:
    for meta in proto.meta_graphs:
        if meta.HasField("saver_def") or any(
                n.op in ("VarHandleOp", "VariableV2", "Variable") for n in meta.graph_def.node):
            return True
        if any(o.WhichOneof("kind") == "variable" for o in meta.object_graph_def.nodes):
            return True
    return False


def _check_variables(path: Path, proto) -> None:
    """A model with variables needs a readable checkpoint at variables/variables."""
    if not _has_variables(proto):
        return
    prefix = path / "variables" / "variables"
    index = Path(str(prefix) + ".index")
    if not index.is_file():
        raise InputError(f"the model has variables but {index} is missing", str(path))
    from tensorflow.python.training import py_checkpoint_reader
    try:
        reader = py_checkpoint_reader.NewCheckpointReader(str(prefix))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)  # reads every shard: a truncated or missing shard fails here
    except Exception as exc:  # the reader raises several types; all mean "unreadable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"variables/ cannot be read: {first}", str(path)) from None


def default_output_dir(src: Path) -> Path:
    """model_dir/ -> model_dir_cpu/ beside it."""
    return src.with_name(f"{src.resolve().name}_cpu")


def write_saved_model(src: Path, proto: saved_model_pb2.SavedModel, dst: Path, force: bool) -> None:
    """Copy `src` to `dst` with saved_model.pb replaced by `proto`; all or nothing."""
    with parents_made(dst):
        _write_saved_model(src, proto, dst, force)


def _write_saved_model(src: Path, proto: saved_model_pb2.SavedModel, dst: Path, force: bool) -> None:
    parent = dst.parent if str(dst.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=parent))
        # mkdtemp makes 0700; a serving process under another account must be able to read it
        os.chmod(tmp, 0o777 & ~current_umask())
    except OSError as exc:
        raise OutputError(f"cannot create a folder beside it: {exc.strerror}", str(dst)) from None
    try:
        for entry in src.iterdir():
            if entry.name in (PB, PBTXT, FINGERPRINT):
                continue
            target = tmp / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
        (tmp / PB).write_bytes(proto.SerializeToString(deterministic=True))
        if (src / FINGERPRINT).exists():
            from tensorflow.python.saved_model import fingerprinting_utils
            fingerprinting_utils.write_fingerprint(str(tmp))
        _move_into_place(tmp, dst, force)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write: {exc.strerror or exc}", str(dst)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into_place(tmp: Path, dst: Path, force: bool) -> None:
    if not dst.exists():
        os.replace(tmp, dst)
        return
    if not force:
        raise OutputError("already exists; pass --force to overwrite it", str(dst))
    old = dst.with_name(f".{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    try:
        os.replace(tmp, dst)
    except OSError:
        os.replace(old, dst)  # put the previous output back: a failed run changes nothing
        raise
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()
