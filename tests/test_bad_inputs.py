"""Bad inputs, one table: every refusal exits with its documented code and leaves no trace.

Each scenario below builds one real input (and, for output scenarios, an obstacle) in its own
folder, runs the CLI in-process (`graphfix.cli.main(argv)`, output captured by capsys; three
scenarios also through `python -m graphfix` in a subprocess) and checks:

  (a) the exact exit code from the README's table;
  (b) one "graphfix: error: ..." line naming the file (and node / attribute where one is to
      blame) and the reason, followed by "nothing was written";
  (c) nothing written: the output path does not exist (or keeps its old bytes) and the folder
      listing, hidden entries included, is as before (no `.NAME.*.tmp` left over);
  (d) the input's bytes (every file under the folder) unchanged;
  (e) no Python traceback printed.

| #  | scenario                        | input                                               | exit |
|----|---------------------------------|-----------------------------------------------------|------|
| 1  | pb_truncated                    | a GraphDef .pb cut where it no longer parses        | 2    |
| 2  | pb_random_bytes                 | 2000 random bytes as .pb                            | 2    |
| 3  | pb_empty                        | an empty .pb                                        | 2    |
| 4  | pbtxt_not_a_graph_def           | "hello world" as .pbtxt                             | 2    |
| 5  | pbtxt_syntax_error_mid_file     | a real text GraphDef with a stray brace mid-file    | 2    |
| 6  | pb_is_a_saved_model_proto       | a serialized SavedModel passed as .pb               | 2    |
| 7  | pb_missing                      | a path that does not exist                          | 2    |
| 8  | dir_without_saved_model_pb      | a folder holding only a readme                      | 2    |
| 9  | attr_rnn_mode_unknown           | rnn_mode = "lstm2"                                  | 4    |
| 10 | attr_direction_unknown          | direction = "sideways"                              | 4    |
| 11 | attr_input_mode_unknown         | input_mode = "magic_input"                          | 4    |
| 12 | attr_T_int32                    | T = int32                                           | 4    |
| 13 | attr_T_string                   | T = string                                          | 4    |
| 14 | params_one_too_many             | params Const with N + 1 elements                    | 3    |
| 15 | params_one_too_few              | params Const with N - 1 elements                    | 3    |
| 16 | params_float64_on_float32_op    | params Const holds float64 values, T = float32      | 4    |
| 17 | params_2d                       | params Const of shape [2, N/2]                      | 3    |
| 18 | num_proj_disagrees_with_input_h | V3 num_proj = 2, input_h last dimension 4           | 3    |
| 19 | input_h_unknown_shape_params_fed| input_h of unknown rank, params a Placeholder       | 4    |
| 20 | training_graph_reserve_space    | reserve_space (rnn:3) consumed by another node      | 4    |
| 21 | backprop_op_present             | tf.gradients through the op: CudnnRNNBackpropV3     | 4    |
| 22 | params_to_canonical_fed_units   | CudnnRNNParamsToCanonical, num_units a Placeholder  | 4    |
| 23 | unknown_cudnn_op                | a NodeDef with op "CudnnRNNV4" (no such op)         | 4    |
| 24 | sm_truncated_saved_model_pb     | SavedModel, saved_model.pb cut                      | 2    |
| 25 | sm_random_saved_model_pb        | SavedModel, saved_model.pb of random bytes          | 2    |
| 26 | sm_missing_variables_dir        | SavedModel without variables/                       | 2    |
| 27 | sm_truncated_variables_shard    | SavedModel, variables.data-* cut in half            | 2    |
| 28 | sm_variables_index_missing      | SavedModel, variables.index removed                 | 2    |
| 29 | sm_variables_index_empty        | SavedModel, variables.index of zero bytes           | 2    |
| 30 | out_exists_no_force             | -o names an existing file, no --force               | 5    |
| 31 | out_sm_exists_no_force          | SavedModel, -o names an existing folder, no --force | 5    |
| 32 | out_parent_is_a_file            | -o model.pb/out.pb (the parent is a file)           | 5    |
| 33 | out_is_input                    | -o ./model.pb --force (the input itself)            | 5    |
| 34 | out_under_proc                  | -o /proc/graphfix_bad_inputs.pb                     | 5    |
| 35 | out_disk_full_graph_def         | fsync raises ENOSPC while writing the .pb           | 5    |
| 36 | out_disk_full_saved_model       | copytree raises ENOSPC while assembling the folder  | 5    |
| 37 | out_force_replace_fails_graph_def   | --force over out.pb; the final rename fails     | 5    |
| 38 | out_force_replace_fails_saved_model | --force over out/; the final rename fails       | 5    |
| 39 | pbtxt_binary_bytes              | 2000 random bytes as .pbtxt (not UTF-8)             | 2    |

Subprocess runs (the in-process path is representative): pb_truncated, attr_rnn_mode_unknown,
params_one_too_many.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2

from graphfix import cli
from graphfix.cudnn import layout
from builders.raw_graphs import build
from builders.saved_models import save_tf1_cudnn

REPO = Path(__file__).resolve().parent.parent
PROC_OUTPUT = "/proc/graphfix_bad_inputs.pb"
SPEC = layout.RnnSpec("lstm", 1, 4, 3)          # 1 layer, 4 units, input 3, unidirectional
N = layout.params_size(SPEC)
SM_SPEC = layout.RnnSpec("gru", 1, 3, 2)


# --- inputs, built once -----------------------------------------------------------------

def _copy(graph_def):
    out = tf.compat.v1.GraphDef()
    out.CopyFrom(graph_def)
    return out


def _node(graph_def, name):
    return next(n for n in graph_def.node if n.name == name)


def _edit(graph_def, fn):
    out = _copy(graph_def)
    fn(out)
    return out.SerializeToString()


def _set_params(graph_def, value):
    _node(graph_def, "params").attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    _node(graph_def, "params").attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum


def _set_attr_s(name, value):
    return lambda g: _node(g, "rnn").attr[name].__setattr__("s", value)


def _set_T(dtype):
    return lambda g: setattr(_node(g, "rnn").attr["T"], "type", dtype)


def _unknown_input_h(graph_def):
    shape = _node(graph_def, "input_h").attr["shape"].shape
    shape.Clear()
    shape.unknown_rank = True


def _training_graph_def():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [5, 2, 3], name="x")
        h = tf.zeros([1, 2, 4])
        params = tf.constant(np.zeros(N, np.float32), name="params")
        outs = tf.raw_ops.CudnnRNNV2(input=x, input_h=h, input_c=h, params=params, rnn_mode="lstm", name="rnn")
        tf.identity(outs[3], name="keep_reserve")
    return graph.as_graph_def()


def _backprop_graph_def():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [5, 2, 3], name="x")
        h = tf.zeros([1, 2, 4])
        params = tf.constant(np.zeros(N, np.float32), name="params")
        outs = tf.raw_ops.CudnnRNNV3(input=x, input_h=h, input_c=h, params=params, rnn_mode="lstm",
                                     sequence_lengths=tf.constant([5, 5]), is_training=True, name="rnn")
        tf.gradients(tf.reduce_sum(outs[0]), [x], name="grad")
    return graph.as_graph_def()


def _params_to_canonical_graph_def():
    graph = tf.Graph()
    with graph.as_default():
        units = tf.compat.v1.placeholder(tf.int32, [], name="num_units")
        outs = tf.raw_ops.CudnnRNNParamsToCanonical(
            num_layers=tf.constant(1), num_units=units, input_size=tf.constant(3),
            params=tf.constant(np.zeros(N, np.float32)), num_params=8, rnn_mode="lstm", name="to_canonical")
        for i, t in enumerate(outs[0] + outs[1]):
            tf.identity(t, name=f"piece{i}")
    return graph.as_graph_def()


def _unknown_op_graph_def(graph_def):
    out = _copy(graph_def)
    _node(out, "rnn").op = "CudnnRNNV4"
    return out


def _saved_model_bytes(sm_dir):
    """A real SavedModel proto (it parses as one, and has a MetaGraph), to be passed as a GraphDef."""
    from tensorflow.core.protobuf import saved_model_pb2
    data = (sm_dir / "saved_model.pb").read_bytes()
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(data)
    assert proto.meta_graphs
    return data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> bytes of every GraphDef input, and "saved_model" -> a SavedModel folder to copy."""
    lstm = build(SPEC, seed=3).graph_def
    fed = build(SPEC, params_source="fed", seed=4).graph_def
    text = text_format.MessageToString(lstm)
    cut = text.index("node {", len(text) // 2)  # a stray "}" before a later node: syntax error mid-file
    data = lstm.SerializeToString()
    truncated = next(data[:size] for size in range(len(data) // 2, 0, -1) if not _parses(data[:size]))
    root = tmp_path_factory.mktemp("built")
    save_tf1_cudnn("gru", root / "sm", op="CudnnRNNV2", spec=SM_SPEC, time=4, batch=2, seed=5, use_resource=True)
    out = {
        "lstm.pb": data,
        "truncated.pb": truncated,
        "random.pb": np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(),
        "hello.pbtxt": b"hello world\n",
        "syntax.pbtxt": (text[:cut] + "}\n" + text[cut:]).encode(),
        "saved_model_as.pb": _saved_model_bytes(root / "sm"),
        "rnn_mode.pb": _edit(lstm, _set_attr_s("rnn_mode", b"lstm2")),
        "direction.pb": _edit(lstm, _set_attr_s("direction", b"sideways")),
        "input_mode.pb": _edit(lstm, _set_attr_s("input_mode", b"magic_input")),
        "T_int32.pb": _edit(lstm, _set_T(types_pb2.DT_INT32)),
        "T_string.pb": _edit(lstm, _set_T(types_pb2.DT_STRING)),
        "params_plus1.pb": _edit(lstm, lambda g: _set_params(g, np.zeros(N + 1, np.float32))),
        "params_minus1.pb": _edit(lstm, lambda g: _set_params(g, np.zeros(N - 1, np.float32))),
        "params_f64.pb": _edit(lstm, lambda g: _set_params(g, np.zeros(N, np.float64))),
        "params_2d.pb": _edit(lstm, lambda g: _set_params(g, np.zeros((2, N // 2), np.float32))),
        "num_proj.pb": _edit(lstm, lambda g: setattr(_node(g, "rnn").attr["num_proj"], "i", 2)),
        "unknown_h.pb": _edit(fed, _unknown_input_h),
        "training.pb": _training_graph_def().SerializeToString(),
        "backprop.pb": _backprop_graph_def().SerializeToString(),
        "to_canonical.pb": _params_to_canonical_graph_def().SerializeToString(),
        "unknown_op.pb": _unknown_op_graph_def(lstm).SerializeToString(),
        "junk": b"an older output, to be kept unless --force\n",
    }
    return out, root / "sm"


def _parses(data):
    try:
        tf.compat.v1.GraphDef().ParseFromString(data)
        return True
    except Exception:
        return False


# --- scenarios ----------------------------------------------------------------------------

def _truncate_pb(sm):
    from tensorflow.core.protobuf import saved_model_pb2
    data = (sm / "saved_model.pb").read_bytes()
    for size in range(len(data) // 2, 0, -1):
        try:
            saved_model_pb2.SavedModel().ParseFromString(data[:size])
        except Exception:
            (sm / "saved_model.pb").write_bytes(data[:size])
            return
    raise AssertionError("every cut of saved_model.pb parses")


def _truncate_shard(sm):
    (shard,) = (sm / "variables").glob("variables.data-*")
    shard.write_bytes(shard.read_bytes()[:shard.stat().st_size // 2])


@dataclasses.dataclass(frozen=True)
class Scenario:
    files: dict                          # path in the folder -> key of `built` (bytes)
    argv: tuple                          # after `graphfix`, run with the folder as cwd
    code: int                            # the documented exit code
    says: tuple                          # fragments of the error line (case-insensitive)
    output: str | None = None            # the output path that must not appear (default: argv's)
    saved_model: Callable | None = None  # breaks a copy of the SavedModel at ./model
    patch: str | None = None             # a failure injected in-process (see _inject)
    bug: str | None = None               # a known graphfix bug: the test is a strict xfail


GRAPH = {"model.pb": "lstm.pb"}


def _one(key):
    return {"model.pb": key}


SCENARIOS = {
    "pb_truncated": Scenario(_one("truncated.pb"), ("model.pb",), 2, ("model.pb", "not a valid binary graphdef")),
    "pb_random_bytes": Scenario(_one("random.pb"), ("model.pb",), 2, ("model.pb", "not a valid binary graphdef")),
    "pb_empty": Scenario({"model.pb": b""}, ("model.pb",), 2, ("model.pb", "holds no nodes")),
    "pbtxt_not_a_graph_def": Scenario({"model.pbtxt": "hello.pbtxt"}, ("model.pbtxt",), 2,
                                      ("model.pbtxt", "not a valid text graphdef")),
    "pbtxt_syntax_error_mid_file": Scenario({"model.pbtxt": "syntax.pbtxt"}, ("model.pbtxt",), 2,
                                            ("model.pbtxt", "not a valid text graphdef", "ParseError")),
    "pb_is_a_saved_model_proto": Scenario(_one("saved_model_as.pb"), ("model.pb",), 2, ("model.pb",)),
    "pb_missing": Scenario({}, ("absent.pb",), 2, ("absent.pb", "no such file"), output="absent_cpu.pb"),
    "dir_without_saved_model_pb": Scenario({"notamodel/readme.txt": b"hi\n"}, ("notamodel",), 2,
                                           ("notamodel", "without saved_model.pb"), output="notamodel_cpu"),
    "attr_rnn_mode_unknown": Scenario(_one("rnn_mode.pb"), ("model.pb",), 4,
                                      ("model.pb", "'rnn'", "rnn_mode='lstm2'")),
    "attr_direction_unknown": Scenario(_one("direction.pb"), ("model.pb",), 4,
                                       ("model.pb", "'rnn'", "direction='sideways'")),
    "attr_input_mode_unknown": Scenario(_one("input_mode.pb"), ("model.pb",), 4,
                                        ("model.pb", "'rnn'", "input_mode", "magic_input")),
    "attr_T_int32": Scenario(_one("T_int32.pb"), ("model.pb",), 4, ("model.pb", "'rnn'", "T=", "int32")),
    "attr_T_string": Scenario(_one("T_string.pb"), ("model.pb",), 4, ("model.pb", "'rnn'", "T=", "string")),
    "params_one_too_many": Scenario(_one("params_plus1.pb"), ("model.pb",), 3,
                                    ("model.pb", "'rnn'", f"has {N + 1} elements", f"needs {N}")),
    "params_one_too_few": Scenario(_one("params_minus1.pb"), ("model.pb",), 3,
                                   ("model.pb", "'rnn'", f"has {N - 1} elements", f"needs {N}")),
    "params_float64_on_float32_op": Scenario(_one("params_f64.pb"), ("model.pb",), 4,
                                             ("model.pb", "'rnn'", "params", "float64")),
    "params_2d": Scenario(_one("params_2d.pb"), ("model.pb",), 3, ("model.pb", "'rnn'", "1-D", f"(2, {N // 2})")),
    "num_proj_disagrees_with_input_h": Scenario(_one("num_proj.pb"), ("model.pb",), 3,
                                                ("model.pb", "'rnn'", "num_proj 2", "input_h")),
    "input_h_unknown_shape_params_fed": Scenario(_one("unknown_h.pb"), ("model.pb",), 4,
                                                 ("model.pb", "'rnn'", "input_h", "unknown static shape")),
    "training_graph_reserve_space": Scenario(_one("training.pb"), ("model.pb",), 4,
                                             ("model.pb", "'rnn'", "training graph", "keep_reserve")),
    "backprop_op_present": Scenario(_one("backprop.pb"), ("model.pb",), 4,
                                    ("model.pb", "training graph", "CudnnRNNBackprop")),
    "params_to_canonical_fed_units": Scenario(_one("to_canonical.pb"), ("model.pb",), 4,
                                              ("model.pb", "'to_canonical'", "num_units", "not a constant")),
    "unknown_cudnn_op": Scenario(_one("unknown_op.pb"), ("model.pb",), 4,
                                 ("model.pb", "'rnn'", "CudnnRNNV4", "not supported")),
    "sm_truncated_saved_model_pb": Scenario({}, ("model",), 2, ("model/saved_model.pb", "not a valid savedmodel"),
                                            output="model_cpu", saved_model=_truncate_pb),
    "sm_random_saved_model_pb": Scenario({"model/saved_model.pb": "random.pb"}, ("model",), 2,
                                         ("model/saved_model.pb", "not a valid savedmodel"),
                                         output="model_cpu", saved_model=lambda sm: None),
    "sm_missing_variables_dir": Scenario({}, ("model",), 2, ("model", "has variables but", "variables.index"),
                                         output="model_cpu", saved_model=lambda sm: shutil.rmtree(sm / "variables")),
    "sm_truncated_variables_shard": Scenario({}, ("model",), 2, ("model", "variables/ cannot be read"),
                                             output="model_cpu", saved_model=_truncate_shard),
    "sm_variables_index_missing": Scenario({}, ("model",), 2, ("model", "variables.index is missing"),
                                           output="model_cpu",
                                           saved_model=lambda sm: (sm / "variables" / "variables.index").unlink()),
    "sm_variables_index_empty": Scenario({"model/variables/variables.index": b""}, ("model",), 2,
                                         ("model", "variables/ cannot be read"), output="model_cpu",
                                         saved_model=lambda sm: None),
    "out_exists_no_force": Scenario({**GRAPH, "out.pb": "junk"}, ("model.pb", "-o", "out.pb"), 5,
                                    ("out.pb", "already exists", "--force")),
    "out_sm_exists_no_force": Scenario({"out/keep.txt": "junk"}, ("model", "-o", "out"), 5,
                                       ("out", "already exists", "--force"), saved_model=lambda sm: None),
    "out_parent_is_a_file": Scenario(GRAPH, ("model.pb", "-o", "model.pb/out.pb"), 5,
                                     ("model.pb/out.pb", "is a file", "cannot be made")),
    "out_is_input": Scenario(GRAPH, ("model.pb", "-o", "./model.pb", "--force"), 5,
                             ("model.pb", "overwrite the input")),
    "out_under_proc": Scenario(GRAPH, ("model.pb", "-o", PROC_OUTPUT), 5, (PROC_OUTPUT,)),
    "out_disk_full_graph_def": Scenario(GRAPH, ("model.pb", "-o", "out.pb"), 5,
                                        ("out.pb", "cannot write", os.strerror(errno.ENOSPC)), patch="fsync"),
    "out_force_replace_fails_graph_def": Scenario({**GRAPH, "out.pb": "junk"}, ("model.pb", "-o", "out.pb", "-f"), 5,
                                                  ("out.pb", "cannot write", os.strerror(errno.ENOSPC)),
                                                  patch="replace_tmp"),
    "out_force_replace_fails_saved_model": Scenario(
        {"out/keep.txt": "junk"}, ("model", "-o", "out", "-f"), 5, ("out", "cannot write", os.strerror(errno.ENOSPC)),
        saved_model=lambda sm: None, patch="replace_tmp"),
    "pbtxt_binary_bytes": Scenario({"model.pbtxt": "random.pb"}, ("model.pbtxt",), 2,
                                   ("model.pbtxt", "not a valid text graphdef")),
    "out_disk_full_saved_model": Scenario({}, ("model", "-o", "out"), 5,
                                          ("out", "cannot write", os.strerror(errno.ENOSPC)),
                                          saved_model=lambda sm: None, patch="copytree"),
}
SUBPROCESS = ("pb_truncated", "attr_rnn_mode_unknown", "params_one_too_many")


def _default_output(argv):
    if "-o" in argv:
        return argv[argv.index("-o") + 1]
    model = argv[0]
    return model.replace(".pbtxt", "_cpu.pbtxt") if model.endswith(".pbtxt") else model.replace(".pb", "_cpu.pb")


def snapshot(folder: Path) -> dict:
    """Every entry under folder, hidden ones too -> (bytes, mtime_ns), None for folders."""
    return {str(p.relative_to(folder)): None if p.is_dir() else (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _prepare(folder: Path, scenario: Scenario, built) -> None:
    contents, saved_model = built
    if scenario.saved_model is not None:
        shutil.copytree(saved_model, folder / "model")
        scenario.saved_model(folder / "model")
    for rel, content in scenario.files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(content if isinstance(content, bytes) else contents[content])


def _inject(monkeypatch, patch):
    def enospc(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if patch == "fsync":
        from graphfix.io import graph_def_file
        monkeypatch.setattr(graph_def_file.os, "fsync", enospc)
    elif patch == "replace_tmp":  # moving the finished temporary file/folder into place fails
        real = os.replace

        def replace(src, dst, *args, **kwargs):
            if Path(src).name.startswith(".") and Path(src).name.endswith(".tmp"):
                enospc()
            return real(src, dst, *args, **kwargs)
        monkeypatch.setattr(os, "replace", replace)
    elif patch == "copytree":
        from graphfix.io import saved_model_dir
        monkeypatch.setattr(saved_model_dir.shutil, "copytree", enospc)


@pytest.fixture(autouse=True)
def _fresh_logging():
    """Leave the root logger as it was (cli.main logs through the "graphfix" logger's own handler)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _check(name, code, stdout, stderr, folder, before):
    scenario = SCENARIOS[name]
    assert code == scenario.code, (code, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("graphfix: error: ")]
    assert len(errors) == 1, stderr
    assert "nothing was written" in stderr
    assert "Traceback" not in stdout + stderr and "internal error" not in stderr, stderr
    output = os.path.normpath(scenario.output or _default_output(scenario.argv))
    out_path = folder / output
    assert snapshot(folder) == before, "files created, changed or touched"
    if output not in before:
        assert not out_path.exists(), output
    assert not os.path.exists(PROC_OUTPUT)
    # last, so that a known-bug scenario (strict xfail on its message) still checks all of the above
    assert errors[0].startswith(f"graphfix: error: {scenario.says[0]}:"), (scenario.says[0], errors[0])
    for fragment in scenario.says:
        assert fragment.lower() in errors[0].lower(), (fragment, errors[0])
    return errors[0]


def _params(names):
    return [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SCENARIOS[n].bug)) if SCENARIOS[n].bug
            else n for n in names]


@pytest.mark.parametrize("name", _params(SCENARIOS))
def test_bad_input_in_process(name, built, tmp_path, monkeypatch, capsys):
    scenario = SCENARIOS[name]
    folder = tmp_path / "case"
    folder.mkdir()
    _prepare(folder, scenario, built)
    before = snapshot(folder)
    monkeypatch.chdir(folder)
    _inject(monkeypatch, scenario.patch)
    capsys.readouterr()
    code = cli.main(list(scenario.argv))
    captured = capsys.readouterr()
    message = _check(name, code, captured.out, captured.err, folder, before)
    print(f"{name}: exit {code}: {message}")


@pytest.mark.parametrize("name", _params(SUBPROCESS))
def test_bad_input_subprocess(name, built, tmp_path):
    scenario = SCENARIOS[name]
    folder = tmp_path / "case"
    folder.mkdir()
    _prepare(folder, scenario, built)
    before = snapshot(folder)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "graphfix", *scenario.argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    _check(name, proc.returncode, proc.stdout, proc.stderr, folder, before)


def test_docstring_table_matches_the_scenarios():
    """The table above is the scenario list: same names, same exit codes, at least 25 of them."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in __doc__.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    table = {name: int(code) for _, name, _, code in rows}
    assert [int(number) for number, *_ in rows] == list(range(1, len(rows) + 1))
    assert table == {name: scenario.code for name, scenario in SCENARIOS.items()}
    assert len(table) >= 25
    assert {2, 3, 4, 5} <= set(table.values())
    assert set(SUBPROCESS) <= set(SCENARIOS)
