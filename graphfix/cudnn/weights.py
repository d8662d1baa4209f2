"""From cuDNN's per-gate weights to the few matrices the CPU graph multiplies by.

Works on numpy arrays (for constant params, folded at conversion time) and on TensorFlow
tensors (for params only known at run time) through the same code, so the two paths
cannot drift apart: `graph_weights(read, spec, ops, gate_order)` takes a function returning a run of
consecutive pieces of the buffer and an `ops` adapter with concat / reshape / transpose / add.

Per pseudo-layer, in this order, in Keras's layout (gates LSTM i, f, c, o as cuDNN's; GRU
z, r, n as Keras's, where cuDNN stores r, z, n)::

    kernel            [in, G*H]   (W[g] as stored, g in SLOT_GATES).T    (absent for skip_input layer 0)
    recurrent_kernel  [Hh, G*H]   (R[g] ...).T
    lstm / rnn:  bias            [G*H]  bW + bR       (the sum is all the equations use)
    gru:         input_bias      [3H]   bW            (n's recurrent bias sits inside r*(...))
                 recurrent_bias  [3H]   bR
    projection        [H, Hh]     P.T                 (LSTM with num_proj)

Why Keras's layout (measured on 2 CPU cores): a Keras 3 model's variables are exactly these
slots (`graphfix.rewrite.weight_sources` hands them over as they are, so a call does no
weight work), and every matrix is the right operand of its MatMul untransposed. A
transposed right operand cost 1.06-1.26x for x_t [B, 64-128] @ kernel.T (B 4-32), 2.8x at
in = 512, and 1.6-3.4x for h @ R.T; from batch 4 the input product runs once per step inside
the loop (`graphfix.targets.cpu_loop.IN_LOOP_MIN_BATCH`), so that cost was paid per step.
Constant params are transposed at conversion (numpy views; copied once when written);
params known only at run time cost one transpose per matrix per call.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphfix.cudnn import gates
from graphfix.cudnn.layout import LayerWeights, Piece, RnnSpec, pieces

# The cuDNN gate at each position of a slot, per mode (Keras's order; the rest as cuDNN's).
SLOT_GATES = {"gru": (1, 0, 2)}  # z, r, n from cuDNN's r, z, n


def slot_gates(spec: RnnSpec) -> tuple:
    """The cuDNN gate index at each gate position of `spec`'s slots (module doc)."""
    return SLOT_GATES.get(spec.mode, tuple(range(spec.gates)))


@dataclasses.dataclass(frozen=True)
class WeightSlot:
    """One input of the CPU function: which pseudo-layer, what it is, its shape."""

    layer: int
    direction: int
    kind: str  # kernel | recurrent_kernel | bias | input_bias | recurrent_bias | projection
    shape: tuple

    @property
    def name(self) -> str:
        return f"layer{self.layer}_{'bw' if self.direction else 'fw'}_{self.kind}"


def weight_slots(spec: RnnSpec) -> list[WeightSlot]:
    """The CPU function's weight inputs, in order (see module doc)."""
    G, H, Hh = spec.gates, spec.num_units, spec.hidden_size
    slots = []
    for layer in range(spec.num_layers):
        for d in range(spec.num_dirs):
            if spec.has_input_weights(layer):
                slots.append(WeightSlot(layer, d, "kernel", (spec.layer_input_size(layer), G * H)))
            slots.append(WeightSlot(layer, d, "recurrent_kernel", (Hh, G * H)))
            if spec.mode == "gru":
                slots.append(WeightSlot(layer, d, "input_bias", (G * H,)))
                slots.append(WeightSlot(layer, d, "recurrent_bias", (G * H,)))
            else:
                slots.append(WeightSlot(layer, d, "bias", (G * H,)))
            if spec.num_proj:
                slots.append(WeightSlot(layer, d, "projection", (H, Hh)))
    return slots


class NumpyOps:
    """Numpy twins of the TensorFlow ops graph_weights uses. transpose returns a view."""

    concat = staticmethod(lambda xs, axis: np.concatenate(xs, axis=axis))
    reshape = staticmethod(lambda x, shape: x.reshape(shape))
    transpose = staticmethod(lambda x: x.T)
    add = staticmethod(np.add)


def spans(stored: list[Piece]) -> list[tuple[int, int]]:
    """(offset, size) runs covering `stored` in order, adjacent pieces merged into one run.

    For cuDNN's own gate order a gate group [g0, g1, ...] is a single run.
    """
    runs: list[list[int]] = []
    for p in stored:
        if runs and runs[-1][0] + runs[-1][1] == p.offset:
            runs[-1][1] += p.size
        else:
            runs.append([p.offset, p.size])
    return [(offset, size) for offset, size in runs]


def graph_weights(read, spec: RnnSpec, ops=NumpyOps, gate_order: str = gates.CUDNN) -> list:
    """Build every weight slot's value.

    read(offset, size) -> the 1-D run buf[offset:offset + size] (numpy or TensorFlow).
    gate_order: how the buffer orders LSTM gates (`graphfix.cudnn.gates`); each gate is read from
    where that order stores it, so a non-cuDNN buffer is never permuted as a whole.
    """
    stored = gates.stored_pieces(spec, gate_order)
    groups: dict = {}
    for p in pieces(spec):
        groups.setdefault((p.layer, p.direction, p.kind), []).append(p)
    order = slot_gates(spec)

    def group(slot, kind):
        """All gates of one kind of the slot's pseudo-layer, concatenated flat in slot order."""
        ps = groups[(slot.layer, slot.direction, kind)]
        if kind != "P":
            ps = [ps[g] for g in order]
        runs = [read(offset, size) for offset, size in spans([stored[p] for p in ps])]
        return runs[0] if len(runs) == 1 else ops.concat(runs, 0)

    G, H, Hh = spec.gates, spec.num_units, spec.hidden_size
    out = []
    for slot in weight_slots(spec):
        if slot.kind == "kernel":
            value = ops.transpose(ops.reshape(group(slot, "W"), (G * H, slot.shape[0])))
        elif slot.kind == "recurrent_kernel":
            value = ops.transpose(ops.reshape(group(slot, "R"), (G * H, Hh)))
        elif slot.kind == "bias":
            value = ops.add(group(slot, "bW"), group(slot, "bR"))
        elif slot.kind == "input_bias":
            value = group(slot, "bW")
        elif slot.kind == "recurrent_bias":
            value = group(slot, "bR")
        else:  # projection
            value = ops.transpose(ops.reshape(group(slot, "P"), (Hh, H)))
        out.append(value)
    return out


def graph_weights_from_buffer(buf: np.ndarray, spec: RnnSpec, gate_order: str = gates.CUDNN) -> list[np.ndarray]:
    """Numpy: a full params buffer [N] (LSTM gates in `gate_order`) -> the CPU function's weight inputs.

    Matrices are views of `buf` (no copy of a gigabyte buffer at conversion), transposed
    (not C-contiguous) and, for GRU, put together from the gates in slot order (a copy).
    """
    buf = np.asarray(buf)
    return graph_weights(lambda offset, size: buf[offset:offset + size], spec, gate_order=gate_order)


def layer_weights_from_graph(values: list[np.ndarray], spec: RnnSpec) -> list[LayerWeights]:
    """Inverse direction, for tests and verification: weight slots -> cuDNN LayerWeights.

    LSTM/RNN biases come back as bW = bias, bR = 0 (only their sum is defined).
    """
    G, H, Hh = spec.gates, spec.num_units, spec.hidden_size
    cudnn_order = np.argsort(slot_gates(spec))  # position of each cuDNN gate in the slots
    found = {}
    for slot, value in zip(weight_slots(spec), values):
        found[(slot.layer, slot.direction, slot.kind)] = np.asarray(value)
    out = []
    for layer in range(spec.num_layers):
        for d in range(spec.num_dirs):
            get = lambda kind: found.get((layer, d, kind))
            kernel = get("kernel")
            if spec.mode == "gru":
                bW, bR = get("input_bias").reshape(G, H), get("recurrent_bias").reshape(G, H)
            else:
                bW, bR = get("bias").reshape(G, H), np.zeros((G, H), get("bias").dtype)
            proj = get("projection")
            W = None if kernel is None else kernel.T.reshape(G, H, kernel.shape[0])[cudnn_order]
            R = get("recurrent_kernel").T.reshape(G, H, Hh)[cudnn_order]
            out.append(LayerWeights(layer, d, W, R, bW[cudnn_order], bR[cudnn_order],
                                    None if proj is None else proj.T))
    return out


__all__ = ["WeightSlot", "weight_slots", "slot_gates", "SLOT_GATES", "graph_weights", "graph_weights_from_buffer",
           "layer_weights_from_graph", "spans", "Piece"]
