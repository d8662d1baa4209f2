"""See a params buffer that is rebuilt on every call through to the tensors it is built from.

Keras 3's cuDNN path (keras `src/backend/tensorflow/rnn.py`, `_cudnn_lstm` / `_cudnn_gru`,
`_standardize_cudnn_weights`) packs its variables into a params buffer on every call, and
the converted graph would slice the buffer back into weight slots::

    kernel [in, G*H] (ReadVariableOp) -> Split(axis 1, G) -> Transpose [1, 0] -> Reshape [-1] --.
    recurrent_kernel [H, G*H]         -> Split(axis 1, G) -> Transpose [1, 0] -> Reshape [-1] ---+-> ConcatV2 -> params
    bias vector [n*H]                 -> Split(axis 0, n)                     -> Reshape [-1] --'

`resolve` matches every piece of the ConcatV2 (in buffer order, `layout.pieces`) to a block
of its source, and `trace_slots` builds the weight slots (`cudnn.weights`: Keras's layout and
gate order) straight from the sources::

    kernel slot           [in, G*H] = kernel                     (the whole variable: Keras 3's
    recurrent_kernel slot [H, G*H]  = recurrent_kernel            gate order is the slots' order)
    bias slots                      = blocks of the bias vectors (one Slice per run of blocks)

so no concat, transpose or slice of a weight matrix runs per call; the variables stay variables.
Anything else (a different packing, unknown static shapes, a projection) is not resolved,
and the caller slices the buffer as before.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from graphfix.cudnn import gates
from graphfix.cudnn.layout import RnnSpec, pieces
from graphfix.cudnn.weights import slot_gates, weight_slots
from graphfix.graph.bodies import Body, TensorRef
from graphfix.graph.folding import Folder
from graphfix.graph.traced import TracedFunction, trace


@dataclasses.dataclass(frozen=True)
class Block:
    """Block `index` of `count` equal blocks of source `source` along its last axis."""

    source: int
    index: int
    count: int


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Where each weight slot comes from. inputs: the sources' input strings, in order;
    shapes: their static shapes; recipe: per weight slot, a tuple of Blocks (gate order)."""

    inputs: tuple
    shapes: tuple
    recipe: tuple


def _const(folder: Folder, ref: TensorRef):
    value = folder.fold(ref)
    return None if value is None else np.asarray(value)


def _piece_source(body: Body, folder: Folder, ref: TensorRef, matrix: bool):
    """(Split node name, its value input string, output index, num_split) when `ref` is
    Reshape([-1]) of [Transpose([1, 0]) of, for a matrix] a Split output; else None."""
    node = body.node(ref.node) if not ref.is_arg else None
    if node is None or node.op != "Reshape":
        return None
    data = body.data_inputs(node)
    shape = _const(folder, data[1])
    if shape is None or shape.reshape(-1).tolist() != [-1]:
        return None
    inner = data[0]
    if matrix:
        node = body.node(inner.node) if not inner.is_arg else None
        if node is None or node.op != "Transpose":
            return None
        data = body.data_inputs(node)
        perm = _const(folder, data[1])
        if perm is None or perm.reshape(-1).tolist() != [1, 0]:
            return None
        inner = data[0]
    split = body.node(inner.node) if not inner.is_arg else None
    if split is None or split.op != "Split":
        return None
    dim_ref = body.data_inputs(split)[0]
    dim = _const(folder, dim_ref)
    axis = 1 if matrix else 0
    if dim is None or int(dim.reshape(-1)[0]) not in (axis, -1):
        return None
    value_input = split.input[1]  # Split(split_dim, value)
    return split.name, value_input, inner.index, split.attr["num_split"].i


def resolve(body: Body, folder: Folder, shapes, params_ref: TensorRef, spec: RnnSpec,
            gate_order: str) -> Resolved | None:
    """Match the params ConcatV2 piece by piece (see the module doc); None when any piece does not match."""
    if spec.num_proj or (gates.applies(spec, gate_order) and gate_order != gates.CUDNN) or params_ref.is_arg:
        return None
    concat = body.node(params_ref.node)
    if concat is None or concat.op != "ConcatV2" or params_ref.index != 0:
        return None
    data = body.data_inputs(concat)
    axis = _const(folder, data[-1])
    ordered = pieces(spec)
    if axis is None or int(axis.reshape(-1)[0]) != 0 or len(data) - 1 != len(ordered):
        return None
    inputs, input_shapes, found = [], [], {}
    for piece, ref in zip(ordered, data[:-1]):
        matrix = piece.kind in ("W", "R")
        if piece.kind == "P":
            return None
        source = _piece_source(body, folder, ref, matrix)
        if source is None:
            return None
        split_name, value_input, index, count = source
        shape = shapes.input_shape(split_name, 1)
        if not shape.is_fully_defined():
            return None
        shape = tuple(shape.as_list())
        H = spec.num_units
        expected = (piece.shape[1], count * H) if matrix else (count * H,)
        if shape != expected:  # e.g. [H, G*in] would split into blocks of the right size, wrongly laid out
            return None
        if value_input not in inputs:
            inputs.append(value_input)
            input_shapes.append(shape)
        found[piece] = Block(inputs.index(value_input), index, count)
    recipe = []
    order = slot_gates(spec)
    kinds = {"kernel": ("W",), "recurrent_kernel": ("R",), "bias": ("bW", "bR"),
             "input_bias": ("bW",), "recurrent_bias": ("bR",)}
    for slot in weight_slots(spec):
        parts = []
        for kind in kinds[slot.kind]:
            group = [p for p in ordered if (p.layer, p.direction, p.kind) == (slot.layer, slot.direction, kind)]
            parts.append(tuple(found[group[g]] for g in order))
        if slot.kind in ("kernel", "recurrent_kernel") and len({b.source for b in parts[0]}) != 1:
            return None  # a matrix slot must come from one source
        recipe.append(tuple(parts))
    return Resolved(tuple(inputs), tuple(input_shapes), tuple(recipe))


def _blocks(sources, blocks) -> tf.Tensor:
    """Concatenate `blocks` along the last axis, one slice per run of adjacent blocks of one source."""
    runs = []
    for b in blocks:
        if runs and runs[-1][0] == b.source and runs[-1][2] == b.index:
            runs[-1][2] += 1
        else:
            runs.append([b.source, b.index, b.index + 1, b.count])
    parts = []
    for source, start, stop, count in runs:
        value = sources[source]
        width = value.shape[-1] // count
        if start == 0 and stop == count:
            parts.append(value)
        elif value.shape.rank == 1:
            parts.append(value[start * width:stop * width])
        else:
            parts.append(value[:, start * width:stop * width])
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


def trace_slots(resolved: Resolved, spec: RnnSpec, dtype: tf.DType, name: str) -> TracedFunction:
    """Trace sources... -> the RNN function's weight slots (`cudnn.weights.weight_slots` order)."""
    signature = [tf.TensorSpec(s, dtype, f"source{i}") for i, s in enumerate(resolved.shapes)]

    def build(*sources):
        out = []
        for slot, parts in zip(weight_slots(spec), resolved.recipe):
            if slot.kind == "bias":  # LSTM/RNN: the two bias halves summed
                out.append(_blocks(sources, parts[0]) + _blocks(sources, parts[1]))
            else:
                out.append(tf.identity(_blocks(sources, parts[0])))
        return out

    return trace(build, signature, name)
