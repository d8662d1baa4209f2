"""graphfix: rewrite TensorFlow cuDNN RNN ops into standard ops that run on CPU.

    import graphfix
    report = graphfix.convert("model.pb", "model_cpu.pb")
    new_graph_def, report = graphfix.convert_graph_def(graph_def)
"""

from graphfix.version import __version__

__all__ = ["__version__", "convert", "convert_graph_def"]


def __getattr__(name):
    # Lazy: the numpy core (`graphfix.cudnn`) must import without TensorFlow.
    if name in ("convert", "convert_graph_def"):
        from graphfix import api
        return getattr(api, name)
    raise AttributeError(name)
