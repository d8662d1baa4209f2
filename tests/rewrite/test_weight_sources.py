"""Keras 3 SavedModels: the params buffer Keras packs per call is resolved back to its variables
(graphfix/rewrite/weight_sources.py), so the converted function reads the kernels directly.

    before:  ReadVariableOp -> Split -> Transpose x G -> Reshape x G --.
             ReadVariableOp -> Split -> Transpose x G -> Reshape x G ---+-> ConcatV2 -> CudnnRNNV3
             bias ... -> Split -> Reshape x 2G -------------------------'
    after:   ReadVariableOp (kernel, recurrent_kernel, bias) -> [graphfix weights call] -> [RNN call]
"""

import numpy as np
import pytest
import tensorflow as tf
from builders.keras_graphs import keras3_cudnn_path
from builders.saved_models import read_proto

import graphfix


def _model(kind, topo, masked):
    import keras
    keras.utils.set_random_seed(3)
    x = keras.Input((7, 3))
    h = keras.layers.Masking(0.0)(x) if masked else x
    rnn = getattr(keras.layers, kind.upper())(5, return_sequences=True)
    if topo == "bi":
        h = keras.layers.Bidirectional(rnn)(h)
    elif topo == "stacked":
        h = getattr(keras.layers, kind.upper())(4, return_sequences=True)(rnn(h))
    else:
        h = rnn(h)
    return keras.Model(x, h)


def _consumers_of_reads(proto) -> set[str]:
    """Op types that read a variable's value directly, in every function of the SavedModel."""
    types = set()
    for f in proto.meta_graphs[0].graph_def.library.function:
        reads = {n.name for n in f.node_def if n.op == "ReadVariableOp"}
        for n in f.node_def:
            if any(i.split(":")[0] in reads for i in n.input):
                types.add(n.op)
    return types


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("topo,masked", [("uni", False), ("bi", False), ("stacked", False), ("uni", True)])
def test_keras3_weights_read_from_variables(kind, topo, masked, tmp_path):
    model = _model(kind, topo, masked)
    with keras3_cudnn_path():
        model.export(str(tmp_path / "cudnn"), verbose=False)
    report = graphfix.convert(tmp_path / "cudnn", tmp_path / "out")
    assert report.ops and all(op.params.startswith("read from") for op in report.ops), [op.params for op in report.ops]

    proto = read_proto(tmp_path / "out")
    # The variables feed graphfix's weight function: no Split / Transpose of weights per call
    # outside it, and nothing left of Keras's packing but its bias vector: an LSTM's
    # concat(zeros_like(bias), bias) (8H numbers), a GRU's reshape of bias [2, 3H] (no copy).
    allowed = {"PartitionedCall", "StatefulPartitionedCall", "Identity", "ConcatV2" if kind == "lstm" else "Reshape"}
    assert _consumers_of_reads(proto) <= allowed
    ops = {n.op for f in proto.meta_graphs[0].graph_def.library.function for n in f.node_def}
    assert not any(op.startswith("Cudnn") for op in ops)
    # Variables stay variables: the checkpoint is the one Keras wrote.
    keys = lambda p: sorted(name for name, _ in tf.train.list_variables(str(p / "variables" / "variables")))
    assert keys(tmp_path / "out") == keys(tmp_path / "cudnn")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 7, 3)).astype(np.float32)
    if masked:
        x[1, 4:] = 0.0
        x[3, 2:] = 0.0
    loaded = tf.saved_model.load(str(tmp_path / "out"))  # keep it: it owns the variables
    got = loaded.serve(tf.constant(x)).numpy()
    expected = model(x, training=False).numpy()  # Keras's CPU path
    if masked:  # cuDNN writes zeros past a sequence's end, Keras's CPU loop repeats the last output
        valid = np.ones((4, 7), bool)
        valid[1, 4:] = valid[3, 2:] = False
        got, expected = got[valid], expected[valid]
    assert np.abs(got - expected).max() <= 1e-5
