"""From cuDNN's per-gate weights to the few matrices the CPU graph multiplies by.

Works on numpy arrays (for constant params, folded at conversion time) and on TensorFlow
tensors (for params only known at run time) through the same code, so the two paths
cannot drift apart: `graph_weights(read, spec, ops, gate_order)` takes a function returning a run of
consecutive pieces of the buffer and an `ops` adapter with concat / reshape / transpose / add.

Per pseudo-layer, in this order (gate order stays cuDNN's: LSTM i,f,c,o; GRU r,z,n)::

    kernel            [G*H, in]   W[0..G-1] as stored   (absent for skip_input layer 0)
    recurrent_kernel  [Hh, G*H]   (R[0..G-1] as stored).T
    lstm / rnn:  bias            [G*H]  bW + bR       (the sum is all the equations use)
    gru:         input_bias      [3H]   bW            (n's recurrent bias sits inside r*(...))
                 recurrent_bias  [3H]   bR
    projection        [H, Hh]     P.T                 (LSTM with num_proj)

Why these orientations (measured on 2 CPU cores, scripts/bench_inference.py): the kernel
is used once per call, for all time steps (x [T*B, in] @ kernel.T, a MatMul with
transpose_b, as fast as an untransposed one at that size), so it stays in cuDNN's row
layout: the G gate matrices of a pseudo-layer are one contiguous run of the buffer, so the
slot is a plain slice (a numpy view; no copy at conversion, no transpose per call for
params read from variables). The recurrent kernel and the projection are multiplied once
per time step, where a transposed right operand costs 1.6-3.4x (h [B, Hh] @ R.T for B 32
and 8), so they are transposed once: at conversion, or once per call.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphfix.cudnn import gates
from graphfix.cudnn.layout import LayerWeights, Piece, RnnSpec, pieces


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
                slots.append(WeightSlot(layer, d, "kernel", (G * H, spec.layer_input_size(layer))))
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

    def group(slot, kind):
        """All gates of one kind of the slot's pseudo-layer, concatenated flat in cuDNN order."""
        ps = groups[(slot.layer, slot.direction, kind)]
        runs = [read(offset, size) for offset, size in spans([stored[p] for p in ps])]
        return runs[0] if len(runs) == 1 else ops.concat(runs, 0)

    G, H, Hh = spec.gates, spec.num_units, spec.hidden_size
    out = []
    for slot in weight_slots(spec):
        if slot.kind == "kernel":
            value = ops.reshape(group(slot, "W"), slot.shape)
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

    Every slot but the summed biases is a view of `buf` (no copy of a gigabyte buffer);
    recurrent_kernel and projection are transposed views, not C-contiguous.
    """
    buf = np.asarray(buf)
    return graph_weights(lambda offset, size: buf[offset:offset + size], spec, gate_order=gate_order)


def layer_weights_from_graph(values: list[np.ndarray], spec: RnnSpec) -> list[LayerWeights]:
    """Inverse direction, for tests and verification: weight slots -> cuDNN LayerWeights.

    LSTM/RNN biases come back as bW = bias, bR = 0 (only their sum is defined).
    """
    G, H, Hh = spec.gates, spec.num_units, spec.hidden_size
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
            out.append(LayerWeights(layer, d, None if kernel is None else kernel.reshape(G, H, kernel.shape[1]),
                                    get("recurrent_kernel").T.reshape(G, H, Hh), bW, bR,
                                    None if proj is None else proj.T))
    return out


__all__ = ["WeightSlot", "weight_slots", "graph_weights", "graph_weights_from_buffer",
           "layer_weights_from_graph", "spans", "Piece"]
