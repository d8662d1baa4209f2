"""Find every cuDNN RNN op in a GraphDef (top level and function library) and replace it.

Per node: read its attributes and static shapes -> build an RnnSpec -> fold or slice its
params -> trace a standard-op function -> splice a call to it in under the same node name,
so every `node:k` tensor name the rest of the model uses stays valid::

    before:  x, h, c, params --> [CudnnRNNV3 "rnn"] --> rnn:0, rnn:1, rnn:2
    after:   x, h, c, rnn/graphfix/layer0_fw_kernel (Const), ...
                     --> [PartitionedCall "rnn" f=graphfix_rnn] --> rnn:0, rnn:1, rnn:2

One handler per op type, all with the signature handler(ctx, body, node); see HANDLERS.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import function_def_to_graph, op_def_registry

from graphfix import emit, gates, layout, weights
from graphfix.detached import ConstStore
from graphfix.errors import GraphfixError, LayoutError, UnsupportedError
from graphfix.graph import Body, FunctionBody, GraphBody, TensorRef, bodies, function_refs, is_cudnn
from graphfix.report import ConvertedOp, Report
from graphfix.resolve import CANONICAL_TO_PARAMS, PURE_OPS, Folder

log = logging.getLogger(__name__)

FORWARD_OPS = ("CudnnRNN", "CudnnRNNV2", "CudnnRNNV3")
PARAMS_TO_CANONICAL = ("CudnnRNNParamsToCanonical", "CudnnRNNParamsToCanonicalV2")
TRAINING_OUTPUTS = {3: "reserve_space", 4: "host_reserved"}


def convert_graph_def(graph_def: graph_pb2.GraphDef, source: str = "<graph>",
                      gate_order: str = gates.CUDNN, roots=(), tflite_target=None,
                      ) -> tuple[graph_pb2.GraphDef, Report]:
    """Return a copy of `graph_def` with every cuDNN RNN op replaced, and the report.

    The input is not modified. Raises a GraphfixError subclass naming the node when an op
    cannot be converted; nothing is returned then. gate_order: how LSTM params buffers order
    their gates (`graphfix.gates`; "ifoc" for ROCm builds of Keras). tflite_target: emit for
    the TFLite target (a `graphfix.tflite.Target`: fixed batch, fused LSTMs). roots: functions callable
    from outside the graph (a SavedModel's saved concrete functions). A library function
    that neither the graph nor a root calls never runs: it is left as it is and listed in
    `report.left_unchanged`.
    """
    out, _, report = convert_detached(graph_def, None, source, gate_order, roots, tflite_target)
    return out, report


def convert_detached(graph_def: graph_pb2.GraphDef, consts: ConstStore | None, source: str = "<graph>",
                     gate_order: str = gates.CUDNN, roots=(), tflite_target=None,
                     ) -> tuple[graph_pb2.GraphDef, ConstStore | None, Report]:
    """`convert_graph_def` for a slim graph whose large Const values are in `consts`.

    Returns (slim converted graph, the values it needs, report): folded weights go into
    the returned store rather than the proto (`graphfix.detached`). Neither input is
    modified; values are shared, not copied. consts=None: an ordinary, complete GraphDef.
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    working = ConstStore(consts.values) if consts is not None else None
    ctx = _Context(out, Report(source=source), gates.check(gate_order), tflite_target=tflite_target)
    live = reachable_functions(out, roots)
    left_alone = set()
    for body in bodies(out, working):  # a list made now: functions added while converting are not revisited
        if not any(is_cudnn(n.op) for n in body.nodes):
            continue
        if isinstance(body, GraphBody) or body.container.signature.name in live:
            _rewrite_body(ctx, body)
        else:
            # Nothing can call it, so it never runs: tf_keras SavedModels keep GPU-only
            # variants and gradient functions so. Some of those (gradients, training-only
            # forward passes) cannot be converted; leaving them all exactly as they were is
            # both safe and faithful.
            left_alone.add(body.where)
            ops = sorted({n.op for n in body.nodes if is_cudnn(n.op)})
            ctx.report.left_unchanged.append((body.container.signature.name, ", ".join(ops)))
    ctx.report.cleared_devices = _clear_gpu_devices(out)
    left = [f"{where}: {n.name} ({n.op})" for where, n in find_cudnn_nodes(out) if where not in left_alone]
    if left:  # a handler bug, never user error: fail loudly rather than write a GPU-only graph
        raise GraphfixError("cuDNN ops left after conversion: " + ", ".join(left))
    return out, (working.restricted_to(out) if working is not None else None), ctx.report


def reachable_functions(graph_def: graph_pb2.GraphDef, roots=()) -> set[str]:
    """Library functions the graph's nodes, or the named root functions, can call."""
    library = {f.signature.name: f for f in graph_def.library.function}
    seen: set[str] = set()
    stack = list(roots) + [f.name for f in function_refs(graph_def.node)]
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        stack.extend(f.name for f in function_refs(library[name].node_def))
    return seen


def find_cudnn_nodes(graph_def: graph_pb2.GraphDef) -> list[tuple[str, node_def_pb2.NodeDef]]:
    """(where, node) for every cuDNN op in the graph and its function library."""
    return [(b.where, n) for b in bodies(graph_def) for n in b.nodes if is_cudnn(n.op)]


@dataclasses.dataclass
class _Context:
    graph_def: graph_pb2.GraphDef
    report: Report
    gate_order: str = gates.CUDNN
    tflite_target: object = None  # graphfix.tflite.Target
    _shape_graph: tf.Graph | None = None
    _traced: dict = dataclasses.field(default_factory=dict)

    def function(self, key, trace: Callable[[], emit.TracedFunction]) -> emit.TracedFunction:
        """The traced function for `key`, traced and added to the library on first use.

        Tracing dominates conversion time, and models repeat configurations (a
        Bidirectional layer's two directions, stacked layers of one size), so nodes of the
        same configuration share one function, named after the first of them.
        """
        if key not in self._traced:
            self._traced[key] = trace()
            self.add_function(self._traced[key])
        return self._traced[key]

    def add_function(self, traced: emit.TracedFunction) -> None:
        existing = {f.signature.name for f in self.graph_def.library.function}
        clash = [f.signature.name for f in traced.function_defs if f.signature.name in existing]
        if clash:
            raise GraphfixError(f"function name {clash[0]!r} already exists in the library; "
                                "was this model converted by graphfix already?")
        self.graph_def.library.function.extend(traced.function_defs)

    def shape_graph(self) -> tf.Graph:
        """The input graph imported once (no kernels needed) for static shape inference."""
        if self._shape_graph is None:
            self._shape_graph = tf.Graph()
            with self._shape_graph.as_default():
                tf.graph_util.import_graph_def(self.graph_def, name="")
        return self._shape_graph


class Shapes:
    """Static input shapes of nodes in one body (TensorShape, possibly unknown).

    base: returns the whole GraphDef imported into a tf.Graph (called at most once here).
    """

    def __init__(self, base: Callable[[], tf.Graph], body: Body):
        self.graph = None
        self.error: str | None = None  # why shapes are unavailable, for messages that need them
        try:
            base = base()
            if isinstance(body, GraphBody):
                self.graph = base
            else:
                with base.as_default():
                    self.graph = function_def_to_graph.function_def_to_graph(body.container)
        except Exception as exc:  # shapes are a help, not a need: fall back to params sizes
            self.error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.debug("static shapes unavailable for %s: %s", body.where, exc)

    def input_shape(self, node_name: str, index: int) -> tf.TensorShape:
        if self.graph is None:
            return tf.TensorShape(None)
        try:
            return self.graph.get_operation_by_name(node_name).inputs[index].shape
        except (KeyError, IndexError, ValueError):
            return tf.TensorShape(None)


def _rewrite_body(ctx: _Context, body: Body) -> None:
    shapes = Shapes(ctx.shape_graph, body)
    folder = Folder(body)
    folded_params: list[TensorRef] = []
    nodes = list(body.nodes)
    backprop = [n for n in nodes if n.op.startswith("CudnnRNNBackprop")]
    if backprop:
        raise UnsupportedError(
            f"this is a training graph: it computes cuDNN RNN gradients ({backprop[0].op}); "
            "convert the inference graph instead", f"{body.where}, node {backprop[0].name!r}")
    for node in nodes:
        if node.op in FORWARD_OPS:
            log.info("converting %s %r (%s)", node.op, node.name, body.where)
            params_ref = _convert_forward(ctx, body, node, shapes, folder)
            if params_ref is not None:
                folded_params.append(params_ref)
    ctx.report.removed_nodes += _prune_dead(body, folded_params)
    for node in list(body.nodes):
        handler = HELPER_HANDLERS.get(node.op)
        if handler is not None:
            handler(ctx, body, node, shapes, folder)
        elif is_cudnn(node.op) and node.op not in FORWARD_OPS:
            raise UnsupportedError(f"op {node.op} is not supported", f"{body.where}, node {node.name!r}")


def _attr(node, name):
    """Attribute value with the op's registered default when the GraphDef leaves it out."""
    if name in node.attr:
        value = node.attr[name]
    else:
        op_def = op_def_registry.get(node.op)
        defaults = {a.name: a.default_value for a in op_def.attr if a.HasField("default_value")}
        if name not in defaults:
            return None
        value = defaults[name]
    kind = value.WhichOneof("value")
    if kind == "s":
        return value.s.decode()
    if kind == "type":
        return tf.as_dtype(value.type)
    return getattr(value, kind) if kind else None


def _where(body: Body, node) -> str:
    return f"{body.where}, node {node.name!r} ({node.op})"


@dataclasses.dataclass
class ForwardOp:
    """What one CudnnRNN/V2/V3 node computes, read from its attributes and static shapes.

    Nothing is rewritten: conversion, `graphfix.inspect` and `graphfix.verify` all start here.
    params: the folded params buffer [N] as stored (in `gate_order`), or None when it is not
    constant (params_why_not says why). lengths: the folded V3 sequence_lengths [B] or None.
    """

    where: str                 # the body's place: "graph" or "function NAME"
    node: str
    op: str                    # CudnnRNN | CudnnRNNV2 | CudnnRNNV3
    spec: layout.RnnSpec
    dtype: tf.DType
    time_major: bool
    input_mode_attr: str
    gate_order: str
    params_ref: TensorRef
    params: np.ndarray | None
    params_why_not: str | None
    lengths_ref: TensorRef | None
    lengths: np.ndarray | None
    x_shape: tf.TensorShape
    warnings: list[str]

    @property
    def call(self) -> emit.RnnCall:
        return emit.RnnCall(self.spec, self.dtype, self.time_major, self.op == "CudnnRNNV3",
                            4 if self.op == "CudnnRNN" else 5)

    @property
    def sequence_lengths(self) -> str:
        """"none" (V1/V2), "constant" or "run time"."""
        if self.lengths_ref is None:
            return "none"
        return "constant" if self.lengths is not None else "run time"


def read_forward_op(body: Body, node, shapes: "Shapes", folder: Folder, gate_order: str = gates.CUDNN) -> ForwardOp:
    """Read a CudnnRNN/V2/V3 node's configuration; raise a GraphfixError naming it if it fits no layout."""
    where = _where(body, node)
    mode, direction = _attr(node, "rnn_mode"), _attr(node, "direction")
    dtype = _attr(node, "T")
    time_major = node.op != "CudnnRNNV3" or _attr(node, "time_major") is not False
    num_proj = int(_attr(node, "num_proj") or 0) if node.op == "CudnnRNNV3" else 0
    if mode not in layout.GATES_PER_MODE:
        raise UnsupportedError(f"attribute rnn_mode={mode!r} is not one of {sorted(layout.GATES_PER_MODE)}", where)
    if direction not in ("unidirectional", "bidirectional"):
        raise UnsupportedError(f"attribute direction={direction!r} is not unidirectional/bidirectional", where)
    if dtype not in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        raise UnsupportedError(f"attribute T={dtype!r} is not a float type cuDNN RNNs accept", where)
    warnings = []
    if _attr(node, "is_training") and (_attr(node, "dropout") or 0) > 0:
        warnings.append(
            f"{where}: dropout={_attr(node, 'dropout')} with is_training=true; the CPU graph computes "
            "inference (no dropout), as a deployed model should")
    if gate_order != gates.CUDNN and mode != "lstm":
        warnings.append(f"{where}: gate order {gate_order} applies to LSTM gates only; this {mode} op is read in "
                        "cuDNN's order")
    num_dirs = 2 if direction == "bidirectional" else 1
    input_mode_attr = _attr(node, "input_mode")
    if input_mode_attr not in layout.INPUT_MODES + ("auto_select",):
        raise UnsupportedError(f"attribute input_mode={input_mode_attr!r} is not one of "
                               f"{list(layout.INPUT_MODES) + ['auto_select']}", where)

    inputs = body.data_inputs(node)
    x_ref, h_ref, c_ref, params_ref = inputs[:4]
    params = folder.fold(params_ref)
    if params is not None and params.ndim != 1:
        raise LayoutError(f"params must be 1-D, got shape {params.shape}", where)
    if params is not None and params.dtype != dtype.as_numpy_dtype:
        raise UnsupportedError(f"params are {tf.as_dtype(params.dtype).name} but attribute T={dtype.name}: "
                               "the op needs params of its own type", where)
    unknown_why = f" (TensorFlow could not infer shapes: {shapes.error})" if shapes.error else ""
    x_shape, h_shape, c_shape = (shapes.input_shape(node.name, i) for i in range(3))
    param_count = params.size if params is not None else _dim(shapes.input_shape(node.name, 3), 0)

    hidden = _dim(h_shape, 2)
    state_count = _dim(h_shape, 0 if time_major else 1)
    if hidden is None or state_count is None:
        raise UnsupportedError(
            f"cannot tell num_units/num_layers: input_h has unknown static shape {h_shape}{unknown_why}; "
            "give the model static state shapes", where)
    if num_proj and hidden != num_proj:
        raise LayoutError(f"input_h last dimension {hidden} != num_proj {num_proj}", where)
    units = (_dim(c_shape, 2) if num_proj else hidden)
    if units is None:
        raise UnsupportedError(f"cannot tell num_units: input_c has unknown static shape {c_shape}{unknown_why}",
                               where)
    if state_count % num_dirs:
        raise LayoutError(f"input_h holds {state_count} states, not a multiple of {num_dirs} directions", where)
    num_layers = state_count // num_dirs
    input_size = _dim(x_shape, 2)
    if input_size is None:
        if param_count is None:
            raise UnsupportedError("cannot tell the input size: neither the input's last dimension "
                                   "nor the params size is static", where)
        input_size = _solve_input_size(param_count, mode, num_layers, units, num_dirs, input_mode_attr,
                                       num_proj, where, node)
    try:
        input_mode = layout.resolve_input_mode(input_mode_attr, input_size, units)
        spec = layout.RnnSpec(mode, num_layers, units, input_size, num_dirs, input_mode, num_proj)
    except LayoutError as exc:
        raise type(exc)(exc.reason, where) from None
    if param_count is not None and param_count != layout.params_size(spec):
        raise LayoutError(
            f"params buffer has {param_count} elements, but {layout.describe(spec)} "
            f"(attrs rnn_mode={mode}, direction={direction}, input_mode={input_mode_attr}, num_proj={num_proj}) "
            f"needs {layout.params_size(spec)}", where)

    lengths_ref = inputs[4] if node.op == "CudnnRNNV3" else None
    lengths = folder.fold(lengths_ref) if lengths_ref is not None else None
    return ForwardOp(where=body.where, node=node.name, op=node.op, spec=spec, dtype=dtype, time_major=time_major,
                     input_mode_attr=input_mode_attr, gate_order=gate_order, params_ref=params_ref, params=params,
                     params_why_not=None if params is not None else folder.why_not.get(params_ref, "not constant"),
                     lengths_ref=lengths_ref, lengths=lengths, x_shape=x_shape, warnings=warnings)


def _convert_forward(ctx, body, node, shapes: "Shapes", folder: Folder) -> TensorRef | None:
    """Replace one CudnnRNN/V2/V3 node. Returns the params ref when it was folded."""
    _refuse_training_consumers(body, node, _where(body, node))
    fop = read_forward_op(body, node, shapes, folder, ctx.gate_order)
    ctx.report.warnings += fop.warnings
    spec, dtype, call = fop.spec, fop.dtype, fop.call
    if ctx.tflite_target is not None:
        from graphfix import tflite  # noqa: PLC0415 (TFLite target only)
        call = tflite.target_call(body, node, fop, ctx.tflite_target, ctx.report)
    fname = _function_name(body, node, call)
    # TFLite's converter fails to lower the While loop of a function called from two places
    key = ("rnn", call) if ctx.tflite_target is None else ("rnn", call, fname)
    traced = ctx.function(key, lambda: emit.trace_rnn(call, fname))

    if fop.params is not None:
        values = weights.graph_weights_from_buffer(fop.params, spec, fop.gate_order)
        weight_refs = _add_weight_consts(body, node.name, values, spec, folder.control_inputs(fop.params_ref))
        params_note = "folded to constants"
    else:
        unpack = ctx.function(("unpack", spec, dtype, fop.gate_order),
                              lambda: emit.trace_params_unpack(spec, dtype, fname + "_unpack_params", fop.gate_order))
        unpack_name = f"{node.name}/graphfix/unpack_params"
        _add_call(body, unpack_name, unpack, [node.input[3]], [])
        weight_refs = [body.format_ref(unpack_name, i) for i in range(len(unpack.output_types))]
        params_note = f"sliced in-graph ({fop.params_why_not})"

    data = list(node.input[:3])
    if call.has_sequence_lengths:
        data.append(node.input[4])
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    _replace_with_call(node, traced, data + weight_refs, controls)

    ctx.report.ops.append(ConvertedOp(
        where=body.where, node=node.name, op=fop.op, mode=spec.mode, num_layers=spec.num_layers,
        bidirectional=spec.num_dirs == 2, input_size=spec.input_size, num_units=spec.num_units,
        num_proj=spec.num_proj, input_mode=spec.input_mode, dtype=dtype.name, time_major=fop.time_major,
        sequence_lengths=fop.sequence_lengths, params=params_note,
        gate_order=fop.gate_order if gates.applies(spec, fop.gate_order) else gates.CUDNN))
    return fop.params_ref if fop.params is not None else None


def _function_name(body: Body, node, config) -> str:
    """Library name for a node's replacement: its path plus a digest of its configuration.

    The digest keeps two converted models that share a node name but not a configuration
    loadable in one process (TensorFlow refuses two different functions of one name).
    config: anything whose repr is deterministic (an RnnCall, an RnnSpec, shapes).
    """
    path = f"{body.container.signature.name}/{node.name}" if isinstance(body, FunctionBody) else node.name
    digest = hashlib.sha1(repr(config).encode()).hexdigest()[:8]
    return emit.function_name_for(path, f"_{digest}")


def _solve_input_size(count, mode, layers, units, dirs, input_mode, num_proj, where, node):
    try:
        return layout.solve_input_size(count, mode, layers, units, dirs, input_mode, num_proj)
    except LayoutError as exc:
        raise LayoutError(exc.reason, where) from None


def _dim(shape: tf.TensorShape, i: int):
    if shape.rank is None or i >= shape.rank:
        return None
    return shape[i]


def _refuse_training_consumers(body: Body, node, where: str) -> None:
    users = [f"{n.name!r} ({n.op})" for n, _, ref in body.consumers(node.name) if ref.index in TRAINING_OUTPUTS]
    users += [f"function output {key!r}" for key, ref in body.output_refs()
              if ref is not None and ref.node == node.name and ref.index in TRAINING_OUTPUTS]
    if users:
        raise UnsupportedError(
            "this is a training graph: the reserve_space/host_reserved outputs, which only cuDNN's "
            f"backward pass can use, are consumed by {', '.join(users)}", where)


def _add_weight_consts(body: Body, node_name: str, values: list[np.ndarray], spec, controls=()) -> list[str]:
    """One Const per weight slot; `controls` keeps the ordering edges the folded subgraph had.

    In a slim graph (body.consts), large values go to its ConstStore instead of the proto.
    """
    refs = []
    for slot, value in zip(weights.weight_slots(spec), values):
        name = _unique_name(body, f"{node_name}/graphfix/{slot.name}")
        const = body.nodes.add()
        const.name = name
        const.op = "Const"
        const.input.extend(controls)
        if body.consts is not None and body.consts.wants(value):
            body.consts.put(const, value)
        else:
            const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(value)))
        refs.append(body.format_ref(name, 0))
    return refs


def _unique_name(body: Body, name: str) -> str:
    if body.node(name) is None:
        return name
    raise GraphfixError(f"node name {name!r} already exists; was this model converted by graphfix already?")


def _set_call_attrs(node, traced: emit.TracedFunction) -> None:
    node.attr["Tin"].list.type.extend([t.as_datatype_enum for t in traced.input_types])
    node.attr["Tout"].list.type.extend([t.as_datatype_enum for t in traced.output_types])
    node.attr["f"].func.name = traced.name
    for key in ("config", "config_proto", "executor_type"):
        node.attr[key].s = b""


def _add_call(body: Body, name: str, traced, data_inputs, controls):
    node = body.nodes.add()
    node.name = _unique_name(body, name)
    node.op = "PartitionedCall"
    node.input.extend(list(data_inputs) + list(controls))
    _set_call_attrs(node, traced)
    return node


def _replace_with_call(node, traced, data_inputs, controls) -> None:
    """Turn `node` into a PartitionedCall of `traced`, keeping its name (and so its tensor names)."""
    name = node.name
    node.Clear()
    node.name = name
    node.op = "PartitionedCall"
    node.input.extend(list(data_inputs) + list(controls))
    _set_call_attrs(node, traced)


def _prune_dead(body: Body, roots: list[TensorRef]) -> int:
    """Remove the now-unused pure nodes that only built folded params buffers.

    Consumer counts are taken once and decremented as nodes go, so pruning is linear in
    the body's size however large the params subgraph is.
    """
    users: collections.Counter = collections.Counter()
    for n in body.nodes:
        for text in n.input:
            users[_input_node(text)] += 1
    for _, ref in body.output_refs():
        if ref is not None:
            users[ref.node] += 1
    doomed: set[str] = set()
    stack = [r.node for r in roots]
    while stack:
        name = stack.pop()
        node = body.node(name)
        if (name in doomed or node is None or users[name] > 0
                or not (node.op in PURE_OPS or node.op in CANONICAL_TO_PARAMS)):
            continue
        doomed.add(name)
        for text in node.input:
            users[_input_node(text)] -= 1
            stack.append(_input_node(text))
    body.remove_nodes(doomed)
    return len(doomed)


def _input_node(text: str) -> str:
    """The node (or function argument) an input string reads, in either body format."""
    return text.lstrip("^").split(":")[0]


# --- helper ops -------------------------------------------------------------------------

def _spec_from_size_inputs(body, node, folder: Folder, where: str) -> layout.RnnSpec:
    """RnnSpec from a helper's constant num_layers/num_units/input_size inputs and attributes."""
    values = []
    for label, ref in zip(("num_layers", "num_units", "input_size"), body.data_inputs(node)[:3]):
        value = folder.fold(ref)
        if value is None:
            raise UnsupportedError(f"input {label} is not a constant ({folder.why_not.get(ref)})", where)
        values.append(int(np.asarray(value).reshape(-1)[0]))
    layers, units, input_size = values
    direction = _attr(node, "direction")
    try:
        return layout.RnnSpec(_attr(node, "rnn_mode"), layers, units, input_size,
                              2 if direction == "bidirectional" else 1,
                              layout.resolve_input_mode(_attr(node, "input_mode"), input_size, units),
                              int(_attr(node, "num_proj") or 0))
    except LayoutError as exc:
        raise LayoutError(exc.reason, where) from None


def _convert_params_size(ctx, body, node, shapes, folder):
    where = _where(body, node)
    spec = _spec_from_size_inputs(body, node, folder, where)
    dtype = _attr(node, "S")
    controls = [i for i in node.input if i.startswith("^")]
    name = node.name
    body.rewrite_output_refs(name)
    node.Clear()
    node.name = name
    node.op = "Const"
    node.input.extend(controls)
    node.attr["dtype"].type = dtype.as_datatype_enum
    # The GPU kernel outputs shape [1], not a scalar.
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.array([layout.params_size(spec)], dtype.as_numpy_dtype)))
    ctx.report.helpers.append(f"CudnnRNNParamsSize {name!r} ({body.where}) -> Const {layout.params_size(spec)}")


def _convert_canonical_to_params(ctx, body, node, shapes, folder):
    op = node.op
    pieces_in = body.data_inputs(node)[3:]
    part_shapes = [shapes.input_shape(node.name, 3 + i) for i in range(len(pieces_in))]
    dtype = _attr(node, "T")
    traced = emit.trace_canonical_to_params(
        [s if s.rank is not None else None for s in part_shapes], dtype,
        _function_name(body, node, (part_shapes, dtype)))
    ctx.add_function(traced)
    data = list(node.input[3:3 + len(pieces_in)])
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    _replace_with_call(node, traced, data, controls)
    ctx.report.helpers.append(f"{op} {node.name!r} ({body.where}) -> in-graph concat")


def _convert_params_to_canonical(ctx, body, node, shapes, folder):
    where = _where(body, node)
    op = node.op
    spec = _spec_from_size_inputs(body, node, folder, where)
    dtype = _attr(node, "T")
    traced = emit.trace_params_to_canonical(
        spec, dtype, _function_name(body, node, (spec, dtype)))
    expected = len(traced.output_types)
    declared = (node.attr["num_params"].i * 2 if "num_params" in node.attr
                else node.attr["num_params_weights"].i + node.attr["num_params_biases"].i)
    if declared != expected:
        raise LayoutError(f"the op declares {declared} canonical tensors, but {layout.describe(spec)} has "
                          f"{expected}", where)
    ctx.add_function(traced)
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    _replace_with_call(node, traced, [node.input[3]], controls)
    ctx.report.helpers.append(f"{op} {node.name!r} ({body.where}) -> in-graph slices")


HELPER_HANDLERS = {
    "CudnnRNNParamsSize": _convert_params_size,
    "CudnnRNNCanonicalToParams": _convert_canonical_to_params,
    "CudnnRNNCanonicalToParamsV2": _convert_canonical_to_params,
    "CudnnRNNParamsToCanonical": _convert_params_to_canonical,
    "CudnnRNNParamsToCanonicalV2": _convert_params_to_canonical,
}


def _clear_gpu_devices(graph_def: graph_pb2.GraphDef) -> int:
    """Drop GPU placements (a GPU-trained graph often pins every node there)."""
    count = 0
    all_nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    for n in all_nodes:
        if "GPU" in n.device.upper():
            n.device = ""
            count += 1
    return count

