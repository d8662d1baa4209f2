"""Record cuDNN's own RNN weight layout and outputs on a GPU, as test data for graphfix.

Runs with PyTorch on a CUDA machine (no TensorFlow needed there). For each configuration
it builds ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` on the GPU, calls ``flatten_parameters()``
so that every weight is a view into the one weight space cuDNN reads, and records:

- where each weight sits in that buffer (its ``data_ptr`` minus the buffer's, in
  elements). PyTorch finds these places by asking cuDNN (``cudnnGetRNNWeightParams``),
  so they are cuDNN's layout, not PyTorch's;
- the whole buffer, filled with random values, and the inputs, outputs and final states
  of cuDNN's forward pass over it (full length, and for some configurations packed
  sequences of different lengths).

graphfix's tests (``tests/cudnn/test_cudnn_ground_truth.py``) then check, without a GPU,
that graphfix's layout gives the same offsets and that converting a CudnnRNNV3 op holding
the recorded buffer gives cuDNN's numbers.

    python3 scripts/cudnn_probe.py OUT_DIR      # writes cudnn_probe.npz and cudnn_probe.json

TF32 is switched off so that float32 products are exact enough to compare at 1e-5. On a
machine without CUDA it refuses (exit 2): offsets are only meaningful in cuDNN's buffer.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import torch

# (name, module class, mode as graphfix names it, layers, bidirectional, input, units, proj,
#  also run packed sequences of different lengths)
CONFIGS = [
    ("lstm_1x1", "LSTM", "lstm", 1, False, 5, 6, 0, False),
    ("lstm_2x1", "LSTM", "lstm", 2, False, 5, 6, 0, True),
    ("lstm_1x2", "LSTM", "lstm", 1, True, 5, 6, 0, True),
    ("lstm_2x2", "LSTM", "lstm", 2, True, 5, 6, 0, True),
    ("lstm_3x2", "LSTM", "lstm", 3, True, 3, 4, 0, False),
    ("lstm_proj_1x1", "LSTM", "lstm", 1, False, 5, 6, 4, True),
    ("lstm_proj_2x2", "LSTM", "lstm", 2, True, 5, 6, 4, True),
    ("gru_1x1", "GRU", "gru", 1, False, 5, 6, 0, False),
    ("gru_2x1", "GRU", "gru", 2, False, 5, 6, 0, True),
    ("gru_2x2", "GRU", "gru", 2, True, 5, 6, 0, True),
    ("rnn_tanh_2x2", "RNN", "rnn_tanh", 2, True, 5, 6, 0, True),
    ("rnn_relu_2x1", "RNN", "rnn_relu", 2, False, 5, 6, 0, False),
]
TIME_STEPS, BATCH = 7, 4
DEVICE = "cuda"
LENGTHS = [7, 3, 1, 5]  # packed runs: one full, one of length 1, unsorted


def build(cls: str, mode: str, layers: int, bidirectional: bool, inputs: int, units: int,
          proj: int, dtype) -> torch.nn.Module:
    kwargs = dict(input_size=inputs, hidden_size=units, num_layers=layers,
                  bidirectional=bidirectional)
    if cls == "LSTM" and proj:
        kwargs["proj_size"] = proj
    if cls == "RNN":
        kwargs["nonlinearity"] = mode.split("_")[1]
    module = getattr(torch.nn, cls)(**kwargs).to(device=DEVICE, dtype=dtype)
    module.flatten_parameters()
    return module


def weight_space(module: torch.nn.Module) -> torch.Tensor:
    """The one flat buffer every parameter views, as a 1-D tensor over its whole storage."""
    params = list(module.parameters())
    storage = params[0].untyped_storage()
    if any(p.untyped_storage().data_ptr() != storage.data_ptr() for p in params):
        raise SystemExit("parameters do not share one buffer: flatten_parameters() did not "
                         "give cuDNN's weight space")
    numel = storage.nbytes() // params[0].element_size()
    return torch.empty(0, device=DEVICE, dtype=params[0].dtype).set_(storage, 0, (numel,), (1,))


def offsets(module: torch.nn.Module, buffer: torch.Tensor) -> dict:
    """name -> {offset (elements), shape} for every parameter, from data pointers."""
    base = buffer.data_ptr()
    out = {}
    for name, p in module.named_parameters():
        delta = p.data_ptr() - base
        assert delta % p.element_size() == 0, name
        assert p.is_contiguous(), name
        out[name] = {"offset": delta // p.element_size(), "shape": list(p.shape)}
    return out


def run(module, x, h0, c0, lengths=None):
    """cuDNN forward; returns numpy (y [T, B, D*Hh], h_n, c_n or None)."""
    state = (h0, c0) if c0 is not None else h0
    with torch.no_grad():
        if lengths is None:
            y, final = module(x, state)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(
                x, torch.tensor(lengths), enforce_sorted=False)
            y_packed, final = module(packed, state)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y_packed, total_length=x.shape[0])
    h_n, c_n = final if isinstance(final, tuple) else (final, None)
    to_np = lambda t: None if t is None else t.detach().cpu().numpy()
    return to_np(y), to_np(h_n), to_np(c_n)


def probe(config, dtype, rng, arrays: dict) -> dict:
    name, cls, mode, layers, bidirectional, inputs, units, proj, packed = config
    module = build(cls, mode, layers, bidirectional, inputs, units, proj, dtype)
    buffer = weight_space(module)
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    values = rng.uniform(-0.6, 0.6, buffer.numel()).astype(np_dtype)
    buffer.copy_(torch.from_numpy(values))
    # Writing through the buffer must reach the parameters: they are views of it.
    first_name, first = next(iter(module.named_parameters()))
    assert torch.equal(first.detach().reshape(-1)[:1].cpu(),
                       torch.from_numpy(values[offsets(module, buffer)[first_name]["offset"]:][:1]))
    dirs = 2 if bidirectional else 1
    hidden = proj or units
    key = f"{name}/{np_dtype.__name__}"
    x = rng.uniform(-1, 1, (TIME_STEPS, BATCH, inputs)).astype(np_dtype)
    h0 = rng.uniform(-0.5, 0.5, (layers * dirs, BATCH, hidden)).astype(np_dtype)
    c0 = rng.uniform(-0.5, 0.5, (layers * dirs, BATCH, units)).astype(np_dtype) if cls == "LSTM" else None
    as_torch = lambda a: None if a is None else torch.from_numpy(a).to(DEVICE)
    arrays[f"{key}/buffer"] = values
    arrays[f"{key}/x"], arrays[f"{key}/h0"] = x, h0
    if c0 is not None:
        arrays[f"{key}/c0"] = c0
    runs = [("full", None)] + ([("packed", LENGTHS)] if packed else [])
    kernels = set()
    for run_name, lengths in runs:
        # The GPU kernels each run launched, so the JSON shows that cuDNN computed it.
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            y, h_n, c_n = run(module, as_torch(x), as_torch(h0), as_torch(c0), lengths)
            torch.cuda.synchronize()
        kernels.update(e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
        arrays[f"{key}/{run_name}/y"], arrays[f"{key}/{run_name}/h_n"] = y, h_n
        if c_n is not None:
            arrays[f"{key}/{run_name}/c_n"] = c_n
    return {
        "name": name, "dtype": np_dtype.__name__, "mode": mode, "num_layers": layers,
        "num_dirs": dirs, "input_size": inputs, "num_units": units, "num_proj": proj,
        "buffer_size": buffer.numel(), "runs": [r for r, _ in runs],
        "lengths": LENGTHS if packed else None, "params": offsets(module, buffer),
        "kernels": sorted(kernels)[:40],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="folder for cudnn_probe.npz/.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or not torch.backends.cudnn.is_available():
        print("cudnn_probe: needs PyTorch with CUDA and cuDNN (offsets are only meaningful in "
              "cuDNN's buffer)", file=sys.stderr)
        return 2
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rng = np.random.default_rng(20261201)
    arrays, configs, failures = {}, [], []
    for dtype in (torch.float32, torch.float64):
        for config in CONFIGS:
            try:
                configs.append(probe(config, dtype, rng, arrays))
                print(f"{config[0]} {dtype}: buffer {configs[-1]['buffer_size']}", flush=True)
            except Exception as error:  # recorded, not hidden: the JSON lists every failure
                failures.append({"name": config[0], "dtype": str(dtype), "error": repr(error)})
                print(f"{config[0]} {dtype}: FAILED {error!r}", flush=True)
    meta = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "device": torch.cuda.get_device_name(0),
        "time_steps": TIME_STEPS, "batch": BATCH, "tf32": False,
        "configs": configs, "failures": failures,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out_dir / "cudnn_probe.npz", **arrays)
    (args.out_dir / "cudnn_probe.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: meta[k] for k in ("torch", "cuda", "cudnn", "device")}))
    print(f"{len(configs)} configurations recorded, {len(failures)} failed")
    return 0 if configs else 1


if __name__ == "__main__":
    sys.exit(main())
