"""A model as one frozen GraphDef with named inputs and outputs, its cuDNN ops still in it.

ONNX holds weights as initializers, so every variable becomes a Const first::

    SavedModel (TF2)   tf.saved_model.load -> the signature's concrete function
                       -> convert_variables_to_constants_v2 (variables -> Consts, calls inlined,
                       loops not lowered: as tf2onnx's loader does)
    SavedModel (TF1)   cuDNN helper ops (a tf.contrib.cudnn_rnn saver restores through
                       CudnnRNNCanonicalToParams) made standard ops by the rewrite's handlers; then
                       a Session placing only what it runs (place_pruned_graph: the forward op has
                       no CPU kernel) restores the variables -> convert_variables_to_constants
    GraphDef file      as it is: inputs are its Placeholders, outputs every tensor nothing consumes

Loading does not run any cuDNN op, so a CPU machine can do it. `Frozen.inputs`/`outputs`
pair each graph tensor with the name the ONNX model gives it (a signature's keys).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from graphfix import rewrite
from graphfix.errors import UnsupportedError
from graphfix.graph import interface
from graphfix.graph.bodies import bodies, is_cudnn, reachable_functions
from graphfix.graph.folding import Folder
from graphfix.io import graph_def_file, saved_model_dir
from graphfix.report import Report
from graphfix.rewrite.context import Context
from graphfix.rewrite.forward_op import Shapes


@dataclasses.dataclass
class Frozen:
    graph_def: graph_pb2.GraphDef
    inputs: list[tuple[str, str]]    # (graph tensor "x:0", ONNX input name)
    outputs: list[tuple[str, str]]   # (graph tensor "Identity:0", ONNX output name)
    source: str
    signature: str | None = None


def freeze(src: Path, signature: str | None = None) -> Frozen:
    """The model at src (SavedModel directory or GraphDef file) frozen, with its inputs and outputs."""
    if src.is_dir():
        proto = saved_model_dir.read_saved_model(src)
        if not any(m.object_graph_def.nodes for m in proto.meta_graphs):
            return _freeze_tf1(src, proto, signature)
        return _freeze_tf2(src, proto, signature)
    graph_def = graph_def_file.read_graph_def(src)
    return Frozen(graph_def, *graph_io(graph_def), str(src))


def graph_io(graph_def: graph_pb2.GraphDef) -> tuple[list, list]:
    """A GraphDef's inputs and outputs (`graph.interface.graph_io`) as (graph tensor, ONNX name)
    pairs: "x:0" -> "x"; a node with several outputs keeps the index ("rnn:1")."""
    placeholders, sinks = interface.graph_io(graph_def)
    counts = collections.Counter(node.name for node, _ in sinks)
    inputs = [(f"{n.name}:0", n.name) for n in placeholders]
    outputs = [(f"{node.name}:{i}", node.name if counts[node.name] == 1 and i == 0 else f"{node.name}:{i}")
               for node, i in sinks]
    return inputs, outputs


def pick_signature(keys: list[str], signature: str | None, where: str) -> str:
    if signature is not None:
        if signature not in keys:
            raise UnsupportedError(f"no signature {signature!r} (has {sorted(keys)})", where)
        return signature
    if "serving_default" in keys:
        return "serving_default"
    if len(keys) == 1:
        return keys[0]
    raise UnsupportedError(f"the model has no 'serving_default' signature and several others ({sorted(keys)}); "
                           "an ONNX model holds one: pick it with the API's signature argument", where)


def _freeze_tf2(src: Path, proto, signature: str | None) -> Frozen:
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    loaded = tf.saved_model.load(str(src))
    key = pick_signature(list(loaded.signatures), signature, str(src))
    fn = loaded.signatures[key]
    # As tf2onnx's own loader freezes: While loops kept as loops (tf2onnx converts those, not
    # their lowered Switch/Merge form), every call inlined (the cuDNN ops reach the main graph).
    frozen = convert_variables_to_constants_v2(fn, lower_control_flow=False, aggressive_inlining=True)
    specs = fn.structured_input_signature[1]
    by_placeholder = {spec.name: name for name, spec in specs.items()}
    inputs = [(t.name, by_placeholder.get(t.name.split(":")[0], t.name.split(":")[0]))
              for t in frozen.inputs if t.dtype != tf.resource]
    names = tf.nest.flatten({k: k for k in fn.structured_outputs})  # flatten orders the dict's keys
    outputs = [(t.name, name) for t, name in zip(frozen.outputs, names)]
    return Frozen(frozen.graph.as_graph_def(), inputs, outputs, str(src), key)


def _freeze_tf1(src: Path, proto, signature: str | None) -> Frozen:
    meta = meta_graph_pb2.MetaGraphDef()
    meta.CopyFrom(proto.meta_graphs[0])
    key = pick_signature(list(meta.signature_def), signature, str(src))
    sig = meta.signature_def[key]
    outputs = sorted(sig.outputs.items())
    _replace_helpers(meta.graph_def)
    config = tf.compat.v1.ConfigProto(graph_options=tf.compat.v1.GraphOptions(place_pruned_graph=True),
                                      device_count={"GPU": 0})
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph, config=config) as session:
        try:
            saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
            if saver is not None:
                saver.restore(session, str(src / "variables" / "variables"))
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), sorted({info.name.split(":")[0] for _, info in outputs}))
        except Exception as exc:  # loading or restoring raises many types; all mean "cannot freeze"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedError(f"cannot restore and freeze this TF1 SavedModel on CPU: {first}", str(src)) from None
    inputs = sorted((info.name, name) for name, info in sig.inputs.items())
    return Frozen(frozen, inputs, [(info.name, name) for name, info in outputs], str(src), key)


def _replace_helpers(graph_def: graph_pb2.GraphDef) -> None:
    """cuDNN helper ops (tf.contrib.cudnn_rnn's saver restores its params through
    CudnnRNNCanonicalToParams, which has no CPU kernel) -> graphfix's standard-op twins, in place,
    so that the saver's restore runs on CPU. Forward ops stay."""
    if not any(n.op in rewrite.HELPER_HANDLERS for b in bodies(graph_def) for n in b.nodes):
        return
    ctx = Context(graph_def, Report(), target=None)
    for body in bodies(graph_def):
        shapes, folder = Shapes(ctx.shape_graph, body), Folder(body)
        for node in list(body.nodes):
            handler = rewrite.HELPER_HANDLERS.get(node.op)
            if handler is not None:
                handler(ctx, body, node, shapes, folder)


def cudnn_in_library(graph_def: graph_pb2.GraphDef) -> list[str]:
    """Functions the graph calls that still hold cuDNN ops after freezing (a loop body, say).

    Uncalled ones (tf_keras keeps GPU variants) never run and are dropped by tf2onnx."""
    live = reachable_functions(graph_def)
    return [f"function {f.signature.name}, node {n.name!r} ({n.op})" for f in graph_def.library.function
            if f.signature.name in live for n in f.node_def if is_cudnn(n.op)]
