"""graphfix's layout and conversion against cuDNN itself, recorded on a GPU.

The data (tests/cudnn/data/cudnn_probe.{json,npz}) was written by ``scripts/cudnn_probe.py``
on an NVIDIA H200 (cuDNN 9.19, PyTorch 2.11, CUDA 13.0, TF32 off). For each configuration
PyTorch built the RNN on the GPU with ``flatten_parameters()``, so each weight is a view
into the one weight space cuDNN reads at the place cuDNN gave for it
(``cudnnGetRNNWeightParams``); the JSON records those places, the npz the whole buffer
filled with random values and cuDNN's outputs over it.

    cuDNN's offsets (JSON) ------------------------> == layout.pieces(spec) offsets
    buffer (npz) --> layout.unpack --> reference ---> == cuDNN's y, h_n, c_n (npz)
    buffer (npz) --> CudnnRNNV3 graph --> graphfix (CPU target) --> TF CPU --> == cuDNN's
    buffer (npz) --> CudnnRNNV3 graph --> graphfix --target onnx --> onnxruntime --> == cuDNN's

Configurations: LSTM 1-3 layers, uni- and bidirectional, with projection (proj_size), GRU
1-2 layers uni/bi, tanh and ReLU RNNs; float32 and float64; full-length runs and packed
runs of lengths [7, 3, 1, 5] (cuDNN's padded output: zeros past each length).

PyTorch names per pseudo-layer ``l{layer}`` (``_reverse`` for the backward direction):
weight_ih [G*H, in], weight_hh [G*H, Hh], bias_ih [G*H], bias_hh [G*H], weight_hr [Hh, H],
gates in cuDNN's order (LSTM i, f, c, o; GRU r, z, n) and contiguous (PyTorch checks this
when it flattens).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from graphfix.cudnn import layout, reference

DATA = pathlib.Path(__file__).parent / "data"
META = json.loads((DATA / "cudnn_probe.json").read_text())
ARRAYS = np.load(DATA / "cudnn_probe.npz")
CONFIGS = {f"{c['name']}/{c['dtype']}": c for c in META["configs"]}
# cuDNN's float32 full-length runs used its persistent kernels (RNN_blockPersist_fp_*), which
# differ from float64 math by up to 1.5e-5 (tanh RNN; LSTM/GRU 3.5e-6 to 6e-6); its packed runs
# (elemWiseRNNcell) by 3e-7. float64: 6e-16 at most. Absolute, outputs of magnitude <= 1.
TOL = {"float32": 3e-5, "float64": 1e-12}
RUNS = [(key, run) for key, c in CONFIGS.items() for run in c["runs"]]


def spec_of(config) -> layout.RnnSpec:
    return layout.RnnSpec(config["mode"], config["num_layers"], config["num_units"],
                          config["input_size"], config["num_dirs"], num_proj=config["num_proj"])


def cudnn_offset(config, piece: layout.Piece) -> int:
    """Where cuDNN put `piece`, from the recorded place of the PyTorch tensor holding it."""
    suffix = f"_l{piece.layer}" + ("_reverse" if piece.direction else "")
    name = {"W": "weight_ih", "R": "weight_hh", "P": "weight_hr", "bW": "bias_ih", "bR": "bias_hh"}[piece.kind]
    param = config["params"][name + suffix]
    # A gate's block inside the stacked tensor: gate g starts g blocks of its size in.
    return param["offset"] + piece.gate * piece.size


def values(key: str) -> dict:
    return {name: ARRAYS[f"{key}/{name}"] for name in ("buffer", "x", "h0", "c0")
            if f"{key}/{name}" in ARRAYS}


def expected(key: str, run: str):
    """cuDNN's (y, h_n, c_n or None) for one recorded run."""
    out = [ARRAYS[f"{key}/{run}/{name}"] for name in ("y", "h_n")]
    return out + [ARRAYS[f"{key}/{run}/c_n"] if f"{key}/{run}/c_n" in ARRAYS else None]


def lengths_of(key: str, run: str) -> np.ndarray:
    config = CONFIGS[key]
    steps, batch = META["time_steps"], META["batch"]
    return np.array(config["lengths"] if run == "packed" else [steps] * batch, np.int32)


def test_the_probe_ran_on_cudnn():
    """Each configuration's GPU kernels include one of cuDNN's RNN kernels; nothing failed."""
    assert META["failures"] == []
    assert META["cudnn"] >= 8000 and META["tf32"] is False
    assert {c["dtype"] for c in CONFIGS.values()} == {"float32", "float64"}
    for key, config in CONFIGS.items():
        assert any("RNN" in k for k in config["kernels"]), (key, config["kernels"])


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_every_piece_sits_where_cudnn_put_it(key):
    config = CONFIGS[key]
    spec = spec_of(config)
    assert layout.params_size(spec) == config["buffer_size"]
    ps = layout.pieces(spec)
    for piece in ps:
        assert piece.offset == cudnn_offset(config, piece), piece
    # cuDNN's tensors tile the buffer (no gap, no overlap), and the pieces tile the same
    # elements: every one of cuDNN's weights is a piece of graphfix's.
    def tiles(spans):
        return all(b == c for (_, b), (c, _) in zip(spans, spans[1:])) and spans[0][0] == 0
    cudnn = sorted((v["offset"], v["offset"] + int(np.prod(v["shape"]))) for v in config["params"].values())
    assert tiles(cudnn) and cudnn[-1][1] == config["buffer_size"]
    assert tiles(sorted((p.offset, p.offset + p.size) for p in ps))


@pytest.mark.parametrize("key,run", RUNS, ids=[f"{k}-{r}" for k, r in RUNS])
def test_reference_on_the_unpacked_buffer_gives_cudnns_numbers(key, run):
    config = CONFIGS[key]
    spec = spec_of(config)
    v = values(key)
    weights = layout.unpack(v["buffer"].astype(np.float64), spec)
    got = reference.forward(spec, weights, v["x"], v["h0"], v.get("c0"), lengths_of(key, run))
    for name, g, e in zip(("y", "h_n", "c_n"), got, expected(key, run)):
        if e is None:
            continue
        assert g.shape == e.shape, name
        assert float(np.max(np.abs(g - e))) <= TOL[config["dtype"]], name


@pytest.mark.parametrize("key,run", RUNS, ids=[f"{k}-{r}" for k, r in RUNS])
def test_converted_cudnn_rnn_v3_gives_cudnns_numbers(key, run):
    """The recorded buffer as a CudnnRNNV3 op's constant params, converted, run by TF on CPU."""
    import graphfix
    from builders.raw_graphs import build, run_graph_def
    from graphfix.graph.bodies import find_cudnn_nodes

    config = CONFIGS[key]
    case = build(spec_of(config), values=values(key), lengths=lengths_of(key, run))
    converted, _ = graphfix.convert_graph_def(case.graph_def)
    assert find_cudnn_nodes(converted) == []
    got = run_graph_def(converted, case.feeds, case.fetches)
    for name, g, e in zip(("y", "h_n", "c_n"), got, expected(key, run)):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        assert float(np.max(np.abs(g.astype(np.float64) - e))) <= TOL[config["dtype"]], name


ONNX_RUNS = [(k, r) for k, r in RUNS if CONFIGS[k]["dtype"] == "float32" and not CONFIGS[k]["num_proj"]]


@pytest.mark.parametrize("key,run", ONNX_RUNS, ids=[f"{k}-{r}" for k, r in ONNX_RUNS])
def test_onnx_target_gives_cudnns_numbers(key, run, tmp_path):
    """--target onnx writes the same buffer into ONNX's gate orders; onnxruntime must agree.

    float32 without projection only: the ONNX target refuses float64 and num_proj.
    """
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install \"graphfix[onnx]\"")
    import onnx
    import onnxruntime as ort
    from builders.raw_graphs import build
    from graphfix.targets import onnx as onnx_target
    from graphfix.targets.onnx import plan

    config = CONFIGS[key]
    case = build(spec_of(config), values=values(key), lengths=lengths_of(key, run))
    src = tmp_path / "g.pb"
    src.write_bytes(case.graph_def.SerializeToString())
    onnx_target.convert_to_onnx(src, tmp_path / "m.onnx")
    model = onnx.load(str(tmp_path / "m.onnx"))
    assert plan.ONNX_OP[config["mode"]] in {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {k.split(":")[0]: v for k, v in case.feeds.items()})))
    for fetch, e in zip(case.fetches, expected(key, run)):
        g = got[fetch.removesuffix(":0")]
        assert g.shape == e.shape, fetch
        assert float(np.max(np.abs(g.astype(np.float64) - e))) <= TOL["float32"], fetch
