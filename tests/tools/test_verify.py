"""`--verify`: each converted op against the numpy cuDNN reference, and a run of the whole converted model.

In-process on raw-op graphs (every kind of params source, dtypes, a library function, a
deliberately corrupted conversion that verification must catch, ROCm gate order through
both conversion paths); end to end through the CLI on the bundled tf_keras example, a
Keras 3 SavedModel, a ROCm-ordered LSTM, and a conversion broken on purpose (exit 6).
"""

import concurrent.futures
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, run_graph_def
from builders.tool_models import REPO, run_cli, save_keras3_lstm_gru, to_ifoc
from test_inspect import _function_graph

import graphfix
from graphfix.cudnn import gates, layout, reference
from graphfix.tools import verify

EXAMPLE = REPO / "examples" / "cudnn_lstm_gru.pb"


def _verified(case_graph_def, gate_order="ifco"):
    converted, report = graphfix.convert_graph_def(case_graph_def, gate_order=gate_order)
    return converted, verify.verify_graph_def(case_graph_def, converted, report, gate_order)


@pytest.mark.parametrize("kwargs,dtype", [
    (dict(spec=layout.RnnSpec("lstm", 2, 4, 3, 2), time_major=False, lengths=np.array([5, 2, 0], np.int32)), "float32"),
    (dict(spec=layout.RnnSpec("gru", 1, 5, 3, 1), op="CudnnRNNV2", dtype=np.float64), "float64"),
    (dict(spec=layout.RnnSpec("lstm", 2, 3, 3, 1), dtype=np.float16, params_source="concat"), "float16"),
    (dict(spec=layout.RnnSpec("lstm", 1, 6, 3, 2, num_proj=4), params_source="canonical"), "float32"),
    (dict(spec=layout.RnnSpec("lstm", 1, 4, 3, 1), num_proj=4), "float32"),  # num_proj == units: no projection
    (dict(spec=layout.RnnSpec("rnn_relu", 3, 4, 4, 1, "skip_input"), op="CudnnRNN"), "float32"),
    (dict(spec=layout.RnnSpec("gru", 2, 8, 3, 2), dtype=tf.bfloat16.as_numpy_dtype), "bfloat16"),
])
def test_converted_ops_match_the_reference(kwargs, dtype):
    spec = kwargs.pop("spec")
    result = _verified(build(spec, **kwargs).graph_def)[1]
    (check,) = result.checks
    assert result.ok, result.lines()
    assert (check.node, check.dtype, check.error) == ("rnn", dtype, None)
    assert 0 <= check.max_abs <= verify.TOLERANCE[dtype] and check.max_rel >= 0
    assert check.params == "the model's (constant)"
    assert result.runs[0].ok and "ran on CPU" in result.runs[0].detail
    if "lengths" in kwargs:
        assert "sequence lengths [5, 2, 0] (constant)" in check.inputs and "input [3, 5, 3]" in check.inputs


def test_params_known_only_at_run_time_are_checked_with_a_random_buffer():
    result = _verified(build(layout.RnnSpec("gru", 2, 4, 3, 2), params_source="fed", lengths_fed=True).graph_def)[1]
    (check,) = result.checks
    assert check.ok and check.params.startswith("random (the model's are known only at run time")
    assert "sequence lengths" in check.inputs and "(random)" in check.inputs


def test_op_inside_a_library_function():
    graph_def, called = _function_graph()
    converted, report = graphfix.convert_graph_def(graph_def)
    result = verify.verify_graph_def(graph_def, converted, report)
    wheres = [c.where for c in result.checks]
    assert f"function {called}" in wheres and sorted(wheres) == sorted(op.where for op in report.ops)
    assert result.ok, result.lines()


def test_a_corrupted_conversion_fails_verification():
    case = build(layout.RnnSpec("lstm", 1, 4, 3, 1))
    converted, report = graphfix.convert_graph_def(case.graph_def)
    for node in converted.node:
        if node.name == "rnn/graphfix/layer0_fw_bias":
            value = tf.make_ndarray(node.attr["value"].tensor)
            value[5] += 1e-3
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    result = verify.verify_graph_def(case.graph_def, converted, report)
    (check,) = result.checks
    assert not check.ok and not result.ok and 1e-5 < check.max_abs < 1e-2
    assert "verification failed: 'rnn' (max abs error" in result.failure()
    assert result.lines()[-1].startswith("verify FAILED")


def test_whole_model_run_fails_on_a_graph_that_cannot_run_on_cpu():
    run = verify.run_graph_def(build(layout.RnnSpec("lstm", 1, 4, 3, 1)).graph_def)
    assert not run.ok and "CudnnRNNV3" in run.detail


def test_gates_module_maps_rocm_pieces_by_known_indices_without_tensorflow():
    spec = layout.RnnSpec("lstm", 2, 3, 2, 2, num_proj=2)
    buf = np.arange(layout.params_size(spec), dtype=np.float64)
    rocm = to_ifoc(buf, spec)
    np.testing.assert_array_equal(gates.to_cudnn_order(rocm, spec, "ifoc"), buf)
    np.testing.assert_array_equal(gates.to_cudnn_order(rocm, spec, "ifco"), rocm)
    gru = layout.RnnSpec("gru", 1, 3, 2)
    assert not gates.applies(gru, "ifoc") and gates.applies(spec, "ifoc")
    code = ("import sys; sys.modules['tensorflow'] = None; import numpy as np; "
            "from graphfix.cudnn import gates, layout; s = layout.RnnSpec('lstm', 1, 2, 2); "
            "print(gates.to_cudnn_order(np.arange(layout.params_size(s)), s, 'ifoc')[8:16].tolist())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[12, 13, 14, 15, 8, 9, 10, 11]"  # W_c read from the stored o slot, W_o from c's


@pytest.mark.parametrize("source", ["const", "fed"])
def test_gate_order_ifoc_converts_rocm_buffers(source):
    """Both conversion paths (folded constants, in-graph slicing) read a ROCm i, f, o, c buffer."""
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec, params_source=source)
    rocm_buffer = to_ifoc(case.buffer, spec)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.CopyFrom(case.graph_def)
    for node in graph_def.node:
        if node.name == "params" and source == "const":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(rocm_buffer))
    feeds = dict(case.feeds, **({"params:0": rocm_buffer} if source == "fed" else {}))
    want = reference.forward(spec, layout.unpack(case.buffer, spec), case.x, case.h0, case.c0, case.lengths)
    converted, result = _verified(graph_def, "ifoc")
    assert result.ok, result.lines()
    got = run_graph_def(converted, feeds, case.fetches)
    assert max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)) < 1e-5
    wrong = run_graph_def(graphfix.convert_graph_def(graph_def)[0], feeds, case.fetches)  # read as cuDNN's
    assert max(float(np.max(np.abs(g - w))) for g, w in zip(wrong, want)) > 1e-2


# --- end to end through the CLI -------------------------------------------------------------

BREAK_WEIGHTS = """
import sys
from graphfix import cli
from graphfix.cudnn import weights
original = weights.graph_weights_from_buffer
weights.graph_weights_from_buffer = lambda *args, **kwargs: [w + 1e-3 for w in original(*args, **kwargs)]
sys.argv[0] = "graphfix"
raise SystemExit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    for name in ("example", "broken"):
        (root / name).mkdir()
        shutil.copy(EXAMPLE, root / name / "model.pb")
    save_keras3_lstm_gru(root / "k3", seed=5)
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec, time_major=False, lengths=np.array([5, 2, 4], np.int32))
    for node in case.graph_def.node:
        if node.name == "params":
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(to_ifoc(case.buffer, spec)))
    (root / "rocm.pb").write_bytes(case.graph_def.SerializeToString())
    runs = {"example": (["model.pb", "--verify"], root / "example", None),
            "broken": (["model.pb", "--verify"], root / "broken", BREAK_WEIGHTS),
            "saved": (["k3", "--verify"], root, None),
            "rocm": (["rocm.pb", "--gate-order", "ifoc", "--verify"], root, None)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {k: pool.submit(run_cli, args, cwd, code) for k, (args, cwd, code) in runs.items()}
        return root, case, {k: f.result() for k, f in futures.items()}


def test_cli_verify_example(cli_runs):
    root, _, runs = cli_runs
    proc = runs["example"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    start = lines.index("verify: 3 ops against the numpy reference of cuDNN, on CPU")
    checks = lines[start + 1:start + 4]
    assert all(line.startswith("  ok   CudnnRNNV3 'model/") and "float32: max abs error" in line
               and "(tolerance 1e-05), max rel error" in line and "params the model's (constant)" in line
               for line in checks), checks
    errors = [float(line.split("max abs error ")[1].split()[0]) for line in checks]
    assert max(errors) <= 1e-5
    assert lines[start + 4].startswith("  ok   whole model, graph: fed features [3, 12, 8]; ran on CPU, got")
    assert lines[start + 5] == f"verify passed: largest abs error {max(errors):.2e}"
    assert lines[-1] == "wrote model_cpu.pb" and (root / "example" / "model_cpu.pb").exists()


def test_cli_verify_failure_exits_6_and_writes_nothing(cli_runs):
    root, _, runs = cli_runs
    proc = runs["broken"]
    assert proc.returncode == 6, proc.stderr
    assert "graphfix: error: model.pb: verification failed: 'model/" in proc.stderr
    fails = [line for line in proc.stderr.splitlines() if line.startswith("  FAIL CudnnRNNV3")]
    assert len(fails) == 3
    assert all(float(line.split("max abs error ")[1].split()[0]) > 1e-5 for line in fails), fails
    assert "verify FAILED" in proc.stderr and "nothing was written" in proc.stderr
    assert sorted(p.name for p in (root / "broken").iterdir()) == ["model.pb"]


def test_cli_verify_saved_model(cli_runs):
    root, _, runs = cli_runs
    proc = runs["saved"]
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("params the model's (saved variables)") == 2
    assert "ok   whole model, signature 'serving_default': fed x [3, 5, 3]; ran on CPU, got output_0 [3, 2]" in out
    assert "ok   whole model, signature 'serve'" in out and "verify passed" in out
    assert (root / "k3_cpu" / "saved_model.pb").exists()


def test_cli_verify_gate_order_ifoc(cli_runs):
    root, case, runs = cli_runs
    proc = runs["rocm"]
    assert proc.returncode == 0, proc.stderr
    assert "lstm, gates ifoc, 2 layers" in proc.stdout and "verify passed" in proc.stdout
    converted = tf.compat.v1.GraphDef.FromString((root / "rocm_cpu.pb").read_bytes())
    spec = case.spec
    B, LD = case.x.shape[1], spec.num_layers * spec.num_dirs
    want = reference.forward(spec, layout.unpack(case.buffer, spec), case.x.transpose(1, 0, 2),
                             case.h0.reshape(B, LD, -1), case.c0.reshape(B, LD, -1), case.lengths, time_major=False)
    got = run_graph_def(converted, case.feeds, case.fetches)
    assert max(float(np.max(np.abs(g - w))) for g, w in zip(got, want)) < 1e-5
