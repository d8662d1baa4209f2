"""Keras helpers that need neither TensorFlow nor Keras: CuDNN layer weights for CPU layers.

    import graphfix.keras
    lstm.set_weights(graphfix.keras.cpu_weights("CuDNNLSTM", cudnn_layer.get_weights()))
    gru.set_weights(graphfix.keras.cpu_weights("CuDNNGRU", cudnn_gru.get_weights()))  # GRU(reset_after=True)

Whole files (`model.save("m.h5")` or `save_weights`) convert with `graphfix.convert("m.h5")`.
"""

from graphfix.cudnn.keras_weights import check_weights, cpu_weights

__all__ = ["check_weights", "cpu_weights"]
