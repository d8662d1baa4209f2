"""graphfix's layout and conversion against cuDNN itself, recorded on a GPU.

Two recordings, both on an NVIDIA H200 with cuDNN 9.19 (CUDA 13.0, PyTorch 2.11), no TF32:

- ``data/cudnn_probe.{json,npz}`` from ``scripts/cudnn_probe.py``: PyTorch built each RNN
  on the GPU with ``flatten_parameters()``, so each weight is a view into the one weight
  space cuDNN reads, at the place cuDNN gave for it. The JSON holds those places, the npz
  the buffer filled with random values and cuDNN's outputs over it. LSTM 1-3 layers, uni-
  and bidirectional, with projection (proj_size), GRU 1-2 layers uni/bi, tanh and ReLU
  RNNs; float32 and float64; full-length runs and packed runs of lengths [7, 3, 1, 5].
- ``data/cudnn_api_probe.{json,npz}`` from ``scripts/cudnn_api_probe.py``: cuDNN's C API
  called directly (``cudnnGetRNNWeightParams``, ``cudnnRNNForward``), which reaches what
  PyTorch cannot: ``CUDNN_SKIP_INPUT`` (LSTM, GRU, tanh and ReLU RNNs, 1-2 layers, uni/bi),
  plus three linear-input configurations as a second, independent reading. Padded
  time-major input of lengths [7, 3, 1, 5], float32 and float64.

    cuDNN's offsets (both JSONs) -------------------> == layout.pieces(spec) offsets (and shapes)
    buffer --> layout.unpack --> reference.forward --> == cuDNN's y, h_n, c_n
    buffer --> CudnnRNNV3 graph --> graphfix (CPU target) --> TensorFlow on CPU --> == cuDNN's
    buffer --> CudnnRNNV3 graph --> graphfix --target onnx --> onnxruntime -------> == cuDNN's

PyTorch names per pseudo-layer ``l{layer}`` (``_reverse`` for the backward direction):
weight_ih [G*H, in], weight_hh [G*H, Hh], bias_ih [G*H], bias_hh [G*H], weight_hr [Hh, H],
gates in cuDNN's order (LSTM i, f, c, o; GRU r, z, n), contiguous (PyTorch checks this when
it flattens). cuDNN's linear layer ids: the input matrices' gates, then the recurrent ones',
then (LSTM with projection) the projection; biases under the same ids.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from builders.raw_graphs import build, run_graph_def

import graphfix
from graphfix.cudnn import layout, reference
from graphfix.graph.bodies import find_cudnn_nodes

DATA = pathlib.Path(__file__).parent / "data"
PROBE = json.loads((DATA / "cudnn_probe.json").read_text())
PROBE_ARRAYS = np.load(DATA / "cudnn_probe.npz")
API = json.loads((DATA / "cudnn_api_probe.json").read_text())
API_ARRAYS = np.load(DATA / "cudnn_api_probe.npz")
PROBE_CONFIGS = {f"{c['name']}/{c['dtype']}": c for c in PROBE["configs"]}
# cuDNN's float32 full-length runs in cudnn_probe used its persistent kernels
# (RNN_blockPersist_fp_*, chosen under PyTorch's default math), which differ from float64 math
# by up to 1.5e-5 (tanh RNN; LSTM/GRU 3.5e-6 to 6e-6); its packed runs (elemWiseRNNcell) and
# every cudnn_api_probe run (FMA math) by 3e-7. float64: 9e-16 at most. Absolute; outputs
# are of magnitude <= 1 (ReLU RNNs: up to 4.5).
TOL = {"float32": 3e-5, "float64": 1e-12}


def _recordings() -> dict:
    """id -> (spec, arrays {buffer, x, h0[, c0]}, lengths [B], expected (y, h_n, c_n | None), dtype)."""
    out = {}

    def add(name, spec, arrays, prefix, run_prefix, lengths, dtype):
        values = {k: arrays[f"{prefix}/{k}"] for k in ("buffer", "x", "h0", "c0") if f"{prefix}/{k}" in arrays}
        expected = [arrays[f"{run_prefix}/{k}"] if f"{run_prefix}/{k}" in arrays else None
                    for k in ("y", "h_n", "c_n")]
        out[name] = (spec, values, np.array(lengths, np.int32), expected, dtype)

    for key, c in PROBE_CONFIGS.items():
        spec = layout.RnnSpec(c["mode"], c["num_layers"], c["num_units"], c["input_size"], c["num_dirs"],
                              num_proj=c["num_proj"])
        for run in c["runs"]:
            lengths = c["lengths"] if run == "packed" else [PROBE["time_steps"]] * PROBE["batch"]
            add(f"torch-{key}-{run}", spec, PROBE_ARRAYS, key, f"{key}/{run}", lengths, c["dtype"])
    for c in API["configs"]:
        for dtype in c["forward"]:
            key = f"{c['name']}/{dtype}"
            add(f"capi-{key}", api_spec(c), API_ARRAYS, key, key, API["lengths"], dtype)
    return out


def api_spec(c) -> layout.RnnSpec:
    return layout.RnnSpec(c["mode"], c["num_layers"], c["num_units"], c["input_size"], c["num_dirs"],
                          c["input_mode"], c["num_proj"])


RECORDINGS = _recordings()


def assert_cudnns_numbers(got, recording):
    _, _, _, expected, dtype = recording
    for name, g, e in zip(("y", "h_n", "c_n"), got, expected):
        if e is None:  # c_n of a GRU or RNN
            continue
        assert g.shape == e.shape, name
        assert float(np.max(np.abs(np.asarray(g, np.float64) - e))) <= TOL[dtype], name


def test_the_recordings_ran_on_cudnn():
    """Nothing failed; every PyTorch configuration launched one of cuDNN's RNN kernels."""
    assert PROBE["failures"] == [] and API["failures"] == []
    assert PROBE["cudnn"] >= 8000 and API["cudnn"] >= 8000 and PROBE["tf32"] is False
    assert {c["dtype"] for c in PROBE_CONFIGS.values()} == {"float32", "float64"}
    assert all(c["forward"] == ["float32", "float64"] for c in API["configs"])
    assert {c["input_mode"] for c in API["configs"]} == {"skip_input", "linear_input"}
    for key, config in PROBE_CONFIGS.items():
        assert any("RNN" in k for k in config["kernels"]), (key, config["kernels"])
    assert len(RECORDINGS) == 56


def torch_offset(config, piece: layout.Piece) -> int:
    """Where cuDNN put `piece`, from the recorded place of the PyTorch tensor holding it."""
    suffix = f"_l{piece.layer}" + ("_reverse" if piece.direction else "")
    name = {"W": "weight_ih", "R": "weight_hh", "P": "weight_hr", "bW": "bias_ih", "bR": "bias_hh"}[piece.kind]
    # A gate's block inside the stacked tensor: gate g starts g blocks of its size in.
    return config["params"][name + suffix]["offset"] + piece.gate * piece.size


@pytest.mark.parametrize("key", sorted(PROBE_CONFIGS))
def test_every_piece_sits_where_cudnn_put_it(key):
    config = PROBE_CONFIGS[key]
    spec = RECORDINGS[f"torch-{key}-full"][0]
    assert layout.params_size(spec) == config["buffer_size"]
    ps = layout.pieces(spec)
    for piece in ps:
        assert piece.offset == torch_offset(config, piece), piece

    # cuDNN's tensors tile the buffer (no gap, no overlap), and so do the pieces: every one
    # of cuDNN's weights is a piece of graphfix's.
    def tiles(spans):
        return spans[0][0] == 0 and all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))
    cudnn = sorted((v["offset"], v["offset"] + int(np.prod(v["shape"]))) for v in config["params"].values())
    assert tiles(cudnn) and cudnn[-1][1] == config["buffer_size"]
    assert tiles(sorted((p.offset, p.offset + p.size) for p in ps))


@pytest.mark.parametrize("config", API["configs"], ids=lambda c: c["name"])
def test_cudnn_api_places_match_the_layout(config):
    spec = api_spec(config)
    assert layout.params_size(spec) == config["weight_space_elements"]
    by_key = {(p.kind, p.layer, p.direction, p.gate): p for p in layout.pieces(spec)}
    G = spec.gates
    assert len(config["entries"]) == spec.num_layers * spec.num_dirs * (2 * G + (1 if spec.num_proj else 0))
    for entry in config["entries"]:
        assert entry["status"] == "ok", entry
        layer, direction = divmod(entry["pseudo_layer"], spec.num_dirs)
        lin = entry["lin_id"]
        gate = lin % G if lin < 2 * G else 0
        matrix_kind, bias_kind = ("W", "bW") if lin < G else ("R", "bR") if lin < 2 * G else ("P", None)
        for kind, found in ((matrix_kind, entry["matrix"]), (bias_kind, entry["bias"])):
            piece = by_key.pop((kind, layer, direction, gate), None)
            if found is None:  # skip_input's layer-0 input matrices; the projection's bias
                assert piece is None, (entry, piece)
                continue
            assert piece is not None, entry
            # cuDNN describes a matrix as [1, rows, columns] and a bias as [1, H, 1].
            shape = tuple(found["shape"][1:] if kind in ("W", "R", "P") else found["shape"][1:2])
            assert (piece.offset, piece.shape) == (found["offset"], shape), (entry, piece)
    assert by_key == {}  # no piece of graphfix's that cuDNN does not have


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_reference_on_the_unpacked_buffer_gives_cudnns_numbers(name):
    spec, v, lengths, _, _ = RECORDINGS[name]
    weights = layout.unpack(v["buffer"].astype(np.float64), spec)
    assert_cudnns_numbers(reference.forward(spec, weights, v["x"], v["h0"], v.get("c0"), lengths),
                          RECORDINGS[name])


@pytest.mark.parametrize("name", sorted(RECORDINGS))
def test_converted_cudnn_rnn_v3_gives_cudnns_numbers(name):
    """The recorded buffer as a CudnnRNNV3 op's constant params, converted, run by TF on CPU."""
    spec, v, lengths, expected, _ = RECORDINGS[name]
    case = build(spec, values=v, lengths=lengths)
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    got = run_graph_def(converted, case.feeds, case.fetches)
    assert [g.dtype for g in got] == [v["x"].dtype] * len(got)
    assert_cudnns_numbers(got, RECORDINGS[name])


ONNX_RECORDINGS = sorted(n for n, r in RECORDINGS.items() if r[4] == "float32" and not r[0].num_proj)


@pytest.mark.parametrize("name", ONNX_RECORDINGS)
def test_onnx_target_gives_cudnns_numbers(name, tmp_path):
    """--target onnx writes the buffer in ONNX's gate orders; onnxruntime must give cuDNN's numbers.

    float32 without projection only: the ONNX target refuses float64 and num_proj.
    """
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install \"graphfix[onnx]\"")
    import onnx
    import onnxruntime as ort
    from graphfix.targets import onnx as onnx_target
    from graphfix.targets.onnx import plan

    spec, v, lengths, _, _ = RECORDINGS[name]
    case = build(spec, values=v, lengths=lengths)
    src = tmp_path / "g.pb"
    src.write_bytes(case.graph_def.SerializeToString())
    onnx_target.convert_to_onnx(src, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert plan.ONNX_OP[spec.mode] in {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {k.split(":")[0]: a for k, a in case.feeds.items()})))
    assert_cudnns_numbers([outputs[f.removesuffix(":0")] for f in case.fetches], RECORDINGS[name])
