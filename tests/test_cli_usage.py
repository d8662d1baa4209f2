"""The command line as a first-time user meets it: usage errors, help, output paths, permissions.

Usage errors are checked with TensorFlow made unimportable (`sys.modules["tensorflow"] =
None` in a subprocess): if any of them imported it, the run would end in the "tensorflow is
not installed" message (exit 1) instead of argparse's usage error (exit 2).

    python -m graphfix --version | help [COMMAND] | inspct DIR | MODEL --batch-size 1
        -> exit 0 / 2 before TensorFlow loads
    python -m graphfix MODEL -o a/b/out.pb        -> a/b/ made (removed again on a refusal)
    python -m graphfix MODEL -o out/              -> out/MODEL_cpu.pb
    python -m graphfix SAVED_MODEL -o out.pb      -> exit 5: a SavedModel converts to a folder
    python -m graphfix SAVED_MODEL                -> folders 0777 & ~umask, files 0666 & ~umask
    python -m graphfix PLAIN_MODEL -o out         -> out is the input, unchanged (nothing to convert)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from builders.raw_graphs import build
from graphfix.cudnn import layout

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cudnn_lstm_gru.pb"
NO_TF = "import sys; sys.modules['tensorflow'] = None; from graphfix import cli; sys.exit(cli.main(sys.argv[1:]))"


def _env() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_without_tensorflow(*argv, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TF, *map(str, argv)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=60)


def run_cli(*argv, cwd=REPO, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphfix", *map(str, argv)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


# --- usage, before TensorFlow -----------------------------------------------------------

def test_version():
    from graphfix.version import __version__
    proc = run_without_tensorflow("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"graphfix {__version__}"


@pytest.mark.parametrize("argv, prog", [(["help"], "usage: graphfix [-h]"),
                                        (["help", "inspect"], "usage: graphfix inspect"),
                                        (["help", "extract"], "usage: graphfix extract")])
def test_help_command(argv, prog):
    proc = run_without_tensorflow(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(prog)


@pytest.mark.parametrize("argv, message", [
    (["inspct", "model_dir"], "no such file or command 'inspct'; did you mean 'graphfix inspect ...'?"),
    (["extrct", "model_dir", "-o", "w.npz"], "did you mean 'graphfix extract ...'?"),
    ([str(EXAMPLE), "--batch-size", "1"], "--batch-size only means something with --target tflite"),
    ([str(EXAMPLE), "--tflite", "m.tflite", "--no-fused-lstm"],
     "--tflite and --no-fused-lstm only mean something with --target tflite"),
    ([str(EXAMPLE), "--target", "tflite", "--batch-size", "0"], "must be at least 1, got 0"),
    ([str(EXAMPLE), "--target", "tflite", "--batch-size", "two"], "not a whole number: 'two'"),
    ([str(EXAMPLE), "--gate-order", "iofc"], "invalid choice: 'iofc'"),
])
def test_usage_errors_exit_2_before_tensorflow(argv, message):
    proc = run_without_tensorflow(*argv)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "usage: graphfix" in proc.stderr
    assert "not installed" not in proc.stderr


def test_missing_tensorflow_is_named_not_an_internal_error(tmp_path):
    proc = run_without_tensorflow(EXAMPLE, "-o", tmp_path / "out.pb")
    assert proc.returncode == 1
    assert "graphfix: error: tensorflow is not installed for " in proc.stderr
    assert "pip install" in proc.stderr and ".venv/bin/python -m graphfix" in proc.stderr
    assert "internal error" not in proc.stderr
    assert not (tmp_path / "out.pb").exists()


def test_options_before_the_command_and_explicit_convert(tmp_path):
    listed = run_cli("-q", "inspect", EXAMPLE)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{EXAMPLE}: GraphDef, 3 cuDNN ops")
    converted = run_cli("convert", EXAMPLE, "-o", tmp_path / "out.pb", "-q")
    assert converted.returncode == 0, converted.stderr
    assert (tmp_path / "out.pb").is_file()


# --- where outputs go -------------------------------------------------------------------

def _lstm_pb(folder: Path) -> Path:
    path = folder / "model.pb"
    path.write_bytes(build(layout.RnnSpec("lstm", 1, 4, 3, 1)).graph_def.SerializeToString())
    return path


def test_missing_parent_folders_are_made(tmp_path):
    model = _lstm_pb(tmp_path)
    proc = run_cli(model, "-o", tmp_path / "a" / "b" / "out.pb", umask=0o022)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "a" / "b" / "out.pb").is_file()
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755


def test_a_refusal_leaves_no_parent_folder_behind(tmp_path):
    model = tmp_path / "model.pb"
    model.write_bytes(b"not a graph")
    proc = run_cli(model, "-o", tmp_path / "a" / "b" / "out.pb")
    assert proc.returncode == 2, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pb"]
