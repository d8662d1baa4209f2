"""Build TF1-style GraphDefs around `tf.raw_ops.CudnnRNN*` on a CPU machine, and run graphs.

The graphs are written, never run, before conversion: a CPU session cannot place a cuDNN op.

    x (Placeholder) ----------------.
    input_h, input_c (Placeholder) --+--> [CudnnRNN* "rnn"] --> rnn:0 (y), rnn:1 (h_n), rnn:2 (c_n)
    params (Const | subgraph | fed) -'
    sequence_lengths (V3: Const or Placeholder)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from graphfix.cudnn import layout


@dataclasses.dataclass
class RawCase:
    """A built graph and everything needed to run and check it."""

    graph_def: tf.compat.v1.GraphDef
    spec: layout.RnnSpec
    buffer: np.ndarray          # the params values (fed or constant)
    feeds: dict                 # tensor name -> value
    fetches: list               # ["rnn:0", "rnn:1", ("rnn:2")]
    x: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    lengths: np.ndarray | None
    time_major: bool


def build(spec: layout.RnnSpec, op="CudnnRNNV3", dtype=np.float32, time_major=True, lengths=None,
          lengths_fed=False, params_source="const", batch=3, steps=5, input_mode=None, seed=0,
          is_training=False, dropout=0.0, feed_states=True, num_proj=None, values=None) -> RawCase:
    """params_source: const | concat (Keras-style subgraph) | canonical (CanonicalToParams) | fed.

    num_proj: the V3 attribute as written, when it differs from spec.num_proj (num_units
    itself, which TensorFlow reads as no projection and RnnSpec stores as 0).
    values: recorded arrays to use instead of random ones: "buffer" [params_size],
    "x" [T, B, I], "h0" [L*D, B, Hh] and, for an LSTM, "c0" [L*D, B, H]; they set dtype,
    steps and batch.
    """
    num_proj = spec.num_proj if num_proj is None else num_proj
    rng = np.random.default_rng(seed)
    n = layout.params_size(spec)
    LD = spec.num_layers * spec.num_dirs
    if values is None:
        buf = (rng.standard_normal(n) * 0.4).astype(dtype)
        x = rng.standard_normal((steps, batch, spec.input_size)).astype(dtype)
        h0 = (rng.standard_normal((LD, batch, spec.hidden_size)) * 0.5).astype(dtype)
        c0 = (rng.standard_normal((LD, batch, spec.num_units)) * 0.5).astype(dtype)
    else:
        buf, x, h0 = values["buffer"], values["x"], values["h0"]
        dtype = buf.dtype
        steps, batch = x.shape[:2]
        # Only an LSTM reads input_c; the others are fed zeros.
        c0 = values.get("c0", np.zeros((LD, batch, spec.num_units), dtype))
    tf_dtype = tf.as_dtype(dtype)
    feeds = {}
    graph = tf.Graph()
    with graph.as_default():
        x_shape = [steps, batch, spec.input_size] if time_major else [batch, steps, spec.input_size]
        x_in = tf.compat.v1.placeholder(tf_dtype, [None, None, spec.input_size], name="x")
        feeds["x:0"] = x if time_major else x.transpose(1, 0, 2)
        state = lambda a: a if time_major else a.reshape(batch, LD, -1)
        h_shape = [LD, None, spec.hidden_size] if time_major else [None, LD, spec.hidden_size]
        c_shape = [LD, None, spec.num_units] if time_major else [None, LD, spec.num_units]
        if feed_states:
            h_in = tf.compat.v1.placeholder(tf_dtype, h_shape, name="input_h")
            c_in = tf.compat.v1.placeholder(tf_dtype, c_shape, name="input_c")
            feeds["input_h:0"], feeds["input_c:0"] = state(h0), state(c0)
        else:
            h0, c0 = np.zeros_like(h0), np.zeros_like(c0)
            h_in = tf.zeros([LD, batch, spec.hidden_size] if time_major else [batch, LD, spec.hidden_size], tf_dtype)
            c_in = tf.zeros([LD, batch, spec.num_units] if time_major else [batch, LD, spec.num_units], tf_dtype)
        params = _params(spec, buf, params_source, tf_dtype, feeds, num_proj)
        kwargs = dict(input=x_in, input_h=h_in, input_c=c_in, params=params, rnn_mode=spec.mode,
                      input_mode=input_mode or spec.input_mode,
                      direction="bidirectional" if spec.num_dirs == 2 else "unidirectional",
                      is_training=is_training, dropout=dropout, name="rnn")
        if op == "CudnnRNNV3":
            if lengths is None:
                lengths = np.full(batch, steps, np.int32)
            if lengths_fed:
                seq = tf.compat.v1.placeholder(tf.int32, [None], name="seq")
                feeds["seq:0"] = lengths
            else:
                seq = tf.constant(lengths, tf.int32, name="seq")
            outs = tf.raw_ops.CudnnRNNV3(sequence_lengths=seq, num_proj=num_proj,
                                         time_major=time_major, **kwargs)
        else:
            assert time_major and lengths is None and not num_proj
            outs = getattr(tf.raw_ops, op)(**kwargs)
        for i, t in enumerate(outs[:3]):
            tf.identity(t, name=f"out{i}")
    del x_shape
    fetches = ["out0:0", "out1:0"] + (["out2:0"] if spec.mode == "lstm" else [])
    return RawCase(graph.as_graph_def(), spec, buf, feeds, fetches, x, h0, c0, lengths, time_major)


def build_returning(spec: layout.RnnSpec, op="CudnnRNNV3", returned=(0, 1, 2, 3, 4), used=(0,), nested=False,
                    batch=2, steps=4, seed=0) -> RawCase:
    """The op inside a tf.function that returns some of its outputs; the graph uses some of those.

        function inner(x, h, c): params (Const) --> [op "rnn"] --Identity--> ret: outputs `returned`
        function outer(x, h, c): inner's results, returned as they are         (nested=True only)
        graph: x, input_h, input_c --> [StatefulPartitionedCall "call"] --> out{i} (Identity), i in `used`

    returned, used: indices of the op's outputs (3: reserve_space, 4: host_reserved); used <= returned.
    fetches: out{i} for the used outputs 0..2 (output_c only for LSTM).
    """
    rng = np.random.default_rng(seed)
    buf = (rng.standard_normal(layout.params_size(spec)) * 0.4).astype(np.float32)
    LD = spec.num_layers * spec.num_dirs
    x = rng.standard_normal((steps, batch, spec.input_size)).astype(np.float32)
    h0 = (rng.standard_normal((LD, batch, spec.hidden_size)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((LD, batch, spec.num_units)) * 0.5).astype(np.float32)
    kwargs = dict(rnn_mode=spec.mode, input_mode=spec.input_mode, is_training=False,
                  direction="bidirectional" if spec.num_dirs == 2 else "unidirectional")

    @tf.function(autograph=False)
    def inner(x, h, c):
        params = tf.constant(buf, name="opaque_kernel")
        if op == "CudnnRNNV3":
            outs = tf.raw_ops.CudnnRNNV3(input=x, input_h=h, input_c=c, params=params, num_proj=spec.num_proj,
                                         sequence_lengths=tf.fill([batch], steps), name="rnn", **kwargs)
        else:
            outs = getattr(tf.raw_ops, op)(input=x, input_h=h, input_c=c, params=params, name="rnn", **kwargs)
        return tuple(outs[i] for i in returned)

    @tf.function(autograph=False)
    def outer(x, h, c):
        return inner(x, h, c)

    graph = tf.Graph()
    with graph.as_default():
        x_in = tf.compat.v1.placeholder(tf.float32, x.shape, name="x")
        h_in = tf.compat.v1.placeholder(tf.float32, h0.shape, name="input_h")
        c_in = tf.compat.v1.placeholder(tf.float32, c0.shape, name="input_c")
        results = (outer if nested else inner)(x_in, h_in, c_in)
        for i in used:
            tf.identity(results[list(returned).index(i)], name=f"out{i}")
    fetches = [f"out{i}:0" for i in used if i < 2 or (i == 2 and spec.mode == "lstm")]
    feeds = {"x:0": x, "input_h:0": h0, "input_c:0": c0}
    return RawCase(graph.as_graph_def(), spec, buf, feeds, fetches, x, h0, c0, None, True)


def _params(spec, buf, source, tf_dtype, feeds, num_proj):
    if source == "const":
        return tf.constant(buf, name="params")
    if source == "fed":
        feeds["params:0"] = buf
        return tf.compat.v1.placeholder(tf_dtype, [None], name="params")
    pieces = layout.pieces(spec)
    if source == "concat":
        # As Keras builds it: per-piece constants, transposed and flattened, concatenated.
        parts = []
        for k, p in enumerate(pieces):
            value = buf[p.offset:p.offset + p.size].reshape(p.shape)
            if len(p.shape) == 2:
                const = tf.constant(np.ascontiguousarray(value.T), name=f"piece{k}")
                parts.append(tf.reshape(tf.transpose(const), [-1]))
            else:
                parts.append(tf.reshape(tf.constant(value, name=f"piece{k}"), [-1]))
        return tf.concat(parts, axis=0, name="params")
    if source == "canonical":
        ws = [tf.constant(buf[p.offset:p.offset + p.size].reshape(p.shape)) for p in pieces if p.kind in "WRP"]
        bs = [tf.constant(buf[p.offset:p.offset + p.size]) for p in pieces if p.kind in ("bW", "bR")]
        kwargs = dict(num_layers=spec.num_layers, num_units=spec.num_units, input_size=spec.input_size,
                      weights=ws, biases=bs, rnn_mode=spec.mode, input_mode=spec.input_mode,
                      direction="bidirectional" if spec.num_dirs == 2 else "unidirectional", name="params")
        if num_proj:
            return tf.raw_ops.CudnnRNNCanonicalToParamsV2(num_proj=num_proj, **kwargs)
        return tf.raw_ops.CudnnRNNCanonicalToParams(**kwargs)
    raise ValueError(source)


def run_graph_def(graph_def, feeds: dict, fetches: list) -> list[np.ndarray]:
    """Run a GraphDef on CPU in a fresh session."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        return session.run(fetches, feed_dict=feeds)


def training_graph_def():
    """A GRU whose reserve_space (output 3) feeds "keep_reserve", as a training graph's would."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [5, 2, 3], name="x")
        h = tf.zeros([1, 2, 4])
        params = tf.constant(np.zeros(layout.params_size(layout.RnnSpec("gru", 1, 4, 3)), np.float32))
        outs = tf.raw_ops.CudnnRNNV2(input=x, input_h=h, input_c=h, params=params, rnn_mode="gru", name="rnn")
        tf.identity(outs[3], name="keep_reserve")
    return graph.as_graph_def()
