"""Editing one body in place: weight Consts, calls under a replaced node's name, pruning, names.

New names derive from the replaced node (`{node}/graphfix/layer0_fw_kernel`, function
`graphfix_{node path}_{config digest}`), so the same input always gives the same output.
A node name the input already uses gets a numbered suffix (`unique_name`).
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import tensorflow as tf

from graphfix.cudnn import weights
from graphfix.graph.bodies import Body, FunctionBody, TensorRef
from graphfix.graph.folding import CANONICAL_TO_PARAMS, PURE_OPS
from graphfix.graph.traced import TracedFunction, function_name_for


def function_name(body: Body, node, config) -> str:
    """Library name for a node's replacement: its path plus a digest of its configuration.

    The digest keeps two converted models that share a node name but not a configuration
    loadable in one process (TensorFlow refuses two different functions of one name).
    config: anything whose repr is deterministic (an RnnCall, an RnnSpec, shapes).
    """
    path = f"{body.container.signature.name}/{node.name}" if isinstance(body, FunctionBody) else node.name
    digest = hashlib.sha1(repr(config).encode()).hexdigest()[:8]
    return function_name_for(path, f"_{digest}")


def add_weight_consts(body: Body, node_name: str, values: list[np.ndarray], spec, controls=()) -> list[str]:
    """One Const per weight slot; `controls` keeps the ordering edges the folded subgraph had.

    In a slim graph (body.consts), large values go to its ConstStore instead of the proto.
    """
    refs = []
    for slot, value in zip(weights.weight_slots(spec), values):
        name = unique_name(body, f"{node_name}/graphfix/{slot.name}")
        const = body.nodes.add()
        const.name = name
        const.op = "Const"
        const.input.extend(controls)
        if body.consts is not None and body.consts.wants(value):
            body.consts.put(const, value)
        else:
            const.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.ascontiguousarray(value)))
        refs.append(body.format_ref(name, 0))
    return refs


def unique_name(body: Body, name: str) -> str:
    """`name`, or the first free of `name_1`, `name_2`, ... when the body already holds it.

    The body's own nodes come first and new nodes are added in a fixed order, so the
    choice depends only on the input. (Whether a model was converted already is told by
    its library functions, named with a digest of their configuration: `Context.add_function`.)
    """
    if body.node(name) is None:
        return name
    suffix = 1
    while body.node(f"{name}_{suffix}") is not None:
        suffix += 1
    return f"{name}_{suffix}"


def _set_call_attrs(node, traced: TracedFunction) -> None:
    node.attr["Tin"].list.type.extend([t.as_datatype_enum for t in traced.input_types])
    node.attr["Tout"].list.type.extend([t.as_datatype_enum for t in traced.output_types])
    node.attr["f"].func.name = traced.name
    for key in ("config", "config_proto", "executor_type"):
        node.attr[key].s = b""


def add_call(body: Body, name: str, traced, data_inputs, controls):
    node = body.nodes.add()
    node.name = unique_name(body, name)
    node.op = "PartitionedCall"
    node.input.extend(list(data_inputs) + list(controls))
    _set_call_attrs(node, traced)
    return node


def replace_with_call(node, traced, data_inputs, controls) -> None:
    """Turn `node` into a PartitionedCall of `traced`, keeping its name (and so its tensor names)."""
    name = node.name
    node.Clear()
    node.name = name
    node.op = "PartitionedCall"
    node.input.extend(list(data_inputs) + list(controls))
    _set_call_attrs(node, traced)


def prune_dead(body: Body, roots: list[TensorRef]) -> int:
    """Remove the now-unused pure nodes that only built folded params buffers.

    Consumer counts are taken once and decremented as nodes go, so pruning is linear in
    the body's size however large the params subgraph is.
    """
    users: collections.Counter = collections.Counter()
    for n in body.nodes:
        for text in n.input:
            users[_input_node(text)] += 1
    for _, ref in body.output_refs():
        if ref is not None:
            users[ref.node] += 1
    doomed: set[str] = set()
    stack = [r.node for r in roots]
    while stack:
        name = stack.pop()
        node = body.node(name)
        if (name in doomed or node is None or users[name] > 0
                or not (node.op in PURE_OPS or node.op in CANONICAL_TO_PARAMS)):
            continue
        doomed.add(name)
        for text in node.input:
            users[_input_node(text)] -= 1
            stack.append(_input_node(text))
    body.remove_nodes(doomed)
    return len(doomed)


def _input_node(text: str) -> str:
    """The node (or function argument) an input string reads, in either body format."""
    return text.lstrip("^").split(":")[0]


def drop_colocation_with(body: Body, removed: set[str]) -> int:
    """Delete `loc:@X` entries of `_class` attributes for X in `removed`; returns how many.

    Frozen graphs keep colocation constraints; one naming a node the conversion removed
    makes TensorFlow refuse the graph ("expects to be colocated with unknown node").
    Colocation only guides placement, and a CPU graph has one place.
    """
    dropped = 0
    for node in body.nodes:
        if "_class" not in node.attr:
            continue
        entries = list(node.attr["_class"].list.s)
        keep = [e for e in entries if not (e.startswith(b"loc:@") and e[5:].decode(errors="replace") in removed)]
        if len(keep) == len(entries):
            continue
        dropped += len(entries) - len(keep)
        if keep:
            del node.attr["_class"].list.s[:]
            node.attr["_class"].list.s.extend(keep)
        else:
            del node.attr["_class"]
    return dropped
