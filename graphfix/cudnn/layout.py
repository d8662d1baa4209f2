"""The cuDNN RNN opaque parameter buffer: sizes, unpack, pack, size inference.

Pure numpy; importable without TensorFlow.

Layout (cuDNN's canonical weight space, as handed out by TensorFlow's CudnnRNN ops;
see tensorflow ``core/kernels/cudnn_rnn_ops.cc`` and apache/mxnet
``FusedRNNCell._slice_weights``, which index the same buffer on the CPU)::

    for layer in range(L):
      for d in range(D):                  # pseudo-layer layer*D + d: forward, then backward
        G matrices W[g]  [H, in]          # in = I for layer 0, else D*Hh; absent for skip_input layer 0
        G matrices R[g]  [H, Hh]
        (LSTM with num_proj) P  [Hh, H]
    then, in the same pseudo-layer order:
        G vectors bW[g]  [H]
        G vectors bR[g]  [H]

All matrices of all pseudo-layers come first, then all biases; there is no padding.
Gate order is cuDNN's: LSTM i, f, c, o; GRU r, z, n. Checked against cuDNN 9.19 on a GPU,
skip_input included (offsets and outputs recorded by ``scripts/cudnn_probe.py`` and
``scripts/cudnn_api_probe.py``; ``tests/cudnn/test_cudnn_ground_truth.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from graphfix.errors import LayoutError

GATES_PER_MODE = {"rnn_relu": 1, "rnn_tanh": 1, "gru": 3, "lstm": 4}
INPUT_MODES = ("linear_input", "skip_input")


@dataclasses.dataclass(frozen=True)
class RnnSpec:
    """Static configuration of one cuDNN RNN op: everything the layout depends on.

    mode: "lstm" | "gru" | "rnn_tanh" | "rnn_relu".
    num_layers: L.  num_units: H.  input_size: I.
    num_dirs: D, 1 (unidirectional) or 2 (bidirectional).
    input_mode: "linear_input" or "skip_input" ("auto_select" is resolved by `resolve_input_mode`).
    num_proj: projection size of an LSTM's hidden state, 0 for none. As the op attribute it is
    written with, num_proj == num_units means no projection and is stored as 0: TensorFlow
    projects only when `hidden_size < cell_size` (stream_executor ``cuda_dnn.cc``,
    ``CudnnRnnDescriptor::Create``), so every reader of the attribute gets the same layout.
    """

    mode: str
    num_layers: int
    num_units: int
    input_size: int
    num_dirs: int = 1
    input_mode: str = "linear_input"
    num_proj: int = 0

    def __post_init__(self):
        if self.mode not in GATES_PER_MODE:
            raise LayoutError(f"unknown rnn_mode {self.mode!r}; expected one of {sorted(GATES_PER_MODE)}")
        if self.input_mode not in INPUT_MODES:
            raise LayoutError(f"input_mode {self.input_mode!r} must be resolved to one of {INPUT_MODES}")
        if self.num_dirs not in (1, 2):
            raise LayoutError(f"num_dirs must be 1 or 2, got {self.num_dirs}")
        for name in ("num_layers", "num_units"):
            if getattr(self, name) < 1:
                raise LayoutError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_size < 0:
            raise LayoutError(f"input_size must be >= 0, got {self.input_size}")
        if self.num_proj < 0 or (self.num_proj and self.mode != "lstm"):
            raise LayoutError(f"num_proj={self.num_proj} is only valid for lstm (mode {self.mode!r})")
        if self.num_proj > self.num_units:
            # TensorFlow's forward ops reject an input_h wider than input_c; its ParamsSize
            # would silently size a num_proj-unit LSTM. Neither is a layout to guess at.
            raise LayoutError(f"num_proj={self.num_proj} is larger than num_units={self.num_units}; "
                              "cuDNN projects only to a smaller size")
        if self.num_proj == self.num_units:
            object.__setattr__(self, "num_proj", 0)  # not a projection (see the docstring)
        if self.input_mode == "skip_input" and self.input_size != self.num_units:
            raise LayoutError(
                f"skip_input needs input_size == num_units, got {self.input_size} != {self.num_units}")

    @property
    def gates(self) -> int:
        """G: gate count of the mode."""
        return GATES_PER_MODE[self.mode]

    @property
    def hidden_size(self) -> int:
        """Hh: size of h (num_proj when projecting, else num_units)."""
        return self.num_proj or self.num_units

    @property
    def output_size(self) -> int:
        """Last dimension of the op's output: D * Hh."""
        return self.num_dirs * self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        """Input width of `layer`: I for layer 0, D * Hh above it."""
        return self.input_size if layer == 0 else self.output_size

    def has_input_weights(self, layer: int) -> bool:
        """False for layer 0 under skip_input, which adds the input to each gate unprojected."""
        return not (layer == 0 and self.input_mode == "skip_input")


def resolve_input_mode(input_mode: str, input_size: int, num_units: int) -> str:
    """Map cuDNN's "auto_select" to what it means for these sizes (TF op doc)."""
    if input_mode == "auto_select":
        return "skip_input" if input_size == num_units else "linear_input"
    if input_mode not in INPUT_MODES:
        raise LayoutError(f"unknown input_mode {input_mode!r}")
    return input_mode


@dataclasses.dataclass(frozen=True)
class Piece:
    """One weight or bias inside the buffer: where it sits and its cuDNN shape.

    kind: "W" (input weights [H, in]), "R" (recurrent [H, Hh]), "P" (projection [Hh, H]),
    "bW" / "bR" (biases [H]).  gate: index in cuDNN gate order (0 for "P").
    """

    kind: str
    layer: int
    direction: int
    gate: int
    shape: tuple
    offset: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def pieces(spec: RnnSpec) -> list[Piece]:
    """Every piece of the buffer, in buffer order, with offsets in elements."""
    out: list[Piece] = []
    offset = 0

    def add(kind, layer, d, gate, shape):
        nonlocal offset
        out.append(Piece(kind, layer, d, gate, tuple(shape), offset))
        offset += int(np.prod(shape))

    H, Hh, G = spec.num_units, spec.hidden_size, spec.gates
    for layer, d in _pseudo_layers(spec):
        if spec.has_input_weights(layer):
            for g in range(G):
                add("W", layer, d, g, (H, spec.layer_input_size(layer)))
        for g in range(G):
            add("R", layer, d, g, (H, Hh))
        if spec.num_proj:
            add("P", layer, d, 0, (Hh, H))
    for layer, d in _pseudo_layers(spec):
        for kind in ("bW", "bR"):
            for g in range(G):
                add(kind, layer, d, g, (H,))
    return out


def params_size(spec: RnnSpec) -> int:
    """Number of elements the buffer holds for `spec`."""
    last = pieces(spec)[-1]
    return last.offset + last.size


@dataclasses.dataclass
class LayerWeights:
    """Weights of one pseudo-layer (layer, direction), in cuDNN orientation.

    W: [G, H, in] or None (skip_input layer 0).  R: [G, H, Hh].
    P: [Hh, H] or None.  bW, bR: [G, H].
    """

    layer: int
    direction: int
    W: np.ndarray | None
    R: np.ndarray
    bW: np.ndarray
    bR: np.ndarray
    P: np.ndarray | None = None


def unpack(buf: np.ndarray, spec: RnnSpec) -> list[LayerWeights]:
    """Split a params buffer into per-pseudo-layer weights.

    buf: 1-D [params_size(spec)].  Returns L*D LayerWeights, ordered layer*D + direction.
    The arrays are copies; `buf` is not modified.
    """
    buf = np.asarray(buf)
    if buf.ndim != 1:
        raise LayoutError(f"params buffer must be 1-D, got shape {buf.shape}")
    expected = params_size(spec)
    if buf.size != expected:
        raise LayoutError(f"params buffer has {buf.size} elements; {describe(spec)} needs {expected}")
    parts: dict = {}
    for p in pieces(spec):
        parts.setdefault((p.layer, p.direction, p.kind), []).append(
            buf[p.offset:p.offset + p.size].reshape(p.shape).copy())
    out = []
    for layer, d in _pseudo_layers(spec):
        def stacked(kind):
            arrays = parts.get((layer, d, kind))
            return None if arrays is None else np.stack(arrays)
        proj = parts.get((layer, d, "P"))
        out.append(LayerWeights(layer, d, stacked("W"), stacked("R"), stacked("bW"), stacked("bR"),
                                proj[0] if proj else None))
    return out


def pack(weights: list[LayerWeights], spec: RnnSpec, dtype=None) -> np.ndarray:
    """Inverse of `unpack`: build the 1-D buffer from per-pseudo-layer weights."""
    by_key = {(w.layer, w.direction): w for w in weights}
    if sorted(by_key) != list(_pseudo_layers(spec)):
        raise LayoutError(f"pack needs weights for pseudo-layers {list(_pseudo_layers(spec))}, got {sorted(by_key)}")
    dtype = dtype or weights[0].R.dtype
    buf = np.empty(params_size(spec), dtype=dtype)
    for p in pieces(spec):
        w = by_key[(p.layer, p.direction)]
        src = w.P if p.kind == "P" else getattr(w, p.kind)[p.gate]
        if src is None or tuple(src.shape) != p.shape:
            got = None if src is None else tuple(src.shape)
            raise LayoutError(f"{p.kind}[gate {p.gate}] of layer {p.layer} direction {p.direction}: "
                              f"expected shape {p.shape}, got {got}")
        buf[p.offset:p.offset + p.size] = src.reshape(-1)
    return buf


def pack_canonical(weights: list[np.ndarray], biases: list[np.ndarray], dtype=None) -> np.ndarray:
    """What CudnnRNNCanonicalToParams computes: all weights flattened, then all biases.

    weights/biases: the op's canonical lists, already in buffer order.
    """
    flat = [np.asarray(w).reshape(-1) for w in weights] + [np.asarray(b).reshape(-1) for b in biases]
    buf = np.concatenate(flat) if flat else np.zeros(0)
    return buf.astype(dtype) if dtype is not None else buf


def canonical_shapes(spec: RnnSpec) -> tuple[list[tuple], list[tuple]]:
    """Shapes of CudnnRNNParamsToCanonical's weights and biases outputs, in order.

    The op lists pieces in buffer order; its weights list is every matrix, its biases list
    every vector.
    """
    ps = pieces(spec)
    return ([p.shape for p in ps if p.kind in ("W", "R", "P")],
            [p.shape for p in ps if p.kind in ("bW", "bR")])


def solve_input_size(num_elements: int, mode: str, num_layers: int, num_units: int,
                     num_dirs: int = 1, input_mode: str = "linear_input", num_proj: int = 0) -> int:
    """Find I such that a buffer of `num_elements` fits the other sizes.

    The size is linear in I (only layer 0's W depends on it), so one division decides.
    Raises LayoutError naming the expected sizes when no I fits.
    """
    def spec_for(i):
        mode_i = resolve_input_mode(input_mode, i, num_units) if input_mode == "auto_select" else input_mode
        return RnnSpec(mode, num_layers, num_units, i, num_dirs, mode_i, num_proj)

    if input_mode == "skip_input" or (input_mode == "auto_select"
                                      and params_size(spec_for(num_units)) == num_elements):
        spec = spec_for(num_units)
        if params_size(spec) == num_elements:
            return num_units
        raise LayoutError(f"params buffer has {num_elements} elements; {describe(spec)} needs "
                          f"{params_size(spec)}")
    base = params_size(RnnSpec(mode, num_layers, num_units, 0, num_dirs, "linear_input", num_proj))
    per_input = num_dirs * GATES_PER_MODE[mode] * num_units
    extra = num_elements - base
    # Under auto_select, I == H means skip_input, whose size was checked above; a linear-sized
    # buffer solving to I == H therefore fits no auto_select layout.
    if extra > 0 and extra % per_input == 0 and not (input_mode == "auto_select"
                                                     and extra // per_input == num_units):
        return extra // per_input
    spec0 = RnnSpec(mode, num_layers, num_units, 1, num_dirs, "linear_input", num_proj)
    raise LayoutError(
        f"params buffer has {num_elements} elements, which fits no input size for "
        f"{describe(spec0, with_input=False)}: the size must be {base} + {per_input} * input_size")


def describe(spec: RnnSpec, with_input: bool = True) -> str:
    """Short human description, e.g. 'lstm, 2 layers, bidirectional, input 8, units 16'."""
    parts = [spec.mode, f"{spec.num_layers} layer{'s' if spec.num_layers > 1 else ''}",
             "bidirectional" if spec.num_dirs == 2 else "unidirectional"]
    if with_input:
        parts.append(f"input {spec.input_size}")
    parts.append(f"units {spec.num_units}")
    if spec.num_proj:
        parts.append(f"num_proj {spec.num_proj}")
    if spec.input_mode != "linear_input":
        parts.append(spec.input_mode)
    return ", ".join(parts)


def _pseudo_layers(spec: RnnSpec) -> Iterator[tuple[int, int]]:
    for layer in range(spec.num_layers):
        for d in range(spec.num_dirs):
            yield layer, d
