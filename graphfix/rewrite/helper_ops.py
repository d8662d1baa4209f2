"""The cuDNN helper ops, each replaced by standard ops (one handler per op type, see HELPER_HANDLERS).

    CudnnRNNParamsSize              -> Const [1] (the buffer size the configuration needs)
    CudnnRNNCanonicalToParams(V2)   -> a call of a flat concat of the pieces
    CudnnRNNParamsToCanonical(V2)   -> a call of slices of the buffer, weights then biases

Every handler has the signature handler(ctx, body, node, shapes, folder).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from graphfix.cudnn import layout
from graphfix.cudnn.layout import RnnSpec, pieces
from graphfix.errors import LayoutError, UnsupportedError
from graphfix.graph.folding import Folder
from graphfix.graph.traced import TracedFunction, trace
from graphfix.rewrite.forward_op import node_attr, node_where
from graphfix.rewrite.splice import function_name, replace_with_call


def _spec_from_size_inputs(body, node, folder: Folder, where: str) -> layout.RnnSpec:
    """RnnSpec from a helper's constant num_layers/num_units/input_size inputs and attributes."""
    values = []
    for label, ref in zip(("num_layers", "num_units", "input_size"), body.data_inputs(node)[:3]):
        value = folder.fold(ref)
        if value is None:
            raise UnsupportedError(f"input {label} is not a constant ({folder.why_not.get(ref)})", where)
        values.append(int(np.asarray(value).reshape(-1)[0]))
    layers, units, input_size = values
    direction = node_attr(node, "direction")
    try:
        # RnnSpec applies TensorFlow's projection rule: num_proj == num_units is no projection.
        return layout.RnnSpec(node_attr(node, "rnn_mode"), layers, units, input_size,
                              2 if direction == "bidirectional" else 1,
                              layout.resolve_input_mode(node_attr(node, "input_mode"), input_size, units),
                              int(node_attr(node, "num_proj") or 0))
    except LayoutError as exc:
        raise LayoutError(exc.reason, where) from None


def _convert_params_size(ctx, body, node, shapes, folder):
    where = node_where(body, node)
    spec = _spec_from_size_inputs(body, node, folder, where)
    dtype = node_attr(node, "S")
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
    dtype = node_attr(node, "T")
    _check_canonical_sizes(body, node, folder, part_shapes)
    traced = trace_canonical_to_params(
        [s if s.rank is not None else None for s in part_shapes], dtype,
        function_name(body, node, (part_shapes, dtype)))
    ctx.add_function(traced)
    data = list(node.input[3:3 + len(pieces_in)])
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    replace_with_call(node, traced, data, controls)
    ctx.report.helpers.append(f"{op} {node.name!r} ({body.where}) -> in-graph concat")


def _check_canonical_sizes(body, node, folder: Folder, part_shapes) -> None:
    """Refuse pieces whose total size is not the buffer the op's configuration needs.

    The concat itself needs no configuration, so this runs only when the sizes are
    constant and every piece's shape is static; TensorFlow's kernel checks each piece
    against cuDNN's regions (RestoreParams), and a wrong total can never pass there.
    """
    if not all(folder.fold(ref) is not None for ref in body.data_inputs(node)[:3]):
        return
    counts = [s.num_elements() if s.rank is not None else None for s in part_shapes]
    if any(c is None for c in counts):
        return
    where = node_where(body, node)
    spec = _spec_from_size_inputs(body, node, folder, where)
    if sum(counts) != layout.params_size(spec):
        raise LayoutError(f"the pieces hold {sum(counts)} elements, but {layout.describe(spec)} "
                          f"(attrs {_attrs_text(node)}) needs {layout.params_size(spec)}", where)


def _convert_params_to_canonical(ctx, body, node, shapes, folder):
    where = node_where(body, node)
    op = node.op
    spec = _spec_from_size_inputs(body, node, folder, where)
    dtype = node_attr(node, "T")
    n_weights, n_biases = (len(s) for s in layout.canonical_shapes(spec))
    if "num_params" in node.attr:  # V1: num_params weight matrices and num_params bias vectors
        if spec.input_mode == "skip_input":
            # TensorFlow's kernel (core/kernels/cudnn_rnn_ops.cc, CudnnRNNParamsToCanonical)
            # wants num_params == cuDNN's weight regions, 2 * gates per pseudo-layer including
            # layer 0's absent input matrices, then CHECK-fails on those regions' sizes; any
            # other num_params is refused there. No value has a defined output.
            raise UnsupportedError(
                f"attribute input_mode={node_attr(node, 'input_mode')} ({spec.input_mode} for input_size "
                f"{spec.input_size}, num_units {spec.num_units}) with num_params={node.attr['num_params'].i}: "
                f"layer 0 has no input weights, so its {n_weights} weights and {n_biases} biases cannot "
                "be listed as num_params of each, and TensorFlow's own kernel fails on this op; "
                "use CudnnRNNParamsToCanonicalV2 (num_params_weights, num_params_biases)", where)
        declared = (node.attr["num_params"].i, node.attr["num_params"].i)
    else:
        declared = (node.attr["num_params_weights"].i, node.attr["num_params_biases"].i)
    if declared != (n_weights, n_biases):
        raise LayoutError(f"the op declares {declared[0]} weights and {declared[1]} biases, but "
                          f"{layout.describe(spec)} (attrs {_attrs_text(node)}) has {n_weights} and {n_biases}",
                          where)
    traced = trace_params_to_canonical(
        spec, dtype, function_name(body, node, (spec, dtype)))
    ctx.add_function(traced)
    controls = [i for i in node.input if i.startswith("^")]
    body.rewrite_output_refs(node.name)
    replace_with_call(node, traced, [node.input[3]], controls)
    ctx.report.helpers.append(f"{op} {node.name!r} ({body.where}) -> in-graph slices")


def _attrs_text(node) -> str:
    """E.g. 'rnn_mode=lstm, direction=unidirectional, input_mode=linear_input, num_proj=8' (V1 has no num_proj)."""
    values = {name: node_attr(node, name) for name in ("rnn_mode", "direction", "input_mode", "num_proj")}
    return ", ".join(f"{name}={value}" for name, value in values.items() if value is not None)


HELPER_HANDLERS = {
    "CudnnRNNParamsSize": _convert_params_size,
    "CudnnRNNCanonicalToParams": _convert_canonical_to_params,
    "CudnnRNNCanonicalToParamsV2": _convert_canonical_to_params,
    "CudnnRNNParamsToCanonical": _convert_params_to_canonical,
    "CudnnRNNParamsToCanonicalV2": _convert_params_to_canonical,
}


def trace_params_to_canonical(spec: RnnSpec, dtype: tf.DType, name: str) -> TracedFunction:
    """Trace CudnnRNNParamsToCanonical(V2): params [N] -> weights..., biases... (buffer order)."""
    signature = [tf.TensorSpec([None], dtype, "params")]
    ordered = [p for p in pieces(spec) if p.kind in ("W", "R", "P")] + \
              [p for p in pieces(spec) if p.kind in ("bW", "bR")]
    return trace(lambda params: [tf.reshape(tf.slice(params, [p.offset], [p.size]), p.shape)
                                  for p in ordered], signature, name)


def trace_canonical_to_params(shapes: list, dtype: tf.DType, name: str) -> TracedFunction:
    """Trace CudnnRNNCanonicalToParams(V2): weights..., biases... -> params [N] (flat concat)."""
    signature = [tf.TensorSpec(s, dtype, f"piece{i}") for i, s in enumerate(shapes)]
    return trace(lambda *parts: tf.concat([tf.reshape(p, [-1]) for p in parts], axis=0), signature, name)
