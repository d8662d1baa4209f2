"""Keras HDF5 files with CuDNNLSTM / CuDNNGRU layers -> files Keras 3 and tf_keras load and run on CPU.

Reads with h5py, json and numpy only (Keras is imported for a `.keras` output alone). Two
kinds of input, both written by Keras 2.x / tf_keras:

    whole model (model.save("m.h5"))        attrs model_config (JSON), group model_weights/
    weights only (model.save_weights(...))  layer groups at the root, attr layer_names

A layer group holds the layer's weights under its `weight_names` attribute (order matters:
both Keras versions load by position)::

    model_weights/cu_dnnlstm/        weight_names [cu_dnnlstm/kernel:0, .../recurrent_kernel:0, .../bias:0]
        cu_dnnlstm/kernel:0 [I, 4H]  recurrent_kernel:0 [H, 4H]  bias:0 [8H]
    -> model_weights/cu_dnnlstm/     weight_names [cu_dnnlstm/lstm_cell/kernel:0, ...]
        cu_dnnlstm/lstm_cell/kernel:0 [I, 4H]  recurrent_kernel:0 [H, 4H]  bias:0 [4H]

(the names tf_keras writes for an LSTM; a GRU's go under gru_cell/, bias [2, 3H]). The
config's CuDNN layers become LSTM / GRU (`graphfix.io.keras_config`), the weights are
converted by `graphfix.cudnn.keras_weights`, every other object is copied as it was. The
output is a new file, renamed into place only when complete; the input is only read.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np

from graphfix.cudnn import keras_weights
from graphfix.errors import (
    GraphfixError,
    InputError,
    LayoutError,
    OutputError,
    UnsupportedError,
)
from graphfix.io import keras_config
from graphfix.io.output_paths import check_output, write_path_atomic
from graphfix.report import plural

SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUFFIXES = (".h5", ".hdf5")
HEADER_LIMIT = 64512  # bytes per HDF5 attribute; Keras splits longer name lists into name0, name1, ...
WEIGHT_PARTS = ("kernel", "recurrent_kernel", "bias")
CELL = {"LSTM": "lstm_cell", "GRU": "gru_cell"}


@dataclasses.dataclass
class LayerChange:
    """One CuDNN layer: where its weights are, and what they become.

    group: the HDF5 path of the layer group holding its weights; old_names / new_names: the
    three weight names (paths inside that group); values: the CPU layer's weights.
    """

    path: str
    cudnn_class: str
    units: int
    input_size: int
    options: list[str]
    group: str
    old_names: list[str]
    new_names: list[str]
    values: list[np.ndarray]

    @property
    def cpu_class(self) -> str:
        return keras_weights.CPU_CLASS[self.cudnn_class]

    def summary(self) -> str:
        target = ("GRU(reset_after=True, recurrent_activation='sigmoid')" if self.cpu_class == "GRU" else "LSTM")
        options = "".join(f", {o}" for o in self.options)
        return f"{self.path}: {self.cudnn_class} -> {target}, input {self.input_size}, units {self.units}{options}"


@dataclasses.dataclass
class KerasConversion:
    """What converting a Keras HDF5 file does (or did): its CuDNN layers and the new config."""

    source: str
    kind: str                         # "model" | "weights"
    layers: list[LayerChange]
    config: dict | None = None        # the converted model_config (whole-model files)
    notes: list[str] = dataclasses.field(default_factory=list)
    output: str | None = None
    left_unchanged: list = dataclasses.field(default_factory=list)  # what the CLI asks a Report for

    @property
    def changed(self) -> bool:
        return bool(self.layers)

    def lines(self) -> list[str]:
        kind = "whole model" if self.kind == "model" else "weights only"
        out = [f"converted {plural(len(self.layers), 'CuDNN layer')} in {self.source} (Keras HDF5, {kind})"]
        out += [f"  {layer.summary()}" for layer in self.layers]
        out += [f"  note: {note}" for note in self.notes]
        if self.output:
            out.append(f"wrote {self.output}")
        return out


def is_hdf5_path(path) -> bool:
    """True for a .h5 / .hdf5 name, or a file that starts with the HDF5 signature."""
    path = Path(path)
    if path.suffix.lower() in SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SIGNATURE)) == SIGNATURE
    except OSError:
        return False


def read_plan(src) -> KerasConversion:
    """Read a Keras HDF5 file and work out every change; nothing is written.

    Raises InputError (not HDF5, not a Keras file, unreadable), LayoutError (a CuDNN layer
    whose weights do not fit its config), UnsupportedError (time_major layers).
    """
    src = Path(src)
    with _open(src) as f:
        try:
            plan = _plan(f, str(src))
        except GraphfixError as exc:
            raise exc.at(str(src)) from None
        except (OSError, KeyError, ValueError, TypeError) as exc:  # h5py on a damaged file
            raise InputError(f"cannot be read as a Keras file ({type(exc).__name__}: {exc})", str(src)) from None
    return plan


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise InputError("no such file", str(path))
    if path.is_dir():
        raise InputError("is a directory, not a Keras HDF5 file", str(path))
    if not h5py.is_hdf5(str(path)):
        raise InputError("not an HDF5 file (no HDF5 signature), so not a Keras .h5 model", str(path))
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"cannot be opened as HDF5, truncated or damaged? ({exc})", str(path)) from None


def _plan(f: h5py.File, source: str) -> KerasConversion:
    if "model_config" in f.attrs:
        if "model_weights" not in f:
            raise InputError("has a model_config but no model_weights group (saved without its weights?)")
        raw = f.attrs["model_config"]
        try:
            config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else str(raw))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"its model_config attribute is not JSON ({exc})") from None
        layers = [_config_layer(f["model_weights"], layer) for layer in keras_config.find_cudnn_layers(config)]
        plan = KerasConversion(source, "model", layers, keras_config.convert_config(config) if layers else None)
        if layers and keras_config.keras3_node_indices(config) != config:
            plan.notes.append("a nested model inside a Functional model: tf_keras loads the .h5, Keras 3 cannot "
                              "load tf_keras's HDF5 config of one (it numbers the nested model's calls "
                              "differently); for Keras 3 write -o NAME.keras, converted for it")
    elif read_names(f, "layer_names"):
        plan = KerasConversion(source, "weights", _weights_only_layers(f))
    else:
        raise InputError("an HDF5 file, but not a Keras model or weights file: no 'model_config' attribute "
                         "and no 'layer_names'")
    if plan.layers and "optimizer_weights" in f:
        plan.notes.append("the optimizer state (optimizer_weights) was left out: it belongs to the CuDNN "
                          "weights' shapes; the training configuration is kept")
    return plan


def read_names(group: h5py.Group, name: str) -> list[str]:
    """A Keras list-of-names attribute (weight_names, layer_names), also when split into name0, name1, ..."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, k = [], 0
        while f"{name}{k}" in group.attrs:
            chunks.append(group.attrs[f"{name}{k}"])
            k += 1
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for chunk in chunks for n in np.atleast_1d(chunk)]


def _config_layer(root: h5py.Group, layer: keras_config.CudnnLayer) -> LayerChange:
    where = f"layer {layer.path!r}"
    if layer.top not in root:
        raise InputError(f"no weights for layer {layer.top!r} in model_weights", where)
    group = root[layer.top]
    names = read_names(group, "weight_names")
    if layer.place == "nested":
        picked = _by_name(names, layer.weight_name)
        if picked is None:
            raise LayoutError(f"no kernel, recurrent_kernel and bias named {layer.weight_name}/... among the "
                              f"{len(names)} weights of {layer.top!r}", where)
    else:
        expected = 3 if layer.place == "self" else 6
        if len(names) != expected:
            raise LayoutError(f"{len(names)} weights in its group; {layer.class_name} has 3"
                              + (" per direction" if expected == 6 else ""), where)
        picked = names[3:] if layer.place == "backward" else names[:3]
    return _change(group, layer.path, layer.class_name, picked, layer.units, layer.options, where)


def _by_name(names: list[str], weight_name: str) -> list[str] | None:
    """The kernel, recurrent_kernel and bias of the layer whose weights are named `weight_name/...`."""
    out = []
    for part in WEIGHT_PARTS:
        pattern = re.compile(rf"(^|/){re.escape(weight_name)}/{part}(:\d+)?$")
        hits = [n for n in names if pattern.search(n)]
        if len(hits) != 1:
            return None
        out.append(hits[0])
    return out


def _change(group: h5py.Group, path: str, class_name: str, names: list[str], units: int | None,
            options: list[str], where: str) -> LayerChange:
    try:
        values = [np.asarray(group[name][()]) for name in names]
    except KeyError:
        raise InputError(f"weight_names lists {names} but the file lacks some of them", where) from None
    try:
        input_size, units = keras_weights.check_weights(class_name, values, units)
        cpu = keras_weights.cpu_weights(class_name, values)
    except GraphfixError as exc:
        raise exc.at(where) from None
    cell = CELL[keras_weights.CPU_CLASS[class_name]]
    new_names = [f"{n.rpartition('/')[0]}/{cell}/{n.rpartition('/')[2]}".lstrip("/") for n in names]
    return LayerChange(path, class_name, units, input_size, options, group.name.lstrip("/"), names, new_names, cpu)


def _weights_only_layers(f: h5py.File) -> list[LayerChange]:
    """A save_weights() file has no config: CuDNN layers are told by their weights' shapes alone.

    kernel [I, G*H], recurrent_kernel [H, G*H] and a 1-D bias [2*G*H] with G 4 or 3: no CPU
    layer stores that bias (LSTM [4H], GRU [3H] or [2, 3H]). tf_keras tells them the same way.
    """
    out = []
    for layer in read_names(f, "layer_names"):
        if layer not in f:
            raise InputError(f"layer_names lists {layer!r} but the file has no such group")
        group = f[layer]
        by_prefix: dict[str, dict[str, str]] = {}
        for name in read_names(group, "weight_names"):
            prefix, _, last = name.rpartition("/")
            by_prefix.setdefault(prefix, {})[last.split(":")[0]] = name
        for prefix, parts in by_prefix.items():
            if not set(WEIGHT_PARTS) <= set(parts):
                continue
            names = [parts[p] for p in WEIGHT_PARTS]
            class_name = _cudnn_class([group[n].shape for n in names]) if all(n in group for n in names) else None
            if class_name:
                path = prefix if prefix.split("/")[0] == layer else f"{layer}/{prefix}".rstrip("/")
                out.append(_change(group, path, class_name, names, None, [], f"layer {path!r}"))
    return out


def _cudnn_class(shapes: list[tuple]) -> str | None:
    if len(shapes) != 3 or len(shapes[1]) != 2 or len(shapes[0]) != 2 or shapes[1][0] < 1:
        return None
    (_, width), (H, rec_width), bias = shapes
    for class_name, G in keras_weights.GATES.items():
        if width == rec_width == G * H and bias == (2 * G * H,):
            return class_name
    return None


def convert_file(src, dst, force: bool = False, write_unchanged: bool = False) -> KerasConversion:
    """Convert the Keras HDF5 file `src` to `dst` (.h5/.hdf5, or .keras for Keras 3's format).

    Nothing is written on any error, nor when the file has no CuDNN layer (`changed` is
    False) unless write_unchanged (an explicit -o: the user expects the output to exist).
    """
    src, dst = Path(src), Path(dst)
    check_output(dst, force, source=src)
    plan = read_plan(src)
    if not plan.changed and not write_unchanged:
        return plan
    if dst.suffix.lower() == ".keras":
        write_keras(plan, src, dst)
    else:
        if dst.suffix.lower() not in SUFFIXES or dst.name.lower().endswith(".weights.h5"):
            plan.notes.append(f"Keras 3 reads a legacy HDF5 file only under a name ending in .h5 or .hdf5 "
                              f"(not .weights.h5); {dst.name!r} may need renaming")
        write_path_atomic(dst, lambda tmp: write_h5(plan, src, tmp), suffix=".tmp")
    plan.output = str(dst)
    return plan


def write_keras(plan: KerasConversion, src: Path, dst: Path) -> None:
    """The Keras 3 native format: the converted HDF5 (in a temporary folder) loaded by Keras 3 and saved."""
    if plan.kind != "model":
        raise UnsupportedError("a weights-only file has no model config to build a .keras model from; "
                               "write .h5 and load it into your model with load_weights", str(src))
    parent = dst.parent if str(dst.parent) else Path(".")
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.", dir=parent) as folder:
        h5_path = Path(folder) / "converted.h5"
        try:
            write_h5(plan, src, str(h5_path), keras_config.keras3_node_indices(plan.config))
        except OSError as exc:
            raise OutputError(f"cannot write a temporary file beside it: {exc.strerror or exc}", str(dst)) from None
        import keras  # Keras 3, for this output format only

        try:
            model = keras.models.load_model(h5_path, compile=False)
        except Exception as exc:  # noqa: BLE001 (Keras's own refusal, any type: report it, write nothing)
            raise UnsupportedError(f"Keras 3 cannot load the converted model ({type(exc).__name__}: {exc}); "
                                   "write .h5 instead", str(src)) from None
        write_path_atomic(dst, lambda tmp: model.save(tmp), suffix=".keras")
    plan.notes.append("saved by Keras 3 without the training configuration (compile the model again to train)")


def write_h5(plan: KerasConversion, src: Path, tmp: str, config: dict | None = None) -> None:
    """Write the converted copy of `src` to the path `tmp` (a fresh file: no space left by deleted data).

    config: the model config to write, if not `plan.config`.
    """
    config = plan.config if config is None else config
    by_group: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
    for layer in plan.layers:
        renames = by_group.setdefault(layer.group, {})
        renames.update({old: (new, value) for old, new, value in zip(layer.old_names, layer.new_names, layer.values)})
    with h5py.File(src, "r") as fin, h5py.File(tmp, "w") as fout:
        _copy_attrs(fin, fout, skip=("model_config",))
        if config is not None:
            raw = fin.attrs["model_config"]
            text = json.dumps(config)
            fout.attrs["model_config"] = text.encode("utf-8") if isinstance(raw, bytes) else text
        _copy_group(fin, fout, "", by_group, drop=("optimizer_weights",) if plan.changed else ())


def _copy_group(src: h5py.Group, dst: h5py.Group, path: str, by_group: dict, drop=()) -> None:
    for key in src:
        child = f"{path}/{key}" if path else key
        if child in drop:
            continue
        if child in by_group:
            _write_layer_group(src[key], dst.create_group(key), by_group[child])
        elif any(g.startswith(child + "/") for g in by_group):
            sub = dst.create_group(key)
            _copy_attrs(src[key], sub)
            _copy_group(src[key], sub, child, by_group)
        else:
            src.copy(src[key], dst, name=key)


def _write_layer_group(src: h5py.Group, dst: h5py.Group, renames: dict[str, tuple[str, np.ndarray]]) -> None:
    names = read_names(src, "weight_names")
    _copy_attrs(src, dst, skip=("weight_names",))
    write_names(dst, "weight_names", [renames[n][0] if n in renames else n for n in names])

    def visit(name, obj):
        if name in renames:
            new, value = renames[name]
            _copy_attrs(obj, dst.create_dataset(new, data=value))
        elif isinstance(obj, h5py.Group):
            _copy_attrs(obj, dst.require_group(name))
        else:
            src.copy(obj, dst, name=name)
    src.visititems(visit)


def write_names(group: h5py.Group, name: str, names: list[str]) -> None:
    """Write a list-of-names attribute as Keras does: split into name0, name1, ... past HEADER_LIMIT bytes."""
    data = np.asarray([n.encode("utf-8") for n in names])
    chunks = 1
    while any(part.nbytes > HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
    else:
        for k, part in enumerate(np.array_split(data, chunks)):
            group.attrs[f"{name}{k}"] = part


def _copy_attrs(src, dst, skip=()) -> None:
    """Copy every attribute with its stored type; `skip` names (and their name0, name1 ... chunks) left out."""
    for name in src.attrs:
        if any(name == s or (name.startswith(s) and name[len(s):].isdigit()) for s in skip):
            continue
        dst.attrs.create(name, src.attrs[name], dtype=src.attrs.get_id(name).dtype)
