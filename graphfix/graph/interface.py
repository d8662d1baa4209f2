"""What a converted model takes and gives, for the report's closing lines.

    GraphDef:   inputs: features float32 [?, 12, 8]; outputs: Identity
    SavedModel: signature 'serving_default': x float32 [?, 5, 3] -> output_0 float32 [?, 3]

A GraphDef has no signature: its inputs are its Placeholders and its outputs the nodes
whose outputs nothing reads (Const and NoOp aside), which is what a frozen model's user
feeds and fetches. `graph_io` is that rule, for the report and for the targets that give a
GraphDef a signature (TFLite, ONNX).
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2, tensor_shape_pb2

from graphfix.graph.bodies import is_cudnn, output_arg_offsets

NOT_OUTPUTS = ("Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "SaveV2", "RestoreV2",
               "VarHandleOp", "VariableV2")
TRAINING_ONLY = 3  # a cuDNN op's outputs from here on (reserve_space, host_reserved) only training reads


def graph_io(graph_def: graph_pb2.GraphDef) -> tuple[list[node_def_pb2.NodeDef],
                                                     list[tuple[node_def_pb2.NodeDef, int]]]:
    """(Placeholder nodes, (node, output index) of every output of the top-level nodes that
    nothing reads by a data or control edge), NOT_OUTPUTS and cuDNN's training-only outputs aside."""
    read = {text.lstrip("^").split(":")[0] for node in graph_def.node for text in node.input}
    inputs = [n for n in graph_def.node if n.op == "Placeholder"]
    outputs = []
    for node in graph_def.node:
        if node.name in read or node.op in NOT_OUTPUTS:
            continue
        count = sum(n for _, n in output_arg_offsets(node.op, node).values())
        outputs += [(node, i) for i in range(count) if not (is_cudnn(node.op) and i >= TRAINING_ONLY)]
    return inputs, outputs


def shape_text(shape: tensor_shape_pb2.TensorShapeProto) -> str:
    """[?, 12, 8]; "unknown shape" when the rank is unknown."""
    if shape.unknown_rank:
        return "unknown shape"
    return "[" + ", ".join("?" if d.size < 0 else str(d.size) for d in shape.dim) + "]"


def dtype_text(dtype: int) -> str:
    """DT_FLOAT -> float32 ("?" when unset)."""
    return tf.as_dtype(dtype).name if dtype else "?"


def graph_interface(graph_def: graph_pb2.GraphDef) -> list[str]:
    """One line: the top-level graph's Placeholders and the nodes nothing reads (`graph_io`)."""
    placeholders, outputs = graph_io(graph_def)
    inputs = [f"{n.name} {dtype_text(n.attr['dtype'].type)} {shape_text(n.attr['shape'].shape)}" for n in placeholders]
    names = list(dict.fromkeys(node.name for node, _ in outputs))
    return [f"inputs: {', '.join(inputs) or 'none'}; outputs: {', '.join(names) or 'none'}"]


def signature_lines(meta_graphs) -> list[str]:
    """One line per signature of a SavedModel's MetaGraphs: inputs -> outputs, with dtypes and shapes.

    TensorFlow's own entries (`__saved_model_init_op`) are not signatures a user calls: left out.
    """
    out = []
    for meta in meta_graphs:
        for key in sorted(k for k in meta.signature_def if not k.startswith("__")):
            sig = meta.signature_def[key]
            side = lambda infos: ", ".join(f"{name} {dtype_text(infos[name].dtype)} {shape_text(infos[name].tensor_shape)}"  # noqa: E731
                                           for name in sorted(infos)) or "nothing"
            out.append(f"signature {key!r}: {side(sig.inputs)} -> {side(sig.outputs)}")
    return out
