"""A small view over the two places nodes live: a GraphDef's node list and a FunctionDef's body.

They differ only in how an input names a tensor: ``node:2`` in a graph, ``node:out_arg:0``
(or an argument name) in a function. `Body` hides that difference, so the rewrite code is
written once. Tensors are identified by (node name, flat output index).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry


@dataclasses.dataclass(frozen=True)
class TensorRef:
    """A tensor inside a body: output `index` of node `node`, or argument `node` if is_arg."""

    node: str
    index: int = 0
    is_arg: bool = False


def output_arg_offsets(op_type: str, node: node_def_pb2.NodeDef) -> dict[str, tuple[int, int]]:
    """Flat output index range of each output arg of `node`: {arg name: (start, length)}."""
    op_def = op_def_registry.get(op_type)
    if op_def is None:
        return {}
    offsets, start = {}, 0
    for arg in op_def.output_arg:
        if arg.number_attr:
            n = node.attr[arg.number_attr].i
        elif arg.type_list_attr:
            n = len(node.attr[arg.type_list_attr].list.type)
        else:
            n = 1
        offsets[arg.name] = (start, n)
        start += n
    return offsets


class Body:
    """Common interface; see GraphBody and FunctionBody."""

    where: str
    nodes: list
    consts = None  # a slim graph's detached Const values (graphfix.graph.detached.ConstStore); GraphBody only

    _index: dict | None = None
    _index_size: int = -1

    def node(self, name: str) -> node_def_pb2.NodeDef | None:
        # One name index per body, rebuilt when nodes were added or removed (renames never
        # happen): lookups are hot in folding and pruning, and bodies can hold 100,000 nodes.
        if self._index is None or self._index_size != len(self.nodes):
            self._index = {n.name: n for n in self.nodes}
            self._index_size = len(self.nodes)
        return self._index.get(name)

    def detached_value(self, node):
        """The node's value (an ndarray) when it is a slim Const whose value is held in `consts`, else None."""
        return self.consts.value(node) if self.consts is not None else None

    def remove_nodes(self, names: set[str]) -> None:
        """Delete the named nodes in one pass."""
        keep = [n for n in self.nodes if n.name not in names]
        if len(keep) == len(self.nodes):
            return
        copies = [type(n)() for n in keep]
        for copy, n in zip(copies, keep):
            copy.CopyFrom(n)
        del self.nodes[:]
        self.nodes.extend(copies)
        self._index = None

    def parse_input(self, text: str) -> TensorRef | None:
        """TensorRef for a data input string; None for a control input (^node)."""
        raise NotImplementedError

    def format_ref(self, node: str, index: int) -> str:
        """Input string for output `index` of a node whose outputs are one list arg named 'output'."""
        raise NotImplementedError

    def data_inputs(self, node) -> list[TensorRef]:
        return [r for r in (self.parse_input(i) for i in node.input) if r is not None]

    def consumers(self, node_name: str) -> Iterator[tuple[node_def_pb2.NodeDef, int, TensorRef]]:
        """(consumer node, input position, ref) for every data input that reads `node_name`."""
        for n in self.nodes:
            for pos, text in enumerate(n.input):
                ref = self.parse_input(text)
                if ref is not None and not ref.is_arg and ref.node == node_name:
                    yield n, pos, ref

    def output_refs(self) -> list[tuple[str, TensorRef]]:
        """Tensors the body hands out beyond its nodes (function results); none for a graph."""
        return []

    def rewrite_output_refs(self, node_name: str) -> None:
        """Re-express references to `node_name` after its op changed to a single-list-output op."""


class GraphBody(Body):
    """The top-level node list of a GraphDef."""

    def __init__(self, graph_def: graph_pb2.GraphDef, consts=None):
        self.container = graph_def
        self.where = "graph"
        self.consts = consts

    @property
    def nodes(self):
        return self.container.node

    def parse_input(self, text):
        if text.startswith("^"):
            return None
        name, _, index = text.partition(":")
        return TensorRef(name, int(index) if index else 0)

    def format_ref(self, node, index):
        return node if index == 0 else f"{node}:{index}"


class FunctionBody(Body):
    """The body of one FunctionDef in a library."""

    def __init__(self, fdef: function_pb2.FunctionDef):
        self.container = fdef
        self.where = f"function {fdef.signature.name}"
        self._arg_names = {a.name for a in fdef.signature.input_arg}

    @property
    def nodes(self):
        return self.container.node_def

    def parse_input(self, text):
        if text.startswith("^"):
            return None
        parts = text.split(":")
        if len(parts) == 1:
            return TensorRef(parts[0], 0, is_arg=parts[0] in self._arg_names)
        node = self.node(parts[0])
        offsets = output_arg_offsets(node.op, node) if node is not None else {}
        start = offsets.get(parts[1], (0, 1))[0]
        return TensorRef(parts[0], start + int(parts[2] if len(parts) > 2 else 0))

    def format_ref(self, node, index):
        return f"{node}:output:{index}"

    def output_refs(self):
        return [(key, self.parse_input(value)) for key, value in self.container.ret.items()]

    def rewrite_output_refs(self, node_name):
        """Rewrite `node:arg:i` strings (inputs and rets) into `node:output:flat` before an op swap."""
        old = self.node(node_name)
        offsets = output_arg_offsets(old.op, old)

        def fix(text):
            parts = text.lstrip("^").split(":")
            if text.startswith("^") or parts[0] != node_name or len(parts) < 2:
                return text
            start = offsets.get(parts[1], (0, 1))[0]
            return f"{node_name}:output:{start + int(parts[2] if len(parts) > 2 else 0)}"

        for n in self.nodes:
            for pos, text in enumerate(n.input):
                n.input[pos] = fix(text)
        for key in list(self.container.ret):
            self.container.ret[key] = fix(self.container.ret[key])


def bodies(graph_def: graph_pb2.GraphDef, consts=None) -> list[Body]:
    """The graph's own nodes, then each library function, in file order.

    consts: the ConstStore of a slim graph's detached values (they are top-level Consts).
    """
    return [GraphBody(graph_def, consts)] + [FunctionBody(f) for f in graph_def.library.function]


def ancestors(body: Body, names) -> set[str]:
    """`names` and every node of `body` they read from, through data and control inputs.

    Names that are no node of the body (function arguments) are left out.
    """
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        node = body.node(name)
        if name in seen or node is None:
            continue
        seen.add(name)
        stack.extend(text.lstrip("^").split(":")[0] for text in node.input)
    return seen

def function_refs(nodes) -> Iterator:
    """Every function reference (NameAttrList) in the nodes' attributes, in a fixed order.

    Attribute maps iterate in no defined order; the traced-function renaming numbers
    functions in the order found, so keys are sorted to keep the output process-independent.
    """
    for node in nodes:
        for key in sorted(node.attr):
            value = node.attr[key]
            if value.HasField("func"):
                yield value.func
            yield from value.list.func


def is_cudnn(op_type: str) -> bool:
    return op_type.startswith("Cudnn")


def reachable_functions(graph_def: graph_pb2.GraphDef, roots=()) -> set[str]:
    """Library functions the graph's nodes, or the named root functions, can call."""
    library = {f.signature.name: f for f in graph_def.library.function}
    seen: set[str] = set()
    stack = list(roots) + [f.name for f in function_refs(graph_def.node)]
    while stack:
        name = stack.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        stack.extend(f.name for f in function_refs(library[name].node_def))
    return seen


def find_cudnn_nodes(graph_def: graph_pb2.GraphDef) -> list[tuple[str, node_def_pb2.NodeDef]]:
    """(where, node) for every cuDNN op in the graph and its function library."""
    return [(b.where, n) for b in bodies(graph_def) for n in b.nodes if is_cudnn(n.op)]
