"""Shared helpers for the scripts/bench_*.py benchmarks (not part of graphfix).

What lives here:
  * quiet TensorFlow start-up and a description of the machine for the report;
  * `keras3_cudnn_path()`: trace Keras 3 LSTM/GRU on the cuDNN path on a CPU machine
    (CUDNN_FACTS.md section 2);
  * `interleave()`: interleaved timing of several candidates in one process (random order
    per round), so that machine noise (this box is shared) hits every candidate alike;
  * `pack_cudnn()`: Keras-layout weights -> a cuDNN params buffer, written here from the
    layout in CUDNN_FACTS.md section 3 rather than taken from graphfix, so that a benchmark's
    agreement check does not rest on the code it measures;
  * `raw_cudnn_graph_def()` (a TF1-style frozen graph around one CudnnRNNV2 op),
    `GraphDefSession` (runs a frozen GraphDef in a Session) and `freeze_keras3()`;
  * child-process helpers for peak-memory measurements (one child per measurement, with an
    RSS cap), and `StackSampler`, a sampling profiler of time and resident set.

Only the standard library and numpy are imported at module level; TensorFlow is imported
by the callers after `quiet_tensorflow()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python scripts/bench_x.py`: graphfix from this checkout
    sys.path.insert(0, str(REPO))

KERAS3_RNN_MODULE = "keras.src.backend.tensorflow.rnn"


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter (call before importing tensorflow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")


# ---------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_available_gib() -> float:
    """MemAvailable from /proc/meminfo, GiB (nan if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def machine_lines() -> list[str]:
    """Markdown bullet lines describing the machine and library versions."""
    versions = []
    for name in ("tensorflow", "keras", "tf_keras", "numpy", "google.protobuf", "onnxruntime", "tf2onnx"):
        try:
            module = __import__(name, fromlist=["__version__"])
            versions.append(f"{name.split('.')[-1]} {module.__version__}")
        except Exception:  # optional packages may be absent or broken; just leave them out
            pass
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    total = float("nan")
    try:
        total = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"- graphfix: {graphfix_state()}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, {total:.1f} GiB RAM "
        f"({mem_available_gib():.1f} GiB available), load average {load} at start",
        f"- python {platform.python_version()}; " + ", ".join(versions),
    ]


def graphfix_state() -> str:
    """HEAD commit, and whether graphfix/ differs from it (others edit it concurrently)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "graphfix")
    except OSError:
        return "unknown (no git)"
    return f"commit {head}" + (f" + uncommitted changes in graphfix/ ({len(dirty.splitlines())} file(s))"
                               if dirty else " (graphfix/ clean)")


# ---------------------------------------------------------------------------------------------
# Keras 3 on the cuDNN path


@contextlib.contextmanager
def keras3_cudnn_path() -> Iterator[None]:
    """While active, Keras 3 LSTM/GRU trace `CudnnRNNV3` as if a GPU were present.

    `import keras.src.backend.tensorflow.rnn as m` would bind the function of that name,
    not the module, hence sys.modules.
    """
    import keras  # noqa: F401  (loads the backend module)
    module = sys.modules[KERAS3_RNN_MODULE]
    original = module._is_gpu_available
    module._is_gpu_available = lambda: True
    try:
        yield
    finally:
        module._is_gpu_available = original


def count_ops(saved_model_dir: Path, prefix: str = "Cudnn") -> int:
    """Nodes whose op starts with `prefix` in saved_model.pb (graph and function library)."""
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    n = 0
    for meta in proto.meta_graphs:
        n += sum(node.op.startswith(prefix) for node in meta.graph_def.node)
        for f in meta.graph_def.library.function:
            n += sum(node.op.startswith(prefix) for node in f.node_def)
    return n


# ---------------------------------------------------------------------------------------------
# cuDNN params buffer from Keras weights (independent of graphfix.cudnn.layout)

_GATES = {"lstm": 4, "gru": 3}
# Keras gate blocks in cuDNN order: LSTM both i,f,c,o; Keras GRU is z,r,n and cuDNN r,z,n.
_KERAS_BLOCK_FOR_CUDNN_GATE = {"lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}


def pack_cudnn(mode: str, layers: Sequence[Sequence[Sequence[np.ndarray]]]) -> np.ndarray:
    """Keras weights -> one flat cuDNN params buffer (CUDNN_FACTS.md section 3).

    layers[l][d] = (kernel [in, G*H], recurrent_kernel [H, G*H], bias) in Keras layout:
    bias [G*H] for LSTM (goes to bR, bW = 0), [2, G*H] for GRU reset_after (input bias ->
    bW, recurrent bias -> bR). All matrices of all pseudo-layers first (W then R, each
    gate's [H, in] block row-major = the Keras column block transposed), then all biases.
    """
    G, order = _GATES[mode], _KERAS_BLOCK_FOR_CUDNN_GATE[mode]
    mats, biases = [], []
    for layer in layers:
        for kernel, recurrent, bias in layer:
            H = recurrent.shape[0]
            block = lambda a, g: a[..., g * H:(g + 1) * H]
            mats += [block(kernel, g).T.ravel() for g in order]
            mats += [block(recurrent, g).T.ravel() for g in order]
            if mode == "lstm":
                b_w, b_r = np.zeros_like(bias), bias
            else:
                b_w, b_r = bias[0], bias[1]
            biases += [block(b_w, g) for g in order] + [block(b_r, g) for g in order]
            assert kernel.shape[1] == G * H
    return np.concatenate(mats + biases).astype(np.float32)


def cudnn_params_size(mode: str, num_layers: int, units: int, input_size: int, num_dirs: int) -> int:
    """Element count of the params buffer (linear input, no projection)."""
    G, H = _GATES[mode], units
    total = 0
    for layer in range(num_layers):
        width = input_size if layer == 0 else num_dirs * H
        total += num_dirs * (G * H * width + G * H * H + 2 * G * H)
    return total


# ---------------------------------------------------------------------------------------------
# Timing


def interleave(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 2,
               min_round_s: float = 0.2, settle_s: float = 0.05, seed: int = 0) -> dict[str, list[float]]:
    """Time each candidate in interleaved rounds; return name -> per-call seconds, one value per round.

    Each candidate is called `warmup` times first (tracing, allocation, caches). Its calls
    per round are then chosen so that a round lasts about `min_round_s` (at least 1 call);
    a round's value is the mean over those calls. Every round visits the candidates in a
    fresh random order, and sleeps `settle_s` before each candidate's block: thread pools
    spin-wait after a call (onnxruntime's for a while, TensorFlow's briefly) and would
    otherwise tax whichever candidate always comes next (with a fixed rotation, always the
    same one: an earlier version of this function did that).
    """
    import random
    rng = random.Random(seed)
    names = list(candidates)
    per_round = {}
    for name in names:
        fn = candidates[name]
        for _ in range(warmup):
            fn()
        start = time.perf_counter()
        fn()
        one = max(time.perf_counter() - start, 1e-6)
        per_round[name] = max(1, min(200, int(min_round_s / one)))
    samples: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            fn, k = candidates[name], per_round[name]
            time.sleep(settle_s)
            start = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - start) / k)
    return samples


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def quartiles(xs: Sequence[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return (min(xs), max(xs)) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def fmt_ratio(r: float) -> str:
    return "n/a" if r != r else f"{r:.2f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Memory and child processes


def proc_status_mib(field: str) -> float:
    """A /proc/self/status field such as VmHWM (peak RSS) or VmRSS, in MiB."""
    return _status_mib("/proc/self/status", field)


def peak_rss_mib() -> float:
    """This process's peak resident set (ru_maxrss is KiB on Linux)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: Path, args: Sequence[str], timeout: float = 3600,
              rss_cap_mib: float | None = None) -> dict:
    """Run `python script --child ARGS...` and return the JSON object it prints last.

    One measurement per child, so that peak RSS (VmHWM) belongs to that measurement alone.
    The child is killed if its resident set passes `rss_cap_mib` (this machine is shared:
    a runaway conversion must not take the others down); the result then says so.
    """
    cmd = [sys.executable, str(script), "--child", *args]
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_child_{os.getpid()}_{time.time_ns()}.out"
    with open(out_path, "w+") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        start, seen_mib, killed = time.monotonic(), 0.0, None
        while child.poll() is None:
            try:
                rss = _status_mib(f"/proc/{child.pid}/status", "VmRSS")
            except (OSError, ValueError):
                rss = 0.0
            seen_mib = max(seen_mib, rss)
            if rss_cap_mib and rss > rss_cap_mib:
                killed = f"killed: resident set {rss / 1024:.1f} GiB passed the cap of {rss_cap_mib / 1024:.1f} GiB"
            elif time.monotonic() - start > timeout:
                killed = f"killed: ran past {timeout:.0f} s"
            if killed:
                child.kill()
                child.wait()
                break
            time.sleep(0.1)
        out.seek(0)
        text = out.read()
    out_path.unlink(missing_ok=True)
    lines = [l for l in text.splitlines() if l.startswith("{")]
    if killed or child.returncode != 0 or not lines:
        tail = [l for l in text.strip().splitlines() if not l.startswith(("I0000", "W0000", "WARNING: All log"))][-4:]
        why = killed or f"child exited {child.returncode}"
        return {"error": why + (": " + " / ".join(tail) if tail and not killed else ""), "polled_rss_mib": seen_mib}
    result = json.loads(lines[-1])
    result["polled_rss_mib"] = seen_mib
    return result


def _status_mib(path: str, field: str) -> float:
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_result(**values) -> None:
    """Print a child's result as the JSON line `run_child` reads, with its memory figures."""
    values.setdefault("peak_rss_mib", peak_rss_mib())
    values.setdefault("vm_hwm_mib", proc_status_mib("VmHWM"))
    print(json.dumps(values), flush=True)


def dir_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Raw cuDNN GraphDefs (TF1 style) and running frozen graphs


def raw_cudnn_graph_def(mode: str, params: np.ndarray, batch: int, steps: int, input_size: int,
                        units: int, num_layers: int = 1, num_dirs: int = 1, name: str = "rnn"):
    """A frozen GraphDef around one `CudnnRNNV2` op with a Const params buffer.

        x [B, T, I] (Placeholder "x") -> transpose -> CudnnRNNV2 `name` (time-major, zero states)
          -> `name`:0 [T, B, D*H] -> transpose -> "y" [B, T, D*H]

    Written, never run: a CPU session cannot place the cuDNN op. Give every graph that will
    be loaded into one process its own `name`: graphfix names its functions after the node
    (graphfix_<node>), and TF2's eager context refuses two different functions of one name
    (a Session per graph, as GraphDefSession uses, does not mind; names are unique anyway).
    """
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [batch, steps, input_size], name="x")
        state = tf.zeros([num_layers * num_dirs, batch, units], tf.float32)
        out = tf.raw_ops.CudnnRNNV2(
            input=tf.transpose(x, [1, 0, 2]), input_h=state, input_c=state,
            params=tf.constant(params, name="params"), rnn_mode=mode, input_mode="linear_input",
            direction="bidirectional" if num_dirs == 2 else "unidirectional",
            is_training=False, name=name)
        tf.transpose(out[0], [1, 0, 2], name="y")
    return graph.as_graph_def()


class GraphDefSession:
    """Run a frozen GraphDef the TF1 way, in its own Graph and CPU Session: f(x numpy) -> numpy.

    Why not tf.compat.v1.wrap_function + prune: on this TF (2.21) a pruned wrapped function
    ran the same frozen graph ~1.8x slower than a Session did (8 x 32 steps LSTM, 64 units:
    5.5 ms vs 2.9 ms, for graphfix's output and for Keras's own frozen CPU graph alike), which
    would measure the runner, not the graph.
    """

    def __init__(self, graph_def, feed: str = "x:0", fetch: str = "y:0"):
        import tensorflow as tf
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        self.feed, self.fetch = feed, fetch

    def __call__(self, x):
        return self.session.run(self.fetch, {self.feed: x})


def freeze_keras3(model, signature):
    """Keras 3 model (CPU path) -> (frozen GraphDef, feed name, fetch name)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    concrete = tf.function(lambda x: model(x, training=False), input_signature=signature).get_concrete_function()
    frozen = convert_variables_to_constants_v2(concrete)
    return frozen.graph.as_graph_def(), frozen.inputs[0].name, frozen.outputs[0].name


class StackSampler:
    """Sample the main thread's stack and this process's RSS every `interval` seconds.

    A poor man's profiler that also sees memory held by C++ (TensorFlow, protobuf), which
    tracemalloc cannot: each sample is attributed to the innermost frame under `focus`
    (e.g. "graphfix/") and the innermost frame overall. `table()` gives, per such pair, the
    samples (~ seconds = samples * interval) and the highest RSS seen there.

        with StackSampler(focus="/graphfix/") as sampler:
            work()
        rows = sampler.table()
    """

    def __init__(self, focus: str, interval: float = 0.05):
        import threading
        self.focus, self.interval = focus, interval
        self.samples: dict[tuple[str, str], list] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._main = threading.main_thread().ident

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.wait(self.interval):
            frame = sys._current_frames().get(self._main)
            inner, mine = None, None
            while frame is not None:
                code = frame.f_code
                where = f"{Path(code.co_filename).name}:{code.co_name}"
                if inner is None:
                    inner = where
                if mine is None and self.focus in code.co_filename:
                    mine = where
                frame = frame.f_back
            key = (mine or "(outside focus)", inner or "?")
            entry = self.samples.setdefault(key, [0, 0.0])
            entry[0] += 1
            entry[1] = max(entry[1], proc_status_mib("VmRSS"))

    def table(self, top: int = 12) -> list[list]:
        """[[focus frame, innermost frame, seconds, max RSS MiB], ...] by seconds, descending."""
        rows = sorted(self.samples.items(), key=lambda kv: -kv[1][0])[:top]
        return [[mine, inner, n * self.interval, rss] for (mine, inner), (n, rss) in rows]
