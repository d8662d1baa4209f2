"""Targets: how each cuDNN RNN configuration is emitted (`graphfix.rewrite.target.Target`).

    cpu.py    standard-op While-loop functions that run on any CPU (the default)
    tflite/   static loops and fused LSTMs that TFLite's converter takes with builtins only
"""
