"""The state one conversion shares between handlers: the output graph, the report, the target, traced functions."""

from __future__ import annotations

import dataclasses
from typing import Callable

import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from graphfix.cudnn import gates
from graphfix.errors import GraphfixError
from graphfix.graph.traced import TracedFunction
from graphfix.report import Report
from graphfix.rewrite.target import Target


@dataclasses.dataclass
class Context:
    """One conversion's shared state. target: how forward ops are emitted (`rewrite.target.Target`)."""

    graph_def: graph_pb2.GraphDef
    report: Report
    target: Target
    gate_order: str = gates.CUDNN
    _shape_graph: tf.Graph | None = None
    _traced: dict = dataclasses.field(default_factory=dict)

    def function(self, key, trace: Callable[[], TracedFunction]) -> TracedFunction:
        """The traced function for `key`, traced and added to the library on first use.

        Tracing dominates conversion time, and models repeat configurations (a
        Bidirectional layer's two directions, stacked layers of one size), so nodes of the
        same configuration share one function, named after the first of them.
        """
        if key not in self._traced:
            self._traced[key] = trace()
            self.add_function(self._traced[key])
        return self._traced[key]

    def add_function(self, traced: TracedFunction) -> None:
        """Add the traced FunctionDefs to the library, or reuse the same ones already there.

        graphfix names functions after the node path plus a digest of their configuration,
        so two nodes whose paths sanitize alike ("a/b", "a_b") and share a configuration
        get the same, identical function: it is reused. A different function under such a
        name is what a model converted by an earlier graphfix holds, and is refused.
        """
        existing = {f.signature.name: f for f in self.graph_def.library.function}
        new = [f for f in traced.function_defs if f.signature.name not in existing]
        clash = [f.signature.name for f in traced.function_defs if f.signature.name in existing
                 and not _same_function(existing[f.signature.name], f)]
        if clash:
            raise GraphfixError(f"function name {clash[0]!r} already exists in the library with a "
                                "different body; was this model converted by graphfix already?")
        self.graph_def.library.function.extend(new)

    def shape_graph(self) -> tf.Graph:
        """The input graph imported once (no kernels needed) for static shape inference."""
        if self._shape_graph is None:
            self._shape_graph = tf.Graph()
            with self._shape_graph.as_default():
                tf.graph_util.import_graph_def(self.graph_def, name="")
        return self._shape_graph


def _same_function(a, b) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
