"""Which of some nodes of a body can run at the same time as another of them.

Two nodes can run side by side when neither is an ancestor of the other (through data or
control inputs). Keras exports a Bidirectional RNN as two cuDNN ops that both read x::

    x --> [CudnnRNNV3 "forward"] ----------------------> concat
    x --> ReverseSequence --> [CudnnRNNV3 "backward"] --> ... --> concat

so the executor runs them on two cores at once; stacked layers (one op feeding the next)
run one after the other. The CPU target uses this to leave cores to a side-by-side peer.
"""

from __future__ import annotations

from graphfix.graph.bodies import Body


def _ancestors(by_name: dict, name: str) -> set[str]:
    """Every node of the body that `name` reads from, directly or not (the node excluded)."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        node = by_name.get(stack.pop())
        if node is None:  # a function argument
            continue
        for text in node.input:
            source = text.lstrip("^").split(":")[0]
            if source not in seen:
                seen.add(source)
                stack.append(source)
    seen.discard(name)  # a cycle (TF1 loops) through the node itself does not make it its own peer
    return seen


def side_by_side(body: Body, names: list[str]) -> set[str]:
    """Those of `names` (nodes of `body`) that another of `names` neither feeds nor reads from."""
    if len(names) < 2:
        return set()
    by_name = {n.name: n for n in body.nodes}
    ancestors = {name: _ancestors(by_name, name) for name in names}
    return {a for a in names
            if any(b != a and b not in ancestors[a] and a not in ancestors[b] for b in names)}
