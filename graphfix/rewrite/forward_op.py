"""What one CudnnRNN/V2/V3 node computes, read from its attributes and static shapes.

Nothing is rewritten here: conversion, `graphfix.tools.inspect` and `graphfix.tools.verify`
all start from `read_forward_op`, so they can never disagree about a node's configuration.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import function_def_to_graph, op_def_registry

from graphfix.cudnn import gates, layout
from graphfix.errors import LayoutError, UnsupportedError
from graphfix.graph.bodies import Body, GraphBody, TensorRef
from graphfix.graph.folding import Folder

log = logging.getLogger(__name__)


FORWARD_OPS = ("CudnnRNN", "CudnnRNNV2", "CudnnRNNV3")


@dataclasses.dataclass
class ForwardOp:
    """What one CudnnRNN/V2/V3 node computes, read from its attributes and static shapes.

    Nothing is rewritten: conversion, `graphfix.tools.inspect` and `graphfix.tools.verify` all start here.
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
    # Another forward op of the body neither feeds nor reads from this one, so the two can
    # run at the same time (graph.side_by_side: a Bidirectional layer's two ops). Set by the rewrite.
    side_by_side: bool = False

    @property
    def has_sequence_lengths(self) -> bool:
        """V3 ops take sequence_lengths (input 4); V1/V2 do not."""
        return self.op == "CudnnRNNV3"

    @property
    def num_outputs(self) -> int:
        """CudnnRNN: 4 (output, output_h, output_c, reserve_space); V2/V3 add host_reserved."""
        return 4 if self.op == "CudnnRNN" else 5

    @property
    def sequence_lengths(self) -> str:
        """"none" (V1/V2), "constant" or "run time"."""
        if self.lengths_ref is None:
            return "none"
        return "constant" if self.lengths is not None else "run time"


def read_forward_op(body: Body, node, shapes: "Shapes", folder: Folder, gate_order: str = gates.CUDNN) -> ForwardOp:
    """Read a CudnnRNN/V2/V3 node's configuration; raise a GraphfixError naming it if it fits no layout."""
    where = node_where(body, node)
    mode, direction = node_attr(node, "rnn_mode"), node_attr(node, "direction")
    dtype = node_attr(node, "T")
    time_major = node.op != "CudnnRNNV3" or node_attr(node, "time_major") is not False
    num_proj = int(node_attr(node, "num_proj") or 0) if node.op == "CudnnRNNV3" else 0
    if mode not in layout.GATES_PER_MODE:
        raise UnsupportedError(f"attribute rnn_mode={mode!r} is not one of {sorted(layout.GATES_PER_MODE)}", where)
    if direction not in ("unidirectional", "bidirectional"):
        raise UnsupportedError(f"attribute direction={direction!r} is not unidirectional/bidirectional", where)
    if dtype not in (tf.float16, tf.bfloat16, tf.float32, tf.float64):
        raise UnsupportedError(f"attribute T={dtype!r} is not a float type cuDNN RNNs accept", where)
    warnings = []
    if node_attr(node, "is_training") and (node_attr(node, "dropout") or 0) > 0:
        warnings.append(
            f"{where}: dropout={node_attr(node, 'dropout')} with is_training=true; the CPU graph computes "
            "inference (no dropout), as a deployed model should")
    if gate_order != gates.CUDNN and mode != "lstm":
        warnings.append(f"{where}: gate order {gate_order} applies to LSTM gates only; this {mode} op is read in "
                        "cuDNN's order")
    num_dirs = 2 if direction == "bidirectional" else 1
    input_mode_attr = node_attr(node, "input_mode")
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
    param_count = params.size if params is not None else static_dim(shapes.input_shape(node.name, 3), 0)

    hidden = static_dim(h_shape, 2)
    state_count = static_dim(h_shape, 0 if time_major else 1)
    if hidden is None or state_count is None:
        raise UnsupportedError(
            f"cannot tell num_units/num_layers: input_h has unknown static shape {h_shape}{unknown_why}; "
            "give the model static state shapes", where)
    if num_proj and hidden != num_proj:
        raise LayoutError(f"input_h last dimension {hidden} != num_proj {num_proj}", where)
    units = (static_dim(c_shape, 2) if num_proj else hidden)
    if units is None:
        raise UnsupportedError(f"cannot tell num_units: input_c has unknown static shape {c_shape}{unknown_why}",
                               where)
    if state_count % num_dirs:
        raise LayoutError(f"input_h holds {state_count} states, not a multiple of {num_dirs} directions", where)
    num_layers = state_count // num_dirs
    input_size = static_dim(x_shape, 2)
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


def node_attr(node, name):
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


def node_where(body: Body, node) -> str:
    return f"{body.where}, node {node.name!r} ({node.op})"


def static_dim(shape: tf.TensorShape, i: int):
    if shape.rank is None or i >= shape.rank:
        return None
    return shape[i]


def _solve_input_size(count, mode, layers, units, dirs, input_mode, num_proj, where, node):
    try:
        return layout.solve_input_size(count, mode, layers, units, dirs, input_mode, num_proj)
    except LayoutError as exc:
        raise LayoutError(exc.reason, where) from None
