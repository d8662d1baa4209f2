"""What a converted model takes and gives, for the report's closing lines.

    GraphDef:   inputs: features float32 [?, 12, 8]; outputs: Identity
    SavedModel: signature 'serving_default': x float32 [?, 5, 3] -> output_0 float32 [?, 3]

A GraphDef has no signature: its inputs are its Placeholders and its outputs the nodes
whose outputs nothing reads (Const and NoOp aside), which is what a frozen model's user
feeds and fetches.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import graph_pb2, tensor_shape_pb2

NOT_OUTPUTS = ("Const", "NoOp", "Placeholder", "PlaceholderWithDefault", "Assert", "SaveV2", "RestoreV2")


def shape_text(shape: tensor_shape_pb2.TensorShapeProto) -> str:
    """[?, 12, 8]; "unknown shape" when the rank is unknown."""
    if shape.unknown_rank:
        return "unknown shape"
    return "[" + ", ".join("?" if d.size < 0 else str(d.size) for d in shape.dim) + "]"


def dtype_text(dtype: int) -> str:
    """DT_FLOAT -> float32 ("?" when unset)."""
    return tf.as_dtype(dtype).name if dtype else "?"


def graph_interface(graph_def: graph_pb2.GraphDef) -> list[str]:
    """One line: the top-level graph's Placeholders and the nodes nothing reads."""
    read = {text.lstrip("^").split(":")[0] for node in graph_def.node for text in node.input}
    inputs = [f"{n.name} {dtype_text(n.attr['dtype'].type)} {shape_text(n.attr['shape'].shape)}"
              for n in graph_def.node if n.op == "Placeholder"]
    outputs = [n.name for n in graph_def.node if n.name not in read and n.op not in NOT_OUTPUTS]
    return [f"inputs: {', '.join(inputs) or 'none'}; outputs: {', '.join(outputs) or 'none'}"]


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
