"""Which of some nodes of a body can run at the same time as another of them.

Two nodes can run side by side when neither is an ancestor of the other (through data or
control inputs). Keras exports a Bidirectional RNN as two cuDNN ops that both read x::

    x --> [CudnnRNNV3 "forward"] ----------------------> concat
    x --> ReverseSequence --> [CudnnRNNV3 "backward"] --> ... --> concat

so the executor runs them on two cores at once; stacked layers (one op feeding the next)
run one after the other. The CPU target uses this to leave cores to a side-by-side peer.
"""

from __future__ import annotations

from graphfix.graph.bodies import Body, ancestors


def side_by_side(body: Body, names: list[str]) -> set[str]:
    """Those of `names` (nodes of `body`) that another of `names` neither feeds nor reads from."""
    if len(names) < 2:
        return set()
    upstream = {name: ancestors(body, [name]) for name in names}  # each name's own set holds it
    return {a for a in names
            if any(b != a and b not in upstream[a] and a not in upstream[b] for b in names)}
