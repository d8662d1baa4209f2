"""Show the bundled example failing on CPU before conversion and matching Keras after.

Usage: python scripts/run_example.py ORIGINAL.pb CONVERTED.pb EXPECTED.npz
Exits non-zero if the converted model does not run or differs from the Keras CPU oracle
by more than 1e-5.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from graphfix.quiet_import import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # a user of the demo sees graphfix's lines, not TensorFlow's start-up
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TOLERANCE = 1e-5


def run(path, feeds, fetch):
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as handle:
        graph_def.ParseFromString(handle.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph, config=tf.compat.v1.ConfigProto(device_count={"GPU": 0})) as sess:
        return sess.run(fetch, feeds)


def main(original, converted, expected_path):
    data = np.load(expected_path)
    feeds, fetch = {str(data["input_name"]): data["x"]}, str(data["output_name"])
    try:
        run(original, feeds, fetch)
        print(f"{original}: unexpectedly ran on CPU")
    except tf.errors.OpError as exc:
        lines = [l for l in exc.message.splitlines() if "No OpKernel" in l] or [exc.message]
        print(f"{original} on CPU: {type(exc).__name__}: {lines[0].strip().split(' used by')[0]}")
    got = run(converted, feeds, fetch)
    err = float(np.max(np.abs(got - data["expected"])))
    print(f"{converted} on CPU: output {got.shape}, max abs difference from Keras's CPU layers "
          f"with the same weights: {err:.2e} (tolerance {TOLERANCE:.0e})")
    print("first example's scores:", np.array2string(got[0], precision=5))
    return 0 if err <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
