"""What a first-time user sees: graphfix's own lines, not TensorFlow's C++ start-up logs.

TensorFlow prints absl/oneDNN/cudart lines while it is imported (before absl's logging is
set up, so TF_CPP_MIN_LOG_LEVEL does not reach them). The CLI and scripts/demo.sh import it
through `graphfix.quiet_import`, which keeps those lines off stderr unless --debug.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cudnn_lstm_gru.pb"
# A TensorFlow C++ log line ("I0000 00:00:... port.cc:153] ...") or absl's notice before it
CPP_LOG = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\]|absl::InitializeLog")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def test_cli_first_line_is_graphfix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "graphfix", str(EXAMPLE), "-o", str(tmp_path / "out.pb")],
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err and err[0].startswith("graphfix: converting CudnnRNNV3 "), proc.stderr
    assert not [line for line in err + proc.stdout.splitlines() if CPP_LOG.search(line)], proc.stderr
    assert proc.stdout.splitlines()[0].startswith("converted 3 cuDNN RNN ops in ")


def test_demo_shows_only_graphfix_lines():
    """The README's first command, as written (the venv exists: scripts/test.sh made it)."""
    proc = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if CPP_LOG.search(line)], proc.stderr
    assert proc.stdout.splitlines()[0] == ("$ python -m graphfix examples/cudnn_lstm_gru.pb "
                                           "-o out/cudnn_lstm_gru_cpu.pb --force")
    assert "max abs difference from Keras's CPU layers" in proc.stdout


FAKE_TF = {
    "quiet": "import os\nos.write(2, b'NOISE from the C++ side\\n')\n",
    "broken": "import os\nos.write(2, b'NOISE before failing\\n')\nraise ImportError('libfoo.so missing')\n",
}


def _import_fake(tmp_path: Path, kind: str) -> subprocess.CompletedProcess:
    """import_tensorflow_quietly() on a stand-in `tensorflow` that writes to fd 2 as TF's C++ code does."""
    (tmp_path / kind).mkdir()
    (tmp_path / kind / "tensorflow.py").write_text(FAKE_TF[kind])
    code = textwrap.dedent("""
        from graphfix.quiet_import import import_tensorflow_quietly
        import os
        import_tensorflow_quietly()
        os.write(2, b'after the import\\n')
    """)
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path / kind), str(REPO)]))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_quiet_import_hides_start_up_output(tmp_path):
    proc = _import_fake(tmp_path, "quiet")
    assert proc.returncode == 0, proc.stderr
    assert "NOISE" not in proc.stderr
    assert proc.stderr == "after the import\n"  # stderr works again afterwards


def test_quiet_import_shows_output_of_a_failed_import(tmp_path):
    proc = _import_fake(tmp_path, "broken")
    assert proc.returncode != 0
    assert "NOISE before failing" in proc.stderr
    assert "libfoo.so missing" in proc.stderr
