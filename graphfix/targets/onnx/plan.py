"""One cuDNN forward op as ONNX recurrent nodes: which op, which attributes, which weights.

Numpy only (no onnx import): the maths of the mapping, apart from node building (`emit.py`).

Per layer, one ONNX node (`direction="bidirectional"` when the cuDNN op is), with weights in
ONNX's layout (onnx/docs/Operators.md, LSTM / GRU / RNN)::

    W [D, G*H, in]   input weights, gates in ONNX order     (cuDNN W[g] [H, in], stacked)
    R [D, G*H, H]    recurrent weights, gates in ONNX order (cuDNN R[g] [H, H], stacked)
    B [D, 2*G*H]     [Wb, Rb]: cuDNN's two biases, both kept (bW, then bR)

    gate order   cuDNN           ONNX
    LSTM         i, f, c, o  ->  i, o, f, c
    GRU          r, z, n     ->  z, r, h      (linear_before_reset=1 is cuDNN's GRU)
    RNN          one gate        one gate     (activations Tanh or Relu)

skip_input (layer 0 has no input weights; the input enters every gate as itself) becomes
W = G stacked identity matrices. An LSTM with num_proj has no ONNX op: refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphfix.cudnn import gates, layout
from graphfix.errors import UnsupportedError
from graphfix.report import plural

ONNX_OP = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN", "rnn_relu": "RNN"}
# For each mode: ONNX's gates as indices into cuDNN's gate order.
ONNX_GATES = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn_tanh": (0,), "rnn_relu": (0,)}
ACTIVATION = {"rnn_tanh": "Tanh", "rnn_relu": "Relu"}
# The dtypes the ONNX nodes take. onnxruntime 1.32's CPU provider has no float64 kernel for
# LSTM, GRU or RNN ("does not support double yet"); float16 and bfloat16 ops are computed in
# float32 between two Casts, as cuDNN accumulates in float32 (and as the CPU target does).
COMPUTED_IN_FLOAT32 = ("float16", "bfloat16")
SUPPORTED_DTYPES = ("float32",) + COMPUTED_IN_FLOAT32


@dataclasses.dataclass(frozen=True)
class OnnxLayer:
    """The weights of one ONNX recurrent node (one cuDNN layer, both directions). float32."""

    W: np.ndarray  # [D, G*H, in]
    R: np.ndarray  # [D, G*H, H]
    B: np.ndarray  # [D, 2*G*H]


@dataclasses.dataclass
class OnnxRnn:
    """What replaces one CudnnRNN/V2/V3 node: the configuration and every layer's weights."""

    where: str
    node: str
    op: str                 # CudnnRNN | CudnnRNNV2 | CudnnRNNV3
    spec: layout.RnnSpec
    dtype: str              # float32 | float16 | bfloat16 (the op's T)
    time_major: bool
    has_lengths: bool
    layers: list[OnnxLayer]
    lengths_dropped: bool = False  # V3 lengths proven >= T (see plan_rnn): no sequence_lens

    @property
    def onnx_op(self) -> str:
        return ONNX_OP[self.spec.mode]

    def attributes(self) -> dict:
        """The ONNX node's attributes (the same for every layer)."""
        D = self.spec.num_dirs
        attrs = {"hidden_size": self.spec.num_units, "direction": "bidirectional" if D == 2 else "forward"}
        if self.spec.mode == "gru":
            attrs["linear_before_reset"] = 1
        if self.spec.mode in ACTIVATION:
            attrs["activations"] = [ACTIVATION[self.spec.mode]] * D
        return attrs

    def summary(self) -> str:
        D = self.spec.num_dirs
        return (f"ONNX: {self.op} {self.node!r} -> {plural(self.spec.num_layers, self.onnx_op + ' node')}"
                f"{' (bidirectional)' if D == 2 else ''}"
                f"{', sequence_lens' if self.has_lengths else ''}"
                f"{', no sequence_lens (every length >= the step count)' if self.lengths_dropped else ''}"
                f"{', computed in float32' if self.dtype in COMPUTED_IN_FLOAT32 else ''}")


def refusal(fop) -> str | None:
    """Why `fop` (a `rewrite.ForwardOp`) cannot become ONNX recurrent nodes, or None."""
    if fop.spec.num_proj:
        return (f"LSTM num_proj={fop.spec.num_proj} (a projected hidden state): ONNX's LSTM has no projection, "
                "and graphfix does not build one from a Loop; convert for CPU instead (--target cpu)")
    if fop.dtype.name not in SUPPORTED_DTYPES:
        return (f"dtype {fop.dtype.name}: onnxruntime's CPU LSTM/GRU/RNN kernels take float32 (graphfix also "
                "takes float16 and bfloat16, computed in float32); no float64 kernel exists")
    if fop.params is None:
        return (f"its params are not constant ({fop.params_why_not}); the ONNX target needs the weights "
                "at conversion time (freeze the model, or give the SavedModel's variables)")
    return None


def plan_rnn(fop, where: str, lengths_full: bool = False) -> OnnxRnn:
    """The ONNX replacement of `fop` (a `rewrite.ForwardOp` with folded params).

    where: names the node for errors. lengths_full: every V3 sequence length is known to be
    at least the number of steps, so the nodes take no sequence_lens. Raises UnsupportedError
    saying why when ONNX cannot express the op.
    """
    why = refusal(fop)
    if why is not None:
        raise UnsupportedError(why, where)
    rnn = from_buffer(fop.spec, fop.params, fop.dtype.name, fop.time_major,
                      fop.has_sequence_lengths and not lengths_full, fop.node, fop.op, fop.where, fop.gate_order)
    rnn.lengths_dropped = fop.has_sequence_lengths and lengths_full
    return rnn


def from_buffer(spec: layout.RnnSpec, params: np.ndarray, dtype: str = "float32", time_major: bool = True,
                has_lengths: bool = False, node: str = "rnn", op: str = "CudnnRNNV3", where: str = "graph",
                gate_order: str = gates.CUDNN) -> OnnxRnn:
    """The ONNX replacement of an op of configuration `spec` whose params buffer [N] is `params`."""
    buf = gates.to_cudnn_order(np.asarray(params), spec, gate_order)
    weights = layout.unpack(buf, spec)
    layers = [onnx_layer(spec, weights[layer * spec.num_dirs:(layer + 1) * spec.num_dirs])
              for layer in range(spec.num_layers)]
    return OnnxRnn(where, node, op, spec, dtype, time_major, has_lengths, layers)


def onnx_layer(spec: layout.RnnSpec, directions: list[layout.LayerWeights]) -> OnnxLayer:
    """cuDNN weights of one layer's directions (forward, then backward) -> ONNX W, R, B (float32)."""
    order = list(ONNX_GATES[spec.mode])
    G, H = spec.gates, spec.num_units
    Ws, Rs, Bs = [], [], []
    for w in directions:
        if w.W is None:  # skip_input: x enters every gate as itself (I == H)
            Ws.append(np.tile(np.eye(H, dtype=np.float32), (G, 1)))
        else:
            Ws.append(w.W[order].reshape(G * H, -1))
        Rs.append(w.R[order].reshape(G * H, H))
        Bs.append(np.concatenate([w.bW[order].reshape(-1), w.bR[order].reshape(-1)]))
    stack = lambda xs: np.ascontiguousarray(np.stack(xs), dtype=np.float32)
    return OnnxLayer(stack(Ws), stack(Rs), stack(Bs))
