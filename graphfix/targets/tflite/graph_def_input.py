"""A frozen GraphDef for the TFLite target: wrapped as a TF1 SavedModel with one signature.

The TFLite pipeline works on signatures (which tensors go in, which come out, and which input
dimension is the batch), and a GraphDef has none. The signature graphfix gives it::

    inputs:  every Placeholder (key: the node name), with its shape attribute
    outputs: every tensor of an op none of whose outputs anything consumes (key: "node" or
             "node:i"; `graph.interface.graph_io`), except Const/NoOp nodes and a cuDNN op's
             reserve_space / host_reserved, which only training reads. An op that feeds
             something is not an output (a frozen Keras layer leaves its cuDNN op's final
             states unused; as outputs they would also keep TFLite from fusing the LSTM)

The report lists both, so a user whose graph has stray unconsumed nodes sees what was taken.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from graphfix.errors import UnsupportedError
from graphfix.graph.interface import graph_io
from graphfix.io import graph_def_file


def wrap_graph_def(src: Path, dst: Path) -> str:
    """Write at dst a TF1 SavedModel (no variables) holding the GraphDef file src; return a
    report line naming its signature's inputs and outputs."""
    graph_def = graph_def_file.read_graph_def(src)
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
    except Exception as exc:  # noqa: BLE001 (the importer raises several types; all mean "not importable")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedError(f"TensorFlow cannot import this GraphDef: {first}", str(src)) from None
    placeholders, sinks = graph_io(graph_def)
    inputs = [graph.get_operation_by_name(n.name) for n in placeholders]
    outputs = [graph.get_operation_by_name(node.name).outputs[i] for node, i in sinks]
    if not inputs or not outputs:
        raise UnsupportedError(
            f"cannot tell this GraphDef's {'inputs (no Placeholder)' if not inputs else 'outputs'} for a TFLite "
            "signature; save it as a SavedModel with a signature and pass that directory", str(src))
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.tags.append("serve")
    meta.graph_def.CopyFrom(graph_def)
    sig = meta.signature_def["serving_default"]
    sig.method_name = "tensorflow/serving/predict"
    for op in inputs:
        _tensor_info(sig.inputs[op.name], op.outputs[0])
    for t in outputs:
        _tensor_info(sig.outputs[t.op.name if t.value_index == 0 else f"{t.op.name}:{t.value_index}"], t)
    (dst / "variables").mkdir(parents=True)
    (dst / "saved_model.pb").write_bytes(
        saved_model_pb2.SavedModel(saved_model_schema_version=1, meta_graphs=[meta]).SerializeToString())
    return (f"TFLite: GraphDef wrapped as a SavedModel, signature 'serving_default': inputs "
            f"{', '.join(sorted(sig.inputs))}; outputs {', '.join(sorted(sig.outputs))}")


def _tensor_info(info, tensor) -> None:
    info.name, info.dtype = tensor.name, tensor.dtype.as_datatype_enum
    info.tensor_shape.CopyFrom(tensor.shape.as_proto())
