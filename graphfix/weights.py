"""From cuDNN's per-gate weights to the few matrices the CPU graph multiplies by.

Works on numpy arrays (for constant params, folded at conversion time) and on TensorFlow
tensors (for params only known at run time) through the same code, so the two paths
cannot drift apart: `graph_weights(get_piece, spec, ops)` takes a function returning one
piece of the buffer and an `ops` adapter with concat / transpose / add.

Per pseudo-layer, in this order (gate order stays cuDNN's: LSTM i,f,c,o; GRU r,z,n)::

    kernel            [in, G*H]   concat_g W[g].T     (absent for skip_input layer 0)
    recurrent_kernel  [Hh, G*H]   concat_g R[g].T
    lstm / rnn:  bias            [G*H]  bW + bR       (the sum is all the equations use)
    gru:         input_bias      [3H]   bW            (n's recurrent bias sits inside r*(...))
                 recurrent_bias  [3H]   bR
    projection        [H, Hh]     P.T                 (LSTM with num_proj)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from graphfix.layout import LayerWeights, Piece, RnnSpec, pieces


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
    concat = staticmethod(lambda xs, axis: np.concatenate(xs, axis=axis))
    transpose = staticmethod(lambda x: np.ascontiguousarray(x.T))
    add = staticmethod(np.add)


def graph_weights(get_piece, spec: RnnSpec, ops=NumpyOps) -> list:
    """Build every weight slot's value. get_piece(Piece) -> array of the piece's shape."""
    by_key = {}
    for p in pieces(spec):
        by_key.setdefault((p.layer, p.direction, p.kind), []).append(p)

    def gates(slot, kind):
        return [get_piece(p) for p in by_key[(slot.layer, slot.direction, kind)]]

    out = []
    for slot in weight_slots(spec):
        if slot.kind == "kernel":
            value = ops.concat([ops.transpose(w) for w in gates(slot, "W")], 1)
        elif slot.kind == "recurrent_kernel":
            value = ops.concat([ops.transpose(r) for r in gates(slot, "R")], 1)
        elif slot.kind == "bias":
            value = ops.add(ops.concat(gates(slot, "bW"), 0), ops.concat(gates(slot, "bR"), 0))
        elif slot.kind == "input_bias":
            value = ops.concat(gates(slot, "bW"), 0)
        elif slot.kind == "recurrent_bias":
            value = ops.concat(gates(slot, "bR"), 0)
        else:  # projection
            value = ops.transpose(gates(slot, "P")[0])
        out.append(value)
    return out


def graph_weights_from_buffer(buf: np.ndarray, spec: RnnSpec) -> list[np.ndarray]:
    """Numpy: a full params buffer -> the CPU function's weight inputs."""
    buf = np.asarray(buf)
    return graph_weights(lambda p: buf[p.offset:p.offset + p.size].reshape(p.shape), spec)


def layer_weights_from_graph(values: list[np.ndarray], spec: RnnSpec) -> list[LayerWeights]:
    """Inverse direction, for tests and verification: weight slots -> cuDNN LayerWeights.

    LSTM/RNN biases come back as bW = bias, bR = 0 (only their sum is defined).
    """
    G, H = spec.gates, spec.num_units
    found = {}
    for slot, value in zip(weight_slots(spec), values):
        found[(slot.layer, slot.direction, slot.kind)] = np.asarray(value)
    out = []
    for layer in range(spec.num_layers):
        for d in range(spec.num_dirs):
            get = lambda kind: found.get((layer, d, kind))
            split_t = lambda m: np.stack([m[:, g * H:(g + 1) * H].T for g in range(G)])
            kernel = get("kernel")
            if spec.mode == "gru":
                bW, bR = get("input_bias").reshape(G, H), get("recurrent_bias").reshape(G, H)
            else:
                bW, bR = get("bias").reshape(G, H), np.zeros((G, H), get("bias").dtype)
            proj = get("projection")
            out.append(LayerWeights(layer, d, None if kernel is None else split_t(kernel),
                                    split_t(get("recurrent_kernel")), bW, bR,
                                    None if proj is None else proj.T))
    return out


__all__ = ["WeightSlot", "weight_slots", "graph_weights", "graph_weights_from_buffer",
           "layer_weights_from_graph", "Piece"]
