"""`--target tflite`: a fixed-batch SavedModel that converts with TFLITE_BUILTINS alone, and its .tflite.

    plan.py         per op: fused LSTM or static While loop (TfliteTarget)
    fused_lstm.py   the composite LSTM function (projection included) that becomes one fused op
    stub_lstm.py    the .tflite's fused LSTMs: each composite call -> TFLite's stub op (no cell_clip)
    saved_model.py  the pipeline: rewrite, re-save with a fixed batch, convert (convert_for_tflite)
    batch_dim.py    which signature input dimension is the batch (reaches a cuDNN op's batch)
    tf1_freeze.py   TF1 SavedModels frozen after the rewrite (ref variables the saver restores)
    graph_def_input.py  a frozen GraphDef wrapped as a one-signature SavedModel

    from graphfix.targets import tflite
    report = tflite.convert_for_tflite("model_dir", "model_tflite", batch_size=1, tflite_file="m.tflite")
"""

from graphfix.targets.tflite.plan import CELL_CLIP, TfliteTarget
from graphfix.targets.tflite.saved_model import (
    choose_batch,
    convert_for_tflite,
    default_output,
    default_tflite_file,
    signature_batch,
    tflite_ops,
    to_tflite,
)

__all__ = ["CELL_CLIP", "TfliteTarget", "choose_batch", "convert_for_tflite", "default_output", "default_tflite_file",
           "signature_batch", "tflite_ops", "to_tflite"]
