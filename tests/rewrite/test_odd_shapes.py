"""Edge shapes: empty batch, zero time steps, zero and oversized sequence lengths, size-1
layers, 10,000-step sequences, and graphs with very many nodes.

What is expected comes from docs/how-it-works.md ("Semantics worth knowing") and CUDNN_FACTS section 5:

- sequence length 0 (cuDNN itself fails): zero outputs, final state = initial state;
- lengths above the time dimension: treated as the time dimension;
- outputs past a length are exactly zero, final states come from the last valid step.

Cases the docs do not spell out follow from those rules: an empty batch gives empty
outputs of the right shapes; zero time steps is "every length is 0" (empty output, final
state = initial state). Each case is checked against graphfix.cudnn.reference, and the exact
identities (zeros, untouched states) are asserted bit for bit as well.

    x [T, B, I] --.
    h0, c0 -------+--> [CudnnRNN* "rnn"] --> out0 (y), out1 (h_n), out2 (c_n)
    params -------'    (raw_graphs.build; V3 also takes sequence lengths)
"""

from __future__ import annotations

import resource
import signal
import time

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, run_graph_def
from tensorflow.core.framework import graph_pb2

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import find_cudnn_nodes

ATOL = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-10}


def convert_and_run(case, feeds=None):
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    return run_graph_def(converted, feeds or case.feeds, case.fetches), report


def expected(case, lengths="case"):
    """reference.forward in the op's layout; `lengths` overrides case.lengths (e.g. clipped)."""
    spec = case.spec
    LD, B = spec.num_layers * spec.num_dirs, case.x.shape[1]
    lengths = case.lengths if isinstance(lengths, str) else lengths
    tm = case.time_major
    x = case.x if tm else case.x.transpose(1, 0, 2)
    # Batch-major states are [B, L*D, .] shaped views of [L*D, B, .] memory (explicit sizes: B may be 0).
    h0 = case.h0 if tm else case.h0.reshape(B, LD, spec.hidden_size)
    c0 = case.c0 if tm else case.c0.reshape(B, LD, spec.num_units)
    return reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec), x, h0, c0,
                             lengths, time_major=tm)


def assert_matches(got, want, dtype=np.float32):
    for name, g, e in zip(("output", "output_h", "output_c"), got, want):
        if e is None:
            continue
        assert g.shape == e.shape, f"{name}: shape {g.shape}, expected {e.shape}"
        if e.size:
            err = float(np.max(np.abs(g.astype(np.float64) - e)))
            assert err <= ATOL[dtype], f"{name}: max abs error {err}"


def state_time_major(case, value):
    """A state output as [L*D, B, .] memory, whatever the op's layout."""
    LD, B = case.spec.num_layers * case.spec.num_dirs, case.x.shape[1]
    return value if case.time_major else value.reshape(LD, B, -1)


def output_time_major(case, value):
    return value if case.time_major else value.transpose(1, 0, 2)


# --- empty batch ---------------------------------------------------------------------------

@pytest.mark.parametrize("op,time_major,lengths_fed", [
    ("CudnnRNN", True, False), ("CudnnRNNV2", True, False),
    ("CudnnRNNV3", True, False), ("CudnnRNNV3", False, True)])
def test_empty_batch(op, time_major, lengths_fed):
    """B = 0: outputs and states are empty arrays of the op's shapes, not an error."""
    spec = layout.RnnSpec("lstm", 2, 3, 2, 2)
    # raw_graphs.build cannot reshape fed batch-major states of batch 0 (reshape(0, LD, -1) is
    # ambiguous), so that case builds its (zero) states in the graph instead.
    case = build(spec, op=op, batch=0, steps=4, time_major=time_major, lengths_fed=lengths_fed,
                 feed_states=time_major)
    got, _ = convert_and_run(case)
    y_shape = (4, 0, 6) if time_major else (0, 4, 6)
    state_shape = (4, 0, 3) if time_major else (0, 4, 3)
    assert [g.shape for g in got] == [y_shape, state_shape, state_shape]
    assert_matches(got, expected(case))


# --- zero time steps -----------------------------------------------------------------------

@pytest.mark.parametrize("mode,op,time_major,lengths_fed", [
    ("lstm", "CudnnRNNV2", True, False), ("gru", "CudnnRNNV3", False, True)])
def test_zero_time_steps(mode, op, time_major, lengths_fed):
    """T = 0 is 'every length is 0': an empty output, final states = initial states."""
    spec = layout.RnnSpec(mode, 2, 3, 2, 2)
    case = build(spec, op=op, steps=0, batch=3, time_major=time_major, lengths_fed=lengths_fed)
    got, _ = convert_and_run(case)
    assert got[0].shape == ((0, 3, 6) if time_major else (3, 0, 6))
    np.testing.assert_array_equal(state_time_major(case, got[1]), case.h0)
    if mode == "lstm":
        np.testing.assert_array_equal(state_time_major(case, got[2]), case.c0)
    assert_matches(got, expected(case))


def test_reference_zero_time_steps_keeps_initial_state():
    """The oracle itself agrees with the rule test_zero_time_steps expects of the converted graph."""
    spec = layout.RnnSpec("lstm", 2, 3, 2, 2)
    rng = np.random.default_rng(0)
    h0, c0 = rng.standard_normal((4, 3, 3)), rng.standard_normal((4, 3, 3))
    w = layout.unpack(rng.standard_normal(layout.params_size(spec)), spec)
    y, h, c = reference.forward(spec, w, np.zeros((0, 3, 2)), h0, c0)
    assert y.shape == (0, 3, 6)
    np.testing.assert_array_equal(h, h0)
    np.testing.assert_array_equal(c, c0)


# --- sequence lengths of 0 and above T ----------------------------------------------------

@pytest.mark.parametrize("mode,time_major,lengths_fed,dtype", [
    ("lstm", True, False, np.float32), ("gru", False, True, np.float32),
    ("rnn_relu", True, True, np.float16), ("lstm", False, False, np.float64)])
def test_zero_length_gives_zero_output_and_initial_state(mode, time_major, lengths_fed, dtype):
    """docs/how-it-works.md: a length of 0 gives zero outputs and the initial state as the final state,
    in every layer and both directions."""
    spec = layout.RnnSpec(mode, 2, 3, 2, 2)
    lengths = np.array([0, 5, 2, 0], np.int32)
    case = build(spec, lengths=lengths, lengths_fed=lengths_fed, batch=4, steps=5,
                 time_major=time_major, dtype=dtype, seed=7)
    got, report = convert_and_run(case)
    assert report.ops[0].sequence_lengths == ("run time" if lengths_fed else "constant")
    y = output_time_major(case, got[0])
    h = state_time_major(case, got[1])
    for b in (0, 3):
        assert np.all(y[:, b] == 0), "a zero-length example must output exactly zero"
        np.testing.assert_array_equal(h[:, b], case.h0[:, b])
        if mode == "lstm":
            np.testing.assert_array_equal(state_time_major(case, got[2])[:, b], case.c0[:, b])
    assert np.all(y[2:, 2] == 0)  # past length 2
    assert not np.all(h[:, 1] == case.h0[:, 1]), "the full-length example must move its state"
    assert_matches(got, expected(case), dtype)


def test_all_lengths_zero():
    spec = layout.RnnSpec("lstm", 1, 4, 3, 2)
    case = build(spec, lengths=np.zeros(3, np.int32), lengths_fed=True, batch=3, steps=4)
    got, _ = convert_and_run(case)
    assert np.all(got[0] == 0)
    np.testing.assert_array_equal(got[1], case.h0)
    np.testing.assert_array_equal(got[2], case.c0)


@pytest.mark.parametrize("lengths_fed,time_major", [(True, True), (False, False)])
def test_lengths_above_time_dimension_are_clipped(lengths_fed, time_major):
    """docs/how-it-works.md: lengths above the time dimension are treated as the time dimension; the
    backward direction then starts at step T-1, as for a full-length example."""
    spec = layout.RnnSpec("gru", 2, 3, 2, 2)
    T = 5
    lengths = np.array([T + 3, T, 2, 2**31 - 1], np.int32)
    case = build(spec, lengths=lengths, lengths_fed=lengths_fed, batch=4, steps=T,
                 time_major=time_major, seed=11)
    got, _ = convert_and_run(case)
    assert_matches(got, expected(case, lengths=np.minimum(lengths, T)))
    # Same numbers as the same batch with lengths already clipped.
    clipped = build(spec, lengths=np.minimum(lengths, T).astype(np.int32), lengths_fed=lengths_fed,
                    batch=4, steps=T, time_major=time_major, seed=11)
    again, _ = convert_and_run(clipped)
    for a, b in zip(got, again):
        np.testing.assert_array_equal(a, b)


# --- size-1 layers ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("input_mode", ["linear_input", "auto_select"])
def test_one_unit_one_input(mode, input_mode):
    """H = 1, I = 1: every matrix is 1x1 or Gx1. auto_select with I == H means skip_input."""
    resolved = layout.resolve_input_mode(input_mode, 1, 1)
    spec = layout.RnnSpec(mode, 2, 1, 1, 2, resolved)
    case = build(spec, op="CudnnRNNV2", input_mode=input_mode, seed=5)
    got, report = convert_and_run(case)
    assert report.ops[0].input_mode == resolved
    assert (report.ops[0].input_size, report.ops[0].num_units) == (1, 1)
    assert_matches(got, expected(case))


@pytest.mark.parametrize("units,input_size,num_proj", [(1, 1, 1), (4, 1, 1), (1, 5, 1)])
def test_size_one_projection_and_input(units, input_size, num_proj):
    """num_proj == num_units (1 == 1) is no projection in TensorFlow: the op reads the plain layout."""
    spec = layout.RnnSpec("lstm", 2, units, input_size, 2, num_proj=num_proj)
    case = build(spec, lengths=np.array([5, 1, 3], np.int32), time_major=False, seed=9, num_proj=num_proj)
    got, report = convert_and_run(case)
    assert report.ops[0].num_proj == (num_proj if num_proj < units else 0) == spec.num_proj
    assert_matches(got, expected(case))


# --- 10,000 time steps --------------------------------------------------------------------

LONG_T = 10_000


def static_graph(spec, steps, batch, buf, lengths):
    """CudnnRNNV3 with every input shape static (time dimension included), params a Const.

    A converter that unrolled over a static T would grow with it; one that loops does not.
    """
    LD = spec.num_layers * spec.num_dirs
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [steps, batch, spec.input_size], name="x")
        h = tf.compat.v1.placeholder(tf.float32, [LD, batch, spec.hidden_size], name="input_h")
        c = tf.compat.v1.placeholder(tf.float32, [LD, batch, spec.num_units], name="input_c")
        outs = tf.raw_ops.CudnnRNNV3(
            input=x, input_h=h, input_c=c, params=tf.constant(buf, name="params"),
            sequence_lengths=tf.constant(lengths, tf.int32, name="seq"), rnn_mode=spec.mode,
            direction="bidirectional" if spec.num_dirs == 2 else "unidirectional", name="rnn")
        for i, t in enumerate(outs[:3]):
            tf.identity(t, name=f"out{i}")
    return graph.as_graph_def()


@pytest.mark.parametrize("mode", ["gru", "lstm"])
def test_ten_thousand_steps(mode):
    """T = 10,000, bidirectional, small units: converts to a loop (graph size independent of
    T), runs in seconds without a memory blow-up, and matches the reference.

    Checked against the reference, at a cost independent of T:
    - example 2 (length 40, then 9,960 masked steps): every output and its final states;
    - example 0 (full length): the forward direction's first 200 steps and the backward
      direction's first 200 steps (t = T-1 down to T-200);
    - GRU only (its whole state is its output): 100-step windows in the middle, restarted
      from the converted graph's own output just before the window, for both directions.
    Final states of the full-length example equal its last output in each direction.
    """
    spec = layout.RnnSpec(mode, 1, 2, 1, 2)
    rng = np.random.default_rng(3)
    buf = (rng.standard_normal(layout.params_size(spec)) * 0.5).astype(np.float32)
    B, H = 3, spec.num_units
    lengths = np.array([LONG_T, LONG_T - 1, 40], np.int32)
    x = rng.standard_normal((LONG_T, B, 1)).astype(np.float32)
    h0 = (rng.standard_normal((2, B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((2, B, H)) * 0.5).astype(np.float32)
    feeds = {"x:0": x, "input_h:0": h0, "input_c:0": c0}
    fetches = ["out0:0", "out1:0"] + (["out2:0"] if mode == "lstm" else [])

    short, _ = graphfix.convert_graph_def(static_graph(spec, 10, B, buf, np.minimum(lengths, 10)))
    converted, _ = graphfix.convert_graph_def(static_graph(spec, LONG_T, B, buf, lengths))
    # Only the placeholder's shape and the lengths constant differ ("10" vs "10000" digits).
    assert abs(len(converted.SerializeToString()) - len(short.SerializeToString())) < 32

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    got = run_graph_def(converted, feeds, fetches)
    seconds = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert seconds < 25, f"10,000 steps took {seconds:.1f} s"
    assert grown_mib < 512, f"peak memory grew by {grown_mib:.0f} MiB"
    y, h_n = got[0], got[1]
    assert y.shape == (LONG_T, B, 2 * H) and np.all(np.isfinite(y))

    weights = layout.unpack(buf.astype(np.float64), spec)
    fw, bw = weights
    tol = ATOL[np.float32]

    # Example 2: the whole op on its 40 valid steps; then zeros.
    y2, h2, c2 = reference.forward(spec, weights, x[:40, 2:3], h0[:, 2:3], c0[:, 2:3])
    np.testing.assert_allclose(y[:40, 2:3], y2, atol=tol)
    assert np.all(y[40:, 2] == 0)
    np.testing.assert_allclose(h_n[:, 2:3], h2, atol=tol)
    if mode == "lstm":
        np.testing.assert_allclose(got[2][:, 2:3], c2, atol=tol)

    # Example 0: forward prefix and backward prefix (which is the sequence's suffix).
    K = 200
    one = np.array([K])
    yf, _, _ = reference.run_direction(spec, fw, x[:K, :1].astype(np.float64), h0[0, :1], c0[0, :1], one, False)
    np.testing.assert_allclose(y[:K, :1, :H], yf, atol=tol)
    yb, _, _ = reference.run_direction(spec, bw, x[-K:, :1].astype(np.float64), h0[1, :1], c0[1, :1], one, True)
    np.testing.assert_allclose(y[-K:, :1, H:], yb, atol=tol)

    if mode == "gru":
        W = 100
        zeros = np.zeros((1, H))
        for s in (2_500, 5_000, 9_000):
            yf, _, _ = reference.run_direction(spec, fw, x[s:s + W, :1].astype(np.float64),
                                               y[s - 1, :1, :H].astype(np.float64), zeros, np.array([W]), False)
            np.testing.assert_allclose(y[s:s + W, :1, :H], yf, atol=tol)
            # Backward: the window [s, s+W) is entered from step s+W's output.
            yb, _, _ = reference.run_direction(spec, bw, x[s:s + W, :1].astype(np.float64),
                                               y[s + W, :1, H:].astype(np.float64), zeros, np.array([W]), True)
            np.testing.assert_allclose(y[s:s + W, :1, H:], yb, atol=tol)

    # Final states of full-length examples: the last forward output and the first backward one.
    np.testing.assert_array_equal(h_n[0, 0], y[LONG_T - 1, 0, :H])
    np.testing.assert_array_equal(h_n[1, 0], y[0, 0, H:])
    np.testing.assert_array_equal(h_n[0, 1], y[LONG_T - 2, 1, :H])  # length T-1


# --- graphs with very many nodes ----------------------------------------------------------

class _Budget:
    """Raise TimeoutError in the main thread after `seconds` (conversion is Python-heavy, so
    the signal lands promptly); keeps a test that is too slow from taking minutes to fail."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def expire(signum, frame):
            raise TimeoutError(f"over the {self.seconds} s budget")
        self.old = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _with_unrelated_nodes(graph_def, count):
    """A copy of graph_def plus `count` nodes that have nothing to do with the RNN:

        pad/src (Const) -> pad/0 (Identity) -> pad/1 -> ... -> pad/{count-1}
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    src = out.node.add()
    src.name, src.op = "pad/src", "Const"
    src.attr["dtype"].type = tf.float32.as_datatype_enum
    src.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.float32(1)))
    prev = "pad/src"
    for i in range(count):
        n = out.node.add()
        n.name, n.op = f"pad/{i}", "Identity"
        n.input.append(prev)
        n.attr["T"].type = tf.float32.as_datatype_enum
        prev = n.name
    return out


def test_many_nodes_with_keras_style_params_convert_quickly():
    """A big frozen graph (20,000 unrelated nodes) around one op whose params are a Keras-style
    concat of reshaped, transposed slices (about 260 nodes): conversion must stay linear."""
    spec = layout.RnnSpec("lstm", 2, 8, 4, 2)
    case = build(spec, params_source="concat", batch=2, steps=3)
    assert sum(1 for n in case.graph_def.node if n.name.startswith("piece")) > 60
    big = _with_unrelated_nodes(case.graph_def, 20_000)
    try:
        with _Budget(12):
            converted, report = graphfix.convert_graph_def(big)
    except TimeoutError as exc:
        # Re-raised from here: pytest would otherwise repr the 20,000-node GraphDef argument
        # of every frame of the original traceback, which takes longer than the budget.
        raise TimeoutError(str(exc)) from None
    assert report.ops[0].params == "folded to constants"
    assert sum(1 for n in converted.node if n.name.startswith("pad/")) == 20_001
    assert_matches(run_graph_def(converted, case.feeds, case.fetches), expected(case))
