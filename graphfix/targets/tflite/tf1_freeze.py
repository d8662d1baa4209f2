"""A converted TF1 SavedModel (no object graph) frozen: its variables' restored values as Consts.

Why: TF1 SavedModels in the `tf.contrib.cudnn_rnn` style keep the params in a ref
`VariableV2` of unknown shape that only the saver's restore op fills (RestoreV2 of canonical
weights -> CudnnRNNCanonicalToParams -> Assign, validate_shape=False). TensorFlow's TF2 loader
(`load_v1_in_v2`) lifts only resource variables out of the loaded graph; a ref variable stays
inside the signature functions, filled by running the restore once at load time. Saving that
loaded object again (to fix the signature's batch) writes no value for it, so the re-saved model
fails with "Attempting to use uninitialized value .../opaque_kernel", and the TFLite converter
cannot see its value either. Freezing in a TF1 Session first (the rewrite made the restore path
run on CPU) leaves a graph with no variable at all::

    converted SavedModel --tf.compat.v1.saved_model.load (runs save/restore_all)-->
    Session --convert_variables_to_constants(signature outputs)--> GraphDef (library kept)
      --> SavedModel: that GraphDef, the same signatures and tags, no saver, empty variables/

The fused LSTMs' composite functions stay library functions (nothing is inlined), so the
converter still fuses them.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from graphfix.errors import UnsupportedError


def is_tf1(proto: saved_model_pb2.SavedModel) -> bool:
    """A TF1 SavedModel: its MetaGraphs have no object graph (SavedModelBuilder, not tf.saved_model.save)."""
    return not any(m.object_graph_def.nodes for m in proto.meta_graphs)


def freeze_tf1(src: Path, dst: Path, proto: saved_model_pb2.SavedModel) -> None:
    """Write at dst the TF1 SavedModel at src (whose parsed saved_model.pb is proto) with every
    MetaGraph frozen: variables restored from src's checkpoint, then folded into Consts."""
    out = saved_model_pb2.SavedModel(saved_model_schema_version=proto.saved_model_schema_version)
    for meta in proto.meta_graphs:
        tags = list(meta.meta_info_def.tags)
        outputs = sorted({info.name.split(":")[0] for sig in meta.signature_def.values()
                          for info in sig.outputs.values()})
        graph = tf.Graph()
        with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
            try:
                tf.compat.v1.saved_model.load(session, tags, str(src))
                frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                    session, graph.as_graph_def(), outputs)
            except Exception as exc:  # noqa: BLE001 (loading or restoring raises many types; all mean "cannot freeze")
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UnsupportedError(f"cannot restore and freeze the converted TF1 graph (tags {tags}): {first}",
                                       str(src)) from None
        new = meta_graph_pb2.MetaGraphDef()
        new.meta_info_def.CopyFrom(meta.meta_info_def)
        new.graph_def.CopyFrom(frozen)
        for key, sig in meta.signature_def.items():
            new.signature_def[key].CopyFrom(sig)
        out.meta_graphs.append(new)
    (dst / "variables").mkdir(parents=True)
    (dst / "saved_model.pb").write_bytes(out.SerializeToString(deterministic=True))


def check_freezable(proto: saved_model_pb2.SavedModel, where: str) -> None:
    """Refuse, before converting, a TF1 SavedModel whose freezing would drop something it runs:
    assets or an init op (lookup tables), which only a load-time init op fills."""
    for meta in proto.meta_graphs:
        kept = [name for name in INIT_COLLECTIONS if name in meta.collection_def]
        if meta.asset_file_def or kept:
            raise UnsupportedError(
                f"this TF1 SavedModel has {'assets' if meta.asset_file_def else 'an init op (' + kept[0] + ')'}, "
                "which the TFLite target's freezing would drop (TFLite has no lookup tables as builtins); "
                "convert it for CPU instead: python -m graphfix MODEL", where)


INIT_COLLECTIONS = ("saved_model_main_op", "legacy_init_op", "saved_model_assets", "asset_filepaths")
