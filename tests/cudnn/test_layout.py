"""Tests for graphfix.cudnn.layout: the cuDNN params buffer (pieces, sizes, unpack/pack, solving I).

Every buffer here is filled with distinct values (np.arange), so a permuted, shifted or
overlapping piece changes what the test sees; a constant fill could not.

Buffer order under test (CUDNN_FACTS.md section 3)::

    [ W(0,fw) R(0,fw) P(0,fw) | W(0,bw) R(0,bw) P(0,bw) | W(1,fw) ... ]  all matrices
    [ bW(0,fw) bR(0,fw) | bW(0,bw) bR(0,bw) | bW(1,fw) ... ]             then all biases
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from graphfix.errors import LayoutError
from graphfix.cudnn.layout import (
    GATES_PER_MODE,
    LayerWeights,
    RnnSpec,
    canonical_shapes,
    pack,
    pack_canonical,
    params_size,
    pieces,
    resolve_input_mode,
    solve_input_size,
    unpack,
)

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
HAND_G = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}  # written out again, not imported


def _specs():
    """Every mode x 1-3 layers x uni/bi x linear/skip input, plus LSTM projections."""
    out = []
    for mode, L, D, input_mode in itertools.product(MODES, (1, 2, 3), (1, 2), ("linear_input", "skip_input")):
        H = 3
        I = H if input_mode == "skip_input" else 5
        out.append(RnnSpec(mode, L, H, I, D, input_mode))
    for L, D, input_mode in itertools.product((1, 2, 3), (1, 2), ("linear_input", "skip_input")):
        H, P = 4, 2
        I = H if input_mode == "skip_input" else 3
        out.append(RnnSpec("lstm", L, H, I, D, input_mode, num_proj=P))
    return out


SPECS = _specs()


def _spec_id(spec: RnnSpec) -> str:
    return (f"{spec.mode}-L{spec.num_layers}-D{spec.num_dirs}-I{spec.input_size}-H{spec.num_units}"
            f"-{spec.input_mode.split('_')[0]}" + (f"-P{spec.num_proj}" if spec.num_proj else ""))


def _hand_size(mode, L, H, I, D, input_mode="linear_input", P=0):
    """params_size written independently from the cuDNN weight-space description."""
    G = HAND_G[mode]
    Hh = P or H
    total = 0
    for layer in range(L):
        width = I if layer == 0 else D * Hh
        if layer == 0 and input_mode == "skip_input":
            width = 0
        per_dir = G * H * width + G * H * Hh + (P * H if P else 0) + 2 * G * H
        total += D * per_dir
    return total


# --- round trip and coverage -------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_pack_unpack_round_trip(spec):
    """pack(unpack(b)) == b bit for bit, and unpack leaves b alone (arange: all distinct)."""
    buf = np.arange(params_size(spec), dtype=np.float64)
    before = buf.copy()
    weights = unpack(buf, spec)
    assert len(weights) == spec.num_layers * spec.num_dirs
    np.testing.assert_array_equal(pack(weights, spec), buf)
    np.testing.assert_array_equal(buf, before)
    # unpack returns copies: writing into them must not reach the buffer
    weights[0].R[...] = -1
    np.testing.assert_array_equal(buf, before)


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_pieces_tile_the_buffer(spec):
    """Pieces are contiguous, non-overlapping, cover [0, N), matrices strictly before biases."""
    ps = pieces(spec)
    offset = 0
    for p in ps:
        assert p.offset == offset
        offset += p.size
    assert offset == params_size(spec)
    kinds = [p.kind for p in ps]
    first_bias = kinds.index("bW")
    assert all(k in ("W", "R", "P") for k in kinds[:first_bias])
    assert all(k in ("bW", "bR") for k in kinds[first_bias:])
    # every element of arange lands in exactly one unpacked array
    buf = np.arange(params_size(spec), dtype=np.int64)
    seen = np.concatenate([a.reshape(-1) for w in unpack(buf, spec)
                           for a in (w.W, w.R, w.P, w.bW, w.bR) if a is not None])
    np.testing.assert_array_equal(np.sort(seen), buf)


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_params_size_matches_hand_formula(spec):
    assert params_size(spec) == _hand_size(spec.mode, spec.num_layers, spec.num_units, spec.input_size,
                                           spec.num_dirs, spec.input_mode, spec.num_proj)


def test_params_size_known_numbers():
    """Numbers worked out on paper: LSTM I=3 H=2: 4*(2*3 + 2*2 + 2 + 2) = 56."""
    assert params_size(RnnSpec("lstm", 1, 2, 3)) == 56
    # GRU 2 layers bidirectional I=4 H=3: layer0 per dir 3*3*4+3*3*3+2*3*3 = 81, layer1 3*3*6+27+18 = 99
    assert params_size(RnnSpec("gru", 2, 3, 4, num_dirs=2)) == 2 * 81 + 2 * 99


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_unpack_shapes(spec):
    G, H, Hh = HAND_G[spec.mode], spec.num_units, spec.num_proj or spec.num_units
    D = spec.num_dirs
    for k, w in enumerate(unpack(np.zeros(params_size(spec)), spec)):
        assert (w.layer, w.direction) == (k // D, k % D)
        if w.layer == 0 and spec.input_mode == "skip_input":
            assert w.W is None
        else:
            width = spec.input_size if w.layer == 0 else D * Hh
            assert w.W.shape == (G, H, width)
        assert w.R.shape == (G, H, Hh)
        assert w.bW.shape == w.bR.shape == (G, H)
        assert (w.P is None) if not spec.num_proj else (w.P.shape == (spec.num_proj, H))


# --- known indices -----------------------------------------------------------------------

def _block(start, shape):
    return np.arange(start, start + int(np.prod(shape))).reshape(shape)


def test_known_offsets_lstm_one_layer():
    """LSTM, L=1, I=3, H=2, G=4.

    offset: 0    6    12   18   24   28   32   36   40 42 44 46 48 50 52 54 56
            Wi   Wf   Wc   Wo   Ri   Rf   Rc   Ro   bWi .. bWo  bRi .. bRo
    """
    I, H, G = 3, 2, 4
    spec = RnnSpec("lstm", 1, H, I)
    (w,) = unpack(np.arange(params_size(spec)), spec)
    np.testing.assert_array_equal(w.W[1], _block(1 * H * I, (H, I)))  # gate f
    np.testing.assert_array_equal(w.W[0][0], [0, 1, 2])  # row-major [H, in]: a row is one unit
    np.testing.assert_array_equal(w.R[0], _block(G * H * I, (H, H)))
    np.testing.assert_array_equal(w.R[3], _block(G * H * I + 3 * H * H, (H, H)))
    mats = G * H * I + G * H * H
    np.testing.assert_array_equal(w.bW, _block(mats, (G, H)))
    np.testing.assert_array_equal(w.bR, _block(mats + G * H, (G, H)))


def test_known_offsets_two_layer_bidirectional_lstm():
    """LSTM, L=2, D=2, I=3, H=2: biases come after the matrices of ALL four pseudo-layers.

        pseudo-layer 0 (l0 fw): W [4,2,3] @0    R [4,2,2] @24
        pseudo-layer 1 (l0 bw): W [4,2,3] @40   R         @64     <- right after l0 fw's R
        pseudo-layer 2 (l1 fw): W [4,2,4] @80   R         @112    <- width D*H = 4
        pseudo-layer 3 (l1 bw): W         @128  R         @160
        biases: bW(l0 fw) @176, bR(l0 fw) @184, bW(l0 bw) @192, ...
    """
    I, H, G, D = 3, 2, 4, 2
    spec = RnnSpec("lstm", 2, H, I, num_dirs=D)
    ws = unpack(np.arange(params_size(spec)), spec)
    offsets = {}
    pos = 0
    for k in range(4):
        width = I if k < 2 else D * H
        offsets[k] = pos
        np.testing.assert_array_equal(ws[k].W, _block(pos, (G, H, width)))
        pos += G * H * width
        np.testing.assert_array_equal(ws[k].R, _block(pos, (G, H, H)))
        pos += G * H * H
    assert offsets == {0: 0, 1: 40, 2: 80, 3: 128}
    assert pos == 176
    for k in range(4):
        np.testing.assert_array_equal(ws[k].bW, _block(pos, (G, H)))
        np.testing.assert_array_equal(ws[k].bR, _block(pos + G * H, (G, H)))
        pos += 2 * G * H
    assert pos == params_size(spec)


def test_known_offsets_projection_follows_r():
    """LSTM with num_proj: P [Hh, H] sits right after its pseudo-layer's R, before the next W.

    L=1, D=2, I=2, H=3, P=2: W 4*3*2=24, R 4*3*2=24, P 2*3=6 -> pseudo-layer 1's W at 54.
    """
    spec = RnnSpec("lstm", 1, 3, 2, num_dirs=2, num_proj=2)
    ws = unpack(np.arange(params_size(spec)), spec)
    np.testing.assert_array_equal(ws[0].R, _block(24, (4, 3, 2)))
    np.testing.assert_array_equal(ws[0].P, _block(48, (2, 3)))
    np.testing.assert_array_equal(ws[1].W, _block(54, (4, 3, 2)))
    np.testing.assert_array_equal(ws[1].P, _block(54 + 48, (2, 3)))
    np.testing.assert_array_equal(ws[0].bW, _block(108, (4, 3)))


def test_known_offsets_skip_input():
    """skip_input: layer 0 has no W in either direction, but keeps bW; layer 1 has W.

    GRU L=2 D=2 H=I=2: l0 fw R @0, l0 bw R @12, l1 fw W [3,2,4] @24, R @48, l1 bw W @60 ...
    """
    spec = RnnSpec("gru", 2, 2, 2, num_dirs=2, input_mode="skip_input")
    ws = unpack(np.arange(params_size(spec)), spec)
    assert ws[0].W is None and ws[1].W is None
    np.testing.assert_array_equal(ws[0].R, _block(0, (3, 2, 2)))
    np.testing.assert_array_equal(ws[1].R, _block(12, (3, 2, 2)))
    np.testing.assert_array_equal(ws[2].W, _block(24, (3, 2, 4)))
    np.testing.assert_array_equal(ws[2].R, _block(48, (3, 2, 2)))
    np.testing.assert_array_equal(ws[3].W, _block(60, (3, 2, 4)))
    np.testing.assert_array_equal(ws[0].bW, _block(96, (3, 2)))
    assert params_size(spec) == 96 + 4 * 12


def test_gru_gate_indices_are_cudnn_order():
    """Gate g of a piece is its position in the buffer (r=0, z=1, n=2), nothing reordered."""
    spec = RnnSpec("gru", 1, 2, 1)
    gates = [p.gate for p in pieces(spec) if p.kind == "W"]
    assert gates == [0, 1, 2]
    (w,) = unpack(np.arange(params_size(spec)), spec)
    np.testing.assert_array_equal(w.W[:, :, 0], [[0, 1], [2, 3], [4, 5]])


# --- errors -------------------------------------------------------------------------------

def test_unpack_wrong_size_names_counts():
    spec = RnnSpec("lstm", 1, 2, 3)
    with pytest.raises(LayoutError, match=r"57 elements.*needs 56"):
        unpack(np.zeros(57), spec)
    with pytest.raises(LayoutError, match="1-D"):
        unpack(np.zeros((7, 8)), spec)


def test_pack_rejects_wrong_shapes_and_missing_layers():
    spec = RnnSpec("lstm", 2, 2, 3, num_dirs=2)
    ws = unpack(np.arange(params_size(spec), dtype=np.float32), spec)
    with pytest.raises(LayoutError, match="pseudo-layers"):
        pack(ws[:3], spec)
    bad = list(ws)
    bad[2] = LayerWeights(1, 0, ws[2].W[:, :, :3], ws[2].R, ws[2].bW, ws[2].bR)
    with pytest.raises(LayoutError, match=r"W\[gate 0\] of layer 1 direction 0"):
        pack(bad, spec)
    proj_spec = RnnSpec("lstm", 1, 4, 3, num_proj=2)
    (pw,) = unpack(np.arange(params_size(proj_spec), dtype=np.float32), proj_spec)
    with pytest.raises(LayoutError, match="P"):
        pack([LayerWeights(0, 0, pw.W, pw.R, pw.bW, pw.bR, None)], proj_spec)


def test_pack_dtype():
    spec = RnnSpec("rnn_tanh", 1, 2, 2)
    ws = unpack(np.arange(params_size(spec), dtype=np.float32), spec)
    assert pack(ws, spec).dtype == np.float32
    assert pack(ws, spec, dtype=np.float16).dtype == np.float16


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(mode="lstm", num_layers=1, num_units=4, input_size=3, input_mode="skip_input"),
     r"skip_input needs input_size == num_units, got 3 != 4"),
    (dict(mode="gru", num_layers=1, num_units=4, input_size=3, num_proj=2), r"num_proj=2.*only valid for lstm"),
    (dict(mode="rnn_tanh", num_layers=1, num_units=4, input_size=3, num_proj=2), r"only valid for lstm"),
    (dict(mode="lstm", num_layers=1, num_units=4, input_size=3, num_proj=-1), r"num_proj=-1"),
    (dict(mode="LSTM", num_layers=1, num_units=4, input_size=3), r"unknown rnn_mode 'LSTM'"),
    (dict(mode="rnn", num_layers=1, num_units=4, input_size=3), r"unknown rnn_mode"),
    (dict(mode="lstm", num_layers=1, num_units=4, input_size=3, input_mode="auto_select"), r"must be resolved"),
    (dict(mode="lstm", num_layers=1, num_units=4, input_size=3, num_dirs=3), r"num_dirs must be 1 or 2, got 3"),
    (dict(mode="lstm", num_layers=0, num_units=4, input_size=3), r"num_layers must be >= 1"),
    (dict(mode="lstm", num_layers=1, num_units=0, input_size=3), r"num_units must be >= 1"),
    (dict(mode="lstm", num_layers=1, num_units=4, input_size=-1), r"input_size must be >= 0"),
])
def test_spec_validation(kwargs, pattern):
    with pytest.raises(LayoutError, match=pattern):
        RnnSpec(**kwargs)


def test_num_proj_equal_to_num_units_is_no_projection():
    """TensorFlow projects only when num_proj < num_units (stream_executor cuda_dnn.cc): 8 units, num_proj 8
    is the plain 736-element LSTM (4*8*(13+8) + 2*4*8), as TensorFlow sizes it on a GPU, not 800."""
    spec = RnnSpec("lstm", 1, 8, 13, num_proj=8)
    assert spec == RnnSpec("lstm", 1, 8, 13) and spec.num_proj == 0 and spec.hidden_size == 8
    assert params_size(spec) == 4 * 8 * (13 + 8) + 2 * 4 * 8 == 736
    assert [p.kind for p in pieces(spec)].count("P") == 0
    assert params_size(RnnSpec("lstm", 1, 8, 13, num_proj=7)) == 4 * 8 * (13 + 7) + 7 * 8 + 2 * 4 * 8
    with pytest.raises(LayoutError, match="num_proj=9 is larger than num_units=8"):
        RnnSpec("lstm", 1, 8, 13, num_proj=9)


def test_spec_is_frozen_and_derived_sizes():
    spec = RnnSpec("lstm", 2, 8, 5, num_dirs=2, num_proj=3)
    assert (spec.gates, spec.hidden_size, spec.output_size) == (4, 3, 6)
    assert (spec.layer_input_size(0), spec.layer_input_size(1)) == (5, 6)
    with pytest.raises(Exception):
        spec.num_units = 9  # frozen dataclass: a spec cannot drift after its layout was computed


def test_resolve_input_mode():
    assert resolve_input_mode("auto_select", 4, 4) == "skip_input"
    assert resolve_input_mode("auto_select", 3, 4) == "linear_input"
    assert resolve_input_mode("linear_input", 4, 4) == "linear_input"
    assert resolve_input_mode("skip_input", 4, 4) == "skip_input"
    with pytest.raises(LayoutError, match="unknown input_mode 'bogus'"):
        resolve_input_mode("bogus", 4, 4)


# --- solving the input size -------------------------------------------------------------

SOLVE_CASES = [
    (mode, L, H, I, D, P)
    for mode in MODES
    for L in (1, 2, 3)
    for D in (1, 2)
    for H, I in ((1, 1), (2, 7), (5, 3), (4, 4), (3, 64))
    for P in ((0, 2) if mode == "lstm" and H > 2 else (0,))
]


@pytest.mark.parametrize("mode, L, H, I, D, P", SOLVE_CASES)
def test_solve_input_size_recovers_linear(mode, L, H, I, D, P):
    n = _hand_size(mode, L, H, I, D, "linear_input", P)
    assert solve_input_size(n, mode, L, H, D, "linear_input", P) == I
    if I != H:
        assert solve_input_size(n, mode, L, H, D, "auto_select", P) == I


@pytest.mark.parametrize("mode, L, D", list(itertools.product(MODES, (1, 2, 3), (1, 2))))
def test_solve_input_size_recovers_skip_and_auto(mode, L, D):
    H = 5
    n = _hand_size(mode, L, H, H, D, "skip_input")
    assert solve_input_size(n, mode, L, H, D, "skip_input") == H
    assert solve_input_size(n, mode, L, H, D, "auto_select") == H


@pytest.mark.parametrize("mode, L, D, input_mode, P", [
    ("lstm", 1, 1, "linear_input", 0),
    ("gru", 2, 2, "linear_input", 0),
    ("rnn_relu", 3, 2, "auto_select", 0),
    ("lstm", 2, 2, "linear_input", 2),
    ("lstm", 2, 1, "skip_input", 0),
    ("gru", 1, 2, "skip_input", 0),
])
def test_solve_input_size_rejects_sizes_that_fit_nothing(mode, L, D, input_mode, P):
    """One element too many, or a size below the I-free part, fits no layout; the message says how many."""
    H, I = 4, 3 if input_mode != "skip_input" else 4
    mode_i = "skip_input" if input_mode == "skip_input" else "linear_input"
    good = _hand_size(mode, L, H, I, D, mode_i, P)
    for n in (good + 1, good - 1, 1, 0):
        with pytest.raises(LayoutError, match=rf"\b{n} elements"):
            solve_input_size(n, mode, L, H, D, input_mode, P)


@pytest.mark.parametrize("mode, L, D, input_mode, P", [
    (m, L, D, im, P)
    for m in MODES for L in (1, 2) for D in (1, 2)
    for im in ("linear_input", "skip_input", "auto_select")
    for P in ((0, 1) if m == "lstm" else (0,))
])
def test_solve_input_size_answer_always_fits(mode, L, D, input_mode, P):
    """Over a whole range of sizes: any I returned gives a layout of exactly that size.

    Includes auto_select, where I == H means skip_input: a linear-sized buffer whose solution
    is I == H fits no auto_select layout and must be refused.
    """
    H = 2
    answered = 0
    top = _hand_size(mode, L, H, 4, D, "linear_input", P)
    for n in range(0, top + 1):
        try:
            i = solve_input_size(n, mode, L, H, D, input_mode, P)
        except LayoutError as e:
            assert str(n) in str(e)
            continue
        answered += 1
        resolved = resolve_input_mode(input_mode, i, H)
        assert params_size(RnnSpec(mode, L, H, i, D, resolved, P)) == n
    assert answered >= 1


# --- canonical lists (CudnnRNNParamsToCanonical / CanonicalToParams) ---------------------

@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_canonical_lists_match_pieces(spec):
    """canonical_shapes lists matrices then biases in buffer order; pack_canonical of the
    per-piece slices of an arange buffer rebuilds that buffer exactly."""
    buf = np.arange(params_size(spec), dtype=np.float32)
    w_shapes, b_shapes = canonical_shapes(spec)
    ws = {(w.layer, w.direction): w for w in unpack(buf, spec)}
    mats, vecs = [], []
    for p in pieces(spec):
        w = ws[(p.layer, p.direction)]
        arr = w.P if p.kind == "P" else getattr(w, p.kind)[p.gate]
        (vecs if p.kind in ("bW", "bR") else mats).append(arr)
    assert [m.shape for m in mats] == w_shapes
    assert [b.shape for b in vecs] == b_shapes
    G, D, L = GATES_PER_MODE[spec.mode], spec.num_dirs, spec.num_layers
    assert len(b_shapes) == 2 * G * L * D
    n_w_skipped = G * D if spec.input_mode == "skip_input" else 0
    assert len(w_shapes) == (2 * G + (1 if spec.num_proj else 0)) * L * D - n_w_skipped
    out = pack_canonical(mats, vecs)
    np.testing.assert_array_equal(out, buf)
    assert pack_canonical(mats, vecs, dtype=np.float16).dtype == np.float16


def test_pack_canonical_empty():
    assert pack_canonical([], []).shape == (0,)


# --- import hygiene -----------------------------------------------------------------------

def test_numpy_core_imports_without_tensorflow():
    """The numpy core (graphfix.cudnn: layout, gates, weights, reference) imports with TensorFlow made unimportable."""
    code = ("import sys; sys.modules['tensorflow'] = None; "
            "import graphfix.cudnn.layout, graphfix.cudnn.gates, graphfix.cudnn.weights, graphfix.cudnn.reference; "
            "assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    # the guard itself works: importing tensorflow in the same setting must fail
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['tensorflow'] = None; import tensorflow"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
