"""The rewrite: find each cuDNN op, read its configuration, resolve its params, ask the target, splice.

    convert.py          the pipeline over a GraphDef's bodies: convert_graph_def, convert_detached
    forward_op.py       a CudnnRNN/V2/V3 node's configuration (ForwardOp), shared with the tools
    replace_forward.py  one forward op -> a call of its target's function, params folded or sliced
    helper_ops.py       ParamsSize, CanonicalToParams(V2), ParamsToCanonical(V2) -> standard ops
    splice.py           weight Consts, calls under the replaced node's name, pruning, names
    context.py          one conversion's shared state
    target.py           what the rewrite asks of a target (graphfix.targets implement it)
"""

from graphfix.rewrite.convert import convert_detached, convert_graph_def
from graphfix.rewrite.forward_op import FORWARD_OPS, ForwardOp, Shapes, read_forward_op
from graphfix.rewrite.helper_ops import HELPER_HANDLERS
from graphfix.rewrite.target import Target

__all__ = ["FORWARD_OPS", "HELPER_HANDLERS", "ForwardOp", "Shapes", "Target", "convert_detached",
           "convert_graph_def", "read_forward_op"]
