"""Valid but unusual graphs (issue 17): colocation, num_proj == num_units, returned reserve
space, skip input in the canonical helpers, node names that clash with graphfix's own.

Each graph is built here; numbers are checked against the numpy reference
(graphfix.cudnn.reference / layout) and, for CudnnRNNParamsSize, against cuDNN's size
formula (the op has no CPU kernel, so TensorFlow's own value cannot be computed here).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from builders.raw_graphs import build, build_returning, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.errors import GraphfixError, LayoutError, UnsupportedError
from graphfix.graph.bodies import bodies, find_cudnn_nodes
from graphfix.tools.inspect import survey_graph_def

ATOL = 1e-5


def _expected(case):
    w = layout.unpack(case.buffer.astype(np.float64), case.spec)
    return reference.forward(case.spec, w, case.x.astype(np.float64), case.h0.astype(np.float64),
                             case.c0.astype(np.float64), case.lengths, time_major=case.time_major)


def _check_numbers(got, expected):
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        assert float(np.max(np.abs(g - e), initial=0.0)) <= ATOL


def _node(graph_def, name):
    return next(n for n in graph_def.node if n.name == name)


def _dangling_colocation(graph_def) -> list[str]:
    """`loc:@X` entries naming no node of their own body (TensorFlow refuses them in a graph)."""
    out = []
    for body in bodies(graph_def):
        names = {n.name for n in body.nodes}
        out += [f"{body.where}: {n.name} -> {e.decode()}" for n in body.nodes if "_class" in n.attr
                for e in n.attr["_class"].list.s if e.startswith(b"loc:@") and e[5:].decode() not in names]
    return out


# --- 1. colocation with a node the conversion removed -------------------------------------

def test_colocation_with_the_removed_params_const():
    """A surviving node colocated with the params Const that conversion folds away.

        params (Const) --> [CudnnRNNV3 "rnn"] --> out0 --> [Mul "scaled"] <-- "scale" (Const,
                                                           _class: [loc:@params, loc:@x])
        "tag" (Const, _class: [loc:@params])
    """
    case = build(layout.RnnSpec("lstm", 1, 4, 3))
    graph_def = case.graph_def
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(graph_def, name="")
        scale = tf.constant(np.float32(2.0), name="scale")
        tf.multiply(g.get_tensor_by_name("out0:0"), scale, name="scaled")
        tf.constant(np.float32(1.0), name="tag")
        graph_def = g.as_graph_def()
    _node(graph_def, "scale").attr["_class"].list.s.extend([b"loc:@params", b"loc:@x"])
    _node(graph_def, "tag").attr["_class"].list.s.append(b"loc:@params")

    converted, report = graphfix.convert_graph_def(graph_def)
    assert all(n.name != "params" for n in converted.node)
    assert list(_node(converted, "scale").attr["_class"].list.s) == [b"loc:@x"]  # the valid one is kept
    assert "_class" not in _node(converted, "tag").attr
    assert _dangling_colocation(converted) == []
    (scaled,) = run_graph_def(converted, case.feeds, ["scaled:0"])  # imports: no unknown colocation node
    _check_numbers([scaled], [2 * _expected(case)[0]])


def test_colocation_inside_a_function_body():
    """The same inside a tf.function: its Identity of output_h is colocated with the params Const.

        function inner: opaque_kernel (Const) --> [CudnnRNNV3 "rnn"] --> Identity_1 (_class: loc:@opaque_kernel)
        graph: x, input_h, input_c --> [StatefulPartitionedCall] --> out0, out1
    """
    case = build_returning(layout.RnnSpec("gru", 1, 3, 2), returned=(0, 1, 2, 3, 4), used=(0, 1))
    (fdef,) = [f for f in case.graph_def.library.function if any(n.op == "CudnnRNNV3" for n in f.node_def)]
    identity = next(n for n in fdef.node_def if n.op == "Identity" and n.input[0] == "rnn:output_h:0")
    identity.attr["_class"].list.s.append(b"loc:@opaque_kernel")

    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert _dangling_colocation(converted) == []
    _check_numbers(run_graph_def(converted, case.feeds, case.fetches), _expected(case))


# --- 2. num_proj == num_units is not a projection -------------------------------------------

def _params_size_graph(num_proj, layers=1, units=8, input_size=13, direction="unidirectional"):
    """CudnnRNNParamsSize(num_layers, num_units, input_size; num_proj) --> "size" (Identity)."""
    with tf.Graph().as_default() as g:
        size = tf.raw_ops.CudnnRNNParamsSize(num_layers=layers, num_units=units, input_size=input_size, T=tf.float32,
                                             S=tf.int32, rnn_mode="lstm", direction=direction, num_proj=num_proj,
                                             name="params_size")
        tf.identity(size, name="size")
    return g.as_graph_def()


@pytest.mark.parametrize("num_proj", range(0, 9))
def test_params_size_projects_only_below_num_units(num_proj):
    """Sizes from cuDNN's formula, written out here: LSTM, 1 layer, I=13, H=8, P=num_proj.

    TensorFlow's number for num_proj=8 is 736 (issue 17, measured on a GPU): no projection.
    """
    H, I, G = 8, 13, 4
    P = num_proj if 0 < num_proj < H else H
    want = G * H * I + G * H * P + (P * H if P < H else 0) + 2 * G * H
    assert (num_proj, want) != (8, 800) and (want == 736) == (num_proj in (0, 8))
    converted, _ = graphfix.convert_graph_def(_params_size_graph(num_proj))
    (got,) = run_graph_def(converted, {}, ["size:0"])
    assert got.tolist() == [want]


def test_params_size_refuses_num_proj_above_num_units():
    with pytest.raises(LayoutError) as info:
        graphfix.convert_graph_def(_params_size_graph(9))
    assert "'params_size'" in str(info.value) and "num_proj=9" in str(info.value)


@pytest.mark.parametrize("source", ["const", "canonical", "fed"])
def test_v3_with_num_proj_equal_to_num_units_converts(source):
    """[CudnnRNNV3 num_proj=4] over a 4-unit LSTM and its ordinary (unprojected) buffer."""
    spec = layout.RnnSpec("lstm", 2, 4, 3, 2)
    case = build(spec, num_proj=4, params_source=source, lengths=np.array([5, 2, 0], np.int32))
    assert _node(case.graph_def, "rnn").attr["num_proj"].i == 4
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == [] and report.ops[0].num_proj == 0
    _check_numbers(run_graph_def(converted, case.feeds, case.fetches), _expected(case))


def test_v3_with_num_proj_equal_to_num_units_refuses_a_projection_sized_buffer():
    projected = layout.params_size(layout.RnnSpec("lstm", 1, 8, 13)) + 8 * 8
    case = build(layout.RnnSpec("lstm", 1, 8, 13), num_proj=8)
    const = _node(case.graph_def, "params")
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.zeros(projected, np.float32)))
    with pytest.raises(LayoutError) as info:
        graphfix.convert_graph_def(case.graph_def)
    assert "800" in str(info.value) and "needs 736" in str(info.value) and "num_proj=8" in str(info.value)


def test_params_to_canonical_v2_with_num_proj_equal_to_num_units():
    """params (Const, arange) --> [CudnnRNNParamsToCanonicalV2 num_proj=H, 8 weights, 8 biases] --> w..., b..."""
    spec = layout.RnnSpec("lstm", 1, 4, 3)
    buf = np.arange(layout.params_size(spec), dtype=np.float32)
    with tf.Graph().as_default() as g:
        w, b = tf.raw_ops.CudnnRNNParamsToCanonicalV2(
            num_layers=1, num_units=4, input_size=3, params=tf.constant(buf), num_params_weights=8,
            num_params_biases=8, num_proj=4, rnn_mode="lstm", name="canon")
        for i, t in enumerate(w + b):
            tf.identity(t, name=f"canon_out{i}")
    converted, _ = graphfix.convert_graph_def(g.as_graph_def())
    got = run_graph_def(converted, {}, [f"canon_out{i}:0" for i in range(16)])
    ordered = [p for p in layout.pieces(spec) if p.kind in "WR"] + [p for p in layout.pieces(spec) if p.kind[0] == "b"]
    for value, piece in zip(got, ordered):
        np.testing.assert_array_equal(value, buf[piece.offset:piece.offset + piece.size].reshape(piece.shape))


def test_canonical_to_params_v2_refuses_projection_pieces_when_num_proj_equals_num_units():
    """[CudnnRNNCanonicalToParamsV2 num_proj=H] fed 9 matrices (a projection among them): 800 != 736."""
    projected = [np.zeros((8, 13 if k < 4 else 8), np.float32) for k in range(8)] + [np.zeros((8, 8), np.float32)]
    with tf.Graph().as_default() as g:
        params = tf.raw_ops.CudnnRNNCanonicalToParamsV2(
            num_layers=1, num_units=8, input_size=13, weights=projected,
            biases=[np.zeros(8, np.float32)] * 8, num_proj=8, rnn_mode="lstm", name="to_params")
        tf.identity(params, name="buffer")
    with pytest.raises(LayoutError) as info:
        graphfix.convert_graph_def(g.as_graph_def())
    assert "'to_params'" in str(info.value) and "800" in str(info.value) and "needs 736" in str(info.value)


def test_inspect_reads_num_proj_equal_to_num_units_as_no_projection():
    spec = layout.RnnSpec("lstm", 1, 6, 3, 1)
    (op,) = [o for o in survey_graph_def(build(spec, num_proj=6).graph_def) if o.kind == "forward"]
    assert op.problem is None and op.forward.spec == spec and op.to_json()["num_proj"] == 0


# --- 3. reserve space returned by a function is not training --------------------------------

@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("op", ["CudnnRNN", "CudnnRNNV3"])
def test_function_returning_reserve_space_converts(op, nested):
    """function inner returns all of the op's outputs (tf.function wraps each in an Identity);
    the graph (through outer, when nested) uses output, output_h and output_c only.

        function inner: [op "rnn"] --> Identity x4|x5 --> ret
        graph: x, input_h, input_c --> [StatefulPartitionedCall f=inner|outer] --:0,:1,:2--> out0, out1, out2
    """
    returned = (0, 1, 2, 3) if op == "CudnnRNN" else (0, 1, 2, 3, 4)
    case = build_returning(layout.RnnSpec("lstm", 2, 4, 3, 2), op=op, returned=returned, used=(0, 1, 2),
                           nested=nested)
    converted, report = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == [] and len(report.ops) == 1
    _check_numbers(run_graph_def(converted, case.feeds, case.fetches), _expected(case))


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("index", [3, 4])
def test_reserve_space_used_by_a_caller_is_refused(index, nested):
    """As above, but the graph keeps reserve_space (3) or host_reserved (4): "out3"/"out4"."""
    case = build_returning(layout.RnnSpec("gru", 1, 4, 3), returned=(0, 3, 4), used=(0, index), nested=nested)
    with pytest.raises(UnsupportedError) as info:
        graphfix.convert_graph_def(case.graph_def)
    assert "training graph" in str(info.value) and f"'out{index}'" in str(info.value)


# --- 4. CudnnRNNParamsToCanonical with skip input ----------------------------------------------

def _params_to_canonical(spec, op, input_mode=None, **counts):
    """params (Const, arange) --> [op skip/auto input] --> canon_out0..N (Identity)."""
    buf = np.arange(layout.params_size(spec), dtype=np.float32)
    with tf.Graph().as_default() as g:
        w, b = getattr(tf.raw_ops, op)(num_layers=spec.num_layers, num_units=spec.num_units,
                                        input_size=spec.input_size, params=tf.constant(buf), rnn_mode=spec.mode,
                                        input_mode=input_mode or spec.input_mode, name="canon", **counts)
        for i, t in enumerate(w + b):
            tf.identity(t, name=f"canon_out{i}")
    return g.as_graph_def(), buf, len(w) + len(b)


@pytest.mark.parametrize("input_mode", ["skip_input", "auto_select"])
@pytest.mark.parametrize("num_params", [6, 7, 8])
def test_params_to_canonical_v1_with_skip_input_is_refused(num_params, input_mode):
    """V1 lists num_params weights and num_params biases; a 1-layer skip-input LSTM has 4 and 8.

    TensorFlow's kernel wants num_params = 8 (cuDNN's regions, the absent ones included)
    and then fails on the absent input matrices, so no num_params converts: 6 used to,
    with every bias shifted.
    """
    spec = layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input")
    graph_def, _, _ = _params_to_canonical(spec, "CudnnRNNParamsToCanonical", input_mode, num_params=num_params)
    with pytest.raises(UnsupportedError) as info:
        graphfix.convert_graph_def(graph_def)
    message = str(info.value)
    assert "'canon'" in message and f"input_mode={input_mode}" in message and f"num_params={num_params}" in message


def test_params_to_canonical_v2_with_skip_input_converts_exact_counts():
    """V2 counts weights and biases apart: 4 recurrent matrices, 8 biases, as layout.pieces has them."""
    spec = layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input")
    graph_def, buf, n = _params_to_canonical(spec, "CudnnRNNParamsToCanonicalV2",
                                             num_params_weights=4, num_params_biases=8)
    converted, _ = graphfix.convert_graph_def(graph_def)
    got = run_graph_def(converted, {}, [f"canon_out{i}:0" for i in range(n)])
    ordered = [p for p in layout.pieces(spec) if p.kind == "R"] + [p for p in layout.pieces(spec) if p.kind[0] == "b"]
    assert len(ordered) == n == 12
    for value, piece in zip(got, ordered):
        np.testing.assert_array_equal(value, buf[piece.offset:piece.offset + piece.size].reshape(piece.shape))


def test_params_to_canonical_v2_refuses_a_shifted_split():
    """5 weights + 7 biases add up to 12 like 4 + 8, but would shift a bias into the weights."""
    spec = layout.RnnSpec("lstm", 1, 4, 4, 1, "skip_input")
    graph_def, _, _ = _params_to_canonical(spec, "CudnnRNNParamsToCanonicalV2",
                                           num_params_weights=5, num_params_biases=7)
    with pytest.raises(LayoutError) as info:
        graphfix.convert_graph_def(graph_def)
    assert "5 weights and 7 biases" in str(info.value) and "4 and 8" in str(info.value)


# --- 5. names that clash with graphfix's own ---------------------------------------------------

def test_existing_node_named_like_a_graphfix_weight():
    """The input already holds the names graphfix would give the folded weights.

        params (Const) --> [CudnnRNNV3 "rnn"] --> out0, out1, out2
        "rnn/graphfix/layer0_fw_kernel", "..._1" (Const, 7.0 and 8.0) --> "mine" (AddN)
    """
    case = build(layout.RnnSpec("lstm", 1, 4, 3))
    with tf.Graph().as_default() as g:
        tf.graph_util.import_graph_def(case.graph_def, name="")
        a = tf.constant(np.float32(7.0), name="rnn/graphfix/layer0_fw_kernel")
        b = tf.constant(np.float32(8.0), name="rnn/graphfix/layer0_fw_kernel_1")
        tf.add_n([a, b], name="mine")
        graph_def = g.as_graph_def()
    converted, report = graphfix.convert_graph_def(graph_def)
    again, _ = graphfix.convert_graph_def(graph_def)
    assert converted.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)
    call = _node(converted, "rnn")
    assert call.op == "PartitionedCall" and "rnn/graphfix/layer0_fw_kernel_2" in call.input
    got = run_graph_def(converted, case.feeds, case.fetches + ["mine:0"])
    assert got[-1] == 15.0
    _check_numbers(got[:-1], _expected(case))


def test_helper_nodes_whose_paths_sanitize_alike():
    """"a/b" and "a_b" both map to the function name graphfix_a_b_<digest>: one function, shared.

        w0..w3, b0..b3 (Placeholder) --> [CudnnRNNCanonicalToParams "a/b"], [... "a_b"] --> outputs
    """
    spec = layout.RnnSpec("rnn_tanh", 1, 3, 2)
    shapes = layout.canonical_shapes(spec)
    rng = np.random.default_rng(3)
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes[0] + shapes[1]]
    with tf.Graph().as_default() as g:
        parts = [tf.compat.v1.placeholder(tf.float32, s, name=f"piece{i}") for i, s in enumerate(shapes[0] + shapes[1])]
        for name in ("a/b", "a_b"):
            out = tf.raw_ops.CudnnRNNCanonicalToParams(num_layers=1, num_units=3, input_size=2,
                                                       weights=parts[:2], biases=parts[2:], rnn_mode="rnn_tanh",
                                                       name=name)
            tf.identity(out, name=f"{name.replace('/', '_')}_out")
    converted, report = graphfix.convert_graph_def(g.as_graph_def())
    assert len(report.helpers) == 2
    assert len([f for f in converted.library.function if f.signature.name.startswith("graphfix_a_b")]) == 1
    feeds = {f"piece{i}:0": v for i, v in enumerate(values)}
    for got in run_graph_def(converted, feeds, ["a_b_out:0", "a_b_out_1:0"]):
        np.testing.assert_array_equal(got, layout.pack_canonical(values[:2], values[2:]))


def test_a_different_function_under_a_graphfix_name_is_refused():
    """A library already holding graphfix's function name with another body: converted before?"""
    case = build(layout.RnnSpec("gru", 1, 3, 2))
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    taken = _node(converted, "rnn").attr["f"].func.name
    graph_def = tf.compat.v1.GraphDef()
    graph_def.CopyFrom(case.graph_def)
    other = graph_def.library.function.add()
    other.signature.name = taken
    with pytest.raises(GraphfixError) as info:
        graphfix.convert_graph_def(graph_def)
    assert taken in str(info.value) and "converted by graphfix already" in str(info.value)
