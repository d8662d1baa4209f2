"""Ask cuDNN's C API directly where each RNN weight sits and what it computes, on a GPU.

``scripts/cudnn_probe.py`` learns cuDNN's layout through PyTorch, which cannot make a
``CUDNN_SKIP_INPUT`` RNN. This script calls cuDNN itself (ctypes; PyTorch only allocates
GPU memory): ``cudnnSetRNNDescriptor_v8``, ``cudnnGetRNNWeightSpaceSize`` and, for every
pseudo-layer and linear layer, ``cudnnGetRNNWeightParams``, which returns each matrix's and
bias's address in the weight space (NULL where there is none) and its shape. Offsets are
recorded in elements from the start of the weight space. Then it fills the weight space
with random values and runs ``cudnnRNNForward`` (inference, time-major padded input,
sequence lengths [7, 3, 1, 5]) in float32 and float64, recording inputs and outputs.

    python3 scripts/cudnn_api_probe.py OUT_DIR     # writes cudnn_api_probe.json and .npz

Linear layer ids (cuDNN's ``cudnnGetRNNWeightParams`` docs): LSTM 0-3 input matrices
i, f, c, o, 4-7 recurrent, 8 the projection; GRU 0-2 input r, z, n, 3-5 recurrent; RNN 0
input, 1 recurrent. Biases follow the same ids (the projection has none).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import sys

import numpy as np
import torch

# (name, cuDNN cell mode, graphfix mode, layers, directions, input, units, proj, skip_input)
CONFIGS = [
    ("lstm_skip_1x1", 2, "lstm", 1, 1, 6, 6, 0, True),
    ("lstm_skip_2x2", 2, "lstm", 2, 2, 6, 6, 0, True),
    ("gru_skip_2x1", 3, "gru", 2, 1, 6, 6, 0, True),
    ("rnn_tanh_skip_1x2", 1, "rnn_tanh", 1, 2, 6, 6, 0, True),
    ("rnn_relu_skip_2x2", 0, "rnn_relu", 2, 2, 6, 6, 0, True),
    ("lstm_2x2", 2, "lstm", 2, 2, 5, 6, 0, False),
    ("lstm_proj_2x2", 2, "lstm", 2, 2, 5, 6, 4, False),
    ("gru_2x2", 3, "gru", 2, 2, 5, 6, 0, False),
]
LINEAR_LAYERS = {"lstm": 8, "gru": 6, "rnn_tanh": 2, "rnn_relu": 2}
FLOAT, DOUBLE, DOUBLE_BIAS, STANDARD_ALGO, DEFAULT_MATH, FMA_MATH, PADDED_IO = 0, 1, 2, 0, 0, 3, 1
SEQ_MAJOR_UNPACKED, FWD_INFERENCE = 0, 0
TIME_STEPS, BATCH, LENGTHS = 7, 4, [7, 3, 1, 5]
DTYPES = {"float32": (FLOAT, torch.float32, np.float32), "float64": (DOUBLE, torch.float64, np.float64)}


def load_cudnn() -> ctypes.CDLL:
    """The libcudnn PyTorch itself loaded (nvidia-cudnn's wheel), else the system's."""
    torch.backends.cudnn.version()  # makes PyTorch load it first
    candidates = []
    try:
        import nvidia.cudnn
        candidates += [os.path.join(p, "lib", "libcudnn.so.9") for p in nvidia.cudnn.__path__]
    except ImportError:
        pass
    for name in candidates + ["libcudnn.so.9", "libcudnn.so"]:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise SystemExit("cudnn_api_probe: libcudnn not found")


class Cudnn:
    def __init__(self):
        self.lib = load_cudnn()
        self.lib.cudnnGetErrorString.restype = ctypes.c_char_p
        self.handle = ctypes.c_void_p()
        self.check(self.lib.cudnnCreate(ctypes.byref(self.handle)), "cudnnCreate")

    def check(self, status: int, what: str):
        if status != 0:
            raise RuntimeError(f"{what}: {self.lib.cudnnGetErrorString(status).decode()} ({status})")

    def descriptor(self, kind: str) -> ctypes.c_void_p:
        desc = ctypes.c_void_p()
        self.check(getattr(self.lib, f"cudnnCreate{kind}Descriptor")(ctypes.byref(desc)), kind)
        return desc

    def rnn(self, cell, dirs, skip, inputs, units, proj, layers, data_type=FLOAT) -> ctypes.c_void_p:
        dropout = self.descriptor("Dropout")
        # No dropout: no states needed (as PyTorch's set_no_dropout does).
        self.check(self.lib.cudnnSetDropoutDescriptor(dropout, self.handle, ctypes.c_float(0.0), None,
                                                      ctypes.c_size_t(0), ctypes.c_ulonglong(0)),
                   "cudnnSetDropoutDescriptor")
        rnn = self.descriptor("RNN")
        self.check(self.lib.cudnnSetRNNDescriptor_v8(
            # FMA math: no TF32 tensor-core products, which DEFAULT_MATH allows on A100 and later.
            rnn, STANDARD_ALGO, cell, DOUBLE_BIAS, dirs - 1, 1 if skip else 0, data_type, data_type,
            FMA_MATH if data_type == FLOAT else DEFAULT_MATH, ctypes.c_int32(inputs), ctypes.c_int32(units),
            ctypes.c_int32(proj or units), ctypes.c_int32(layers), dropout, ctypes.c_uint32(PADDED_IO)),
            "cudnnSetRNNDescriptor_v8")
        return rnn

    def tensor(self, data_type, dims) -> ctypes.c_void_p:
        """A packed N-d tensor descriptor."""
        desc = self.descriptor("Tensor")
        strides = [int(np.prod(dims[i + 1:])) for i in range(len(dims))]
        self.check(self.lib.cudnnSetTensorNdDescriptor(desc, data_type, len(dims), (ctypes.c_int * 3)(*dims),
                                                       (ctypes.c_int * 3)(*strides)), "cudnnSetTensorNdDescriptor")
        return desc

    def rnn_data(self, data_type, width, fill) -> ctypes.c_void_p:
        """Time-major padded [T, B, width] with LENGTHS, padding written as `fill`."""
        desc = ctypes.c_void_p()
        self.check(self.lib.cudnnCreateRNNDataDescriptor(ctypes.byref(desc)), "cudnnCreateRNNDataDescriptor")
        self.check(self.lib.cudnnSetRNNDataDescriptor(
            desc, data_type, SEQ_MAJOR_UNPACKED, TIME_STEPS, BATCH, width,
            (ctypes.c_int * BATCH)(*LENGTHS), ctypes.byref(fill)), "cudnnSetRNNDataDescriptor")
        return desc

    def weight_space_size(self, rnn) -> int:
        size = ctypes.c_size_t()
        self.check(self.lib.cudnnGetRNNWeightSpaceSize(self.handle, rnn, ctypes.byref(size)),
                   "cudnnGetRNNWeightSpaceSize")
        return size.value

    def shape(self, desc) -> list[int]:
        dtype, nb = ctypes.c_int(), ctypes.c_int()
        dims, strides = (ctypes.c_int * 8)(), (ctypes.c_int * 8)()
        self.check(self.lib.cudnnGetTensorNdDescriptor(desc, 8, ctypes.byref(dtype), ctypes.byref(nb),
                                                       dims, strides), "cudnnGetTensorNdDescriptor")
        return list(dims[:nb.value])

    def weight_params(self, rnn, pseudo_layer, size, space, lin_id):
        m_desc, b_desc = self.descriptor("Tensor"), self.descriptor("Tensor")
        m_addr, b_addr = ctypes.c_void_p(), ctypes.c_void_p()
        status = self.lib.cudnnGetRNNWeightParams(
            self.handle, rnn, ctypes.c_int32(pseudo_layer), ctypes.c_size_t(size), ctypes.c_void_p(space),
            ctypes.c_int32(lin_id), m_desc, ctypes.byref(m_addr), b_desc, ctypes.byref(b_addr))
        if status != 0:  # what cuDNN says about this id is recorded: an absent matrix may be refused
            return {"status": self.lib.cudnnGetErrorString(status).decode()}
        out = {"status": "ok"}
        for kind, addr, desc in (("matrix", m_addr, m_desc), ("bias", b_addr, b_desc)):
            if addr.value:
                delta = addr.value - space
                assert delta % 4 == 0, (kind, delta)
                out[kind] = {"offset": delta // 4, "shape": self.shape(desc)}
            else:
                out[kind] = None
        return out


def forward(cudnn: Cudnn, config, dtype: str, rng, arrays: dict):
    """Random weight space and inputs through cudnnRNNForward; everything goes into `arrays`."""
    name, cell, mode, layers, dirs, inputs, units, proj, skip = config
    data_type, torch_dtype, np_dtype = DTYPES[dtype]
    rnn = cudnn.rnn(cell, dirs, skip, inputs, units, proj, layers, data_type)
    size = cudnn.weight_space_size(rnn)
    hidden, states = proj or units, layers * dirs
    values = {
        "buffer": rng.uniform(-0.6, 0.6, size // np.dtype(np_dtype).itemsize),
        "x": rng.uniform(-1, 1, (TIME_STEPS, BATCH, inputs)),
        "h0": rng.uniform(-0.5, 0.5, (states, BATCH, hidden)),
        "c0": rng.uniform(-0.5, 0.5, (states, BATCH, units)),
    }
    gpu = {k: torch.from_numpy(v.astype(np_dtype)).cuda() for k, v in values.items()}
    y = torch.zeros((TIME_STEPS, BATCH, dirs * hidden), dtype=torch_dtype, device="cuda")
    h_n = torch.zeros((states, BATCH, hidden), dtype=torch_dtype, device="cuda")
    c_n = torch.zeros((states, BATCH, units), dtype=torch_dtype, device="cuda")
    fill = (ctypes.c_float if dtype == "float32" else ctypes.c_double)(0.0)
    x_desc = cudnn.rnn_data(data_type, inputs, fill)
    y_desc = cudnn.rnn_data(data_type, dirs * hidden, fill)
    h_desc = cudnn.tensor(data_type, [states, BATCH, hidden])
    c_desc = cudnn.tensor(data_type, [states, BATCH, units])
    work, reserve = ctypes.c_size_t(), ctypes.c_size_t()
    cudnn.check(cudnn.lib.cudnnGetRNNTempSpaceSizes(cudnn.handle, rnn, FWD_INFERENCE, x_desc, ctypes.byref(work),
                                                    ctypes.byref(reserve)), "cudnnGetRNNTempSpaceSizes")
    workspace = torch.empty(max(work.value, 1), dtype=torch.uint8, device="cuda")
    lengths = torch.tensor(LENGTHS, dtype=torch.int32, device="cuda")
    ptr = lambda t: ctypes.c_void_p(t.data_ptr())
    cudnn.check(cudnn.lib.cudnnRNNForward(
        cudnn.handle, rnn, FWD_INFERENCE, ptr(lengths), x_desc, ptr(gpu["x"]), y_desc, ptr(y),
        h_desc, ptr(gpu["h0"]), ptr(h_n), c_desc, ptr(gpu["c0"]), ptr(c_n),
        ctypes.c_size_t(size), ptr(gpu["buffer"]), ctypes.c_size_t(work.value), ptr(workspace),
        ctypes.c_size_t(0), None), "cudnnRNNForward")
    torch.cuda.synchronize()
    key = f"{name}/{dtype}"
    for k, v in values.items():
        if k != "c0" or mode == "lstm":
            arrays[f"{key}/{k}"] = v.astype(np_dtype)
    arrays[f"{key}/y"], arrays[f"{key}/h_n"] = y.cpu().numpy(), h_n.cpu().numpy()
    if mode == "lstm":
        arrays[f"{key}/c_n"] = c_n.cpu().numpy()


def probe(cudnn: Cudnn, config) -> dict:
    name, cell, mode, layers, dirs, inputs, units, proj, skip = config
    rnn = cudnn.rnn(cell, dirs, skip, inputs, units, proj, layers)
    size = cudnn.weight_space_size(rnn)
    space = torch.empty(size, dtype=torch.uint8, device="cuda")
    entries = []
    for pseudo_layer in range(layers * dirs):
        for lin_id in range(LINEAR_LAYERS[mode] + (1 if proj else 0)):
            entries.append({"pseudo_layer": pseudo_layer, "lin_id": lin_id,
                            **cudnn.weight_params(rnn, pseudo_layer, size, space.data_ptr(), lin_id)})
    return {"name": name, "mode": mode, "num_layers": layers, "num_dirs": dirs, "input_size": inputs,
            "num_units": units, "num_proj": proj, "input_mode": "skip_input" if skip else "linear_input",
            "weight_space_elements": size // 4, "entries": entries}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=pathlib.Path, help="folder for cudnn_api_probe.json and .npz")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("cudnn_api_probe: needs a CUDA GPU", file=sys.stderr)
        return 2
    cudnn = Cudnn()
    rng = np.random.default_rng(20261201)
    configs, failures, arrays = [], [], {}
    for config in CONFIGS:
        try:
            record = probe(cudnn, config)
            print(f"{config[0]}: weight space {record['weight_space_elements']} elements", flush=True)
        except Exception as error:  # recorded in the JSON, not hidden
            failures.append({"name": config[0], "error": repr(error)})
            print(f"{config[0]}: FAILED {error!r}", flush=True)
            continue
        configs.append(record)
        record["forward"] = []
        for dtype in DTYPES:
            try:
                forward(cudnn, config, dtype, rng, arrays)
                record["forward"].append(dtype)
            except Exception as error:
                failures.append({"name": config[0], "dtype": dtype, "error": repr(error)})
                print(f"{config[0]} {dtype} forward: FAILED {error!r}", flush=True)
    version = cudnn.lib.cudnnGetVersion
    version.restype = ctypes.c_size_t
    meta = {"cudnn": version(), "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
            "offsets_dtype": "float32", "time_steps": TIME_STEPS, "batch": BATCH, "lengths": LENGTHS,
            "configs": configs, "failures": failures}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "cudnn_api_probe.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(args.out_dir / "cudnn_api_probe.npz", **arrays)
    print(f"cuDNN {meta['cudnn']}: {len(configs)} configurations recorded, {len(failures)} failed")
    return 0 if configs else 1


if __name__ == "__main__":
    sys.exit(main())
