"""A Keras model config (the JSON of an HDF5 file's `model_config`) with its CuDNN layers made CPU layers.

Plain dicts and lists in, new ones out; no Keras import. The CuDNN layers are found wherever
they sit: top-level layers of a Sequential or Functional model, inside `Bidirectional`
(both halves), inside nested models or other wrappers::

    {"class_name": "CuDNNLSTM", "config": {"name": "enc", "units": 64, "time_major": false, ...}}
    -> {"class_name": "LSTM", "config": {"name": "enc", "units": 64, ..., "activation": "tanh",
        "recurrent_activation": "sigmoid", "use_bias": true, "dropout": 0.0, ...}}

Names, units, return_sequences/return_state/go_backwards/stateful, initializers,
regularizers and constraints are kept as they were; `time_major` is dropped (Keras 3 refuses
the argument; a CuDNN layer with time_major true is refused, Keras 3 having no such LSTM).
"""

from __future__ import annotations

import copy
import dataclasses

from graphfix.cudnn.keras_weights import CPU_CLASS, GATES
from graphfix.errors import InputError, UnsupportedError

DROPPED = ("time_major",)  # Keras 2 arguments Keras 3's LSTM/GRU refuse ("Unrecognized keyword arguments")
CPU_DEFAULTS = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "dropout": 0.0,
                "recurrent_dropout": 0.0, "unroll": False}
GRU_EXTRA = {"reset_after": True}  # cuDNN's GRU: the recurrent bias inside the reset gate's product
OPTIONS = ("return_sequences", "return_state", "go_backwards", "stateful")


@dataclasses.dataclass
class CudnnLayer:
    """One CuDNN layer of a model config, and where its weights are found in the HDF5 file.

    top: the top-level layer whose weight group holds it. weight_name: the name its weights
    carry ("forward_" + name for a Bidirectional's forward half). place: "self" (the top-level
    layer itself: weights 0-2 of the group), "forward"/"backward" (a top-level Bidirectional
    whose halves are both CuDNN: weights 0-2 / 3-5), or "nested" (found by weight name).
    """

    path: str              # "bidirectional/forward_cu_dnngru", "inner/enc"
    class_name: str        # CuDNNLSTM | CuDNNGRU
    top: str
    weight_name: str
    place: str
    config: dict

    @property
    def units(self) -> int:
        return int(self.config["units"])

    @property
    def cpu_class(self) -> str:
        return CPU_CLASS[self.class_name]

    @property
    def options(self) -> list[str]:
        return [name for name in OPTIONS if self.config.get(name)]


def model_layers(model_config: dict) -> list[dict]:
    """The top-level layer configs of a Sequential or Functional model config."""
    config = model_config.get("config") if isinstance(model_config, dict) else None
    layers = config if isinstance(config, list) else config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        raise InputError(f"model_config of class {model_config.get('class_name')!r} has no list of layers; "
                         "expected a Sequential or Functional model")
    return layers


def layer_name(layer: dict) -> str:
    config = layer.get("config") if isinstance(layer, dict) else None
    name = (config.get("name") if isinstance(config, dict) else None) or layer.get("name")
    if not isinstance(name, str):
        raise InputError(f"a {layer.get('class_name')!r} layer without a name in the model config")
    return name


def find_cudnn_layers(model_config: dict) -> list[CudnnLayer]:
    """Every CuDNN layer of the model, in the order of the model's layers (depth first)."""
    found: list[CudnnLayer] = []
    for layer in model_layers(model_config):
        top = layer_name(layer)
        _visit(layer, top, top, True, found)
    return found


def _is_cudnn(node) -> bool:
    return isinstance(node, dict) and isinstance(node.get("config"), dict) and _bare(node.get("class_name")) in GATES


def _bare(class_name) -> str:
    return class_name.rsplit(".", 1)[-1] if isinstance(class_name, str) else ""


def _visit(node, top: str, path: str, direct: bool, found: list[CudnnLayer]) -> None:
    if isinstance(node, list):
        for item in node:
            _visit(item, top, path, False, found)
        return
    if not isinstance(node, dict):
        return
    if _is_cudnn(node):
        name = layer_name(node)
        found.append(CudnnLayer(path if direct else f"{path}/{name}", _bare(node["class_name"]), top, name,
                                "self" if direct else "nested", node["config"]))
        return
    config = node.get("config")
    if _bare(node.get("class_name")) == "Bidirectional" and isinstance(config, dict):
        forward, backward = config.get("layer"), config.get("backward_layer") or config.get("layer")
        here = path if direct else f"{path}/{layer_name(node)}"
        both = _is_cudnn(forward) and _is_cudnn(backward)
        for half, prefix in ((forward, "forward_"), (backward, "backward_")):
            if _is_cudnn(half):
                name = prefix + layer_name(half)
                place = prefix[:-1] if direct and both else "nested"
                found.append(CudnnLayer(f"{here}/{name}", _bare(half["class_name"]), top, name, place, half["config"]))
            else:
                _visit(half, top, here, False, found)
        return
    inner = path if direct or not isinstance(config, dict) or "name" not in config else f"{path}/{config['name']}"
    for value in node.values():
        if isinstance(value, (dict, list)):
            _visit(value, top, inner, False, found)


def cpu_layer_config(class_name: str, config: dict, where: str) -> dict:
    """The LSTM / GRU config for a CuDNN layer's config. Raises UnsupportedError for time_major true."""
    if config.get("time_major"):
        raise UnsupportedError("time_major=True: Keras 3's LSTM and GRU have no time_major argument, so the "
                               "converted file could not load there", where)
    out = {key: value for key, value in config.items() if key not in DROPPED}
    out.update(CPU_DEFAULTS)
    if class_name == "CuDNNGRU":
        out.update(GRU_EXTRA)
    return out


def convert_config(model_config: dict) -> dict:
    """A new model config with every CuDNN layer replaced by its CPU layer (`model_config` untouched)."""
    out = copy.deepcopy(model_config)
    _replace(out, "model")
    return out


def _replace(node, where: str) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in list(items):
        if _is_cudnn(value):
            name = layer_name(value)
            value["config"] = cpu_layer_config(_bare(value["class_name"]), value["config"], f"layer {name!r}")
            value["class_name"] = CPU_CLASS[_bare(value["class_name"])]
        else:
            _replace(value, where)


def keras3_node_indices(model_config: dict) -> dict:
    """A copy whose references to nested models count calls as Keras 3 does, for a Keras-3-only output.

    tf_keras counts a nested model's own construction on its Input as that model's node 0, so
    a Functional model's config calls it ["inner", 1, 0, {}]; Keras 3 has no such node and
    refuses the reference ("The graph of the Functional model either has loops or
    disconnected nodes"). tf_keras needs the 1, so only the `.keras` output gets this copy.
    """
    out = copy.deepcopy(model_config)
    _shift_nested_references(out)
    return out


def _shift_nested_references(model: dict) -> None:
    config = model.get("config") if isinstance(model, dict) else None
    layers = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        return
    own_input = {layer_name(layer) for layer in layers if _has_own_input(layer)}
    for layer in layers:
        _shift_nested_references(layer)
        for node in layer.get("inbound_nodes") or []:
            for ref in node if isinstance(node, list) else []:
                if isinstance(ref, list) and len(ref) >= 2 and ref[0] in own_input and ref[1] >= 1:
                    ref[1] -= 1


def _has_own_input(layer: dict) -> bool:
    """A nested model whose first layer is an InputLayer (tf_keras `_should_skip_first_node`)."""
    config = layer.get("config") if isinstance(layer, dict) else None
    layers = config.get("layers") if isinstance(config, dict) else None
    return isinstance(layers, list) and bool(layers) and isinstance(layers[0], dict) and \
        layers[0].get("class_name") == "InputLayer"
