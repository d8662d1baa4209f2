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


def test_output_folder_with_slash_or_existing_gets_the_default_name(tmp_path):
    model = _lstm_pb(tmp_path)
    new = run_cli(model, "-o", f"{tmp_path / 'new'}/", "-q")
    assert new.returncode == 0, new.stderr
    assert (tmp_path / "new" / "model_cpu.pb").is_file()
    (tmp_path / "existing").mkdir()
    existing = run_cli(model, "-o", tmp_path / "existing", "--force", "-q")
    assert existing.returncode == 0, existing.stderr
    assert sorted(p.name for p in (tmp_path / "existing").iterdir()) == ["model_cpu.pb"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from builders.saved_models import save_tf1_cudnn
    root = tmp_path_factory.mktemp("usage_sm")
    save_tf1_cudnn("gru", root / "model", op="CudnnRNNV2", spec=layout.RnnSpec("gru", 1, 4, 3, 1), time=4, batch=2,
                   seed=3, use_resource=True)
    return root / "model"


def test_saved_model_output_named_like_a_file_is_refused(saved_model, tmp_path):
    proc = run_cli(saved_model, "-o", tmp_path / "out.pb")
    assert proc.returncode == 5, proc.stderr
    assert "a SavedModel converts to a SavedModel folder" in proc.stderr and "out_cpu/" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_model_output_gets_the_umask_mode(saved_model, tmp_path, umask):
    """The folder and the files graphfix writes: the umask's mode (mkdtemp alone gives 0700);
    what is copied from the input (variables/, assets/) keeps the input's modes."""
    out = tmp_path / "out"
    proc = run_cli(saved_model, "-o", out, "-q", umask=umask)
    assert proc.returncode == 0, proc.stderr
    mode = lambda p: oct(stat.S_IMODE(p.stat().st_mode))  # noqa: E731
    assert mode(out) == oct(0o777 & ~umask)
    assert {mode(out / name) for name in ("saved_model.pb", "fingerprint.pb") if (out / name).exists()} == {
        oct(0o666 & ~umask)}
    copied = [p.relative_to(out) for p in out.rglob("*") if p.name not in ("saved_model.pb", "fingerprint.pb")]
    assert copied and {str(p): mode(out / p) for p in copied} == {str(p): mode(saved_model / p) for p in copied}


def _plain_pb(folder: Path) -> Path:
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 3], name="x")
        tf.identity(tf.matmul(x, tf.constant(np.arange(6, dtype=np.float32).reshape(3, 2))), name="y")
    path = folder / "plain.pb"
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_nothing_to_convert_writes_the_output_only_when_asked(tmp_path):
    import tensorflow as tf
    model = _plain_pb(tmp_path)
    quiet = run_cli(model)
    assert quiet.returncode == 0, quiet.stderr
    assert "nothing to convert; nothing written (pass -o to write it anyway)" in quiet.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.pb"]
    asked = run_cli(model, "-o", tmp_path / "out.pb")
    assert asked.returncode == 0, asked.stderr
    assert f"wrote it as it is to {tmp_path / 'out.pb'}" in asked.stdout
    original = tf.compat.v1.GraphDef.FromString(model.read_bytes())
    written = tf.compat.v1.GraphDef.FromString((tmp_path / "out.pb").read_bytes())
    assert [(n.name, n.op) for n in written.node] == [(n.name, n.op) for n in original.node]


def test_saved_model_pb_and_keras_files_get_advice(saved_model, tmp_path):
    pb = run_cli(saved_model / "saved_model.pb")
    assert pb.returncode == 2, pb.stderr
    assert f"pass the folder, graphfix {saved_model}/" in pb.stderr
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\x03\x04 a zip")
    keras = run_cli(keras_file)
    assert keras.returncode == 2, keras.stderr
    assert "Keras 3's own format" in keras.stderr and "(.h5)" in keras.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_report_closes_with_the_signatures(saved_model, tmp_path):
    proc = run_cli(saved_model, "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"wrote {tmp_path / 'out'}"
    assert lines[-2] == ("  signature 'serving_default': h float32 [1, 2, 4], x float32 [4, 2, 3] "
                         "-> h_n float32 [1, 2, 4], y float32 [4, 2, 4]")
    assert not [line for line in lines if "__saved_model" in line]
