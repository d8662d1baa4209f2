"""The weights of every cuDNN op in Keras's layout: `python -m graphfix extract MODEL -o weights.npz`.

With them a user can rebuild the model from CPU layers (`keras.layers.LSTM`, `GRU`,
`SimpleRNN`, `Bidirectional`) and `set_weights`. Per op and pseudo-layer (layer l,
direction fw/bw), under ``{op}/layer{l}/{fw|bw}/``::

    lstm   kernel [in, 4H]  recurrent_kernel [Hh, 4H]  bias [4H] = bW + bR   gates i, f, c, o
           projection [H, Hh] with num_proj (Keras has no projected LSTM: apply h @ projection)
    gru    kernel [in, 3H]  recurrent_kernel [H, 3H]   bias [2, 3H] = [bW; bR]
           gates z, r, n: Keras GRU(reset_after=True) order; cuDNN's is r, z, n, so r and z swap
    rnn_*  kernel [in, H]   recurrent_kernel [H, H]    bias [H] = bW + bR     (SimpleRNN)

`in` is the input size for layer 0 and D*Hh above (the concatenated fw/bw outputs, as
Keras's Bidirectional with merge_mode="concat" gives). A skip_input layer 0 has no input
weights in cuDNN (the input enters every gate as itself); its kernel is written as
identity blocks, which computes the same. Params are read in the model's gate order
(`graphfix.cudnn.gates`), so the output is always in Keras's order.

``__manifest__`` holds a JSON string describing every op (configuration, keys, notes):
``json.loads(str(np.load(path)["__manifest__"]))``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from graphfix.cudnn import gates, layout
from graphfix.errors import UnsupportedError
from graphfix.io import keras_h5, output_paths
from graphfix.report import plural
from graphfix.tools.inspect import FoundOp, Survey, inspect_model
from graphfix.tools.keras_file import KerasExtraction, extract_keras
from graphfix.version import __version__

MANIFEST = "__manifest__"
KERAS_GRU_ORDER = (1, 0, 2)  # Keras z, r, n taken from cuDNN r, z, n
KERAS_LAYER = {"lstm": "LSTM", "gru": "GRU(reset_after=True)", "rnn_tanh": "SimpleRNN(activation='tanh')",
               "rnn_relu": "SimpleRNN(activation='relu')"}


@dataclasses.dataclass
class ExtractedOp:
    """One op's weights: arrays keyed `{key}/layer{l}/{fw|bw}/{name}`, and its description."""

    key: str
    found: FoundOp
    arrays: dict[str, np.ndarray]
    notes: list[str]

    def manifest(self) -> dict:
        fop = self.found.forward
        spec = fop.spec
        return {"key": self.key, "where": self.found.where, "node": self.found.node, "op": self.found.op,
                "keras_layer": KERAS_LAYER[spec.mode], "mode": spec.mode, "num_layers": spec.num_layers,
                "bidirectional": spec.num_dirs == 2, "input_size": spec.input_size, "units": spec.num_units,
                "num_proj": spec.num_proj, "input_mode": spec.input_mode, "dtype": fop.dtype.name,
                "time_major": fop.time_major, "gate_order": fop.gate_order if gates.applies(spec, fop.gate_order)
                else gates.CUDNN, "params": self.found.params_source, "arrays": sorted(self.arrays),
                "notes": self.notes}


@dataclasses.dataclass
class Extraction:
    """All ops' weights, and the ops left out (unreachable, with params unknown) with why."""

    source: str
    ops: list[ExtractedOp]
    skipped: list[str]
    output: str | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for op in self.ops:
            out.update(op.arrays)
        out[MANIFEST] = np.array(json.dumps(
            {"graphfix": __version__, "source": self.source, "ops": [op.manifest() for op in self.ops],
             "skipped": self.skipped}, indent=1))
        return out

    def lines(self) -> list[str]:
        out = [f"extracted the weights of {plural(len(self.ops), 'cuDNN op')} from {self.source}"]
        for op in self.ops:
            spec = op.found.forward.spec
            out.append(f"  {op.key}: {KERAS_LAYER[spec.mode]} x {plural(spec.num_layers, 'layer')}"
                       f"{', bidirectional' if spec.num_dirs == 2 else ''}, units {spec.num_units}, "
                       f"input {spec.input_size}; params {op.found.params_source}")
            for key in sorted(op.arrays):
                out.append(f"    {key} {list(op.arrays[key].shape)} {op.arrays[key].dtype}")
            out += [f"    note: {note}" for note in op.notes]
        out += [f"  skipped {s}" for s in self.skipped]
        if self.output:
            out.append(f"wrote {self.output}")
        return out


def keras_weights(spec: layout.RnnSpec, weights: list[layout.LayerWeights]) -> list[dict[str, np.ndarray]]:
    """cuDNN per-pseudo-layer weights (`layout.unpack`) -> Keras arrays, one dict per pseudo-layer.

    Order of the list: layer * D + direction. See the module doc for shapes and gate orders.
    """
    G, H = spec.gates, spec.num_units
    order = KERAS_GRU_ORDER if spec.mode == "gru" else tuple(range(G))
    out = []
    for w in weights:
        W = w.W if w.W is not None else np.stack([np.eye(H, dtype=w.R.dtype)] * G)  # skip_input
        kernel = np.concatenate([W[g].T for g in order], axis=1)
        recurrent = np.concatenate([w.R[g].T for g in order], axis=1)
        if spec.mode == "gru":
            bias = np.stack([np.concatenate([w.bW[g] for g in order]), np.concatenate([w.bR[g] for g in order])])
        else:
            bias = np.concatenate([w.bW[g] + w.bR[g] for g in order])
        arrays = {"kernel": kernel, "recurrent_kernel": recurrent, "bias": bias}
        if w.P is not None:
            arrays["projection"] = np.ascontiguousarray(w.P.T)
        out.append({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return out


def extract_survey(survey: Survey) -> Extraction:
    """Keras-layout weights of every forward op of a surveyed model.

    Raises UnsupportedError naming the node when a reachable op's configuration or params
    cannot be read; an unreachable one (a tf_keras GPU variant nothing calls) is skipped then.
    """
    groups = _same_weights([op for op in survey.ops if op.kind == "forward"])
    forward = [group[0] for group in groups]
    keys = [_layer_key(group) or key for group, key in zip(groups, _keys(forward))]
    result = Extraction(survey.source, [], [])
    for op, key, group in zip(forward, keys, groups):
        where = f"{op.where}, node {op.node!r} ({op.op})"
        reason = op.problem or (op.params.why_not if op.params is None or op.params.value is None else None)
        if reason:
            if not op.reachable_from:
                result.skipped.append(f"{where}: nothing in the model calls it, and {reason}")
                continue
            raise UnsupportedError(f"cannot extract its weights: {reason}", where)
        spec, order = op.forward.spec, op.forward.gate_order
        buf = gates.to_cudnn_order(op.params.value, spec, order)
        arrays, notes = {}, []
        unpacked = layout.unpack(buf, spec)
        for w, values in zip(unpacked, keras_weights(spec, unpacked)):
            for name, value in values.items():
                arrays[f"{key}/layer{w.layer}/{'bw' if w.direction else 'fw'}/{name}"] = value
        if spec.input_mode == "skip_input":
            notes.append("skip_input: layer 0 has no input weights; its kernels are identity blocks")
        if spec.num_proj:
            notes.append("num_proj: Keras's LSTM has no projection; h = (o * tanh(c)) @ projection")
        if gates.applies(spec, order):
            notes.append(f"params read with gate order {order}; written in Keras's i, f, c, o")
        if spec.num_dirs == 2 or spec.num_layers > 1:
            notes.append("layer l > 0 takes the concatenated [fw, bw] outputs of layer l - 1")
        if len(group) > 1:
            notes.append(f"{plural(len(group) - 1, 'more op')} read the same saved variables (tf_keras keeps a GPU variant "
                         "and gradients of each layer): extracted once, under the variables' layer name")
        result.ops.append(ExtractedOp(key, op, arrays, notes))
    return result


def extract(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False,
            gate_order: str = gates.CUDNN) -> Extraction | KerasExtraction:
    """Write the Keras-layout weights of every cuDNN op of the model at `src` to the .npz `dst`.

    Written atomically, only when every op could be read. Raises GraphfixError otherwise.
    A Keras HDF5 file gives its CuDNN layers' CPU weights (`graphfix.tools.keras_file`).
    """
    if not Path(src).is_dir() and keras_h5.is_hdf5_path(src):
        return extract_keras(src, dst, force)
    dst = Path(dst)
    output_paths.check_output(dst, force, source=Path(src))
    result = extract_survey(inspect_model(src, gate_order))
    if not result.ops:
        return result
    buffer = io.BytesIO()
    np.savez(buffer, **result.arrays())
    output_paths.write_bytes_atomic(dst, buffer.getvalue())
    result.output = str(dst)
    return result


def _same_weights(ops: list[FoundOp]) -> list[list[FoundOp]]:
    """Ops grouped when they read the same saved variables with the same configuration (a
    tf_keras SavedModel holds one layer's weights in a dozen functions), in first-seen
    order, each group's reachable op first; every other op is a group of its own."""
    groups: dict[object, list[FoundOp]] = {}
    for op in ops:
        variables = tuple(sorted(op.params.variables)) if op.params is not None and op.params.variables else ()
        same = (variables, op.forward.spec, op.forward.gate_order) if variables and op.forward else id(op)
        groups.setdefault(same, []).append(op)
    return [sorted(group, key=lambda op: not op.reachable_from) for group in groups.values()]


def _layer_key(group: list[FoundOp]) -> str | None:
    """For weights read in several places, the layer their variables belong to
    ("lstm/lstm_cell/kernel", ".../bias" -> "lstm/lstm_cell"); None for a single op."""
    if len(group) == 1:
        return None
    names = [name.split("/") for name in group[0].params.variables]
    prefix = []
    for parts in zip(*names):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return "/".join(prefix) or None


def _keys(ops: list[FoundOp]) -> list[str]:
    """The node name, prefixed by its function (and MetaGraph) only where names repeat."""
    counts: dict[str, int] = {}
    for op in ops:
        counts[op.node] = counts.get(op.node, 0) + 1
    keys = []
    for op in ops:
        key = op.node if counts[op.node] == 1 else f"{op.function or 'graph'}/{op.node}"
        keys.append(f"{op.part}/{key}" if op.part and key in keys else key)
    return keys
