"""`--target onnx`: cuDNN RNNs as native ONNX LSTM / GRU / RNN nodes, the rest converted by tf2onnx.

    plan.py          per op: ONNX op, attributes, W/R/B in ONNX's gate order (numpy only)
    emit.py          the ONNX nodes of one op, through a small builder (tf2onnx's graph or onnx.helper)
    frozen.py        SavedModel / GraphDef -> one frozen GraphDef with named inputs and outputs
    tf2onnx_hook.py  prepare the graph, convert it with tf2onnx's custom_op_handlers, check the result
    check.py         --verify: onnxruntime against the numpy reference and the CPU target
    pipeline.py      convert_to_onnx(src, dst, ...)

onnx, tf2onnx and onnxruntime are an optional extra (`pip install "graphfix[onnx]"`): only
this package imports them, and only when it converts (`require()` says how to install them).

    from graphfix.targets import onnx as onnx_target
    report = onnx_target.convert_to_onnx("model_dir", "model.onnx")
"""

from __future__ import annotations

import importlib

from graphfix.errors import UnsupportedError

INSTALL_HINT = 'pip install "graphfix[onnx]"'
_MODULES = ("onnx", "tf2onnx", "onnxruntime")


def missing_modules() -> list[str]:
    """The extra's modules that cannot be imported here."""
    out = []
    for name in _MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            out.append(name)
    return out


def require() -> None:
    """Raise UnsupportedError saying how to install the extra when a module of it is missing."""
    missing = missing_modules()
    if missing:
        raise UnsupportedError(f"--target onnx needs {', '.join(missing)}, not installed here: {INSTALL_HINT}")


def convert_to_onnx(src, dst=None, **kwargs):
    """See `graphfix.targets.onnx.pipeline.convert_to_onnx`; checks the extra is installed first."""
    require()
    from graphfix.targets.onnx import pipeline
    return pipeline.convert_to_onnx(src, dst, **kwargs)


__all__ = ["INSTALL_HINT", "convert_to_onnx", "missing_modules", "require"]
