"""The tools that check before you trust: `inspect`, `--verify`, `extract`.

    inspect.py   every cuDNN op of a model, its configuration, params source, reachability
    verify.py    converted ops against the numpy reference on CPU, and a whole-model run
    extract.py   the weights of every cuDNN op in Keras's LSTM/GRU/SimpleRNN layout (.npz)
"""
