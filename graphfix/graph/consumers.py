"""Who uses one output of a node, following it out of functions to their call sites.

A tf.function returns whatever its Python function returned, each through an Identity::

    function inner:  [CudnnRNNV3 "rnn"] --rnn:3--> [Identity] --> ret reserve_space
    graph:           x --> [StatefulPartitionedCall "call" f=inner] --call:0--> y
                                                                   (call:3 unused)

`uses` says that nothing uses rnn:3 there, and names the user when one exists: a node in
the graph, or a node inside a function that reads the tensor (or an Identity of it) after
it came back from any number of calls.
"""

from __future__ import annotations

from tensorflow.core.framework import graph_pb2

from graphfix.graph.bodies import Body, FunctionBody, bodies, function_refs

# Ops that hand input i on as output i; inside a function, one whose outputs are used by
# nothing uses nothing. (In a graph any node can be fetched by name, so it counts as a user.)
PASS_THROUGH = frozenset({"Identity", "IdentityN", "Snapshot"})
# Ops whose output k is output k of the function they run.
CALLS = {"PartitionedCall": ("f",), "StatefulPartitionedCall": ("f",),
         "If": ("then_branch", "else_branch"), "StatelessIf": ("then_branch", "else_branch"),
         "Case": ("branches",), "StatelessCase": ("branches",)}


def uses(graph_def: graph_pb2.GraphDef, body: Body, node_name: str, indices) -> list[str]:
    """Descriptions of every user of the outputs `indices` of `node_name` in `body`; [] when unused.

    Function results are followed to every call site in the graph and its library (all of
    them, called or not: a user that never runs is still named, which only errs on the side
    of refusing). A caller graphfix cannot follow (a While loop, a call by op name) counts
    as a user.
    """
    everywhere = bodies(graph_def)
    found: list[str] = []
    seen: set = set()
    readers: dict = {}  # (body, node) -> its consumers: one scan of the body per node
    stack = [(body, node_name, i) for i in indices]
    while stack:
        where, name, i = stack.pop()
        if (where.where, name, i) in seen:
            continue
        seen.add((where.where, name, i))
        if (where.where, name) not in readers:
            readers[where.where, name] = list(where.consumers(name))
        for user, pos, ref in readers[where.where, name]:
            if ref.index != i:
                continue
            if isinstance(where, FunctionBody) and user.op in PASS_THROUGH:
                stack.append((where, user.name, pos if user.op == "IdentityN" else 0))
            else:
                found.append(f"{user.name!r} ({user.op}, {where.where})")
        if isinstance(where, FunctionBody):
            for k in _returned_at(where, name, i):
                callers, unfollowed = _call_sites(everywhere, where.container.signature.name)
                stack += [(b, call.name, k) for b, call in callers]
                found += [text for text in unfollowed if text not in found]
    return found


def _returned_at(body: FunctionBody, name: str, index: int) -> list[int]:
    """Result positions of the function at which it returns output `index` of `name`."""
    position = {arg.name: k for k, arg in enumerate(body.container.signature.output_arg)}
    return [position[key] for key, ref in body.output_refs()
            if ref is not None and not ref.is_arg and ref.node == name and ref.index == index and key in position]


def _call_sites(everywhere: list[Body], function: str):
    """([(body, node)] calling `function` with results in order, [descriptions of other users])."""
    callers, unfollowed = [], []
    for body in everywhere:
        for node in body.nodes:
            attrs = CALLS.get(node.op, ())
            direct = [node.attr[a] for a in attrs if a in node.attr]
            if any(v.func.name == function or any(f.name == function for f in v.list.func) for v in direct):
                callers.append((body, node))
            elif node.op == function or any(f.name == function for f in function_refs([node])):
                unfollowed.append(f"{node.name!r} ({node.op}, {body.where}), which calls function {function!r}")
    return callers, unfollowed
