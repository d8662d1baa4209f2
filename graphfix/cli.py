"""Command line: `python -m graphfix MODEL [-o OUT] [--force] [--verify] [--gate-order ORDER]`.

MODEL is a SavedModel directory, a GraphDef file, or a Keras HDF5 file (.h5) with CuDNNLSTM /
CuDNNGRU layers. Subcommands, named by the first argument that is not an option (a model
literally named "inspect" is given as ./inspect):

    python -m graphfix [convert] MODEL ...             convert (the default command)
    python -m graphfix inspect MODEL [--json]          list the cuDNN ops, convert nothing
    python -m graphfix extract MODEL -o weights.npz    their weights in Keras's layout
    python -m graphfix help [COMMAND]                  the help of a command

Usage errors exit 2 before TensorFlow is imported (argparse's own exit code).

Exit codes: 0 done (or nothing to convert), 1 internal error, 2 unreadable input,
3 params buffer fits no layout, 4 unsupported op or configuration, 5 output not writable,
6 --verify found an op off the reference, or the converted model did not run.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
import traceback

from graphfix.quiet_import import import_tensorflow_quietly

EPILOG = """\
exit codes:
  0  converted; or no cuDNN op runs in the model (none at all, or only in functions nothing
     calls, as tf_keras SavedModels keep them): it already runs on CPU; nothing is written
     then, unless -o was given (the model is written to it as it is)
  1  internal error (please report it, with --debug output)
  2  the input cannot be read or is not a model
  3  a params buffer fits no cuDNN layout
  4  an op or configuration that cannot be converted (e.g. a training graph)
  5  the output cannot be written (exists without --force, not writable, disk full)
  6  --verify: a converted op differs from the cuDNN reference beyond its dtype's tolerance,
     or the converted model does not run on CPU (nothing is written then)

examples:
  python -m graphfix model_dir/               # SavedModel: writes model_dir_cpu/
  python -m graphfix model.pb                 # frozen GraphDef: writes model_cpu.pb
  python -m graphfix model.pbtxt -o cpu.pbtxt --force
  python -m graphfix model.pb --verify        # check every converted op, then write
  python -m graphfix legacy.h5                # Keras CuDNNLSTM/CuDNNGRU -> LSTM/GRU: legacy_cpu.h5
  python -m graphfix legacy.h5 -o model.keras # the same, in Keras 3's format
  python -m graphfix model_dir/ --target tflite --batch-size 1   # model_dir_tflite/ + model_dir.tflite
  python -m graphfix model_dir/ --target onnx -o model.onnx   # native ONNX LSTM/GRU (pip install "graphfix[onnx]")
  python -m graphfix inspect model_dir/       # list the cuDNN ops (--json for machines)
  python -m graphfix extract model_dir/ -o weights.npz   # Keras-layout weights
"""

COMMANDS = ("convert", "inspect", "extract", "help")
DEPENDENCIES = {"tensorflow": "tensorflow", "numpy": "numpy", "google": "protobuf", "h5py": "h5py"}  # module: package
TFLITE_ONLY = ("batch_size", "tflite", "no_fused_lstm")
GATE_ORDER_HELP = ("how the model's params order the LSTM gates: ifco (cuDNN, default) or ifoc "
                   "(models exported by ROCm builds of Keras)")


def _common(parser: argparse.ArgumentParser) -> None:
    from graphfix.version import __version__
    parser.add_argument("--version", action="version", version=f"graphfix {__version__}")
    parser.add_argument("--gate-order", choices=("ifco", "ifoc"), default="ifco", help=GATE_ORDER_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's own logs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphfix",
        description="Rewrite TensorFlow cuDNN RNN ops (CudnnRNN, CudnnRNNV2, CudnnRNNV3 and their "
                    "params helpers) into standard ops, so a GPU-trained model runs on CPU. "
                    "Subcommands: 'graphfix inspect MODEL' and 'graphfix extract MODEL -o OUT.npz' "
                    "(each with --help).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a SavedModel directory, a frozen GraphDef (binary .pb or text .pbtxt), or a "
                                      "Keras HDF5 file (.h5: model.save or save_weights) with CuDNNLSTM/CuDNNGRU "
                                      "layers")
    parser.add_argument("-o", "--output", help="where to write the converted model (default: MODEL_DIR_cpu/ "
                                               "for a SavedModel, MODEL_cpu.pb for a GraphDef, same format "
                                               "as the input; for a Keras .h5: MODEL_cpu.h5, or OUT.keras for "
                                               "Keras 3's format)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("--verify", action="store_true",
                        help="before writing, run every converted op on CPU with random inputs against the "
                             "numpy reference of cuDNN, and the whole model once; exit 6 if it fails")
    parser.add_argument("--target", choices=("cpu", "tflite", "onnx"), default="cpu",
                        help="tflite: a SavedModel (default MODEL_DIR_tflite/) with a fixed batch that the TFLite "
                             "converter converts with builtin ops only, LSTMs fused (see docs/tflite.md); "
                             "onnx: one .onnx file (default MODEL.onnx), cuDNN RNNs as ONNX LSTM/GRU/RNN nodes, "
                             "the rest converted by tf2onnx (see docs/onnx.md)")
    parser.add_argument("--batch-size", type=_positive_int, help="--target tflite: the fixed batch size (needed when the "
                                                       "model's signatures leave the batch open)")
    parser.add_argument("--tflite", metavar="FILE", help="--target tflite: where to write the .tflite model "
                                                         "(default: MODEL.tflite beside the input)")
    parser.add_argument("--no-fused-lstm", action="store_true",
                        help="--target tflite: LSTMs as While loops of builtin ops, not TFLite's fused "
                             "UNIDIRECTIONAL_SEQUENCE_LSTM")
    _common(parser)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphfix inspect",
        description="List every cuDNN op of a SavedModel or GraphDef without converting it: where it "
                    "sits, its configuration, where its params come from, and whether anything runs it.",
        epilog="exit codes: 0 listed (also when an op could not be read: see its 'problem'), "
               "1 internal error, 2 the input cannot be read")
    parser.add_argument("model", help="a SavedModel directory, a frozen GraphDef, or a Keras HDF5 file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text (every op)")
    parser.add_argument("--all", action="store_true", help="also list in full the ops nothing in the model calls "
                                                           "(tf_keras's GPU variants and gradients)")
    _common(parser)
    return parser


def build_extract_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphfix extract",
        description="Write the weights of every cuDNN op, per layer and direction, in Keras's LSTM/GRU/"
                    "SimpleRNN layout (kernel, recurrent_kernel, bias), to a .npz file; its "
                    "'__manifest__' entry (JSON) describes each op.",
        epilog="exit codes: as for conversion (2 unreadable input, 3 params fit no layout, 4 weights that "
               "cannot be read, 5 output not writable)")
    parser.add_argument("model", help="a SavedModel directory, a frozen GraphDef, or a Keras HDF5 file")
    parser.add_argument("-o", "--output", required=True, help="the .npz file to write")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    _common(parser)
    return parser


PARSERS = {"convert": build_parser, "inspect": build_inspect_parser, "extract": build_extract_parser}


def split_command(argv: list[str]) -> tuple[str, list[str], str | None]:
    """(command, its arguments, the first argument that is not an option): that argument
    names the command when it is one of COMMANDS (options may come before it:
    `graphfix -q inspect DIR`); otherwise the command is convert."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if not arg.startswith("-"):
            if arg in COMMANDS:
                return arg, argv[:i] + argv[i + 1:], arg
            return "convert", argv, arg
    return "convert", argv, None


def parse_args(argv: list[str]) -> tuple[str, argparse.Namespace]:
    """(command, arguments), or SystemExit(2) with argparse's usage line for a usage error.

    Everything here runs before TensorFlow is imported, so a usage error costs nothing.
    """
    command, argv, first = split_command(argv)
    if command == "help":
        topic = next((a for a in argv if a in PARSERS), "convert")
        PARSERS[topic]().print_help()
        raise SystemExit(0)
    parser = PARSERS[command]()
    close = difflib.get_close_matches(first or "", COMMANDS, n=1, cutoff=0.6)
    if first not in COMMANDS and close and not os.path.exists(first):  # before argparse's "unrecognized arguments"
        parser.error(f"no such file or command {first!r}; did you mean 'graphfix {close[0]} ...'?")
    args = parser.parse_args(argv)
    if command == "convert":
        given = [f"--{name.replace('_', '-')}" for name in TFLITE_ONLY if getattr(args, name) not in (None, False)]
        if given and args.target != "tflite":
            parser.error(f"{' and '.join(given)} only mean{'s' if len(given) == 1 else ''} something "
                         "with --target tflite")
    return command, args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, args = parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    from graphfix.errors import (
        GraphfixError,  # no TensorFlow import: that comes next, quietly
    )

    try:
        if not args.debug:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import_tensorflow_quietly()
        return {"convert": _convert, "inspect": _inspect, "extract": _extract}[command](args)
    except GraphfixError as exc:
        if args.debug:
            traceback.print_exc()
        verification = getattr(getattr(exc, "report", None), "verification", None)
        for line in verification.lines() if verification is not None else []:
            print(line, file=sys.stderr)
        print(f"graphfix: error: {exc}", file=sys.stderr)
        if command != "inspect":
            print("nothing was written", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (`inspect --json | head`): not the model's fault
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: say so plainly, and keep the promise of no partial output
        if args.debug:
            traceback.print_exc()
        missing = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else None
        if missing in DEPENDENCIES:
            print(f"graphfix: error: {DEPENDENCIES[missing]} is not installed for {sys.executable}: install graphfix with "
                  "its dependencies (pip install PATH_TO_GRAPHFIX, see README 'Install'), or use the "
                  "environment scripts/setup.sh made (.venv/bin/python -m graphfix)", file=sys.stderr)
            return 1
        print(f"graphfix: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes, not as it was when main() first ran
    (callers that run main() in-process, as tests do, swap sys.stderr between runs)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property decides
        pass


def _setup_logging(debug: bool, quiet: bool) -> None:
    """graphfix's own progress ("converting ...") on stderr as INFO; --quiet keeps only warnings.

    The handler sits on the "graphfix" logger, not the root: TensorFlow's Python logger
    (fingerprints, loading) keeps its own format and, without --debug, only its errors.
    """
    log = logging.getLogger("graphfix")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):  # main() may run twice in-process
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("graphfix: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if debug else logging.ERROR)


def _convert(args) -> int:
    from graphfix import api
    if args.target == "tflite":
        from pathlib import Path

        from graphfix.targets import tflite
        check = None
        if args.verify:  # LiteRT against the numpy reference (graphfix.tools.verify_tflite)
            import functools

            from graphfix.tools.verify_tflite import verify_tflite
            check = functools.partial(verify_tflite, gate_order=args.gate_order, src=Path(args.model))
        tflite_file = args.tflite or tflite.default_tflite_file(Path(args.model))
        report = tflite.convert_for_tflite(args.model, args.output, batch_size=args.batch_size,
                                           tflite_file=tflite_file, force=args.force, gate_order=args.gate_order,
                                           fuse_lstm=not args.no_fused_lstm, check=check)
        _print(report.lines(), args.quiet)
        return 0
    if args.target == "onnx":
        from graphfix.targets import onnx as onnx_target
        report = onnx_target.convert_to_onnx(args.model, args.output, force=args.force, gate_order=args.gate_order,
                                             verify=args.verify)
        _print(report.lines(), args.quiet)
        return 0
    report = api.convert(args.model, args.output, force=args.force, gate_order=args.gate_order,
                         verify=args.verify)
    if not report.changed:
        from graphfix.report import plural
        written = (f"wrote it as it is to {report.output} (as -o asked)" if report.output
                   else "nothing written (pass -o to write it anyway)")
        if getattr(report, "left_unchanged", None):
            print(f"{args.model}: cuDNN ops only in {plural(len(report.left_unchanged), 'function')} that nothing in the "
                  "model calls (tf_keras keeps GPU variants and gradients so); the model already runs on CPU as "
                  f"it is; nothing to convert; {written}")
        else:
            found = "CuDNNLSTM or CuDNNGRU layer" if hasattr(report, "layers") else "cuDNN RNN op"  # Keras file or graph
            print(f"{args.model}: no {found} found; nothing to convert; {written}")
        return 0
    _print(report.lines(), args.quiet)
    return 0


def _inspect(args) -> int:
    from graphfix.tools.inspect import inspect_model
    survey = inspect_model(args.model, gate_order=args.gate_order)
    if args.json:
        print(json.dumps(survey.to_json(), indent=2))
    else:
        print("\n".join(survey.lines(every_op=args.all)))
    return 0


def _extract(args) -> int:
    from graphfix.tools.extract import extract
    result = extract(args.model, args.output, force=args.force, gate_order=args.gate_order)
    if not result.ops:
        print(f"{args.model}: no cuDNN RNN op with readable weights found; nothing written")
        return 0
    _print(result.lines(), args.quiet)
    return 0


def _print(lines: list[str], quiet: bool) -> None:
    for line in lines:
        if quiet and not line.startswith("warning:"):
            continue
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)


def main_entry() -> None:
    raise SystemExit(main())
