"""README "Install": graphfix as a package in someone else's environment, not run from the clone.

    pip wheel --no-deps .  ->  graphfix-VERSION-py3-none-any.whl
    pip install --no-deps --target SITE WHEEL
    cd OUTSIDE_THE_CLONE; PYTHONPATH=SITE python -m graphfix examples/cudnn_lstm_gru.pb -o out.pb

The dependencies (TensorFlow, numpy, protobuf) come from the environment running the tests,
installed from the same pyproject.toml by scripts/setup.sh; what this checks is that the
package itself is complete: every module of every folder is in the wheel, and the installed
copy converts the bundled example on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cudnn_lstm_gru.pb"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, site folder) of graphfix built from this checkout."""
    root = tmp_path_factory.mktemp("install")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("graphfix-*.whl")
    site = root / "site"
    done = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return wheel, site


def test_wheel_holds_every_module(installed):
    wheel, _ = installed
    in_wheel = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    in_tree = {str(p.relative_to(REPO)) for p in (REPO / "graphfix").rglob("*.py")}
    assert in_tree and in_tree <= in_wheel, sorted(in_tree - in_wheel)


def test_installed_copy_converts_the_example(installed, tmp_path):
    _, site = installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run([sys.executable, "-c", "import graphfix; print(graphfix.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # not the clone's copy
    proc = subprocess.run([sys.executable, "-m", "graphfix", str(EXAMPLE), "-o", "out.pb"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "wrote out.pb"
    assert (tmp_path / "out.pb").stat().st_size > 0
