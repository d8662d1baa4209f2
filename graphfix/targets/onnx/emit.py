"""Build the ONNX nodes that replace one cuDNN forward op (`plan.OnnxRnn`).

The nodes go through a small `Builder` (a node and a constant maker), so the same code
fills tf2onnx's graph (`tf2onnx_hook.py`) and a standalone onnx.helper model
(`HelperBuilder`, used by --verify and the tests). Every name derives from the replaced
node (`{node}/layer0/LSTM`), so the same input gives the same model.

    x [T,B,I] or [B,T,I] --(Cast f32)--(Transpose to [T,B,I] if batch-major)-->
    h0, c0 [L*D,B,H] (batch-major [B,L*D,H]: the same memory, so a Reshape) --Slice per layer-->
    lengths [B] --Min(T)--> sequence_lens
      layer l: LSTM|GRU|RNN(x_l, W, R, B, sequence_lens, h0_l, c0_l) -> Y [T,D,B,H], Y_h, Y_c [D,B,H]
               Y --Transpose [T,B,D,H]--Reshape [T,B,D*H]--> x_{l+1}     (D = 1: Squeeze)
               zero lengths: Y_h, Y_c = h0_l, c0_l (onnxruntime writes zeros; cuDNN fails,
               graphfix's CPU graph keeps the initial state, as here)
    -> output (Transpose back if batch-major), output_h = Concat(Y_h), output_c = Concat(Y_c)
       (batch-major: Reshape to [B,L*D,H]), --(Cast back)-->
    output_c of GRU/RNN, reserve_space, host_reserved: scalar zeros (cuDNN's dummies)
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from graphfix.targets.onnx.plan import COMPUTED_IN_FLOAT32, OnnxRnn

OPSET = 17  # LSTM/GRU/RNN-14 (layout attribute unused), Squeeze/Slice with inputs, Shape start/end (15)


class Builder(Protocol):
    def const(self, name: str, value: np.ndarray) -> str:
        """A constant tensor named `name` (or near it); returns the tensor name."""

    def node(self, op: str, inputs: list[str], name: str, attrs: dict | None = None,
             outputs: list[str] | None = None, num_outputs: int = 1) -> list[str]:
        """A node; returns its output tensor names (`outputs` when given)."""


def emit_rnn(b: Builder, rnn: OnnxRnn, x: str, h0: str, c0: str | None, lengths: str | None,
             outputs: list[str | None]) -> None:
    """Add the nodes computing the cuDNN op's outputs into tensors named by `outputs`.

    outputs: names for (output, output_h, output_c, reserve_space[, host_reserved]); None: not needed.
    """
    spec, name = rnn.spec, rnn.node
    L, D, H = spec.num_layers, spec.num_dirs, spec.num_units
    lstm = spec.mode == "lstm"
    cast = rnn.dtype in COMPUTED_IN_FLOAT32
    elem = {"float32": 1, "float16": 10, "bfloat16": 16}[rnn.dtype]  # onnx.TensorProto enum
    to_f32 = (lambda t, tag: b.node("Cast", [t], f"{name}/{tag}/Cast", {"to": 1})[0]) if cast else (lambda t, tag: t)

    x = to_f32(x, "input")
    if not rnn.time_major:
        x = b.node("Transpose", [x], f"{name}/input/Transpose", {"perm": [1, 0, 2]})[0]

    def states(t, tag):
        t = to_f32(t, tag)
        if not rnn.time_major:  # [B, L*D, H] in shape only: the memory is [L*D, B, H]
            shape = b.const(f"{name}/{tag}/shape", np.array([L * D, -1, H], np.int64))
            t = b.node("Reshape", [t, shape], f"{name}/{tag}/Reshape")[0]
        return t

    h0 = states(h0, "input_h")
    c0 = states(c0, "input_c") if lstm else None
    seq, zero_len = "", None
    if lengths is not None:
        seq, zero_len = _lengths(b, name, x, lengths)

    layer_in, hs, cs = x, [], []
    for layer, weights in enumerate(rnn.layers):
        scope = f"{name}/layer{layer}"
        h0_l = _layer_slice(b, h0, layer, D, L, f"{scope}/input_h")
        c0_l = _layer_slice(b, c0, layer, D, L, f"{scope}/input_c") if lstm else None
        inputs = [layer_in, b.const(f"{scope}/W", weights.W), b.const(f"{scope}/R", weights.R),
                  b.const(f"{scope}/B", weights.B), seq, h0_l] + ([c0_l] if lstm else [])
        y, y_h, *y_c = b.node(rnn.onnx_op, inputs, f"{scope}/{rnn.onnx_op}", rnn.attributes(),
                              num_outputs=3 if lstm else 2)
        if zero_len is not None:  # an example with no valid step keeps its initial state
            y_h = b.node("Where", [zero_len, h0_l, y_h], f"{scope}/Y_h/Where")[0]
            if lstm:
                y_c[0] = b.node("Where", [zero_len, c0_l, y_c[0]], f"{scope}/Y_c/Where")[0]
        hs.append(y_h)
        cs += y_c
        if D == 1:
            layer_in = b.node("Squeeze", [y, b.const(f"{scope}/axis1", np.array([1], np.int64))],
                              f"{scope}/Y/Squeeze")[0]
        else:
            t = b.node("Transpose", [y], f"{scope}/Y/Transpose", {"perm": [0, 2, 1, 3]})[0]
            layer_in = b.node("Reshape", [t, b.const(f"{scope}/Y/shape", np.array([0, 0, -1], np.int64))],
                              f"{scope}/Y/Reshape")[0]

    results = [layer_in, _concat(b, hs, f"{name}/output_h"), _concat(b, cs, f"{name}/output_c") if lstm else None]
    tags = ("output", "output_h", "output_c")
    for i, (tag, value) in enumerate(zip(tags, results)):
        if i >= len(outputs) or outputs[i] is None or value is None:
            continue
        if not rnn.time_major:
            if i == 0:
                value = b.node("Transpose", [value], f"{name}/{tag}/Transpose", {"perm": [1, 0, 2]})[0]
            else:
                shape = b.const(f"{name}/{tag}/shape", np.array([-1, L * D, H], np.int64))
                value = b.node("Reshape", [value, shape], f"{name}/{tag}/Reshape")[0]
        if cast:
            b.node("Cast", [value], f"{name}/{tag}/CastBack", {"to": elem}, outputs=[outputs[i]])
        else:
            b.node("Identity", [value], f"{name}/{tag}", outputs=[outputs[i]])
    dummies = [(2, "output_c", _np_dtype(rnn.dtype))] if not lstm else []
    dummies += [(3, "reserve_space", _np_dtype(rnn.dtype)), (4, "host_reserved", np.int8)]
    for i, tag, dtype in dummies:
        if i < len(outputs) and outputs[i] is not None:
            zero = b.const(f"{name}/{tag}/zero", np.zeros([], dtype))
            b.node("Identity", [zero], f"{name}/{tag}", outputs=[outputs[i]])


def _np_dtype(dtype: str):
    if dtype == "bfloat16":  # numpy has none; the dummy's type matters only to a consumer of it
        return np.float32
    return np.dtype(dtype)


def _lengths(b: Builder, name: str, x: str, lengths: str) -> tuple[str, str]:
    """sequence_lens = min(lengths, T) as int32 (graphfix's CPU graph clamps too), and [1,B,1]
    bool True where a length is zero."""
    lengths = b.node("Cast", [lengths], f"{name}/lengths/Cast", {"to": 6})[0]
    steps = b.node("Shape", [x], f"{name}/lengths/steps", {"start": 0, "end": 1})[0]
    steps = b.node("Cast", [steps], f"{name}/lengths/steps_int32", {"to": 6})[0]
    seq = b.node("Min", [lengths, steps], f"{name}/lengths/Min")[0]
    zero = b.node("Equal", [seq, b.const(f"{name}/lengths/zero", np.zeros([1], np.int32))],
                  f"{name}/lengths/is_zero")[0]
    zero = b.node("Unsqueeze", [zero, b.const(f"{name}/lengths/axes", np.array([0, 2], np.int64))],
                  f"{name}/lengths/is_zero_3d")[0]
    return seq, zero


def _layer_slice(b: Builder, states: str, layer: int, D: int, L: int, scope: str) -> str:
    if L == 1:
        return states
    starts = b.const(f"{scope}/start", np.array([layer * D], np.int64))
    ends = b.const(f"{scope}/end", np.array([(layer + 1) * D], np.int64))
    axes = b.const(f"{scope}/axes", np.array([0], np.int64))
    return b.node("Slice", [states, starts, ends, axes], f"{scope}/Slice")[0]


def _concat(b: Builder, parts: list[str], scope: str) -> str:
    return parts[0] if len(parts) == 1 else b.node("Concat", parts, f"{scope}/Concat", {"axis": 0})[0]


class HelperBuilder:
    """A Builder collecting onnx.helper nodes and initializers (for a standalone model)."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, name, attrs=None, outputs=None, num_outputs=1):
        from onnx import helper
        outputs = outputs or [f"{name}:{i}" for i in range(num_outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **(attrs or {})))
        return outputs


def standalone_model(rnn: OnnxRnn, opset: int = OPSET):
    """An ONNX model of the op alone: inputs x, h, (c), (lengths) -> output, output_h, (output_c).

    Shapes as the cuDNN op's; batch and time left open. For --verify and tests.
    """
    from onnx import TensorProto, helper
    spec = rnn.spec
    LD, H = spec.num_layers * spec.num_dirs, spec.num_units
    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16}[rnn.dtype]
    x_shape = ["T", "B", spec.input_size] if rnn.time_major else ["B", "T", spec.input_size]
    s_shape = [LD, "B", H] if rnn.time_major else ["B", LD, H]
    lstm = spec.mode == "lstm"
    inputs = [helper.make_tensor_value_info("x", elem, x_shape), helper.make_tensor_value_info("h", elem, s_shape)]
    if lstm:
        inputs.append(helper.make_tensor_value_info("c", elem, s_shape))
    if rnn.has_lengths:
        inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, ["B"]))
    names = ["output", "output_h"] + (["output_c"] if lstm else [])
    b = HelperBuilder()
    emit_rnn(b, rnn, "x", "h", "c" if lstm else None, "lengths" if rnn.has_lengths else None, names)
    out_shapes = [x_shape[:2] + [spec.num_dirs * H], s_shape, s_shape]
    graph = helper.make_graph(b.nodes, f"graphfix_{rnn.node}", inputs,
                              [helper.make_tensor_value_info(n, elem, s) for n, s in zip(names, out_shapes)],
                              b.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="graphfix")
