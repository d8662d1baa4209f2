"""Conversion wall time and peak memory of graphfix on a large model, against an I/O floor.

Usage (from the repo root):
    .venv/bin/python scripts/bench_conversion.py [--quick] [--repeats N] [--only graphdef|saved_model]
        [--layers L --units H --input I]

Two models of the same size (full: 4-layer bidirectional LSTM, 2048 units, 1024 input
features, about 1.4 GB of float32 weights; --quick: 2 layers, 512 units, 256 inputs, ~38 MB):

  graphdef     a frozen GraphDef (.pb) holding ONE raw CudnnRNNV2 op (num_layers=L,
               bidirectional) whose params input is a Const buffer. graphfix folds the
               buffer into per-layer Consts, so the output is as large as the input.
               (protobuf refuses messages of 2 GB or more, hence the size.)
  saved_model  a Keras 3 SavedModel: L stacked Bidirectional(LSTM(H, return_sequences=True))
               on Input((None, I)), exported on the cuDNN path (2*L CudnnRNNV3 ops).
               graphfix keeps variables as variables: it rewrites saved_model.pb and copies
               variables/.

Each measurement runs in its own child process (so VmHWM, the peak resident set, is that
measurement's alone), one at a time, alternating floor and conversion `--repeats` times:

  floor     read every input file and write an output file of the same size, in one
            process, as graphfix writes it (GraphDef: temp file + fsync + rename;
            SavedModel: plain writes, no fsync, as graphfix's copy does). No TensorFlow.
  convert   graphfix.convert(src, dst) after `import graphfix` (TensorFlow import time and
            its resident set are reported apart, as "baseline").
  phases    once, a diagnostic: the same conversion timed part by part through graphfix's
            internal modules (read/parse, rewrite, serialize, write), with the resident set
            after each part; plus the cost of a bare protobuf parse + serialize of the input.

The parent kills a child whose resident set passes a cap (default: 85% of MemAvailable at
start) and reports that instead of a number.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench_common as bc

SCRIPT = Path(__file__).resolve()
FULL = dict(layers=4, units=2048, input=1024)
QUICK = dict(layers=2, units=512, input=256)


# ---------------------------------------------------------------------------------------------
# Children (each prints one JSON line through bc.child_result)


def child_build_graphdef(path: str, layers: int, units: int, input_size: int) -> None:
    """Write the raw CudnnRNNV2 frozen GraphDef with a random Const params buffer."""
    bc.quiet_tensorflow()
    import numpy as np
    import tensorflow as tf
    n = bc.cudnn_params_size("lstm", layers, units, input_size, 2)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, input_size], name="x")
        state = tf.compat.v1.placeholder(tf.float32, [2 * layers, None, units], name="state")
        params = tf.compat.v1.placeholder(tf.float32, [n], name="params")
        tf.raw_ops.CudnnRNNV2(input=x, input_h=state, input_c=state, params=params, rnn_mode="lstm",
                              input_mode="linear_input", direction="bidirectional",
                              is_training=False, name="rnn")
    graph_def = graph.as_graph_def()
    # Swap the params placeholder for a Const without building a 1+ GB tf.constant in a graph.
    node = next(nd for nd in graph_def.node if nd.name == "params")
    node.op = "Const"
    node.ClearField("attr")
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    tensor = node.attr["value"].tensor
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add().size = n
    rng = np.random.default_rng(0)
    buf = rng.standard_normal(n, dtype=np.float32)
    buf *= 0.02
    tensor.tensor_content = buf.tobytes()
    del buf
    data = graph_def.SerializeToString()
    del graph_def
    Path(path).write_bytes(data)
    bc.child_result(bytes=len(data), params=n)


def child_build_saved_model(path: str, layers: int, units: int, input_size: int) -> None:
    """Export the Keras 3 stacked bidirectional LSTM on the cuDNN path."""
    bc.quiet_tensorflow()
    import keras
    keras.utils.set_random_seed(0)
    # Keras's default initializers (orthogonal recurrent kernels: a QR per layer) are slow at
    # this size and irrelevant to conversion; small random normals do.
    init = keras.initializers.RandomNormal(stddev=0.02, seed=0)
    inp = keras.Input((None, input_size))
    y = inp
    for _ in range(layers):
        y = keras.layers.Bidirectional(keras.layers.LSTM(
            units, return_sequences=True, kernel_initializer=init, recurrent_initializer=init))(y)
    model = keras.Model(inp, y)
    with bc.keras3_cudnn_path():
        model.export(path, verbose=False)
    files = sorted(((str(f.relative_to(path)), f.stat().st_size) for f in Path(path).rglob("*") if f.is_file()),
                   key=lambda item: -item[1])
    bc.child_result(bytes=bc.dir_size(Path(path)), cudnn_ops=bc.count_ops(Path(path)),
                    params=int(model.count_params()), files=files[:4])


def child_floor(src: str, dst: str) -> None:
    """Read every file of `src` and write it to `dst` the way graphfix writes its output."""
    start = time.perf_counter()
    src_p, dst_p = Path(src), Path(dst)
    if src_p.is_file():
        data = src_p.read_bytes()
        fd, tmp = tempfile.mkstemp(dir=dst_p.parent, prefix=".floor.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dst_p)
        total = len(data)
        del data
    else:
        total = 0
        for file in sorted(p for p in src_p.rglob("*") if p.is_file()):
            target = dst_p / file.relative_to(src_p)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = file.read_bytes()
            target.write_bytes(data)
            total += len(data)
            del data
    bc.child_result(seconds=time.perf_counter() - start, bytes=total)


def child_convert(src: str, dst: str) -> None:
    start = time.perf_counter()
    bc.quiet_tensorflow()
    import graphfix
    import graphfix.api  # noqa: F401  (imports TensorFlow now, not inside the timed part)
    import_s = time.perf_counter() - start
    baseline = bc.proc_status_mib("VmRSS")
    start = time.perf_counter()
    report = graphfix.convert(src, dst, force=True)
    seconds = time.perf_counter() - start
    bc.child_result(seconds=seconds, import_s=import_s, baseline_rss_mib=baseline, ops=len(report.ops),
                    bytes=bc.dir_size(Path(dst)))


def child_phases(src: str, dst: str) -> None:
    """Time the conversion part by part; internal APIs, so any failure is reported, not fatal."""
    bc.quiet_tensorflow()
    import graphfix.api  # noqa: F401
    from tensorflow.core.framework import graph_pb2
    parts, hot = [], []

    def mark(name, start):
        parts.append([name, time.perf_counter() - start, bc.proc_status_mib("VmRSS"), bc.proc_status_mib("VmHWM")])

    parts.append(["import graphfix + TensorFlow (baseline)", 0.0, bc.proc_status_mib("VmRSS"),
                  bc.proc_status_mib("VmHWM")])
    src_p, dst_p = Path(src), Path(dst)
    try:
        if src_p.is_file():
            from graphfix import rewrite
            from graphfix.io import graph_def_file
            from graphfix.targets.cpu import CpuTarget
            t = time.perf_counter(); data = src_p.read_bytes(); mark("read bytes", t)
            t = time.perf_counter(); gd = graph_pb2.GraphDef(); gd.ParseFromString(data); mark("parse (bare protobuf)", t)
            t = time.perf_counter(); again = gd.SerializeToString(deterministic=True); mark("serialize (bare protobuf)", t)
            del data, gd, again
            t = time.perf_counter(); gd, consts = graph_def_file.read_graph_def_detached(src_p)
            mark("graph_def_file.read_graph_def_detached (parse, detach large Consts)", t)
            with bc.StackSampler(focus="/graphfix/") as sampler:
                t = time.perf_counter(); out, out_consts, _ = rewrite.convert_detached(gd, consts, CpuTarget())
                mark("rewrite.convert_detached", t)
            hot = sampler.table()
            del gd, consts
            t = time.perf_counter(); graph_def_file.write_graph_def(out, dst_p, out_consts)
            mark("graph_def_file.write_graph_def (streamed serialize + fsync)", t)
        else:
            from graphfix import api
            from graphfix.io import saved_model_dir
            t = time.perf_counter(); proto = saved_model_dir.read_saved_model(src_p); mark("saved_model_dir.read_saved_model (reads every variable)", t)
            with bc.StackSampler(focus="/graphfix/") as sampler:
                t = time.perf_counter(); out, _ = api.convert_saved_model_proto(proto, source=str(src_p)); mark("api.convert_saved_model_proto", t)
            hot = sampler.table()
            if dst_p.exists():
                shutil.rmtree(dst_p)
            t = time.perf_counter(); saved_model_dir.write_saved_model(src_p, out, dst_p, force=True); mark("saved_model_dir.write_saved_model (copy + pb + fingerprint)", t)
    except Exception as exc:  # internal APIs change under concurrent edits: report, do not crash
        parts.append([f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}",
                      float("nan"), float("nan"), float("nan")])
    bc.child_result(parts=parts, hot=hot)


CHILDREN = {"build-graphdef": child_build_graphdef, "build-saved-model": child_build_saved_model,
            "floor": child_floor, "convert": child_convert, "phases": child_phases}


def run_child_main(argv) -> int:
    kind, *rest = argv
    fn = CHILDREN[kind]
    if kind.startswith("build"):
        fn(rest[0], *(int(v) for v in rest[1:]))
    else:
        fn(*rest)
    return 0


# ---------------------------------------------------------------------------------------------
# Parent


def gib(mib: float) -> str:
    return f"{mib / 1024:.2f}"


def measure(model: str, src: Path, work: Path, repeats: int, cap_mib: float, log) -> dict:
    size = bc.dir_size(src)
    runs = {"floor": [], "convert": []}
    for r in range(repeats):
        for what in ("floor", "convert"):
            dst = work / f"{model}_{what}_out{'' if src.is_dir() else '.pb'}"
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
            log(f"{model}: {what} {r + 1}/{repeats}")
            result = bc.run_child(SCRIPT, [what, str(src), str(dst)], rss_cap_mib=cap_mib)
            runs[what].append(result)
            if dst.is_dir():
                shutil.rmtree(dst)
            elif dst.exists():
                dst.unlink()
    dst = work / f"{model}_phases_out{'' if src.is_dir() else '.pb'}"
    log(f"{model}: phases")
    phases = bc.run_child(SCRIPT, ["phases", str(src), str(dst)], rss_cap_mib=cap_mib)
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    return dict(model=model, size=size, runs=runs, phases=phases)


def summarize(results, args, shape) -> None:
    print(f"# bench_conversion ({'quick' if args.quick else 'full'}: {args.repeats} repeat(s))\n")
    print("\n".join(bc.machine_lines()))
    print(f"- model: {shape['layers']}-layer bidirectional LSTM, {shape['units']} units, "
          f"{shape['input']} input features (float32)")
    print("- shared machine: wall times are noisy; floor and conversion alternate, medians shown")
    print("- targets: conversion <= 3x the I/O floor; peak RSS <= 2.5x the model size\n")

    header = ["input", "size GB", "floor s", "convert s", "convert/floor", "floor peak GB",
              "convert peak GB", "baseline GB", "peak/size", "(peak-baseline)/size", "ops"]
    rows = []
    for r in results:
        size_gb = r["size"] / 1e9
        floors = [x for x in r["runs"]["floor"] if "error" not in x]
        converts = [x for x in r["runs"]["convert"] if "error" not in x]
        errors = [x["error"] for x in r["runs"]["floor"] + r["runs"]["convert"] if "error" in x]
        f_s = bc.median([x["seconds"] for x in floors])
        c_s = bc.median([x["seconds"] for x in converts])
        if not floors and not converts and not errors:
            continue  # --repeats 0: phases only
        f_peak = max((x["vm_hwm_mib"] for x in floors), default=float("nan"))
        c_peak = max((x["vm_hwm_mib"] for x in converts), default=float("nan"))
        base = bc.median([x["baseline_rss_mib"] for x in converts])
        size_mib = r["size"] / 2**20
        rows.append([r["model"], f"{size_gb:.3f}", f"{f_s:.2f}", f"{c_s:.2f}", bc.fmt_ratio(c_s / f_s),
                     gib(f_peak), gib(c_peak), gib(base), bc.fmt_ratio(c_peak / size_mib),
                     bc.fmt_ratio((c_peak - base) / size_mib),
                     converts[0]["ops"] if converts else "n/a"])
        for e in errors:
            rows.append([r["model"], "", "", "", "", "", "", "", "", "", f"error: {e}"])
    print("## Conversion time and peak resident set (GB = 1e9 bytes for sizes, GiB for memory)\n")
    print(bc.markdown_table(header, rows))

    print("\n## Each run\n")
    header = ["input", "what", "s", "peak GiB (VmHWM)", "polled max GiB", "import s", "note"]
    rows = []
    for r in results:
        for what in ("floor", "convert"):
            for x in r["runs"][what]:
                if "error" in x:
                    rows.append([r["model"], what, "", "", gib(x.get("polled_rss_mib", float("nan"))), "", x["error"]])
                else:
                    rows.append([r["model"], what, f"{x['seconds']:.2f}", gib(x["vm_hwm_mib"]),
                                 gib(x["polled_rss_mib"]), f"{x.get('import_s', 0):.1f}" if what == "convert" else "",
                                 ""])
    print(bc.markdown_table(header, rows))

    for r in results:
        if r.get("note"):
            print(f"\n- {r['model']}: {r['note']}")
    for r in results:
        print(f"\n## Where the time and memory go: {r['model']} (one run, internal APIs)\n")
        if "error" in r["phases"]:
            print(f"phases child failed: {r['phases']['error']}")
            continue
        rows = [[name, f"{s:.2f}", gib(rss), gib(hwm)] for name, s, rss, hwm in r["phases"]["parts"]]
        print(bc.markdown_table(["part", "s", "RSS after GiB", "peak so far GiB"], rows))
        if r["phases"].get("hot"):
            print("\nInside the rewrite step, sampled every 50 ms (innermost graphfix frame, innermost frame):\n")
            rows = [[mine, inner, f"{s:.1f}", gib(rss)] for mine, inner, s, rss in r["phases"]["hot"]]
            print(bc.markdown_table(["graphfix frame", "innermost frame", "~s", "max RSS GiB"], rows))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return run_child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"small model {QUICK}, 1 repeat")
    parser.add_argument("--repeats", type=int,
                        help="floor/convert pairs per model (default 2, quick 1; 0: only the phases run)")
    parser.add_argument("--only", choices=["graphdef", "saved_model"])
    parser.add_argument("--layers", type=int)
    parser.add_argument("--units", type=int)
    parser.add_argument("--input", type=int)
    parser.add_argument("--cap-gib", type=float, help="kill a child above this RSS (default 85%% of MemAvailable)")
    parser.add_argument("--workdir", default=None, help="where the models are written (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    shape = dict(QUICK if args.quick else FULL)
    for key in shape:
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    cap_mib = (args.cap_gib * 1024) if args.cap_gib else 0.85 * bc.mem_available_gib() * 1024
    params = bc.cudnn_params_size("lstm", shape["layers"], shape["units"], shape["input"], 2)
    if params * 4 >= 2**31 - 2**20:
        print(f"{params * 4 / 1e9:.2f} GB of params: past protobuf's 2 GB message limit", file=sys.stderr)
        return 2

    log = lambda msg: print(f"... {msg}", file=sys.stderr, flush=True)
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench_conversion_", dir=args.workdir))
    try:
        layers, units, inp = str(shape["layers"]), str(shape["units"]), str(shape["input"])
        if args.only in (None, "graphdef"):
            src = work / "cudnn_graph.pb"
            log(f"building {src} ({params * 4 / 1e9:.2f} GB of params)")
            built = bc.run_child(SCRIPT, ["build-graphdef", str(src), layers, units, inp], rss_cap_mib=cap_mib)
            if "error" in built:
                print(f"building the GraphDef failed: {built['error']}", file=sys.stderr)
            else:
                results.append(measure("graphdef", src, work, args.repeats, cap_mib, log))
                results[-1]["note"] = f"{built['params'] * 4 / 1e9:.3f} GB of cuDNN params in one Const"
            src.unlink(missing_ok=True)
        if args.only in (None, "saved_model"):
            src = work / "cudnn_saved_model"
            log(f"building {src} (Keras 3 export, cuDNN path)")
            built = bc.run_child(SCRIPT, ["build-saved-model", str(src), layers, units, inp], rss_cap_mib=cap_mib)
            if "error" in built:
                print(f"building the SavedModel failed: {built['error']}", file=sys.stderr)
            else:
                log(f"SavedModel: {built['bytes'] / 1e9:.2f} GB, {built['cudnn_ops']} Cudnn op node(s)")
                results.append(measure("saved_model", src, work, args.repeats, cap_mib, log))
                results[-1]["note"] = (f"{built['params'] * 4 / 1e9:.3f} GB of Keras weights; largest files: "
                                       + ", ".join(f"{name} {size / 1e9:.3f} GB" for name, size in built["files"]))
            shutil.rmtree(src, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summarize(results, args, shape)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
