"""A Python function traced into FunctionDefs that a graph's library can hold, named from the node it replaces.

TensorFlow names traced functions with a process-wide counter; graphfix renames them in
discovery order from a name derived from the replaced node, so the same input always gives
the same output, byte for byte. Targets trace their RNN functions with `trace`, and the
rewrite its helper-op functions.
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow as tf

from graphfix.graph.bodies import function_refs


@dataclasses.dataclass
class TracedFunction:
    """A function to add to a library: its name, signature types, and all FunctionDefs."""

    name: str
    input_types: list
    output_types: list
    function_defs: list  # FunctionDef protos; the first is `name`


def trace(fn, signature: list, name: str) -> TracedFunction:
    """Trace fn (autograph off) for `signature` (tf.TensorSpecs) into FunctionDefs named `name`, `name__1`, ..."""
    concrete = tf.function(fn, input_signature=signature, autograph=False).get_concrete_function()
    library = {f.signature.name: f for f in concrete.graph.as_graph_def().library.function}
    main = concrete.function_def
    library[main.signature.name] = main
    renamed = _rename_functions(main.signature.name, library, name)
    out_types = [tf.as_dtype(a.type) for a in renamed[0].signature.output_arg]
    in_types = [tf.as_dtype(a.type) for a in renamed[0].signature.input_arg]
    return TracedFunction(renamed[0].signature.name, in_types, out_types, renamed)


def _rename_functions(root: str, library: dict, base: str) -> list:
    """Copy `root` and the functions it reaches, named base, base__1, ... in call order.

    TF names traced functions with a process-wide counter; renaming by discovery order
    makes the output depend only on the input.
    """
    order, queue = [], [root]
    while queue:
        fname = queue.pop(0)
        if fname in order or fname not in library:
            continue
        order.append(fname)
        queue.extend(f.name for f in function_refs(library[fname].node_def))
    new_names = {old: base if i == 0 else f"{base}__{i}" for i, old in enumerate(order)}
    out = []
    for old in order:
        fdef = type(library[old])()
        fdef.CopyFrom(library[old])
        fdef.signature.name = new_names[old]
        for ref in function_refs(fdef.node_def):
            ref.name = new_names.get(ref.name, ref.name)
        _rename_args(fdef, new_names)
        out.append(fdef)
    return out


def _rename_args(fdef, new_names: dict) -> None:
    """TF bakes function names into some argument names (`while_cond_83___redundant_placeholder0`)."""
    pattern = re.compile("|".join(re.escape(old) for old in sorted(new_names, key=len, reverse=True)))
    renamed = {}
    for arg in fdef.signature.input_arg:
        new = pattern.sub(lambda m: new_names[m.group(0)], arg.name)
        if new != arg.name:
            renamed[arg.name] = new
            arg.name = new
    if not renamed:
        return

    def fix(text):
        bang = "^" if text.startswith("^") else ""
        head, sep, tail = text.lstrip("^").partition(":")
        return bang + renamed.get(head, head) + sep + tail

    for node in fdef.node_def:
        node.input[:] = [fix(t) for t in node.input]
    for key in list(fdef.ret):
        fdef.ret[key] = fix(fdef.ret[key])


def function_name_for(node_path: str, suffix: str = "") -> str:
    """A valid, deterministic function name derived from a node's path."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", node_path).strip("_") or "node"
    return f"graphfix_{safe}{suffix}"
