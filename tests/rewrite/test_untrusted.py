"""Converting a model must not run the model: only the pure allowlist (graphfix.graph.folding.PURE_OPS) may
be executed, and only on the params' own ancestry.

Every graph here wires a side effect next to, or into, the params of one cuDNN op:

    write (WriteFile tmp/pwned) ..control..> params (Const) --> [CudnnRNNV3 "rnn"] --> out0, out1
    side (PyFunc: appends to CALLS, writes a file) --> 0 * side + params_const --'
    ReadFile / RandomUniform --> ... --> params

After conversion no file may exist and no Python callback may have run. Params that depend
on a non-pure op must stay in the graph ("sliced in-graph"); params that merely carry a
control dependency may be folded, but without running the control input. Running the
converted graph afterwards is the model's own business (it may then write its file).

The PyFunc callbacks stay registered while their tf.Graph is alive, so if the converter
ever executed such a node in this process the callback really would run:
test_canary_pyfunc_in_a_graph_def_runs_when_executed proves the detector works.

Also here: converting an already converted graph changes nothing (idempotence), and a params
subgraph of allowlisted ops that would allocate gigabytes is not a way to crash the converter.
"""

from __future__ import annotations

import os
import resource

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.errors import GraphfixError
from graphfix.graph.bodies import find_cudnn_nodes
from graphfix.graph.folding import PURE_OPS

SPEC = layout.RnnSpec("gru", 1, 3, 2, 2)
N = layout.params_size(SPEC)
CALLS: list = []  # one entry per PyFunc callback run


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def side_effect(path):
    """A PyFunc body: records the call and writes `path`, returns 0.0."""
    def fn(*_):
        CALLS.append(str(path))
        path.write_text("ran")
        return np.float32(0)
    return fn


class Untrusted:
    """A CudnnRNNV3 graph whose params (and optionally lengths) come from `make_params`.

    Keeps the tf.Graph alive: PyFunc callbacks are unregistered when their graph dies.
    """

    def __init__(self, make_params, make_lengths=None, batch=3, steps=4, seed=0):
        rng = np.random.default_rng(seed)
        self.buf = (rng.standard_normal(N) * 0.4).astype(np.float32)
        x = rng.standard_normal((steps, batch, SPEC.input_size)).astype(np.float32)
        h0 = (rng.standard_normal((2, batch, SPEC.num_units)) * 0.5).astype(np.float32)
        self.lengths = np.array([steps, 1, 2][:batch], np.int32)
        self.graph = tf.Graph()
        with self.graph.as_default():
            x_in = tf.compat.v1.placeholder(tf.float32, [None, None, SPEC.input_size], name="x")
            h_in = tf.compat.v1.placeholder(tf.float32, [2, None, SPEC.num_units], name="input_h")
            params = make_params(self.buf)
            seq = (make_lengths(self.lengths) if make_lengths else tf.constant(self.lengths, name="seq"))
            outs = tf.raw_ops.CudnnRNNV3(input=x_in, input_h=h_in, input_c=h_in, params=params,
                                         sequence_lengths=seq, rnn_mode="gru",
                                         direction="bidirectional", name="rnn")
            tf.identity(outs[0], name="out0")
            tf.identity(outs[1], name="out1")
        self.graph_def = self.graph.as_graph_def()
        self.feeds = {"x:0": x, "input_h:0": h0}
        w = layout.unpack(self.buf.astype(np.float64), SPEC)
        self.expected = reference.forward(SPEC, w, x, h0, None, self.lengths)[:2]

    def check_numbers(self, converted):
        got = run_graph_def(converted, self.feeds, ["out0:0", "out1:0"])
        for g, e in zip(got, self.expected):
            np.testing.assert_allclose(g, e, atol=1e-5)


def convert_untrusted(model, *paths):
    """Convert, then assert nothing of the model ran: no file, no callback, no cuDNN op left."""
    converted, report = graphfix.convert_graph_def(model.graph_def)
    assert CALLS == [], "a PyFunc of the input model ran during conversion"
    for path in paths:
        assert not path.exists(), f"{path} was written during conversion"
    assert find_cudnn_nodes(converted) == []
    return converted, report


def ops_in(graph_def):
    return {n.op for n in graph_def.node} | {n.op for f in graph_def.library.function for n in f.node_def}


# --- the detector works --------------------------------------------------------------------

def test_canary_pyfunc_in_a_graph_def_runs_when_executed(tmp_path):
    """Running a PyFunc of the model's GraphDef in a fresh graph, as a folder would (the
    node's ancestry extracted, imported, run), calls back into this process, so the
    CALLS/file checks below would see a converter that ran one."""
    target = tmp_path / "canary"
    model = Untrusted(lambda buf: tf.constant(buf) + 0 * tf.compat.v1.py_func(
        side_effect(target), [], tf.float32, name="side"))
    ancestry = tf.compat.v1.graph_util.extract_sub_graph(model.graph_def, ["side"])
    assert run_graph_def(ancestry, {}, ["side:0"]) == [0.0]
    assert CALLS == [str(target)] and target.read_text() == "ran"


def test_write_and_read_file_ops_are_not_pure():
    """The premise: none of the side-effect ops used here is on the allowlist."""
    assert not {"WriteFile", "ReadFile", "PyFunc", "PyFuncStateless", "EagerPyFunc",
                "RandomUniform", "VariableV2", "ReadVariableOp", "Print", "PrintV2"} & PURE_OPS


# --- WriteFile next to the params ------------------------------------------------------------

def test_write_file_elsewhere_in_the_graph_is_not_run(tmp_path):
    target = tmp_path / "pwned"

    def make(buf):
        tf.io.write_file(str(target), "pwned", name="write")
        return tf.constant(buf, name="params")

    model = Untrusted(make)
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].params == "folded to constants"
    assert "write" in {n.name for n in converted.node}, "unrelated nodes must be kept as they are"
    model.check_numbers(converted)


def test_write_file_as_control_dependency_of_params_const(tmp_path):
    """params Const <-^- WriteFile: folding may drop the control edge, but must not run it."""
    target = tmp_path / "pwned"

    def make(buf):
        write = tf.io.write_file(str(target), "pwned", name="write")
        with tf.control_dependencies([write]):
            return tf.constant(buf, name="params")

    model = Untrusted(make)
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].params == "folded to constants" or report.ops[0].params.startswith("sliced in-graph")
    model.check_numbers(converted)


def test_write_file_as_control_dependency_of_params_identity(tmp_path):
    """params = Identity(Const) with ^WriteFile: a pure op whose control input is a file write."""
    target = tmp_path / "pwned"

    def make(buf):
        const = tf.constant(buf, name="params_value")
        write = tf.io.write_file(str(target), "pwned", name="write")
        with tf.control_dependencies([write]):
            return tf.identity(const, name="params")

    model = Untrusted(make)
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].params == "folded to constants" or report.ops[0].params.startswith("sliced in-graph")
    model.check_numbers(converted)


def test_read_file_in_params_computation_stays_in_graph(tmp_path):
    """params = const + 0 * len(ReadFile(path)), path missing at conversion time and the read
    ordered after a WriteFile of that same path: running either would be seen (a NotFound
    error, or the file). The params must be sliced in-graph, naming the ReadFile."""
    target = tmp_path / "pwned"

    def make(buf):
        write = tf.io.write_file(str(target), "pwned", name="write")
        with tf.control_dependencies([write]):
            contents = tf.io.read_file(str(target), name="read")
        junk = tf.cast(tf.strings.length(contents), tf.float32)
        return tf.add(tf.constant(buf), 0 * junk, name="params")

    model = Untrusted(make)
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].params.startswith("sliced in-graph")
    assert "ReadFile" in report.ops[0].params or "StringLength" in report.ops[0].params \
        or "Cast" in report.ops[0].params
    assert {"ReadFile", "WriteFile"} <= ops_in(converted)
    model.check_numbers(converted)  # at run time the model writes, then reads, its own file
    assert target.read_text() == "pwned"


# --- Python callbacks --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["PyFunc", "PyFuncStateless", "EagerPyFunc"])
def test_python_callback_feeding_params_is_not_run(tmp_path, kind):
    target = tmp_path / "pwned"

    def make(buf):
        fn = side_effect(target)
        if kind == "EagerPyFunc":
            out = tf.py_function(fn, [], tf.float32, name="side")
        else:
            out = tf.compat.v1.py_func(fn, [], tf.float32, stateful=kind == "PyFunc", name="side")
        return tf.add(tf.constant(buf), 0 * out, name="params")

    model = Untrusted(make)
    assert kind in {n.op for n in model.graph_def.node}
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].params.startswith("sliced in-graph")
    assert kind in ops_in(converted)


def test_python_callback_as_control_dependency_of_params_is_not_run(tmp_path):
    target = tmp_path / "pwned"

    def make(buf):
        side = tf.compat.v1.py_func(side_effect(target), [], tf.float32, name="side")
        with tf.control_dependencies([side]):
            return tf.constant(buf, name="params")

    model = Untrusted(make)
    converted, report = convert_untrusted(model, target)
    model.check_numbers(converted)


def test_python_callback_in_sequence_lengths_is_not_run(tmp_path):
    """Lengths are folded only to report "constant"; a callback in them must not run either."""
    target = tmp_path / "pwned"

    def lengths(values):
        side = tf.compat.v1.py_func(side_effect(target), [], tf.float32, name="side")
        return tf.add(tf.constant(values), 0 * tf.cast(side, tf.int32), name="seq")

    model = Untrusted(lambda buf: tf.constant(buf, name="params"), make_lengths=lengths)
    converted, report = convert_untrusted(model, target)
    assert report.ops[0].sequence_lengths == "run time"
    assert report.ops[0].params == "folded to constants"


def test_python_callback_in_params_size_helper_is_not_run(tmp_path):
    """CudnnRNNParamsSize(num_units = 3 + 0 * callback): the converter needs a constant there,
    so it may refuse (GraphfixError), but must not evaluate the callback to get one."""
    target = tmp_path / "pwned"
    graph = tf.Graph()
    with graph.as_default():
        side = tf.compat.v1.py_func(side_effect(target), [], tf.float32, name="side")
        units = tf.add(tf.constant(3), 0 * tf.cast(side, tf.int32), name="units")
        size = tf.raw_ops.CudnnRNNParamsSize(num_layers=tf.constant(1), num_units=units,
                                             input_size=tf.constant(2), T=tf.float32, S=tf.int32,
                                             rnn_mode="gru", name="size")
        tf.identity(size, name="size_out")
    try:
        converted, _ = graphfix.convert_graph_def(graph.as_graph_def())
    except GraphfixError as exc:
        assert "size" in str(exc)
    else:
        assert find_cudnn_nodes(converted) == []
    assert CALLS == [] and not target.exists()


def test_side_effects_inside_a_library_function_are_not_run(tmp_path):
    """The same inside a tf.function body (a FunctionDef in the library, called by the graph):

        StatefulPartitionedCall "f" -> body: WriteFile, ^write -> Identity(Const) -> CudnnRNNV3
                                             PyFunc -> 0 * side + ... (lengths)
    """
    target, called = tmp_path / "pwned", tmp_path / "called"
    rng = np.random.default_rng(1)
    buf = (rng.standard_normal(N) * 0.4).astype(np.float32)
    x = rng.standard_normal((4, 3, SPEC.input_size)).astype(np.float32)
    h0 = (rng.standard_normal((2, 3, SPEC.num_units)) * 0.5).astype(np.float32)
    lengths = np.array([4, 1, 2], np.int32)
    graph = tf.Graph()
    with graph.as_default():
        @tf.function(autograph=False)
        def f(x, h):
            write = tf.io.write_file(str(target), "pwned")
            with tf.control_dependencies([write]):
                params = tf.identity(tf.constant(buf))
            side = tf.numpy_function(side_effect(called), [], tf.float32)
            seq = tf.constant(lengths) + 0 * tf.cast(side, tf.int32)
            outs = tf.raw_ops.CudnnRNNV3(input=x, input_h=h, input_c=h, params=params,
                                         sequence_lengths=seq, rnn_mode="gru", direction="bidirectional")
            return outs[0], outs[1]

        x_in = tf.compat.v1.placeholder(tf.float32, [None, None, SPEC.input_size], name="x")
        h_in = tf.compat.v1.placeholder(tf.float32, [2, None, SPEC.num_units], name="input_h")
        y, h = f(x_in, h_in)
        tf.identity(y, name="out0")
        tf.identity(h, name="out1")
    graph_def = graph.as_graph_def()
    assert any(n.op == "CudnnRNNV3" for fn in graph_def.library.function for n in fn.node_def)
    converted, report = graphfix.convert_graph_def(graph_def)
    assert CALLS == [] and not target.exists() and not called.exists()
    assert find_cudnn_nodes(converted) == [] and len(report.ops) == 1
    assert report.ops[0].sequence_lengths == "run time"
    got = run_graph_def(converted, {"x:0": x, "input_h:0": h0}, ["out0:0", "out1:0"])
    want = reference.forward(SPEC, layout.unpack(buf.astype(np.float64), SPEC), x, h0, None, lengths)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, atol=1e-5)


# --- randomness is not constant ----------------------------------------------------------------

def test_random_uniform_feeding_params_is_not_folded():
    """RandomUniform is not pure: folding it would bake one draw into the model."""
    model = Untrusted(lambda buf: tf.add(tf.constant(buf), 0 * tf.random.uniform([N], name="noise"),
                                         name="params"))
    converted, report = graphfix.convert_graph_def(model.graph_def)
    assert report.ops[0].params.startswith("sliced in-graph")
    assert "RandomUniform" in report.ops[0].params or "noise" in report.ops[0].params
    assert "RandomUniform" in ops_in(converted)
    assert not any(n.name.startswith("rnn/graphfix/layer") and n.op == "Const" for n in converted.node)
    model.check_numbers(converted)


def test_random_params_give_fresh_values_each_run():
    """params = RandomUniform itself: the converted model draws anew each run, as the original
    would have; two runs differ."""
    model = Untrusted(lambda buf: tf.random.uniform([N], -0.5, 0.5, name="params"))
    converted, report = graphfix.convert_graph_def(model.graph_def)
    assert report.ops[0].params.startswith("sliced in-graph")
    first = run_graph_def(converted, model.feeds, ["out1:0"])[0]
    second = run_graph_def(converted, model.feeds, ["out1:0"])[0]
    assert not np.array_equal(first, second)


# --- allowlisted ops are not a way to exhaust memory ------------------------------------

class _AddressSpaceLimit:
    """Cap this process's address space at its current size + `extra` bytes (restored on
    exit), so an 8 GiB allocation fails fast instead of swapping or being OOM-killed."""

    def __init__(self, extra):
        self.extra = extra

    def __enter__(self):
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        self.old = resource.getrlimit(resource.RLIMIT_AS)
        hard = self.old[1]
        cap = size + self.extra
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        return self

    def __exit__(self, *exc):
        resource.setrlimit(resource.RLIMIT_AS, self.old)
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for the memory cap")
def test_huge_allowlisted_params_subgraph_is_refused_or_sliced():
    """params = Slice(Reshape(Fill([2**31], 0.0)), [0], [N]) + c: every op is on the allowlist, but
    evaluating it needs 8 GiB. The converter must not crash on it (with the memory capped, an
    attempt fails fast): it should slice in-graph or refuse with a GraphfixError."""
    def make(buf):
        huge = tf.fill(tf.constant([2**31], tf.int64), 0.0, name="huge")
        return tf.add(tf.slice(tf.reshape(huge, [-1]), [0], [N]), tf.constant(buf), name="params")

    model = Untrusted(make)
    assert {n.op for n in model.graph_def.node if n.op != "CudnnRNNV3" and n.op != "Placeholder"} <= PURE_OPS
    with _AddressSpaceLimit(2 << 30):
        try:
            converted, report = graphfix.convert_graph_def(model.graph_def)
        except GraphfixError as exc:
            assert "rnn" in str(exc) or "params" in str(exc)
            return
    assert report.ops[0].params.startswith("sliced in-graph")


# --- idempotence -------------------------------------------------------------------------

def _helpers_graph():
    spec = layout.RnnSpec("lstm", 1, 4, 3, 1)
    graph = tf.Graph()
    with graph.as_default():
        kw = dict(num_layers=1, num_units=4, input_size=3, rnn_mode="lstm")
        size = tf.raw_ops.CudnnRNNParamsSize(T=tf.float32, S=tf.int32, name="size", **kw)
        tf.identity(size, name="size_out")
        n_w = sum(1 for p in layout.pieces(spec) if p.kind in ("W", "R"))
        params = tf.compat.v1.placeholder(tf.float32, [None], name="params")
        w, b = tf.raw_ops.CudnnRNNParamsToCanonical(params=params, num_params=n_w, name="canon", **kw)
        for i, t in enumerate(w + b):
            tf.identity(t, name=f"canon_out{i}")
    return graph.as_graph_def()


IDEMPOTENCE_CASES = {
    "const-V2": lambda: build(layout.RnnSpec("lstm", 2, 4, 3, 2), op="CudnnRNNV2").graph_def,
    "concat-V3-batch-major": lambda: build(layout.RnnSpec("gru", 1, 4, 3, 1), params_source="concat",
                                           time_major=False).graph_def,
    "fed-params-fed-lengths": lambda: build(layout.RnnSpec("lstm", 1, 4, 3, 1, num_proj=2), params_source="fed",
                                            lengths_fed=True).graph_def,
    "auto-select-skip-V1": lambda: build(layout.RnnSpec("rnn_relu", 2, 3, 3, 2, "skip_input"), op="CudnnRNN",
                                    params_source="const", input_mode="auto_select").graph_def,
    "helpers": _helpers_graph,
}


@pytest.mark.parametrize("name", sorted(IDEMPOTENCE_CASES))
def test_converting_a_converted_graph_changes_nothing(name):
    once, report = graphfix.convert_graph_def(IDEMPOTENCE_CASES[name]())
    assert report.changed
    twice, again = graphfix.convert_graph_def(once)
    assert not again.changed
    assert (again.ops, again.helpers, again.removed_nodes, again.cleared_devices) == ([], [], 0, 0)
    assert twice.SerializeToString(deterministic=True) == once.SerializeToString(deterministic=True)


def test_converting_a_converted_file_writes_nothing(tmp_path):
    """Nothing to convert: nothing is written by default; an output asked for is the model as it is."""
    src, first, second = tmp_path / "model.pb", tmp_path / "model_cpu.pb", tmp_path / "model_cpu_cpu.pb"
    src.write_bytes(build(layout.RnnSpec("gru", 2, 3, 2, 2)).graph_def.SerializeToString())
    report = graphfix.convert(src, first)
    assert report.changed and first.exists()
    data = first.read_bytes()
    again = graphfix.convert(first)
    assert not again.changed and again.output is None
    assert not second.exists(), "nothing is written for a model without cuDNN ops"
    asked = graphfix.convert(first, second)
    assert not asked.changed and asked.output == str(second)
    written, before = tf.compat.v1.GraphDef(), tf.compat.v1.GraphDef()
    written.ParseFromString(second.read_bytes())
    before.ParseFromString(data)
    assert written.SerializeToString(deterministic=True) == before.SerializeToString(deterministic=True)
    assert first.read_bytes() == data
