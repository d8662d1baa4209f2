"""A view over GraphDef and FunctionDef bodies, and what can be known about their tensors.

    bodies.py        one view over a graph's node list and its library functions' bodies
    folding.py       a params tensor folded to numpy through an allowlist of pure ops
    saved_values.py  params values from constants and a SavedModel's saved variables
    detached.py      large Const values held as numpy beside a slim GraphDef
    traced.py        a tf.function traced into deterministically named FunctionDefs
"""
