"""Frozen GraphDefs made by Keras's own cuDNN code paths, with CPU oracles for the same weights.

Test support, not a test module. Each ``build_*`` function takes a seed and returns a
:class:`FrozenCase`: a frozen GraphDef (no variables) holding ``CudnnRNNV3`` nodes, the feeds
and fetches to run it, and what Keras's CPU layers compute for the same weights and inputs.
The graphs are traced on this CPU-only machine:

* tf_keras ``CuDNNLSTM`` / ``CuDNNGRU`` have no CPU path at all; calling them inside a
  ``tf.function`` just traces ``CudnnRNNV3`` (time-major, params = ConcatV2 of Reshape'd
  StridedSlices of the variables, ``gru_lstm_utils.canonical_to_params``). The oracle is
  tf_keras ``LSTM`` / ``GRU(reset_after=True)`` loaded with the cuDNN layer's weights through
  ``preprocess_weights_for_loading`` (tf_keras ``saving/legacy/hdf5_format.py``).
* Keras 3 ``LSTM`` / ``GRU`` pick cuDNN at trace time when
  ``keras.src.backend.tensorflow.rnn._is_gpu_available()`` is true (``_cudnn_lstm``,
  ``_cudnn_gru``: batch-major ``CudnnRNNV3``, ``sequence_lengths`` from the mask or full
  lengths). :func:`keras3_cudnn_path` patches that function while tracing. The oracle is the
  same Keras model called without the patch.

Freezing is ``convert_variables_to_constants_v2`` (default ``lower_control_flow=True``, which
inlines function calls). In every case here the Cudnn nodes end up in the top-level node
list; ``graph_def.library`` is empty. :func:`cudnn_nodes` reports where they are anyway.

Padded steps (Keras 3 with a mask). The cuDNN op writes zeros at steps ``t >= len[b]``
(TensorFlow ``core/kernels/cudnn_rnn_ops.cc`` builds its data descriptors with padding fill
0) and ``_cudnn_lstm`` / ``_cudnn_gru`` return those
outputs as they are when ``return_sequences=True``. Keras's CPU loop instead repeats the
previous output at masked steps (``zero_output_for_mask=False``, the RNN default), or writes
zeros (``Bidirectional`` forces ``zero_output_for_mask=True`` when returning sequences).
So ``expected`` (the CPU result) and ``cudnn_expected`` (what the traced graph gives on a GPU,
derived from the Keras source, not run on a GPU) differ only at padded steps of forward,
non-Bidirectional, return_sequences outputs; ``valid`` marks the steps where both agree.
With ``go_backwards=True`` the padded steps come first in the output and are zero on both
paths (the CPU loop starts from a zero "previous output").

Typical end-to-end use::

    case = build_keras3_lstm_masked(seed=0)
    converted = graphfix_convert(case.graph_def)
    got = run_graph_def(converted, case.feeds, case.fetches)
    assert_matches(case, got)                                  # valid steps vs Keras CPU
    assert_matches(case, got, reference=case.cudnn_expected)   # every step vs cuDNN's zeros
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

KERAS3_RNN_MODULE = "keras.src.backend.tensorflow.rnn"


@dataclasses.dataclass(frozen=True)
class CudnnNode:
    """Where one Cudnn* node lives in a GraphDef and what feeds its params input.

    location: "" for the top-level node list, else the name of the library function.
    params_ops: op types in the subgraph that computes the params input, up to Const /
    Placeholder, in breadth-first order from the params producer, without repeats.
    """

    location: str
    name: str
    op: str
    attrs: dict[str, object]
    params_ops: tuple[str, ...]

    def summary(self) -> str:
        where = "top-level" if not self.location else f"library function {self.location}"
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(self.attrs.items()))
        return f"{self.op} {self.name} ({where}) [{attrs}] params <- {' <- '.join(self.params_ops)}"


@dataclasses.dataclass
class FrozenCase:
    """One frozen cuDNN graph and what it should compute.

    graph_def: frozen (no variables), holds Cudnn* nodes; fails on CPU as it is.
    feeds: placeholder tensor name ("x:0") -> value, in the order of the traced signature.
    fetches: output tensor names in graph_def ("Identity:0", ...).
    expected: per fetch, what Keras's CPU layers compute for the same weights and feeds.
    valid: per fetch, None (compare everything) or a bool array broadcastable to the fetch,
        True where ``expected`` is also what the cuDNN graph computes (see module docstring).
    cudnn_expected: per fetch, what the cuDNN graph computes on a GPU: ``expected`` with
        zeros at the padded steps where the two paths differ.
    cpu_graph_def: the same computation frozen through Keras's CPU path (no Cudnn op), with
        the same feed and fetch names: a ready-made reference graph.
    cudnn: the Cudnn* nodes in graph_def and where they live.
    """

    name: str
    description: str
    graph_def: tf.compat.v1.GraphDef
    feeds: dict[str, np.ndarray]
    fetches: list[str]
    expected: list[np.ndarray]
    valid: list[np.ndarray | None]
    cudnn_expected: list[np.ndarray]
    cpu_graph_def: tf.compat.v1.GraphDef
    cudnn: list[CudnnNode]


# ---------------------------------------------------------------------------------------------
# GraphDef helpers


def cudnn_nodes(graph_def: tf.compat.v1.GraphDef) -> list[CudnnNode]:
    """All nodes whose op starts with "Cudnn", top level first, then library functions."""
    found = []
    scopes = [("", list(graph_def.node))]
    scopes += [(f.signature.name, list(f.node_def)) for f in graph_def.library.function]
    for location, nodes in scopes:
        by_name = {n.name: n for n in nodes}
        for node in nodes:
            if node.op.startswith("Cudnn"):
                attrs = {k: _attr_value(v) for k, v in node.attr.items()}
                params = _params_ops(node, by_name) if len(node.input) > 3 else ()
                found.append(CudnnNode(location, node.name, node.op, attrs, params))
    return found


def _attr_value(value: tf.compat.v1.AttrValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode()
    if kind == "type":
        return tf.dtypes.as_dtype(value.type).name
    return getattr(value, kind) if kind else None


def _params_ops(node, by_name) -> tuple[str, ...]:
    """Op types that compute input 3 (params) of a CudnnRNN* node, breadth first."""
    ops, seen, queue = [], set(), [node.input[3]]
    while queue:
        name = queue.pop(0).lstrip("^").split(":")[0]
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        producer = by_name[name]
        if producer.op not in ops:
            ops.append(producer.op)
        queue.extend(i for i in producer.input if not i.startswith("^"))
    return tuple(ops)


def assert_matches(
    case: FrozenCase,
    got: Sequence[np.ndarray],
    *,
    reference: Sequence[np.ndarray] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """Compare got (one array per fetch) with case.expected at the case's valid steps.

    reference: compare with these arrays at every step instead (e.g. case.cudnn_expected).
    Default tolerances are for float32.
    """
    assert len(got) == len(case.fetches), f"{case.name}: {len(got)} results for {case.fetches}"
    for index, g in enumerate(got):
        want = case.expected[index] if reference is None else reference[index]
        assert np.shape(g) == want.shape, f"{case.name} fetch {index}: shape {np.shape(g)}"
        mask = case.valid[index] if reference is None else None
        if mask is not None:
            g, want = np.where(mask, g, 0), np.where(mask, want, 0)
        np.testing.assert_allclose(
            g, want, rtol=rtol, atol=atol, err_msg=f"{case.name} fetch {case.fetches[index]}"
        )


def run_graph_def(
    graph_def: tf.compat.v1.GraphDef, feeds: dict[str, np.ndarray], fetches: Sequence[str]
) -> list[np.ndarray]:
    """Run the part of graph_def that fetches need in a tf.compat.v1.Session, on CPU only.

    A Session places every node of its graph, so the graph is first cut down to the
    fetches' ancestors (a params subgraph runs on CPU although its CudnnRNN consumer cannot);
    feeds outside that part are dropped.
    """
    pruned = _ancestors(graph_def, [f.split(":")[0] for f in fetches])
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(pruned, name="")
    kept = {n.name for n in pruned.node}
    feed_dict = {k: v for k, v in feeds.items() if k.split(":")[0] in kept}
    config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
    with tf.compat.v1.Session(graph=graph, config=config) as session:
        return list(session.run(list(fetches), feed_dict=feed_dict))


def _ancestors(graph_def: tf.compat.v1.GraphDef, names: Sequence[str]) -> tf.compat.v1.GraphDef:
    """A copy of graph_def with only the named nodes and their ancestors (control edges too)."""
    by_name = {n.name: n for n in graph_def.node}
    keep, stack = set(), list(names)
    while stack:
        name = stack.pop()
        if name not in keep:
            keep.add(name)
            stack.extend(i.lstrip("^").split(":")[0] for i in by_name[name].input)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(n for n in graph_def.node if n.name in keep)
    return out


@contextlib.contextmanager
def keras3_cudnn_path(enabled: bool = True) -> Iterator[None]:
    """Make Keras 3 (TensorFlow backend) take, or with enabled=False avoid, its cuDNN RNN branch.

    The choice is made when a layer is called (traced), by ``_is_gpu_available()``; patching
    it works on machines with and without a GPU. ``import keras.src.backend.tensorflow.rnn
    as m`` would bind the function of that name, not the module, hence sys.modules.
    """
    import keras  # noqa: F401  (loads the backend module)

    if enabled:
        # _cudnn_gru swaps the z, r gates only on CUDA builds and _cudnn_lstm reorders gates
        # on ROCm builds; a graph traced elsewhere would not be what a CUDA machine exports.
        build = tf.sysconfig.get_build_info()
        assert build.get("is_cuda_build") and not build.get("is_rocm_build"), (
            f"this TensorFlow build would trace non-CUDA cuDNN params: {dict(build)}"
        )
    module = sys.modules[KERAS3_RNN_MODULE]
    original = module._is_gpu_available
    module._is_gpu_available = lambda: enabled
    try:
        yield
    finally:
        module._is_gpu_available = original


@contextlib.contextmanager
def _cpu_path(keras3: bool) -> Iterator[None]:
    """Keras's CPU RNN code, even on a machine with a GPU (the oracle must not be cuDNN)."""
    with tf.device("/CPU:0"):
        if keras3:
            with keras3_cudnn_path(enabled=False):
                yield
        else:
            yield


def _freeze(
    fn: Callable, signature: Sequence[tf.TensorSpec], path: contextlib.AbstractContextManager
):
    """Trace fn with a fixed signature inside path, and freeze it.

    Returns (graph_def, placeholder tensor names, output tensor names).
    """
    traced = tf.function(fn, input_signature=list(signature))
    with path:
        concrete = traced.get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    return graph_def, [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]


def _make_case(
    name: str,
    description: str,
    *,
    cudnn_fn: Callable,
    cpu_fn: Callable,
    signature: Sequence[tf.TensorSpec],
    values: Sequence[np.ndarray],
    keras3: bool,
    padded_zero: dict[int, np.ndarray] | None = None,
) -> FrozenCase:
    """Freeze cudnn_fn and cpu_fn (both return a tuple of tensors), run cpu_fn eagerly.

    padded_zero: fetch index -> bool array broadcastable to that fetch, True at the steps
    where the cuDNN graph gives zeros while Keras's CPU path does not (see module docstring).
    """
    cudnn_path = keras3_cudnn_path() if keras3 else contextlib.nullcontext()
    graph_def, inputs, outputs = _freeze(cudnn_fn, signature, cudnn_path)
    cudnn = cudnn_nodes(graph_def)
    assert cudnn, (
        f"{name}: the frozen graph has no Cudnn* node (ops: "
        f"{sorted({n.op for n in graph_def.node})}); Keras did not take its cuDNN path"
    )
    cpu_graph_def, cpu_inputs, cpu_outputs = _freeze(cpu_fn, signature, _cpu_path(keras3))
    assert not cudnn_nodes(cpu_graph_def), f"{name}: the CPU reference graph has a Cudnn* node"
    assert (cpu_inputs, cpu_outputs) == (inputs, outputs), (
        f"{name}: CPU and cuDNN graphs name their tensors differently: "
        f"{cpu_inputs, cpu_outputs} vs {inputs, outputs}"
    )
    assert len(inputs) == len(values), f"{name}: {len(inputs)} placeholders, {len(values)} values"

    with _cpu_path(keras3):
        expected = [np.asarray(t) for t in cpu_fn(*[tf.constant(v) for v in values])]
    assert len(expected) == len(outputs), f"{name}: {len(expected)} results, {len(outputs)} outputs"

    valid: list[np.ndarray | None] = [None] * len(outputs)
    cudnn_expected = [e.copy() for e in expected]
    for index, zero in (padded_zero or {}).items():
        zero = np.broadcast_to(zero, expected[index].shape)
        valid[index] = ~zero
        cudnn_expected[index] = np.where(zero, 0.0, expected[index]).astype(expected[index].dtype)
    return FrozenCase(
        name=name,
        description=description,
        graph_def=graph_def,
        feeds=dict(zip(inputs, values)),
        fetches=outputs,
        expected=expected,
        valid=valid,
        cudnn_expected=cudnn_expected,
        cpu_graph_def=cpu_graph_def,
        cudnn=cudnn,
    )


def _uniform(rng: np.random.Generator, shape, scale: float = 0.6) -> np.ndarray:
    """Distinct random float32 values in (-scale, scale); never constant fills."""
    return rng.uniform(-scale, scale, size=shape).astype(np.float32)


def _random_weights(rng: np.random.Generator, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [_uniform(rng, w.shape) for w in weights]


def _as_tuple(result) -> tuple:
    return tuple(result) if isinstance(result, (list, tuple)) else (result,)


def _padding(lengths: Sequence[int], time: int) -> np.ndarray:
    """[B, T, 1] bool, True at padded steps t >= lengths[b]."""
    return (np.arange(time)[None, :] >= np.asarray(lengths)[:, None])[:, :, None]


# ---------------------------------------------------------------------------------------------
# tf_keras CuDNNLSTM / CuDNNGRU


def _tf_keras_case(
    name: str,
    description: str,
    *,
    mode: str,
    seed: int,
    batch: int | None,
    time: int,
    features: int,
    units: int,
    return_sequences: bool,
    initial_state: bool,
) -> FrozenCase:
    import tf_keras
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    rng = np.random.default_rng(seed)
    value_batch = batch or 3
    kwargs = dict(return_sequences=return_sequences, return_state=True)
    if mode == "lstm":
        cudnn_layer = CuDNNLSTM(units, name="cudnn_lstm", **kwargs)
        cpu_layer = tf_keras.layers.LSTM(units, name="lstm", **kwargs)
        state_names = ["h0", "c0"]
    else:
        cudnn_layer = CuDNNGRU(units, name="cudnn_gru", **kwargs)
        cpu_layer = tf_keras.layers.GRU(
            units, name="gru", reset_after=True, recurrent_activation="sigmoid", **kwargs
        )
        state_names = ["h0"]
    cudnn_layer.build((batch, time, features))
    cpu_layer.build((batch, time, features))
    cudnn_weights = _random_weights(rng, cudnn_layer.get_weights())
    cudnn_layer.set_weights(cudnn_weights)
    # Not a plain transpose: each gate's [I, H] kernel slice is flattened straight into the
    # params buffer, which cuDNN reads as a row-major [H, I] matrix, so the conversion is
    # kernel.T.reshape(kernel.shape, order="F") per gate (recurrent kernels: a transpose);
    # for LSTM the two bias halves are summed.
    cpu_layer.set_weights(preprocess_weights_for_loading(cpu_layer, cudnn_weights))

    signature = [tf.TensorSpec([batch, time, features], tf.float32, name="x")]
    values = [_uniform(rng, (value_batch, time, features), 1.0)]
    if initial_state:
        signature += [tf.TensorSpec([batch, units], tf.float32, name=n) for n in state_names]
        values += [_uniform(rng, (value_batch, units), 0.8) for _ in state_names]

    def call(layer):
        def fn(x, *states):
            return _as_tuple(layer(x, initial_state=list(states) if states else None))

        return fn

    return _make_case(
        name,
        description,
        cudnn_fn=call(cudnn_layer),
        cpu_fn=call(cpu_layer),
        signature=signature,
        values=values,
        keras3=False,
    )


def build_tf_keras_cudnn_lstm_sequences(seed: int = 0) -> FrozenCase:
    """tf_keras CuDNNLSTM(return_sequences=True, return_state=True), zero initial state.

    Code path: tf_keras ``layers/rnn/cudnn_lstm.py`` ``CuDNNLSTM._process_batch``: transpose to
    time-major, ``CudnnRNNV3`` (time_major=True, full sequence_lengths), params from
    ``gru_lstm_utils.canonical_to_params`` over 8 kernel slices and 8 bias slices.
    Fetches: sequences [B, T, H], h [B, H], c [B, H].
    """
    return _tf_keras_case(
        "tf_keras_cudnn_lstm_sequences",
        build_tf_keras_cudnn_lstm_sequences.__doc__,
        mode="lstm", seed=seed, batch=2, time=5, features=3, units=4,
        return_sequences=True, initial_state=False,
    )


def build_tf_keras_cudnn_lstm_initial_state(seed: int = 0) -> FrozenCase:
    """tf_keras CuDNNLSTM(return_state=True) with caller-given h0, c0 placeholders.

    Code path: as build_tf_keras_cudnn_lstm_sequences, with ``initial_state=[h0, c0]``
    expanded to [1, B, H]; ``return_sequences=False`` so the output is ``outputs[-1]``.
    Feeds: x [2, 6, 5], h0 [2, 3], c0 [2, 3]. Fetches: last output, h, c (each [B, H]).
    """
    return _tf_keras_case(
        "tf_keras_cudnn_lstm_initial_state",
        build_tf_keras_cudnn_lstm_initial_state.__doc__,
        mode="lstm", seed=seed, batch=2, time=6, features=5, units=3,
        return_sequences=False, initial_state=True,
    )


def build_tf_keras_cudnn_gru_sequences(seed: int = 0) -> FrozenCase:
    """tf_keras CuDNNGRU(return_sequences=True, return_state=True), zero initial state.

    Code path: tf_keras ``layers/rnn/cudnn_gru.py`` ``CuDNNGRU._process_batch``: time-major
    ``CudnnRNNV3`` with rnn_mode="gru"; the params slices swap Keras's z, r gates into cuDNN's
    r, z order; input_c is the constant 0. Oracle: tf_keras GRU(reset_after=True).
    Fetches: sequences [B, T, H], h [B, H].
    """
    return _tf_keras_case(
        "tf_keras_cudnn_gru_sequences",
        build_tf_keras_cudnn_gru_sequences.__doc__,
        mode="gru", seed=seed, batch=3, time=4, features=4, units=5,
        return_sequences=True, initial_state=False,
    )


def build_tf_keras_cudnn_gru_initial_state_dynamic_batch(seed: int = 0) -> FrozenCase:
    """tf_keras CuDNNGRU(return_sequences=True, return_state=True), h0 given, batch None.

    Code path: as build_tf_keras_cudnn_gru_sequences with ``initial_state=[h0]``; the
    signature has batch None, so sequence_lengths is Fill(Shape(x)[1], Shape(x)[0]).
    Feeds: x [3, 5, 2] (signature [None, 5, 2]), h0 [3, 4]. Fetches: sequences, h.
    """
    return _tf_keras_case(
        "tf_keras_cudnn_gru_initial_state_dynamic_batch",
        build_tf_keras_cudnn_gru_initial_state_dynamic_batch.__doc__,
        mode="gru", seed=seed, batch=None, time=5, features=2, units=4,
        return_sequences=True, initial_state=True,
    )


# ---------------------------------------------------------------------------------------------
# Keras 3


def _keras3_case(
    name: str,
    description: str,
    *,
    seed: int,
    build_model: Callable[[], object],
    values: Callable[[np.random.Generator], list[np.ndarray]],
    padded_zero: Callable[[list[np.ndarray]], dict[int, np.ndarray]] | None = None,
) -> FrozenCase:
    """build_model() returns a functional keras.Model; its Inputs give the signature.

    The Inputs' names become the placeholder names, their shapes (batch_size included, None
    when not given) the traced shapes.
    """
    import keras

    assert keras.backend.backend() == "tensorflow", "Keras 3 must use the TensorFlow backend"
    rng = np.random.default_rng(seed)
    model = build_model()
    model.set_weights(_random_weights(rng, model.get_weights()))
    feed_values = values(rng)
    signature = [tf.TensorSpec(i.shape, i.dtype, name=i.name) for i in model.inputs]

    def fn(*xs):
        return _as_tuple(model(list(xs) if len(xs) > 1 else xs[0], training=False))

    return _make_case(
        name,
        description,
        cudnn_fn=fn,
        cpu_fn=fn,
        signature=signature,
        values=feed_values,
        keras3=True,
        padded_zero=padded_zero(feed_values) if padded_zero else None,
    )


def build_keras3_lstm(seed: int = 0) -> FrozenCase:
    """Keras 3 LSTM(5) returning only the last output, static batch.

    Code path: ``keras/src/backend/tensorflow/rnn.py`` ``lstm`` -> ``_cudnn_lstm``: batch-major
    ``CudnnRNNV3`` (time_major=False), sequence_lengths = Fill(batch, T), init states
    ExpandDims'd to [B, 1, H]; last output = the h state. Feeds: x [2, 5, 3]. Fetch: [2, 5].
    """
    import keras

    def model():
        x = keras.Input((5, 3), batch_size=2, name="x")
        return keras.Model(x, keras.layers.LSTM(5, name="lstm")(x), name="model")

    return _keras3_case(
        "keras3_lstm", build_keras3_lstm.__doc__, seed=seed, build_model=model,
        values=lambda rng: [_uniform(rng, (2, 5, 3), 1.0)],
    )


def build_keras3_gru_state_dynamic_batch(seed: int = 0) -> FrozenCase:
    """Keras 3 GRU(4, return_sequences=True, return_state=True), batch None in the signature.

    Code path: ``_cudnn_gru``: batch-major ``CudnnRNNV3`` rnn_mode="gru", Keras's z, r gates
    swapped into cuDNN's r, z order (only when ``tf.sysconfig.get_build_info()["is_cuda_build"]``,
    which the tensorflow-cpu wheel also reports), bias [2, 3H] flattened into 6 pieces.
    Feeds: x [3, 4, 3]. Fetches: sequences [B, 4, 4], h [B, 4].
    """
    import keras

    def model():
        x = keras.Input((4, 3), name="x")
        y = keras.layers.GRU(4, return_sequences=True, return_state=True, name="gru")(x)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_gru_state_dynamic_batch", build_keras3_gru_state_dynamic_batch.__doc__,
        seed=seed, build_model=model, values=lambda rng: [_uniform(rng, (3, 4, 3), 1.0)],
    )


def build_keras3_bidirectional_lstm(seed: int = 0) -> FrozenCase:
    """Keras 3 Bidirectional(LSTM(3, return_sequences=True)), concat merge.

    Code path: ``Bidirectional.call`` tries ``backend.bidirectional_lstm`` (raises
    NotImplementedError on TensorFlow), then calls a forward LSTM and a go_backwards LSTM:
    two separate unidirectional ``CudnnRNNV3`` nodes; the backward one sits between
    ReverseSequence ops and a ReverseV2, and Bidirectional flips its output back.
    Feeds: x [2, 5, 4]. Fetch: [2, 5, 6].
    """
    import keras

    def model():
        x = keras.Input((5, 4), batch_size=2, name="x")
        layer = keras.layers.LSTM(3, return_sequences=True, name="lstm")
        y = keras.layers.Bidirectional(layer, name="bidirectional")(x)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_bidirectional_lstm", build_keras3_bidirectional_lstm.__doc__, seed=seed,
        build_model=model, values=lambda rng: [_uniform(rng, (2, 5, 4), 1.0)],
    )


def build_keras3_stacked_lstm(seed: int = 0) -> FrozenCase:
    """Keras 3 LSTM(5, return_sequences=True) -> LSTM(3): two chained ``CudnnRNNV3`` nodes.

    Code path: ``_cudnn_lstm`` twice; the second's input is the first's [B, T, 5] output.
    Feeds: x [3, 4, 2]. Fetch: [3, 3].
    """
    import keras

    def model():
        x = keras.Input((4, 2), batch_size=3, name="x")
        h = keras.layers.LSTM(5, return_sequences=True, name="lstm_a")(x)
        return keras.Model(x, keras.layers.LSTM(3, name="lstm_b")(h), name="model")

    return _keras3_case(
        "keras3_stacked_lstm", build_keras3_stacked_lstm.__doc__, seed=seed, build_model=model,
        values=lambda rng: [_uniform(rng, (3, 4, 2), 1.0)],
    )


def build_keras3_lstm_go_backwards_state(seed: int = 0) -> FrozenCase:
    """Keras 3 LSTM(4, go_backwards=True, return_sequences=True, return_state=True).

    Code path: ``_cudnn_lstm`` with go_backwards: ReverseSequence(x, full lengths) ->
    ``CudnnRNNV3`` -> ReverseSequence -> ReverseV2, so the output is in processing order
    (last input step first), as on the CPU path. Feeds: x [2, 6, 3].
    Fetches: sequences [2, 6, 4], h, c.
    """
    import keras

    def model():
        x = keras.Input((6, 3), batch_size=2, name="x")
        y = keras.layers.LSTM(
            4, go_backwards=True, return_sequences=True, return_state=True, name="lstm"
        )(x)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_lstm_go_backwards_state", build_keras3_lstm_go_backwards_state.__doc__,
        seed=seed, build_model=model, values=lambda rng: [_uniform(rng, (2, 6, 3), 1.0)],
    )


def build_keras3_lstm_initial_state(seed: int = 0) -> FrozenCase:
    """Keras 3 LSTM(3, return_state=True) with h0, c0 model inputs.

    Code path: ``_cudnn_lstm`` with caller states ExpandDims'd to [B, 1, H] (batch-major).
    Feeds: x [2, 5, 4], h0 [2, 3], c0 [2, 3]. Fetches: last output, h, c (each [2, 3]).
    """
    import keras

    def model():
        x = keras.Input((5, 4), batch_size=2, name="x")
        h0 = keras.Input((3,), batch_size=2, name="h0")
        c0 = keras.Input((3,), batch_size=2, name="c0")
        y = keras.layers.LSTM(3, return_state=True, name="lstm")(x, initial_state=[h0, c0])
        return keras.Model([x, h0, c0], y, name="model")

    def values(rng):
        return [_uniform(rng, (2, 5, 4), 1.0), _uniform(rng, (2, 3), 0.8), _uniform(rng, (2, 3))]

    return _keras3_case(
        "keras3_lstm_initial_state", build_keras3_lstm_initial_state.__doc__, seed=seed,
        build_model=model, values=values,
    )


MASKED_LENGTHS = (5, 3, 4)


def _masked_input(rng: np.random.Generator, features: int) -> np.ndarray:
    """[3, 5, features] with zeros after MASKED_LENGTHS[b] steps (right padding)."""
    x = _uniform(rng, (len(MASKED_LENGTHS), 5, features), 1.0)
    return np.where(_padding(MASKED_LENGTHS, 5), np.float32(0), x)


def build_keras3_lstm_masked(seed: int = 0) -> FrozenCase:
    """Keras 3 Masking -> LSTM(4, return_sequences=True, return_state=True), lengths 5, 3, 4.

    Code path: ``_cudnn_lstm`` with a mask: an Assert that the mask is right-padded and no
    row is empty, sequence_lengths = Sum(Cast(mask)), padded steps of the output are zeros.
    The CPU path repeats the last valid output there, so fetch 0 differs at padded steps
    (``valid`` / ``cudnn_expected``); h and c (state at the last valid step) agree.
    Feeds: x [3, 5, 3]. Fetches: sequences [3, 5, 4], h, c.
    """
    import keras

    def model():
        x = keras.Input((5, 3), batch_size=3, name="x")
        m = keras.layers.Masking(0.0, name="masking")(x)
        y = keras.layers.LSTM(4, return_sequences=True, return_state=True, name="lstm")(m)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_lstm_masked", build_keras3_lstm_masked.__doc__, seed=seed, build_model=model,
        values=lambda rng: [_masked_input(rng, 3)],
        padded_zero=lambda _: {0: _padding(MASKED_LENGTHS, 5)},
    )


def build_keras3_gru_embedding_mask(seed: int = 0) -> FrozenCase:
    """Keras 3 Embedding(mask_zero=True) -> GRU(4, return_sequences=True), int32 ids.

    Code path: ``_cudnn_gru`` with the Embedding's mask (ids != 0) as sequence lengths
    5, 3, 4; as in build_keras3_lstm_masked the padded output steps are zeros on cuDNN and
    the repeated last output on CPU. Feeds: x int32 [3, 5]. Fetch: [3, 5, 4].
    """
    import keras

    def model():
        x = keras.Input((5,), batch_size=3, dtype="int32", name="x")
        e = keras.layers.Embedding(7, 3, mask_zero=True, name="embedding")(x)
        y = keras.layers.GRU(4, return_sequences=True, name="gru")(e)
        return keras.Model(x, y, name="model")

    def values(rng):
        ids = rng.integers(1, 7, size=(len(MASKED_LENGTHS), 5)).astype(np.int32)
        return [np.where(_padding(MASKED_LENGTHS, 5)[:, :, 0], 0, ids).astype(np.int32)]

    return _keras3_case(
        "keras3_gru_embedding_mask", build_keras3_gru_embedding_mask.__doc__, seed=seed,
        build_model=model, values=values,
        padded_zero=lambda _: {0: _padding(MASKED_LENGTHS, 5)},
    )


def build_keras3_bidirectional_lstm_masked(seed: int = 0) -> FrozenCase:
    """Keras 3 Masking -> Bidirectional(LSTM(3, return_sequences=True, return_state=True)).

    Code path: the two-layer Bidirectional fallback with a mask (the fused attempt is
    skipped when a mask is given): forward ``CudnnRNNV3`` with sequence_lengths, backward one
    between ReverseSequence(lengths) ops, so it runs over steps len-1 ... 0 only. Bidirectional
    forces zero_output_for_mask=True, so the CPU path also has zeros at padded steps: all
    fetches agree everywhere. Feeds: x [3, 5, 2]. Fetches: sequences [3, 5, 6],
    h_fw, c_fw, h_bw, c_bw (each [3, 3]).
    """
    import keras

    def model():
        x = keras.Input((5, 2), batch_size=3, name="x")
        m = keras.layers.Masking(0.0, name="masking")(x)
        layer = keras.layers.LSTM(3, return_sequences=True, return_state=True, name="lstm")
        y = keras.layers.Bidirectional(layer, name="bidirectional")(m)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_bidirectional_lstm_masked", build_keras3_bidirectional_lstm_masked.__doc__,
        seed=seed, build_model=model, values=lambda rng: [_masked_input(rng, 2)],
    )


def build_keras3_lstm_go_backwards_masked(seed: int = 0) -> FrozenCase:
    """Keras 3 Masking -> LSTM(4, go_backwards=True, return_sequences=True, return_state=True).

    Code path: ``_cudnn_lstm`` with a mask and go_backwards: ReverseSequence(x, lengths) ->
    ``CudnnRNNV3`` (zeros past each length) -> ReverseSequence -> ReverseV2, so the padded
    steps come first in the output. The CPU loop also gives zeros there (it starts from a
    zero previous output): all fetches agree everywhere. Feeds: x [3, 5, 3].
    Fetches: sequences [3, 5, 4], h, c.
    """
    import keras

    def model():
        x = keras.Input((5, 3), batch_size=3, name="x")
        m = keras.layers.Masking(0.0, name="masking")(x)
        y = keras.layers.LSTM(
            4, go_backwards=True, return_sequences=True, return_state=True, name="lstm"
        )(m)
        return keras.Model(x, y, name="model")

    return _keras3_case(
        "keras3_lstm_go_backwards_masked", build_keras3_lstm_go_backwards_masked.__doc__,
        seed=seed, build_model=model, values=lambda rng: [_masked_input(rng, 3)],
    )


BUILDERS: dict[str, Callable[[int], FrozenCase]] = {
    build.__name__.removeprefix("build_"): build
    for build in (
        build_tf_keras_cudnn_lstm_sequences,
        build_tf_keras_cudnn_lstm_initial_state,
        build_tf_keras_cudnn_gru_sequences,
        build_tf_keras_cudnn_gru_initial_state_dynamic_batch,
        build_keras3_lstm,
        build_keras3_gru_state_dynamic_batch,
        build_keras3_bidirectional_lstm,
        build_keras3_stacked_lstm,
        build_keras3_lstm_go_backwards_state,
        build_keras3_lstm_initial_state,
        build_keras3_lstm_masked,
        build_keras3_gru_embedding_mask,
        build_keras3_bidirectional_lstm_masked,
        build_keras3_lstm_go_backwards_masked,
    )
}


def build_all(seed: int = 0) -> list[FrozenCase]:
    """Every case, in BUILDERS order."""
    return [build(seed) for build in BUILDERS.values()]


if __name__ == "__main__":  # a report of where the Cudnn nodes live: python tests/builders/keras_graphs.py
    for case in build_all():
        print(f"{case.name}: feeds {list(case.feeds)} fetches {case.fetches}")
        for node in case.cudnn:
            print(f"    {node.summary()}")
