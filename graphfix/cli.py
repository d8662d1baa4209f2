"""Command line: `python -m graphfix MODEL [-o OUT] [--force] [--verify] [--gate-order ORDER]`.

MODEL is a SavedModel directory or a GraphDef file. Two subcommands, chosen by the first
argument (a model literally named "inspect" or "extract" is given as ./inspect):

    python -m graphfix inspect MODEL [--json]          list the cuDNN ops, convert nothing
    python -m graphfix extract MODEL -o weights.npz    their weights in Keras's layout

Exit codes: 0 done (or nothing to convert), 1 internal error, 2 unreadable input,
3 params buffer fits no layout, 4 unsupported op or configuration, 5 output not writable,
6 --verify found an op off the reference, or the converted model did not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

from graphfix.quiet_import import import_tensorflow_quietly

EPILOG = """\
exit codes:
  0  converted; or no cuDNN op runs in the model (none at all, or only in functions nothing
     calls, as tf_keras SavedModels keep them): it already runs on CPU, nothing is written
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
  python -m graphfix model_dir/ --target tflite --batch-size 1 --tflite model.tflite
  python -m graphfix inspect model_dir/       # list the cuDNN ops (--json for machines)
  python -m graphfix extract model_dir/ -o weights.npz   # Keras-layout weights
"""

SUBCOMMANDS = ("inspect", "extract")
GATE_ORDER_HELP = ("how the model's params order the LSTM gates: ifco (cuDNN, default) or ifoc "
                   "(models exported by ROCm builds of Keras)")


def _common(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("model", help="a SavedModel directory, or a frozen GraphDef (binary .pb or text .pbtxt)")
    parser.add_argument("-o", "--output", help="where to write the converted model (default: MODEL_DIR_cpu/ "
                                               "for a SavedModel, MODEL_cpu.pb for a GraphDef, same format "
                                               "as the input)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("--verify", action="store_true",
                        help="before writing, run every converted op on CPU with random inputs against the "
                             "numpy reference of cuDNN, and the whole model once; exit 6 if it fails")
    parser.add_argument("--target", choices=("cpu", "tflite"), default="cpu",
                        help="tflite: a SavedModel (default MODEL_DIR_tflite/) with a fixed batch that the TFLite "
                             "converter converts with builtin ops only, LSTMs fused (see docs/tflite.md)")
    parser.add_argument("--batch-size", type=int, help="--target tflite: the fixed batch size (needed when the "
                                                       "model's signatures leave the batch open)")
    parser.add_argument("--tflite", metavar="FILE", help="--target tflite: also write the .tflite model")
    parser.add_argument("--no-fused-lstm", action="store_true",
                        help="--target tflite: LSTMs as While loops, not TFLite's fused LSTM (which clips the "
                             "cell state to +-10)")
    _common(parser)
    return parser


def build_inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphfix inspect",
        description="List every cuDNN op of a SavedModel or GraphDef without converting it: where it "
                    "sits, its configuration, where its params come from, and whether anything runs it.",
        epilog="exit codes: 0 listed (also when an op could not be read: see its 'problem'), "
               "1 internal error, 2 the input cannot be read")
    parser.add_argument("model", help="a SavedModel directory, or a frozen GraphDef")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    parser.add_argument("model", help="a SavedModel directory, or a frozen GraphDef")
    parser.add_argument("-o", "--output", required=True, help="the .npz file to write")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    _common(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        command, argv = argv[0], argv[1:]
    else:
        command = "convert"
    parser = {"convert": build_parser, "inspect": build_inspect_parser, "extract": build_extract_parser}[command]()
    args = parser.parse_args(argv)
    _setup_logging(args.debug, args.quiet)
    if not args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import_tensorflow_quietly()
    from graphfix.errors import (
        GraphfixError,  # after the env var: graphfix imports TensorFlow
    )

    try:
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
        print(f"graphfix: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


def _setup_logging(debug: bool, quiet: bool) -> None:
    """graphfix's own progress ("converting ...") on stderr as INFO; --quiet keeps only warnings.

    The handler sits on the "graphfix" logger, not the root: TensorFlow's Python logger
    (fingerprints, loading) keeps its own format and, without --debug, only its errors.
    """
    log = logging.getLogger("graphfix")
    if not any(getattr(h, "graphfix_cli", False) for h in log.handlers):  # main() may run twice in-process
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("graphfix: %(message)s"))
        handler.graphfix_cli = True
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if debug else logging.ERROR)


def _convert(args) -> int:
    from graphfix import api
    if args.target == "tflite":
        from graphfix.errors import UnsupportedError
        from graphfix.targets import tflite
        if args.verify:
            raise UnsupportedError("--verify is not available with --target tflite")
        report = tflite.convert_for_tflite(args.model, args.output, batch_size=args.batch_size,
                                           tflite_file=args.tflite, force=args.force, gate_order=args.gate_order,
                                           fuse_lstm=not args.no_fused_lstm)
        _print(report.lines(), args.quiet)
        return 0
    if args.batch_size is not None or args.tflite is not None or args.no_fused_lstm:
        from graphfix.errors import UnsupportedError
        raise UnsupportedError("--batch-size, --tflite and --no-fused-lstm need --target tflite")
    report = api.convert(args.model, args.output, force=args.force, gate_order=args.gate_order,
                         verify=args.verify)
    if not report.changed and report.left_unchanged:
        print(f"{args.model}: cuDNN ops only in {len(report.left_unchanged)} function(s) that nothing in the model "
              "calls (tf_keras keeps GPU variants and gradients so); the model already runs on CPU as it is; "
              "nothing to convert, nothing written")
        return 0
    if not report.changed:
        print(f"{args.model}: no cuDNN RNN op found; nothing to convert, nothing written")
        return 0
    _print(report.lines(), args.quiet)
    return 0


def _inspect(args) -> int:
    from graphfix.tools.inspect import inspect_model
    survey = inspect_model(args.model, gate_order=args.gate_order)
    if args.json:
        print(json.dumps(survey.to_json(), indent=2))
    else:
        print("\n".join(survey.lines()))
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
