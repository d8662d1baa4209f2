"""graphfix's .tflite: each fused LSTM through TFLite's `UnidirectionalSequenceLstm` stub op.

The converter fuses a Keras-style LSTM function (`fused_lstm.py`) into
UNIDIRECTIONAL_SEQUENCE_LSTM with cell_clip 10 hard-coded and no projection weights
(compiler/mlir/lite/utils/lstm_utils.cc). It also still legalizes a GraphDef node of op type
`UnidirectionalSequenceLstm` with a `_tflite_input_indices` attribute (the stub TF1's OpHint
left; compiler/mlir/lite/transforms/legalize_tf.cc) into the same op with every operand as
given: projection weights included, cell_clip 0 (no clipping), so graphfix's .tflite
computes what TensorFlow computes at any length. TensorFlow cannot run or load that op, so
the stub exists only on the way to the .tflite::

    the TFLite-ready SavedModel (composite calls: api_implements lstm_graphfix_* or
    graphfix_projected_lstm_*, fused_lstm.py)
      -> a temporary copy whose composites are marked `_noinline` (`marked_proto`), so that
         freezing keeps them as calls (TensorFlow's freezing inlines every other function)
      -> the signature frozen by the converter (convert_variables_to_constants_v2_as_graph)
      -> each composite call -> UnidirectionalSequenceLstm (`_stub_node`); its result 0, the
         last step, -> a StridedSlice of the sequence
      -> converted from that GraphDef (the converter's frozen-graph route), TFLITE_BUILTINS only

Stub operands (TFLite's order): 0 input [T, B, I]; 1-4 input-to-{input, forget, cell, output}
weights [H, I]; 5-8 recurrent-to-{i, f, c, o} [H, Hh]; 9-11 peepholes (none); 12-15 gate
biases [H]; 16 projection [Hh, H]; 17 projection bias (none); 18 output state [B, Hh];
19 cell state [B, H]. Result 2 is the output sequence [T, B, Hh].
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2

from graphfix.errors import UnsupportedError
from graphfix.io import saved_model_dir
from graphfix.targets.tflite.fused_lstm import PLAIN_PREFIX, PROJECTED_PREFIX

_NONE = -1.0  # what an absent optional operand is given (legalize_tf: any index not listed)


def is_composite(function) -> bool:
    """Whether a FunctionDef is one of graphfix's fused-LSTM composites (`fused_lstm.py`)."""
    api = function.attr["api_implements"].s.decode() if "api_implements" in function.attr else ""
    return api.startswith((PLAIN_PREFIX, PROJECTED_PREFIX))


def marked_proto(ready_dir):
    """The SavedModel proto at ready_dir with its composites marked `_noinline`, so that
    freezing keeps them as calls; None when it calls none (nothing to fuse through the stub)."""
    proto = saved_model_dir.read_saved_model(Path(ready_dir))
    composites = [f for meta in proto.meta_graphs for f in meta.graph_def.library.function if is_composite(f)]
    for function in composites:
        function.attr["_noinline"].b = True
    return proto if composites else None


def signature_function(loaded, signature: str, where: str):
    """loaded.signatures[signature], or UnsupportedError naming the ones there are."""
    if signature not in loaded.signatures:
        raise UnsupportedError(f"no signature {signature!r} (has {sorted(loaded.signatures)})", where)
    return loaded.signatures[signature]


def convert(ready_dir, marked, signature: str) -> bytes:
    """The .tflite of one signature of the SavedModel at ready_dir, fused LSTMs as stubs.
    marked: `marked_proto(ready_dir)`."""
    ready_dir = Path(ready_dir)
    with tempfile.TemporaryDirectory(prefix="graphfix_stub_") as tmp:
        loaded = tf.saved_model.load(str(_marked_copy(ready_dir, marked, Path(tmp) / "model")))
        fn = signature_function(loaded, signature, str(ready_dir))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], loaded)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        # The converter's frozen-graph route (not its default, which saves the function as a
        # SavedModel first and would never see a stub). It freezes the function as
        # convert_variables_to_constants_v2 does, then hands the GraphDef to
        # _optimize_tf_model: the stubs go in there. Should a later TensorFlow rename that
        # step, the composite calls stay and the conversion fails loudly ("PartitionedCall is
        # neither a custom op nor a flex op"), never silently unfused.
        converter.experimental_lower_to_saved_model = False
        optimize = converter._optimize_tf_model

        def with_stubs(graph_def, *args):
            graph_def = optimize(graph_def, *args)
            for call, function in _composite_calls(graph_def):
                _stub_node(graph_def, call, function)
            return graph_def

        converter._optimize_tf_model = with_stubs
        content = converter.convert()
    # That route writes no SignatureDef. The converter's inputs and outputs are the frozen
    # function's, in tf.nest.flatten order of the signature's keyword inputs and dict of
    # outputs: by key.
    return _with_signature(content, signature, sorted(fn.structured_input_signature[1]), sorted(fn.structured_outputs))


def _marked_copy(src: Path, marked, dst: Path) -> Path:
    """src with saved_model.pb replaced by `marked`, every other entry linked (variables are
    read, never written)."""
    dst.mkdir()
    for entry in src.iterdir():
        if entry.name not in ("saved_model.pb", "saved_model.pbtxt", "fingerprint.pb"):
            (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    (dst / "saved_model.pb").write_bytes(marked.SerializeToString())
    return dst


def _composite_calls(graph_def: graph_pb2.GraphDef) -> list:
    # Freezing drops api_implements; `_noinline` (set above) and the Keras-style attribute
    # go_backwards that only the composites carry together survive it. TensorFlow's loader
    # accepts only its own function attributes, so no attribute of graphfix's own can mark them.
    marked = {f.signature.name for f in graph_def.library.function
              if f.attr["_noinline"].b and "go_backwards" in f.attr and len(f.signature.input_arg) in (6, 7)}
    functions = {f.signature.name: f for f in graph_def.library.function}
    calls = [(n, functions[n.attr["f"].func.name]) for n in graph_def.node
             if n.op in ("PartitionedCall", "StatefulPartitionedCall") and n.attr["f"].func.name in marked]
    nested = [f.signature.name for f in graph_def.library.function
              if any(n.op in ("PartitionedCall", "StatefulPartitionedCall") and n.attr["f"].func.name in marked
                     for n in f.node_def)]
    if nested:  # freezing inlines every unmarked call, so composites end up in the graph itself
        raise ValueError(f"a fused LSTM is still called from library function {nested[0]!r} after freezing (inside "
                         "a loop or branch of the model?); convert with --no-fused-lstm")
    return calls


def _original_results(function) -> list[int]:
    """Which of the composite's five results each result of its frozen copy is.

    Freezing specializes a called function to the results its caller reads and drops the
    rest; the kept ones keep their names: identity (0), identity_1 (1), ...
    """
    return [0 if arg.name == "identity" else int(arg.name.rsplit("_", 1)[1]) for arg in function.signature.output_arg]


def _attr(**kwargs) -> attr_value_pb2.AttrValue:
    return attr_value_pb2.AttrValue(**kwargs)


class _Nodes:
    """Appends nodes named under a prefix to a GraphDef."""

    def __init__(self, graph_def, prefix: str):
        self.graph_def, self.prefix = graph_def, prefix

    def add(self, name: str, op: str, inputs=(), **attrs) -> str:
        node = self.graph_def.node.add()
        node.name, node.op = f"{self.prefix}/{name}" if name else self.prefix, op
        node.input.extend(inputs)
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        return node.name

    def const(self, name: str, value) -> str:
        value = np.asarray(value)
        return self.add(name, "Const", dtype=_attr(type=tf.as_dtype(value.dtype).as_datatype_enum),
                        value=_attr(tensor=tf.make_tensor_proto(value)))


def _stub_shapes(function) -> list:
    """The stub's result shapes as TensorFlow would give them: unknown, unknown, and the
    sequence [T, B, Hh] from the composite's arguments input [T, B, I] and init_h [B, Hh].

    TensorFlow has no shape function for the op, and without these the converter types the
    sequence from the first signature shape it sees, fixing an open T (LiteRT then fails
    to resize the next layer)."""
    def arg_shape(index):
        return tf.TensorShape(function.arg_attr[index].attr["_output_shapes"].list.shape[0])
    sequence = tf.TensorShape([arg_shape(0)[0], arg_shape(1)[0], arg_shape(1)[1]])
    return [tf.TensorShape(None).as_proto(), tf.TensorShape(None).as_proto(), sequence.as_proto()]


def _stub_node(graph_def: graph_pb2.GraphDef, call, function) -> None:
    """Replace the composite call `call` (x, h0, c0, kernel [I, 4H], recurrent_kernel [Hh, 4H],
    bias [4H][, projection [H, Hh]]) of the frozen composite `function` by a
    UnidirectionalSequenceLstm node; rewire its readers."""
    results = _original_results(function)
    data = [i for i in call.input if not i.startswith("^")]
    controls = [i for i in call.input if i.startswith("^")]
    x, h0, c0, kernel, recurrent, bias = data[:6]
    projection = data[6] if len(data) == 7 else None
    float_type = _attr(type=tf.float32.as_datatype_enum)
    nodes = _Nodes(graph_def, f"{call.name}/graphfix_stub")
    perm, axis = nodes.const("perm", np.array([1, 0], np.int32)), nodes.const("axis", np.array(0, np.int32))

    def transposed(name, matrix):
        return nodes.add(f"{name}_t", "Transpose", [matrix, perm], T=float_type, Tperm=_attr(type=3))

    def gates(name, matrix, transpose=True):  # [in, 4H] -> 4 x [H, in], gates i, f, c, o (Keras's = TFLite's)
        if transpose:
            matrix = transposed(name, matrix)
        split = nodes.add(name, "Split", [axis, matrix], T=float_type, num_split=_attr(i=4))
        return [f"{split}:{g}" for g in range(4)]

    none = nodes.const("none", np.array([_NONE], np.float32))
    operands = ([x] + gates("kernel", kernel) + gates("recurrent", recurrent) + [none] * 3
                + gates("bias", bias, transpose=False)
                + [transposed("projection", projection) if projection else none, none, h0, c0])
    present = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15] + ([16] if projection else []) + [18, 19]
    stub = nodes.add("", "UnidirectionalSequenceLstm", operands + controls,
                     _tflite_input_indices=_attr(list=attr_value_pb2.AttrValue.ListValue(i=present)),
                     _output_shapes=_attr(list=attr_value_pb2.AttrValue.ListValue(shape=_stub_shapes(function))))
    sequence = f"{stub}:2"
    last = nodes.add("last", "StridedSlice",
                     [sequence, nodes.const("begin", np.array([-1, 0, 0], np.int32)),
                      nodes.const("end", np.array([0, 0, 0], np.int32)),
                      nodes.const("strides", np.array([1, 1, 1], np.int32))],
                     T=float_type, Index=_attr(type=3), shrink_axis_mask=_attr(i=1),
                     begin_mask=_attr(i=6), end_mask=_attr(i=6))
    given = {0: last, 1: sequence}  # results 2-4 stay unused where graphfix fuses (plan.py)
    readers = {f"{call.name}:{k}": given.get(r) for k, r in enumerate(results)}
    readers[call.name] = readers.get(f"{call.name}:0")
    for node in graph_def.node:
        for pos, text in enumerate(node.input):
            if text == f"^{call.name}":
                node.input[pos] = f"^{stub}"
            elif text.split(":")[0] == call.name:
                if readers.get(text) is None:
                    raise ValueError(f"{node.name} reads {text}, which the fused LSTM does not give")
                node.input[pos] = readers[text]
    graph_def.node.remove(call)


def _with_signature(content: bytes, key: str, input_keys: list[str], output_keys: list[str]) -> bytes:
    """content with one SignatureDef `key` over subgraph 0: its inputs and outputs, in order."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(input_keys) or len(graph.outputs) != len(output_keys):
        raise ValueError(f"the converted model has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
                         f"the signature {len(input_keys)} and {len(output_keys)}")

    def tensor_maps(names, indices):
        maps = []
        for name, index in zip(names, indices):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = key, 0
    signature.inputs = tensor_maps(input_keys, graph.inputs)
    signature.outputs = tensor_maps(output_keys, graph.outputs)
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
