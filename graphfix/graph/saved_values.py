"""Values a tensor of a model has before it runs: constants, and a SavedModel's saved variables.

`folding.Folder` folds what the graph holds as constants and stops at a variable read,
which is what conversion needs (a SavedModel keeps its variables). Inspection, extraction
and verification need the params values themselves, so `ValueFinder` goes further:

    params (in function F) <- pure ops <- ReadVariableOp(arg a of F)
        a is a captured input of F           -> SavedObjectGraph: F's bound_inputs -> object node n
        n is a variable                      -> the checkpoint's object graph: node n's VARIABLE_VALUE key
                                                -> variables/variables (tf.train.load_checkpoint)
        n is a captured constant             -> the MetaGraph's Const node it names
        a is not captured                    -> every call site of F (PartitionedCall and
                                                StatefulPartitionedCall) -> the tensor passed as a,
                                                found the same way in the caller
    TF1 graphs: ReadVariableOp(VarHandleOp v) or Identity(VariableV2 v) -> checkpoint key v

The SavedObjectGraph and the checkpoint's object graph number their nodes alike (the
loader, tensorflow ``python/saved_model/load.py``, restores by those ids). Only the pure ops
of `folding.PURE_OPS` are ever run, in a private CPU session.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, trackable_object_graph_pb2

from graphfix.cudnn import layout
from graphfix.graph.bodies import Body, FunctionBody, GraphBody, TensorRef
from graphfix.graph.detached import ConstStore
from graphfix.graph.folding import CANONICAL_TO_PARAMS, PURE_OPS

CALL_OPS = ("PartitionedCall", "StatefulPartitionedCall")
TF1_VARIABLES = ("VariableV2", "Variable", "VarHandleOp")
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclasses.dataclass
class Found:
    """A tensor's value and where it came from.

    value: the array, or None when it cannot be known before run time (`why_not` says why).
    variables: names of the saved variables it was computed from (empty for pure constants).
    """

    value: np.ndarray | None
    variables: list[str]
    why_not: str | None = None


class _NotKnown(Exception):
    """Internal: the value cannot be found; the message says why."""


class ValueFinder:
    """Finds tensor values in one GraphDef, optionally with its SavedModel's variables.

    graph_def: a frozen GraphDef or a MetaGraph's graph_def. saved_model_dir and meta: the
    SavedModel holding it, for variable values (None for a plain GraphDef).
    """

    def __init__(self, graph_def: graph_pb2.GraphDef, saved_model_dir: Path | None = None,
                 meta: meta_graph_pb2.MetaGraphDef | None = None, consts: ConstStore | None = None):
        self.graph_def = graph_def
        self.dir = saved_model_dir
        self.meta = meta
        self._bodies: dict[str, Body] = {"graph": GraphBody(graph_def, consts)}
        for f in graph_def.library.function:
            self._bodies[f.signature.name] = FunctionBody(f)
        self._reader = None
        self._keys: dict[int, str] | None = None
        self._cache: dict = {}

    def find(self, body: Body, ref: TensorRef) -> Found:
        """The value of `ref` in `body`, from constants and saved variables."""
        used: list[str] = []
        try:
            return Found(self._value(body, ref, used, depth=0), sorted(set(used)))
        except _NotKnown as exc:
            return Found(None, sorted(set(used)), str(exc))

    # --- evaluation -------------------------------------------------------------------

    def _value(self, body: Body, ref: TensorRef, used: list, depth: int) -> np.ndarray:
        if depth > 32:
            raise _NotKnown("function calls nest deeper than 32 levels")
        if ref.is_arg:
            return self._arg_value(body, ref.node, used, depth)
        node = body.node(ref.node)
        if node is None:
            raise _NotKnown(f"node {ref.node!r} does not exist in {body.where}")
        detached = body.detached_value(node)
        if detached is not None:
            return detached
        if node.op in ("ReadVariableOp",) + TF1_VARIABLES:
            return self._variable_value(body, node, used, depth)
        if node.op in CANONICAL_TO_PARAMS:
            parts = [self._value(body, r, used, depth) for r in body.data_inputs(node)[3:]]
            return layout.pack_canonical(parts, [])
        if node.op not in PURE_OPS:
            raise _NotKnown(f"it depends on node {node.name!r} (op {node.op}), whose value is only known "
                            "at run time")
        return self._run_pure(body, ref, used, depth)

    def _run_pure(self, body: Body, ref: TensorRef, used: list, depth: int) -> np.ndarray:
        """Run the pure subgraph computing `ref`; its non-pure inputs are found first, as constants."""
        sub = graph_pb2.GraphDef()
        order, seen, stack = [], set(), [ref.node]
        leaves: dict[str, np.ndarray] = {}
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = body.node(name)
            order.append(name)
            for r in body.data_inputs(node):
                leaf = f"{r.node}:{r.index}" if not r.is_arg else f"arg:{r.node}"
                source = body.node(r.node) if not r.is_arg else None
                if (r.is_arg or source is None or source.op not in PURE_OPS
                        or body.detached_value(source) is not None):  # a slim Const: its value is not in the proto
                    if leaf not in leaves:
                        leaves[leaf] = self._value(body, r, used, depth)
                else:
                    stack.append(r.node)
        names = {name: f"n/{i}" for i, name in enumerate(order)}
        for i, (leaf, value) in enumerate(leaves.items()):
            sub.node.append(_const_node(f"leaf/{i}", value))
            names[leaf] = f"leaf/{i}"
        for name in reversed(order):
            src = body.node(name)
            node = sub.node.add()
            node.CopyFrom(src)
            node.name = names[name]
            node.device = ""
            del node.input[:]
            for r in body.data_inputs(src):
                leaf = f"{r.node}:{r.index}" if not r.is_arg else f"arg:{r.node}"
                node.input.append(names[leaf] if leaf in names else f"{names[r.node]}:{r.index}")
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(sub, name="")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            return session.run(f"{names[ref.node]}:{ref.index}")

    def _variable_value(self, body: Body, node, used: list, depth: int) -> np.ndarray:
        """A ReadVariableOp's value, or a TF1 variable node's."""
        if node.op != "ReadVariableOp":
            if not isinstance(body, GraphBody):
                raise _NotKnown(f"variable node {node.name!r} inside {body.where}")
            key = node.attr["shared_name"].s.decode() if node.op == "VarHandleOp" and node.attr["shared_name"].s \
                else node.name
            used.append(key)
            return self._checkpoint_tensor(key)
        handle = body.data_inputs(node)[0]
        if not handle.is_arg:
            source = body.node(handle.node)
            if source is None or source.op not in TF1_VARIABLES:
                raise _NotKnown(f"ReadVariableOp {node.name!r} reads a resource made by an op graphfix "
                                "cannot follow")
            return self._variable_value(body, source, used, depth)
        return self._arg_value(body, handle.node, used, depth, resource=True)

    def _arg_value(self, body: Body, arg: str, used: list, depth: int, resource: bool = False) -> np.ndarray:
        """The value passed as argument `arg` of a function (for a resource: the variable's value)."""
        if not isinstance(body, FunctionBody):
            raise _NotKnown(f"{arg!r} is not an argument")
        fname = body.container.signature.name
        args = [a.name for a in body.container.signature.input_arg]
        index = args.index(arg)
        bound = self._bound_input(fname, index, len(args))
        if bound is not None:
            return self._object_value(bound, used)
        values = []
        for caller, call, position in self._call_sites(fname, arg, index):
            refs = caller.data_inputs(call)
            if position >= len(refs):
                continue
            passed = refs[position]
            if resource and not passed.is_arg:
                source = caller.node(passed.node)
                if source is None or source.op not in TF1_VARIABLES:
                    raise _NotKnown(f"the resource argument {arg!r} of {fname} comes from "
                                    f"{passed.node!r}, which graphfix cannot follow")
                values.append(self._variable_value(caller, source, used, depth + 1))
            elif resource:
                values.append(self._arg_value(caller, passed.node, used, depth + 1, resource=True))
            else:
                values.append(self._value(caller, passed, used, depth + 1))
        if not values:
            raise _NotKnown(f"it depends on the argument {arg!r} of function {fname}, which is neither a saved "
                            "variable nor passed by any caller in the model")
        if any(v.shape != values[0].shape or not np.array_equal(v, values[0]) for v in values[1:]):
            raise _NotKnown(f"function {fname} is called from {len(values)} places with different values for "
                            f"argument {arg!r}")
        return values[0]

    # --- SavedModel objects and checkpoint --------------------------------------------

    def _bound_input(self, fname: str, index: int, num_args: int) -> int | None:
        """Object graph node id captured as argument `index` of a saved concrete function."""
        if self.meta is None:
            return None
        saved = self.meta.object_graph_def.concrete_functions.get(fname)
        if saved is None:
            return None
        bound = list(saved.bound_inputs)
        first = num_args - len(bound)
        return bound[index - first] if index >= first else None

    def _object_value(self, node_id: int, used: list) -> np.ndarray:
        obj = self.meta.object_graph_def.nodes[node_id]
        kind = obj.WhichOneof("kind")
        if kind == "variable":
            used.append(obj.variable.name)
            key = self._checkpoint_keys().get(node_id)
            if key is None:
                raise _NotKnown(f"variable {obj.variable.name!r} (object {node_id}) has no value in "
                                "the checkpoint's object graph")
            return self._checkpoint_tensor(key)
        if kind == "constant":
            node = GraphBody(self.graph_def).node(obj.constant.operation)
            if node is None or node.op != "Const":
                raise _NotKnown(f"captured constant {obj.constant.operation!r} is not a Const node")
            return tf.make_ndarray(node.attr["value"].tensor)
        raise _NotKnown(f"captured object {node_id} is a {kind}, not a variable or constant")

    def _checkpoint_keys(self) -> dict[int, str]:
        if self._keys is None:
            reader = self._checkpoint()
            graph = trackable_object_graph_pb2.TrackableObjectGraph()
            if reader.has_tensor(OBJECT_GRAPH_KEY):
                graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
            self._keys = {i: a.checkpoint_key for i, n in enumerate(graph.nodes)
                          for a in n.attributes if a.name == "VARIABLE_VALUE"}
        return self._keys

    def _checkpoint(self):
        if self._reader is None:
            if self.dir is None:
                raise _NotKnown("it is read from a variable, and a GraphDef file holds no variable values")
            prefix = Path(self.dir) / "variables" / "variables"
            try:
                self._reader = tf.train.load_checkpoint(str(prefix))
            except Exception as exc:  # the reader raises several types; all mean "unreadable"
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise _NotKnown(f"the variables cannot be read from {prefix}: {first}") from None
        return self._reader

    def _checkpoint_tensor(self, key: str) -> np.ndarray:
        reader = self._checkpoint()
        if not reader.has_tensor(key):
            raise _NotKnown(f"the checkpoint has no tensor {key!r}")
        return np.asarray(reader.get_tensor(key))

    def _call_sites(self, fname: str, arg: str, index: int):
        """(caller body, call node, input position of `arg`) for every call of `fname`.

        A function with the attribute api_implements is also called wherever another
        function implementing the same API is: grappler's implementation selector swaps
        them (tf_keras's LSTM/GRU call the CPU variant; the GPU one holds the cuDNN op).
        The argument is matched by name there, by position when the names differ.
        """
        if "calls" not in self._cache:
            calls: dict[str, list] = {}
            for body in self._bodies.values():
                for node in body.nodes:
                    if node.op in CALL_OPS:
                        calls.setdefault(node.attr["f"].func.name, []).append((body, node))
            apis: dict[bytes, list[str]] = {}
            for f in self.graph_def.library.function:
                if f.attr["api_implements"].s:
                    apis.setdefault(f.attr["api_implements"].s, []).append(f.signature.name)
            self._cache["calls"], self._cache["apis"] = calls, apis
        sites = [(body, node, index) for body, node in self._cache["calls"].get(fname, [])]
        api = self._bodies[fname].container.attr["api_implements"].s
        for other in self._cache["apis"].get(api, []) if api else []:
            if other == fname:
                continue
            names = [a.name for a in self._bodies[other].container.signature.input_arg]
            position = names.index(arg) if arg in names else index
            sites += [(body, node, position) for body, node in self._cache["calls"].get(other, [])]
        return sites


def _const_node(name: str, value: np.ndarray):
    node = node_def_pb2.NodeDef()
    node.name = name
    node.op = "Const"
    node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    return node
