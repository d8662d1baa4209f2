"""Model builders for the tests: they make GPU-only graphs and SavedModels on a CPU machine.

    raw_graphs.py    tf.raw_ops cuDNN graphs (inference and training), hand-built
    keras_graphs.py  Keras 3 and tf_keras models frozen on their cuDNN paths, with CPU oracles
    saved_models.py  GPU-only SavedModels (Keras 3, tf_keras, TF1), with CPU oracles
    tf1_contrib.py   TF1 SavedModels as tf.contrib.cudnn_rnn left them (restore via CanonicalToParams)
    tool_models.py   small models and CLI helpers for inspect, extract and verify
    converted_functions.py  what a converted graph's functions hold (structure assertions)
"""
