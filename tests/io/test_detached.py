"""Large Consts detached from the proto while a GraphDef file converts (graphfix.graph.detached).

`graphfix.convert` on a file converts a slim graph and writes the output node by node; the
in-memory API converts the complete proto. Both must give the same bytes, and the detached
path must still compute the cuDNN op's numbers. The threshold is lowered here so that small
test graphs take the large-model path.
"""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph import detached
from graphfix.io import graph_def_file, stream_write, wire
from graphfix.errors import InputError, OutputError
from graphfix.graph.bodies import find_cudnn_nodes
from builders.raw_graphs import build, run_graph_def

SPEC = layout.RnnSpec("lstm", 2, 6, 5, 2)
PROJECTED = layout.RnnSpec("lstm", 1, 8, 4, 1, num_proj=3)
_DAMAGE_CASE = build(layout.RnnSpec("gru", 1, 3, 2, 1), params_source="const", seed=7).graph_def


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(detached, "DETACH_BYTES", 64)


def _write(tmp_path, graph_def, name="model.pb"):
    path = tmp_path / name
    path.write_bytes(graph_def.SerializeToString())
    return path


@pytest.mark.parametrize("params_source", ["const", "concat", "canonical", "fed"])
def test_file_conversion_matches_in_memory_bytes(tmp_path, small_threshold, params_source):
    case = build(SPEC, params_source=params_source, seed=3)
    src = _write(tmp_path, case.graph_def)
    in_memory, _ = graphfix.convert_graph_def(case.graph_def)
    graphfix.convert(src, tmp_path / "out.pb")
    assert (tmp_path / "out.pb").read_bytes() == in_memory.SerializeToString(deterministic=True)


def test_detached_conversion_computes_the_reference(tmp_path, small_threshold):
    spec = PROJECTED
    case = build(spec, time_major=False, seed=5, lengths=np.array([5, 2, 0], np.int32))
    src = _write(tmp_path, case.graph_def)
    graphfix.convert(src, tmp_path / "out.pb")
    out = graph_def_file.read_graph_def(tmp_path / "out.pb")
    assert not find_cudnn_nodes(out)
    assert any(n.name.startswith("rnn/graphfix/") and n.op == "Const" for n in out.node)
    got = run_graph_def(out, case.feeds, case.fetches)
    B = case.x.shape[1]
    want = reference.forward(spec, layout.unpack(case.buffer.astype(np.float64), spec), case.x.transpose(1, 0, 2),
                             case.h0.reshape(B, 1, -1), case.c0.reshape(B, 1, -1), case.lengths, time_major=False)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_detach_takes_large_values_out_once(small_threshold):
    case = build(SPEC, params_source="const", seed=1)
    full = tf.compat.v1.GraphDef()
    full.CopyFrom(case.graph_def)
    slim, store = detached.detach(full)
    assert list(store.values) == ["params"]
    value = store.values["params"]
    np.testing.assert_array_equal(value, case.buffer)
    assert not value.flags.writeable  # a view over protobuf's bytes, not a second copy
    node = next(n for n in slim.node if n.name == "params")
    tensor = node.attr["value"].tensor
    assert tensor.tensor_content == b"" and [d.size for d in tensor.tensor_shape.dim] == [case.buffer.size]
    assert slim.ByteSize() < case.graph_def.ByteSize() - case.buffer.nbytes + 64
    assert store.attach(slim).SerializeToString(deterministic=True) == \
        case.graph_def.SerializeToString(deterministic=True)


def test_detach_leaves_malformed_and_string_consts_in_the_proto(small_threshold):
    graph_def = tf.compat.v1.GraphDef()
    bad = graph_def.node.add(name="bad", op="Const")
    bad.attr["dtype"].type = tf.float32.as_datatype_enum
    tensor = bad.attr["value"].tensor
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = 1000  # 4000 bytes promised, 400 given
    tensor.tensor_content = b"\0" * 400
    text = graph_def.node.add(name="text", op="Const")
    text.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([b"x" * 200] * 3)))
    slim, store = detached.detach(graph_def)
    assert len(store) == 0
    assert slim.SerializeToString(deterministic=True) == graph_def.SerializeToString(deterministic=True)


def test_failed_streamed_write_leaves_nothing(tmp_path, small_threshold, monkeypatch):
    case = build(SPEC, params_source="const", seed=2)
    slim, store = detached.detach(case.graph_def)

    def broken(node):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "full_node", broken)
    with pytest.raises(OutputError, match="No space left on device"):
        graph_def_file.write_graph_def(slim, tmp_path / "out.pb", store)
    assert list(tmp_path.iterdir()) == []


def test_input_file_is_unchanged(tmp_path, small_threshold):
    case = build(SPEC, params_source="concat", seed=4)
    src = _write(tmp_path, case.graph_def)
    before = src.read_bytes()
    graphfix.convert(src, tmp_path / "out.pb", verify=True)
    assert src.read_bytes() == before


# --- the one-pass reader (graphfix.io.stream_read) ------------------------------------------

def _both_readers(path):
    """(slim, store) from the one-pass reader and from a whole parse + detach."""
    streamed = graph_def_file.read_graph_def_detached(path)
    whole = detached.detach(graph_def_file.read_graph_def(path))
    return streamed, whole


def _assert_same(streamed, whole):
    (slim_a, store_a), (slim_b, store_b) = streamed, whole
    assert slim_a.SerializeToString(deterministic=True) == slim_b.SerializeToString(deterministic=True)
    assert sorted(store_a.values) == sorted(store_b.values)
    for name, value in store_a.values.items():
        assert value.dtype == store_b.values[name].dtype
        np.testing.assert_array_equal(value, store_b.values[name])


@pytest.mark.parametrize("params_source", ["const", "concat", "canonical"])
def test_one_pass_reader_matches_a_whole_parse(tmp_path, small_threshold, params_source):
    case = build(SPEC, params_source=params_source, seed=6)
    streamed, whole = _both_readers(_write(tmp_path, case.graph_def))
    assert len(streamed[1]) > 0
    _assert_same(streamed, whole)


def _node_field(node) -> bytes:
    data = node.SerializeToString()
    return b"\x0a" + wire.encode_varint(len(data)) + data


def test_one_pass_reader_parses_unexpected_layouts_whole(tmp_path, small_threshold):
    """A repeated "value" entry, an AttrValue with two fields, a large non-Const: parsed as protobuf would."""
    value = np.arange(100, dtype=np.float32)
    const = tf.compat.v1.GraphDef().node.add(name="twice", op="Const")
    const.attr["dtype"].type = tf.float32.as_datatype_enum
    const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    first = tf.compat.v1.GraphDef().node.add(name="twice")
    first.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value * 2))
    # Two encodings of the same node concatenated: protobuf merges them, the later value wins.
    twice = first.SerializeToString() + const.SerializeToString()
    big_string = tf.compat.v1.GraphDef().node.add(name="text", op="Const")
    big_string.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([b"y" * 500])))
    plain = tf.compat.v1.GraphDef().node.add(name="plain", op="Const")
    plain.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value + 1))
    data = (b"\x0a" + wire.encode_varint(len(twice)) + twice + _node_field(big_string) + _node_field(plain)
            + b"\x22\x02\x08\x05")  # versions {producer: 5}
    path = tmp_path / "odd.pb"
    path.write_bytes(data)
    streamed, whole = _both_readers(path)
    _assert_same(streamed, whole)
    assert sorted(streamed[1].values) == ["plain", "twice"]
    np.testing.assert_array_equal(streamed[1].values["twice"], value)
    assert streamed[0].versions.producer == 5


@hypothesis.settings(max_examples=60, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(data=st.data())
def test_one_pass_reader_on_damaged_files(tmp_path, small_threshold, data):
    """Truncated or bit-flipped files: the same graph as a whole parse, or the same refusal."""
    case = _DAMAGE_CASE
    raw = bytearray(case.SerializeToString())
    cut = data.draw(st.integers(1, len(raw)))
    raw = raw[:cut]
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "damaged.pb"
    path.write_bytes(bytes(raw))
    try:
        whole = detached.detach(graph_def_file.read_graph_def(path))
    except InputError as exc:
        with pytest.raises(InputError) as refused:
            graph_def_file.read_graph_def_detached(path)
        assert str(refused.value) == str(exc)
        return
    _assert_same(graph_def_file.read_graph_def_detached(path), whole)


# --- inspect and extract read GraphDef files slim too ------------------------------------

@pytest.mark.parametrize("params_source", ["const", "concat", "canonical"])
def test_inspect_and_extract_on_a_slim_read_match_a_whole_one(tmp_path, monkeypatch, params_source):
    from graphfix.tools import extract as extract_module
    from graphfix.tools import inspect as inspect_module
    case = build(SPEC, params_source=params_source, seed=8)
    src = _write(tmp_path, case.graph_def)

    def run(threshold, name):
        monkeypatch.setattr(detached, "DETACH_BYTES", threshold)
        survey = inspect_module.inspect_model(src)
        extract_module.extract(src, tmp_path / name)
        return survey.to_json(), dict(np.load(tmp_path / name))

    whole_json, whole_arrays = run(1 << 40, "whole.npz")   # nothing detached
    slim_json, slim_arrays = run(64, "slim.npz")
    assert slim_json == whole_json
    assert "known only at run time" not in str(slim_json)
    assert sorted(slim_arrays) == sorted(whole_arrays)
    for key, value in whole_arrays.items():
        np.testing.assert_array_equal(slim_arrays[key], value)


# --- the node-by-node writer (graphfix.io.stream_write) --------------------------------------

@pytest.mark.parametrize("extras", ["none", "attrs_around", "debug_info", "version_and_float_val"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, "bfloat16"])
def test_spliced_node_is_the_full_serialization(extras, dtype):
    """The value written straight from the array lands where protobuf would put tensor_content."""
    dtype = tf.bfloat16.as_numpy_dtype if dtype == "bfloat16" else dtype
    value = (np.arange(6 * 7 * 150) % 251).astype(dtype).reshape(6, 7, 150).transpose(2, 0, 1)  # a view
    node = tf.compat.v1.GraphDef().node.add(name="w", op="Const")
    node.input.append("^ctl")
    store = detached.ConstStore()
    store.put(node, value)
    if extras == "attrs_around":
        node.attr["_class"].list.s.append(b"loc:@w")
        node.attr["zzz"].i = 3
    elif extras == "debug_info":
        node.experimental_debug_info.original_node_names.append("orig")
    elif extras == "version_and_float_val":
        node.attr["value"].tensor.version_number = 2
        node.attr["value"].tensor.float_val.append(1.5)
    pieces = stream_write._spliced(node, store.values["w"])
    assert pieces is not None and len(pieces) == 3
    joined = pieces[0] + bytes(stream_write._content_bytes(pieces[1])) + pieces[2]
    assert joined == store.full_node(node).SerializeToString(deterministic=True)
    parsed = tf.compat.v1.NodeDef.FromString(joined)
    np.testing.assert_array_equal(tf.make_ndarray(parsed.attr["value"].tensor)
                                  if extras != "version_and_float_val" else
                                  np.frombuffer(parsed.attr["value"].tensor.tensor_content, dtype).reshape(value.shape),
                                  value)


def test_a_shape_whose_size_overflows_int64_is_left_in_the_proto(small_threshold):
    """(2**62 + 8) * 4 elements of 4 bytes is 128 bytes in wrapping int64 arithmetic: exactly the content."""
    graph_def = tf.compat.v1.GraphDef()
    node = graph_def.node.add(name="huge", op="Const")
    tensor = node.attr["value"].tensor
    tensor.dtype = tf.float32.as_datatype_enum
    for size in (2**62 + 8, 4):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = b"\0" * 128
    slim, store = detached.detach(graph_def)
    assert len(store) == 0 and slim.node[0].attr["value"].tensor.tensor_content == b"\0" * 128
