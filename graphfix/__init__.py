"""graphfix: rewrite TensorFlow cuDNN RNN ops into standard ops that run on CPU.

    import graphfix
    report = graphfix.convert("model.pb", "model_cpu.pb")
    new_graph_def, report = graphfix.convert_graph_def(graph_def)
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `graphfix.layout` and `graphfix.reference` must import without TensorFlow.
    if name in ("convert", "convert_graph_def"):
        from graphfix import api
        return getattr(api, name)
    raise AttributeError(name)
