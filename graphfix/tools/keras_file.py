"""`inspect` and `extract` for Keras HDF5 files with CuDNNLSTM / CuDNNGRU layers.

    survey = inspect_keras("legacy.h5")            # the CuDNN layers, what each becomes
    result = extract_keras("legacy.h5", "w.npz")   # their CPU-layer weights, per layer path

Both read the file as conversion does (`graphfix.io.keras_h5.read_plan`), so a layer whose
weights do not fit its config is refused here too, with the same message. The .npz holds,
per CuDNN layer path (e.g. ``bidirectional/forward_cu_dnngru``), ``{path}/kernel``,
``{path}/recurrent_kernel`` and ``{path}/bias``: the list `keras.layers.LSTM(...)` or
`GRU(reset_after=True, recurrent_activation="sigmoid").set_weights()` takes, in that order;
``__manifest__`` (JSON) describes each layer.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np

from graphfix.io import keras_h5, output_paths
from graphfix.report import plural
from graphfix.version import __version__

MANIFEST = "__manifest__"
PARTS = ("kernel", "recurrent_kernel", "bias")


def _layer_json(layer: keras_h5.LayerChange) -> dict:
    return {"path": layer.path, "class_name": layer.cudnn_class, "cpu_class": layer.cpu_class,
            "units": layer.units, "input_size": layer.input_size, "options": layer.options,
            "weights_group": layer.group, "weight_names": layer.old_names, "converted_names": layer.new_names}


@dataclasses.dataclass
class KerasSurvey:
    """The CuDNN layers of a Keras HDF5 file (`inspect`)."""

    plan: keras_h5.KerasConversion

    @property
    def ops(self) -> list[keras_h5.LayerChange]:
        return self.plan.layers

    def lines(self, every_op: bool = False) -> list[str]:
        """every_op: as Survey.lines takes it; a Keras file's layers all run, so all are listed."""
        kind = "whole model" if self.plan.kind == "model" else "weights only"
        out = [f"{self.plan.source}: Keras HDF5 ({kind}), {plural(len(self.ops), 'CuDNN layer')}"]
        for layer in self.ops:
            out.append(f"  {layer.summary()}")
            out.append(f"    weights in {layer.group}: {', '.join(layer.old_names)}")
        out += [f"  note: {note}" for note in self.plan.notes]
        return out

    def to_json(self) -> dict:
        return {"model": self.plan.source, "format": "Keras HDF5", "kind": self.plan.kind,
                "layers": [_layer_json(layer) for layer in self.ops], "notes": self.plan.notes}


def inspect_keras(path: str | os.PathLike) -> KerasSurvey:
    """Survey a Keras HDF5 file. Raises InputError (unreadable), LayoutError (weights off their config)."""
    return KerasSurvey(keras_h5.read_plan(path))


@dataclasses.dataclass
class KerasExtraction:
    """The CPU-layer weights of every CuDNN layer of a Keras HDF5 file (`extract`)."""

    source: str
    ops: list[keras_h5.LayerChange]
    output: str | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"{layer.path}/{part}": value for layer in self.ops for part, value in zip(PARTS, layer.values)}
        out[MANIFEST] = np.array(json.dumps({"graphfix": __version__, "source": self.source, "format": "Keras HDF5",
                                             "layers": [_layer_json(layer) for layer in self.ops]}, indent=1))
        return out

    def lines(self) -> list[str]:
        out = [(f"extracted the weights of {plural(len(self.ops), 'CuDNN layer')} from {self.source}, in the CPU "
                "layers' layout (set_weights order: kernel, recurrent_kernel, bias)")]
        for layer in self.ops:
            out.append(f"  {layer.summary()}")
            out += [f"    {layer.path}/{part} {list(value.shape)} {value.dtype}"
                    for part, value in zip(PARTS, layer.values)]
        if self.output:
            out.append(f"wrote {self.output}")
        return out


def extract_keras(src: str | os.PathLike, dst: str | os.PathLike, force: bool = False) -> KerasExtraction:
    """Write the CPU-layer weights of every CuDNN layer of the Keras HDF5 file `src` to the .npz `dst`.

    Written atomically, only when there is something to write.
    """
    dst = Path(dst)
    output_paths.check_output(dst, force, source=Path(src))
    plan = keras_h5.read_plan(src)
    result = KerasExtraction(plan.source, plan.layers)
    if result.ops:
        buffer = io.BytesIO()
        np.savez(buffer, **result.arrays())
        output_paths.write_bytes_atomic(dst, buffer.getvalue())
        result.output = str(dst)
    return result
