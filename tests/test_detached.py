"""Large Consts detached from the proto while a GraphDef file converts (graphfix.detached).

`graphfix.convert` on a file converts a slim graph and writes the output node by node; the
in-memory API converts the complete proto. Both must give the same bytes, and the detached
path must still compute the cuDNN op's numbers. The threshold is lowered here so that small
test graphs take the large-model path.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import graphfix
from graphfix import detached, layout, model_io, reference
from graphfix.errors import OutputError
from graphfix.rewrite import find_cudnn_nodes
from raw_graphs import build, run_graph_def

SPEC = layout.RnnSpec("lstm", 2, 6, 5, 2)
PROJECTED = layout.RnnSpec("lstm", 1, 8, 4, 1, num_proj=3)


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
    out = model_io.read_graph_def(tmp_path / "out.pb")
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
        model_io.write_graph_def(slim, tmp_path / "out.pb", store)
    assert list(tmp_path.iterdir()) == []


def test_input_file_is_unchanged(tmp_path, small_threshold):
    case = build(SPEC, params_source="concat", seed=4)
    src = _write(tmp_path, case.graph_def)
    before = src.read_bytes()
    graphfix.convert(src, tmp_path / "out.pb", verify=True)
    assert src.read_bytes() == before
