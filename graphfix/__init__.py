"""graphfix: rewrite TensorFlow cuDNN RNN ops into standard ops that run on CPU and TFLite."""

__version__ = "0.1.0"
