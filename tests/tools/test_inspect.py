"""`graphfix inspect`: every cuDNN op listed with its place, configuration, params source and reachability.

In-process on raw-op graphs (tests/builders/raw_graphs.py) whose configuration is known; end to end
through the CLI on a Keras 3 SavedModel exported on its cuDNN path and on a GraphDef file:

    x --> [CudnnRNNV3 "rnn"] --> out0..2          GraphDef: top level, reachable
    x --> [StatefulPartitionedCall f=F] --> y     F holds the cuDNN op: reachable
          library: F, and an uncalled copy G      G: listed, not reachable
"""

import concurrent.futures
import json

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build
from builders.tool_models import run_cli, save_keras3_lstm_gru

from graphfix.cudnn import layout
from graphfix.tools.inspect import survey_graph_def


def _one(graph_def, **kwargs):
    ops = [op for op in survey_graph_def(graph_def, **kwargs) if op.kind == "forward"]
    assert len(ops) == 1, [op.node for op in ops]
    return ops[0]


def test_reads_the_configuration_conversion_reads():
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec, time_major=False, lengths=np.array([5, 2, 4], np.int32))
    op = _one(case.graph_def)
    assert (op.where, op.node, op.op, op.kind) == ("graph", "rnn", "CudnnRNNV3", "forward")
    assert op.forward.spec == spec and op.forward.time_major is False
    assert op.forward.dtype == tf.float32 and op.problem is None
    assert op.reachable_from == ["top level"]
    assert op.params_kind == "constant" and "Const 'params'" in op.params_source
    np.testing.assert_array_equal(op.params.value, case.buffer)
    text = "\n".join(op.lines())
    for fragment in ("CudnnRNNV3 'rnn' in graph (reachable from the top level)", "lstm, 2 layers, bidirectional",
                     "input 3, units 4, num_proj 0", "float32, batch-major, sequence lengths: constant [5, 2, 4]",
                     "gates i, f, c, o (cuDNN)", f"({layout.params_size(spec)} values)"):
        assert fragment in text, (fragment, text)


@pytest.mark.parametrize("source,expect", [
    ("concat", "computed from constants by ConcatV2 'params'"),
    ("canonical", "CudnnRNNCanonicalToParams 'params' over constants"),
    ("fed", "known only at run time: it depends on node 'params' (op Placeholder)"),
])
def test_params_sources(source, expect):
    spec = layout.RnnSpec("gru", 1, 5, 3, 1)
    graph_def = build(spec, op="CudnnRNNV2", params_source=source).graph_def
    op = _one(graph_def)
    assert expect in op.params_source
    helpers = [(o.node, o.kind) for o in survey_graph_def(graph_def) if o.kind != "forward"]
    assert helpers == ([("params", "helper")] if source == "canonical" else [])
    assert op.params_kind == ("run time" if source == "fed" else "constant")
    assert op.forward.sequence_lengths == "none"


def test_projection_and_float16():
    spec = layout.RnnSpec("lstm", 1, 6, 3, 1, num_proj=4)
    op = _one(build(spec, dtype=np.float16).graph_def)
    assert op.forward.spec.num_proj == 4 and op.to_json()["num_proj"] == 4
    assert op.to_json()["dtype"] == "float16"


def test_problem_is_reported_not_raised():
    case = build(layout.RnnSpec("lstm", 1, 4, 3, 1))
    n = layout.params_size(case.spec)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.CopyFrom(case.graph_def)
    for node in graph_def.node:
        if node.name == "params":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros(n + 1, np.float32)))
    op = _one(graph_def)
    assert op.forward is None and f"has {n + 1} elements" in op.problem and str(n) in op.problem
    assert "problem:" in "\n".join(op.lines())


def _function_graph():
    """A GRU inside library function F, called by the graph; plus G, an uncalled copy of F."""
    spec = layout.RnnSpec("gru", 1, 4, 3)
    buf = np.arange(layout.params_size(spec), dtype=np.float32) / 100
    graph = tf.Graph()
    with graph.as_default():
        @tf.function(autograph=False)
        def rnn(x):
            h = tf.zeros([1, 2, 4])
            return tf.raw_ops.CudnnRNNV2(input=x, input_h=h, input_c=h, params=tf.constant(buf),
                                         rnn_mode="gru", name="rnn")[0]
        tf.identity(rnn(tf.compat.v1.placeholder(tf.float32, [5, 2, 3], name="x")), name="y")
    graph_def = graph.as_graph_def()
    called = graph_def.library.function[0].signature.name
    copy = graph_def.library.function.add()
    copy.CopyFrom(graph_def.library.function[0])
    copy.signature.name = "uncalled_copy"
    return graph_def, called


def test_functions_and_reachability():
    graph_def, called = _function_graph()
    ops = {op.where: op for op in survey_graph_def(graph_def)}
    assert set(ops) == {f"function {called}", "function uncalled_copy"}
    assert ops[f"function {called}"].reachable_from == ["top level"]
    assert ops["function uncalled_copy"].reachable_from == []
    assert ops["function uncalled_copy"].function == "uncalled_copy"
    assert "not reachable" in ops["function uncalled_copy"].lines()[0]
    assert ops[f"function {called}"].forward.spec == layout.RnnSpec("gru", 1, 4, 3)


def test_gate_order_is_shown_for_lstm_only():
    lstm = build(layout.RnnSpec("lstm", 1, 4, 3, 1))
    op = _one(lstm.graph_def, gate_order="ifoc")
    assert "gates i, f, o, c (ROCm/MIOpen)" in "\n".join(op.lines()) and op.to_json()["gate_order"] == "ifoc"
    gru = _one(build(layout.RnnSpec("gru", 1, 4, 3, 1)).graph_def, gate_order="ifoc")
    assert gru.to_json()["gate_order"] == "ifco"
    assert any("applies to LSTM gates only" in w for w in gru.forward.warnings)


# --- end to end through the CLI -------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """One folder: a Keras 3 SavedModel, a GraphDef, a model file named 'inspect'; the CLI runs on them."""
    root = tmp_path_factory.mktemp("inspect")
    save_keras3_lstm_gru(root / "k3")
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec, time_major=False, lengths=np.array([5, 2, 4], np.int32))
    (root / "model.pb").write_bytes(case.graph_def.SerializeToString())
    (root / "inspect").write_bytes(case.graph_def.SerializeToString())
    runs = {
        "saved_text": ["inspect", "k3"],
        "saved_json": ["inspect", "k3", "--json"],
        "pb_json": ["inspect", "model.pb", "--json"],
        "named_inspect": ["./inspect", "-o", "converted.pb"],
        "missing": ["inspect", "absent.pb"],
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_cli, v, root) for k, v in runs.items()}
        return root, {k: f.result() for k, f in futures.items()}


def test_cli_inspect_saved_model_text(cli_runs):
    _, runs = cli_runs
    proc = runs["saved_text"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "k3: SavedModel, 2 cuDNN ops"
    lstm = next(i for i, line in enumerate(lines) if "lstm_1/CudnnRNNV3'" in line)
    assert "in function __inference___call___" in lines[lstm]
    assert "(reachable from signatures serve, serving_default)" in lines[lstm]
    assert "lstm, 1 layer, unidirectional, input 3, units 4, num_proj 0" in lines[lstm + 1]
    assert "float32, batch-major, sequence lengths: run time" in lines[lstm + 2]
    assert ("params: saved variables lstm/lstm_cell/bias, lstm/lstm_cell/kernel, lstm/lstm_cell/recurrent_kernel"
            in lines[lstm + 3])
    assert any("gru, 1 layer, unidirectional, input 4, units 2" in line for line in lines)
    assert not (cli_runs[0] / "k3_cpu").exists(), "inspect must not convert"


def test_cli_inspect_saved_model_json(cli_runs):
    proc = cli_runs[1]["saved_json"]
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["format"] == "SavedModel" and len(data["ops"]) == 2
    by_mode = {op["mode"]: op for op in data["ops"]}
    lstm, gru = by_mode["lstm"], by_mode["gru"]
    assert lstm["reachable"] is True and lstm["reachable_from"] == ["serve", "serving_default"]
    assert lstm["time_major"] is False and lstm["sequence_lengths"] == "run time"
    assert (lstm["num_layers"], lstm["num_units"], lstm["input_size"]) == (1, 4, 3)
    assert lstm["params"]["source"] == "variables" and lstm["params"]["size"] == 4 * 4 * (3 + 4) + 2 * 4 * 4
    assert "gru/gru_cell/kernel" in gru["params"]["variables"]
    assert gru["function"].startswith("__inference___call___")


def test_cli_inspect_graph_def_json(cli_runs):
    proc = cli_runs[1]["pb_json"]
    assert proc.returncode == 0, proc.stderr
    (op,) = json.loads(proc.stdout)["ops"]
    assert op["where"] == "graph" and op["node"] == "rnn" and op["reachable_from"] == ["top level"]
    assert op["direction"] == "bidirectional" and op["num_layers"] == 2
    assert op["sequence_length_values"] == [5, 2, 4] and op["params"]["source"] == "constant"


def test_cli_model_named_inspect_is_converted_when_given_as_path(cli_runs):
    root, runs = cli_runs
    proc = runs["named_inspect"]
    assert proc.returncode == 0, proc.stderr
    assert "converted 1 cuDNN RNN op in inspect" in proc.stdout
    converted = tf.compat.v1.GraphDef.FromString((root / "converted.pb").read_bytes())
    assert [n.op for n in converted.node if n.name == "rnn"] == ["PartitionedCall"]
    assert not any(n.op.startswith("Cudnn") for n in converted.node)


def test_cli_inspect_unreadable_model(cli_runs):
    proc = cli_runs[1]["missing"]
    assert proc.returncode == 2
    assert "absent.pb: no such file" in proc.stderr and "Traceback" not in proc.stderr
