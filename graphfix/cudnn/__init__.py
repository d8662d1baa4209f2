"""The cuDNN RNN core, in numpy alone (importable with TensorFlow absent).

    layout.py     RnnSpec, the params buffer's pieces, pack/unpack, input-size solving
    gates.py      gate orders other than cuDNN's (ifoc: ROCm builds of Keras)
    weights.py    per-gate pieces -> the per-layer matrices the CPU graph multiplies by
    reference.py  cuDNN's forward equations: the oracle beside Keras's CPU layers
"""
