"""List every cuDNN op of a model without converting it: `python -m graphfix inspect MODEL`.

For each CudnnRNN/V2/V3 node: where it sits (the graph's top level or a library function),
its configuration as conversion reads it (`rewrite.read_forward_op`, the same code), where
its params come from (constants, saved variables, or only known at run time), and whether
anything runs it: a SavedModel signature, or for a GraphDef its top level. Helper and
gradient ops (`CudnnRNNParamsSize`, `CudnnRNNBackprop*`, ...) are listed with their place.

    survey = inspect_model("model_dir")       # Survey: parts (MetaGraphs) and their ops
    print("\\n".join(survey.lines()))           # or json.dumps(survey.to_json())

An op whose configuration cannot be read is listed with the reason (`problem`), the one
conversion would refuse it with; inspection itself only fails on an unreadable model.
`graphfix.tools.extract` and `graphfix.tools.verify` start from the same survey.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from graphfix import rewrite
from graphfix.cudnn import gates, layout
from graphfix.errors import GraphfixError, InputError
from graphfix.graph.bodies import Body, GraphBody, ancestors, bodies, is_cudnn, reachable_functions
from graphfix.graph.detached import ConstStore
from graphfix.graph.folding import CANONICAL_TO_PARAMS, Folder
from graphfix.graph.saved_values import Found, ValueFinder
from graphfix.io import graph_def_file, keras_h5, saved_model_dir
from graphfix.tools.keras_file import KerasSurvey, inspect_keras

TOP_LEVEL = "top level"


@dataclasses.dataclass
class FoundOp:
    """One cuDNN node of a model and what could be read about it.

    forward: the configuration of a CudnnRNN/V2/V3 node (None for helpers, gradients, and
    a forward op whose configuration cannot be read: `problem` says why).
    params: its params buffer as stored (None if unknown before run time) and the saved
    variables it comes from. reachable_from: signature keys (SavedModel) or ["top level"]
    (GraphDef) from which the node can run; empty when nothing calls it.
    """

    part: str                        # "" for a GraphDef or a one-MetaGraph SavedModel, else the tags
    where: str                       # "graph" or "function NAME"
    node: str
    op: str
    forward: rewrite.ForwardOp | None
    problem: str | None
    params: Found | None
    params_source: str               # human description of where the params come from
    reachable_from: list[str]
    body: Body = dataclasses.field(repr=False, default=None)

    @property
    def kind(self) -> str:
        if self.op in rewrite.FORWARD_OPS:
            return "forward"
        if self.op.startswith("CudnnRNNBackprop"):
            return "gradient"
        return "helper" if self.op in rewrite.HELPER_HANDLERS else "other"

    @property
    def function(self) -> str | None:
        return self.where[len("function "):] if self.where.startswith("function ") else None

    def lines(self) -> list[str]:
        """A few indented lines describing the op (see the module doc)."""
        reach = (f"reachable from {_plural('signature', self.reachable_from)}"
                 if self.reachable_from and self.reachable_from != [TOP_LEVEL]
                 else "reachable from the top level" if self.reachable_from
                 else "not reachable: nothing in the model calls it")
        place = f"[{self.part}] " if self.part else ""
        out = [f"{self.op} {self.node!r} in {place}{self.where} ({reach})"]
        fop = self.forward
        if fop is not None:
            spec = fop.spec
            gate_text = gates.DESCRIPTIONS[fop.gate_order if gates.applies(spec, fop.gate_order) else gates.CUDNN]
            out.append(f"  {spec.mode}, {_plural('layer', spec.num_layers)}, "
                       f"{'bidirectional' if spec.num_dirs == 2 else 'unidirectional'}, input {spec.input_size}, "
                       f"units {spec.num_units}, num_proj {spec.num_proj}, input mode {spec.input_mode}"
                       + (f", gates {gate_text}" if spec.mode == "lstm" else ""))
            lengths = fop.sequence_lengths
            if fop.lengths is not None:
                lengths += " " + np.array2string(np.asarray(fop.lengths).reshape(-1), separator=", ")
            out.append(f"  {fop.dtype.name}, {'time-major' if fop.time_major else 'batch-major'}, "
                       f"sequence lengths: {lengths}")
            out.append(f"  params: {self.params_source}")
            out += [f"  warning: {w.split(': ', 1)[-1]}" for w in fop.warnings]
        elif self.kind == "gradient":
            out.append("  gradient op: only training computes it")
        elif self.kind == "helper":
            out.append("  params helper: converted alongside the RNN ops")
        if self.problem:
            out.append(f"  problem: {self.problem}")
        return out

    def to_json(self) -> dict:
        fop = self.forward
        data = {"part": self.part or None, "where": self.where, "function": self.function, "node": self.node,
                "op": self.op, "kind": self.kind, "reachable": bool(self.reachable_from),
                "reachable_from": self.reachable_from, "problem": self.problem}
        if fop is not None:
            spec = fop.spec
            data.update(
                mode=spec.mode, num_layers=spec.num_layers,
                direction="bidirectional" if spec.num_dirs == 2 else "unidirectional",
                input_size=spec.input_size, num_units=spec.num_units, num_proj=spec.num_proj,
                input_mode=spec.input_mode, dtype=fop.dtype.name, time_major=fop.time_major,
                sequence_lengths=fop.sequence_lengths,
                sequence_length_values=None if fop.lengths is None else np.asarray(fop.lengths).reshape(-1).tolist(),
                gate_order=fop.gate_order if gates.applies(spec, fop.gate_order) else gates.CUDNN,
                params={"source": self.params_kind, "description": self.params_source,
                        "size": layout.params_size(spec),
                        "variables": self.params.variables if self.params else []},
                warnings=[w.split(": ", 1)[-1] for w in fop.warnings])
        return data

    @property
    def params_kind(self) -> str:
        """"constant", "variables" or "run time"."""
        if self.params is None or self.params.value is None:
            return "run time"
        return "variables" if self.params.variables else "constant"


@dataclasses.dataclass
class Part:
    """One graph of a model: a GraphDef file's graph, or one MetaGraph of a SavedModel."""

    label: str
    graph_def: graph_pb2.GraphDef
    meta: meta_graph_pb2.MetaGraphDef | None
    ops: list[FoundOp]


@dataclasses.dataclass
class Survey:
    """Every cuDNN op of a model, by part."""

    source: str
    kind: str                        # "GraphDef" | "SavedModel"
    gate_order: str
    parts: list[Part]

    @property
    def ops(self) -> list[FoundOp]:
        return [op for part in self.parts for op in part.ops]

    def lines(self, every_op: bool = False) -> list[str]:
        """The ops that can run, in full; those nothing calls (tf_keras keeps a GPU variant and
        gradients of every LSTM/GRU) in one summary line, unless every_op."""
        idle = [op for op in self.ops if not op.reachable_from and not every_op]
        shown = [op for op in self.ops if op not in idle]
        head = f"{self.source}: {self.kind}, {_plural('cuDNN op', len(self.ops))}"
        out = [head + (f" ({len(shown)} that can run)" if idle else "")]
        for op in shown:
            out += ["  " + line for line in op.lines()]
        if idle:
            counts: dict[str, int] = {}
            for op in idle:
                counts[op.op] = counts.get(op.op, 0) + 1
            functions = len({op.where for op in idle})
            out.append(f"  {_plural('op', len(idle))} in {_plural('function', functions)} that nothing in the model "
                       f"calls ({', '.join(f'{op} x {n}' for op, n in counts.items())}): they never run, and "
                       "conversion leaves them as they are (--all lists them)")
        return out

    def to_json(self) -> dict:
        return {"model": self.source, "format": self.kind, "gate_order": self.gate_order,
                "ops": [op.to_json() for op in self.ops]}


def load_parts(path: str | os.PathLike) -> tuple[str, list[tuple[str, graph_pb2.GraphDef, object, object]]]:
    """Read a model: ("GraphDef" | "SavedModel", [(label, graph_def, meta or None, consts or None), ...]).

    A GraphDef file is read slim, its large Const values in a `detached.ConstStore`.
    """
    path = Path(path)
    if path.is_dir():
        proto = saved_model_dir.read_saved_model(path)
        many = len(proto.meta_graphs) > 1
        return "SavedModel", [(",".join(m.meta_info_def.tags) or "untagged" if many else "", m.graph_def, m, None)
                              for m in proto.meta_graphs]
    graph_def, consts = graph_def_file.read_graph_def_detached(path)
    return "GraphDef", [("", graph_def, None, consts)]


def inspect_model(path: str | os.PathLike, gate_order: str = gates.CUDNN) -> Survey | KerasSurvey:
    """Survey the model file or SavedModel directory at `path`. Raises InputError if unreadable.

    A Keras HDF5 file (.h5/.hdf5) gets a KerasSurvey: its CuDNNLSTM / CuDNNGRU layers.
    """
    gates.check(gate_order)
    if not Path(path).is_dir() and keras_h5.is_hdf5_path(path):
        return inspect_keras(path)
    kind, parts = load_parts(path)
    saved_dir = Path(path) if kind == "SavedModel" else None
    survey = Survey(str(path), kind, gate_order, [])
    for label, graph_def, meta, consts in parts:
        ops = survey_graph_def(graph_def, gate_order, label, saved_dir, meta, consts)
        survey.parts.append(Part(label, graph_def, meta, ops))
    return survey


def survey_graph_def(graph_def: graph_pb2.GraphDef, gate_order: str = gates.CUDNN, label: str = "",
                     saved_dir: Path | None = None, meta: meta_graph_pb2.MetaGraphDef | None = None,
                     consts: ConstStore | None = None) -> list[FoundOp]:
    """Every cuDNN node of one graph (top level, then library functions in file order).

    consts: the values of the graph's detached Consts when it was read slim.
    """
    base = _once(lambda: _import(graph_def))
    reach = _reachability(graph_def, meta)
    finder = ValueFinder(graph_def, saved_dir, meta, consts)
    found = []
    for body in bodies(graph_def, consts):
        cudnn = [n for n in body.nodes if is_cudnn(n.op)]
        if not cudnn:
            continue
        shapes = rewrite.Shapes(base, body)
        folder = Folder(body)
        key = TOP_LEVEL if isinstance(body, GraphBody) else body.container.signature.name
        for node in cudnn:
            op = FoundOp(label, body.where, node.name, node.op, None, None, None, "", reach(key, node.name), body)
            if node.op in rewrite.FORWARD_OPS:
                _read_forward(op, body, node, shapes, folder, finder, gate_order)
            found.append(op)
    return found


def _read_forward(op: FoundOp, body, node, shapes, folder, finder: ValueFinder, gate_order: str) -> None:
    try:
        op.forward = rewrite.read_forward_op(body, node, shapes, folder, gate_order)
    except GraphfixError as exc:
        op.problem = exc.reason
    except (ValueError, TypeError, tf.errors.OpError) as exc:  # a malformed node: report, keep listing
        op.problem = f"{type(exc).__name__}: {exc}"
    params_ref = body.data_inputs(node)[3] if len(body.data_inputs(node)) > 3 else None
    if params_ref is None:
        op.problem = op.problem or "the node has fewer than 4 inputs"
        return
    op.params = finder.find(body, params_ref)
    op.params_source = _describe_params(body, params_ref, op.params, op.forward)
    expected = layout.params_size(op.forward.spec) if op.forward else None
    if op.params.value is not None and expected is not None and op.params.value.size != expected:
        op.problem = op.problem or (f"params buffer has {op.params.value.size} elements; "
                                    f"{layout.describe(op.forward.spec)} needs {expected}")


def _describe_params(body: Body, ref, found: Found, fop) -> str:
    if found.value is None:
        return f"known only at run time: {found.why_not}"
    size = f"{found.value.size} values"
    if found.variables:
        return f"saved {_plural('variable', found.variables)} ({size}, read at run time)"
    node = None if ref.is_arg else body.node(ref.node)
    if node is not None and node.op == "Const":
        return f"constant: Const {node.name!r} ({size})"
    if node is not None and node.op in CANONICAL_TO_PARAMS:
        return f"constant: {node.op} {node.name!r} over constants ({size})"
    producer = f"{node.op} {node.name!r}" if node is not None else f"argument {ref.node!r}"
    return f"constant: computed from constants by {producer} ({size})"


def _reachability(graph_def: graph_pb2.GraphDef, meta):
    """reach(function name or TOP_LEVEL, node name) -> the signatures (or ["top level"]) that run it."""
    if meta is None:
        live = reachable_functions(graph_def)
        return lambda key, node: [TOP_LEVEL] if key == TOP_LEVEL or key in live else []
    by_signature = {}
    top = GraphBody(graph_def)
    for name, sig in sorted(meta.signature_def.items()):
        if name.startswith("__"):  # __saved_model_init_op and the like: not something a user calls
            continue
        nodes = ancestors(top, [t.name.split(":")[0] for t in sig.outputs.values()])
        view = graph_pb2.GraphDef()
        view.node.extend(n for n in graph_def.node if n.name in nodes)
        view.library.CopyFrom(graph_def.library)
        by_signature[name] = (nodes, reachable_functions(view))

    def reach(key, node):
        return [name for name, (nodes, functions) in by_signature.items()
                if (node in nodes if key == TOP_LEVEL else key in functions)]
    return reach


def _import(graph_def: graph_pb2.GraphDef) -> tf.Graph:
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def _once(fn):
    cache = []

    def get():
        if not cache:
            cache.append(fn())
        return cache[0]
    return get


def _plural(word: str, items) -> str:
    if isinstance(items, int):
        return f"{items} {word}{'s' if items != 1 else ''}"
    return f"{word}{'s' if len(items) != 1 else ''} {', '.join(items)}"


__all__ = ["FoundOp", "Part", "Survey", "inspect_model", "survey_graph_def", "load_parts", "InputError"]
