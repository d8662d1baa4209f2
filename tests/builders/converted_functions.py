"""What a converted GraphDef's library functions hold, for the targets' structure tests."""

from __future__ import annotations

from tensorflow.python.framework import tensor_util


def comparisons_with(graph_def, op: str, value) -> int:
    """How many `op` nodes of the library functions read a scalar Const equal to `value`
    (e.g. the CPU target's `batch >= SPLIT_MIN_BATCH` test: "GreaterEqual", 12)."""
    count = 0
    for fdef in graph_def.library.function:
        consts = {n.name: n for n in fdef.node_def if n.op == "Const"}
        for node in fdef.node_def:
            if node.op != op:
                continue
            for name in node.input:
                const = consts.get(name.split(":")[0])
                if (const is not None and not const.attr["value"].tensor.tensor_shape.dim
                        and tensor_util.MakeNdarray(const.attr["value"].tensor) == value):
                    count += 1
                    break
    return count


def matmuls_per_function(graph_def) -> list[int]:
    """MatMul nodes in each library function (a While body holds its steps' products)."""
    return [sum(n.op == "MatMul" for n in f.node_def) for f in graph_def.library.function]
