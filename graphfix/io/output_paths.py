"""Where an output goes and how it is written: `-o` as the user meant it, missing parent
folders, the umask, atomic writes.

    resolve_output   -o DIR/ (or an existing folder) for a file output means DIR/<default name>;
                     a file-like name for a folder output (a SavedModel) is refused
    check_output     refuse before any work: an existing output without --force, the input
                     itself, a parent that cannot be made or written
    parents_made     make the missing parent folders for a write; remove them if it fails
    write_*_atomic   a temporary file beside the output, renamed into place only when complete
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from graphfix.errors import OutputError

# Names that say "a file": a SavedModel output given one of these is almost surely a mistake.
FILE_SUFFIXES = (".pb", ".pbtxt", ".txt", ".prototxt", ".h5", ".hdf5", ".keras", ".tflite", ".onnx", ".npz")


def resolve_output(output: str | os.PathLike | None, default: Path, folder_output: bool) -> Path:
    """The output path for `-o output` (None: `default`).

    folder_output False (a file is written): `output` ending in a slash, or naming an
    existing folder, means that folder with the default file name in it (as `cp` does).
    folder_output True (a SavedModel folder is written): a name ending in a file suffix
    (.pb, .h5, ...) is refused, since it would silently become a folder of that name.
    """
    if output is None:
        return default
    text = os.fspath(output)
    path = Path(text)
    if folder_output:
        if path.suffix.lower() in FILE_SUFFIXES and not path.is_dir():
            raise OutputError(f"names a file ({path.suffix}), but a SavedModel converts to a SavedModel folder: "
                              f"give a folder name, e.g. -o {path.with_suffix('')}_cpu/", text)
        return path
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path / default.name
    return path


def check_output(path: Path, force: bool, source: Path | None = None) -> None:
    """Refuse before any work is done: an existing output without force, or the input itself;
    a parent folder that does not exist yet is fine if it can be made."""
    if source is not None and path.exists() and path.resolve() == source.resolve():
        raise OutputError("the output would overwrite the input; choose another -o", str(path))
    if path.exists() and not force:
        raise OutputError("already exists; pass --force to overwrite it", str(path))
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{str(existing)!r} is a file, so the folder {str(parent)!r} cannot be made", str(path))
    if not os.access(existing, os.W_OK):
        raise OutputError(f"the folder {str(existing)!r} is not writable", str(path))


@contextlib.contextmanager
def parents_made(path: Path):
    """Make `path`'s missing parent folders (mode per the umask) for a write; if the write
    fails, remove the ones made here, so a refusal leaves nothing behind."""
    missing = []
    parent = path.parent if str(path.parent) else Path(".")
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    made = []
    try:
        for folder in reversed(missing):
            folder.mkdir()
            made.append(folder)
        yield
    except BaseException:
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile; keep it
                folder.rmdir()
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename; leave nothing behind on failure."""
    write_atomic(path, lambda handle: handle.write(data))


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(handle) on a temporary file, then rename it to `path` (`write_path_atomic`)."""
    def write_file(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    write_path_atomic(path, write_file)


def write_path_atomic(path: Path, write: Callable[[str], object], suffix: str = ".tmp") -> None:
    """Call write(temporary path), then rename that file to `path`; on failure remove it.

    Also for libraries that write by file name (h5py, Keras). The temporary file sits in
    the destination folder (made if missing) and ends with `suffix` (Keras picks its format
    by the name); on any failure it is removed and `path` is left as it was. The file gets
    the usual mode for new files (0666 less the umask), not mkstemp's 0600, so that a
    serving process under another account can read it.
    """
    parent = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        with parents_made(path):
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=parent)
            os.close(fd)
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", str(path)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
