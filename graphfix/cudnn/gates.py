"""Gate orders other than cuDNN's, as found in params buffers exported by other builds.

Pure numpy; importable without TensorFlow.

cuDNN's LSTM gate order is i, f, c, o. ROCm builds of Keras hand MIOpen a buffer with the
LSTM gates in the order i, f, o, c (keras ``backend/tensorflow/rnn.py`` ``_cudnn_lstm`` and
tf_keras ``layers/rnn/lstm.py`` ``gpu_lstm``, both under ``is_rocm_build``), for the weights
and for both bias halves. The buffer is otherwise laid out as cuDNN's (`graphfix.cudnn.layout`):
the same pieces, sizes and offsets, only the gates of each (kind, layer, direction) group
permuted. So reading a piece in cuDNN order means reading the piece of the stored gate::

    stored gate of cuDNN gate g = ORDERS[order][g]       # ifoc: i->0, f->1, c->3, o->2

Only LSTM ops are affected; other modes are read in cuDNN order whatever the option says.
"""

from __future__ import annotations

import numpy as np

from graphfix.cudnn.layout import Piece, RnnSpec, pieces
from graphfix.errors import InputError

CUDNN = "ifco"
# For each name: the stored position of cuDNN's LSTM gates i, f, c, o.
ORDERS = {"ifco": (0, 1, 2, 3), "ifoc": (0, 1, 3, 2)}
DESCRIPTIONS = {"ifco": "i, f, c, o (cuDNN)", "ifoc": "i, f, o, c (ROCm/MIOpen)"}


def check(order: str) -> str:
    """Return `order` if it is a known gate order name, else raise InputError listing them."""
    if order not in ORDERS:
        raise InputError(f"unknown gate order {order!r}; expected one of {sorted(ORDERS)}")
    return order


def applies(spec: RnnSpec, order: str) -> bool:
    """True when `order` changes how `spec`'s buffer is read (a non-cuDNN order on an LSTM)."""
    return spec.mode == "lstm" and ORDERS[check(order)] != ORDERS[CUDNN]


def stored_pieces(spec: RnnSpec, order: str) -> dict[Piece, Piece]:
    """Map every piece in cuDNN order to the piece of the buffer that holds it under `order`.

    The identity map when the order does not apply to `spec`.
    """
    all_pieces = pieces(spec)
    if not applies(spec, order):
        return {p: p for p in all_pieces}
    groups: dict = {}
    for p in all_pieces:
        groups.setdefault((p.kind, p.layer, p.direction), {})[p.gate] = p
    perm = ORDERS[order]
    return {p: (groups[(p.kind, p.layer, p.direction)][perm[p.gate]] if p.kind != "P" else p)
            for p in all_pieces}


def to_cudnn_order(buf: np.ndarray, spec: RnnSpec, order: str) -> np.ndarray:
    """The 1-D stored buffer [N] with its gates permuted into cuDNN order.

    Returns `buf` itself (no copy) when `order` changes nothing for `spec`: buffers can be
    gigabytes. Otherwise a permuted copy.
    """
    buf = np.asarray(buf)
    if not applies(spec, order):
        return buf
    out = buf.copy()
    for p, src in stored_pieces(spec, order).items():
        out[p.offset:p.offset + p.size] = buf[src.offset:src.offset + src.size]
    return out
