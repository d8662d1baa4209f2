"""Command line: `python -m graphfix MODEL [-o OUT] [--force]`; MODEL is a SavedModel dir or a GraphDef.

Exit codes: 0 converted (or nothing to convert), 1 internal error, 2 unreadable input,
3 params buffer fits no layout, 4 unsupported op or configuration, 5 output not writable.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

EPILOG = """\
exit codes:
  0  converted, or the model holds no cuDNN op (nothing is written then)
  1  internal error (please report it, with --debug output)
  2  the input cannot be read or is not a model
  3  a params buffer fits no cuDNN layout
  4  an op or configuration that cannot be converted (e.g. a training graph)
  5  the output cannot be written (exists without --force, not writable, disk full)

examples:
  python -m graphfix model_dir/               # SavedModel: writes model_dir_cpu/
  python -m graphfix model.pb                 # frozen GraphDef: writes model_cpu.pb
  python -m graphfix model.pbtxt -o cpu.pbtxt --force
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphfix",
        description="Rewrite TensorFlow cuDNN RNN ops (CudnnRNN, CudnnRNNV2, CudnnRNNV3 and their "
                    "params helpers) into standard ops, so a GPU-trained model runs on CPU.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a SavedModel directory, or a frozen GraphDef (binary .pb or text .pbtxt)")
    parser.add_argument("-o", "--output", help="where to write the converted model (default: MODEL_DIR_cpu/ "
                                               "for a SavedModel, MODEL_cpu.pb for a GraphDef, same format "
                                               "as the input)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's own logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # Progress ("converting ...") goes to stderr as INFO; --quiet keeps only warnings.
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="graphfix: %(message)s")
    from graphfix import api  # after the env var: importing TensorFlow reads it
    from graphfix.errors import GraphfixError

    try:
        report = api.convert(args.model, args.output, force=args.force)
    except GraphfixError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"graphfix: error: {exc}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: say so plainly, and keep the promise of no partial output
        if args.debug:
            traceback.print_exc()
        print(f"graphfix: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    if not report.changed:
        print(f"{args.model}: no cuDNN RNN op found; nothing to convert, nothing written")
        return 0
    for line in report.lines():
        if args.quiet and not line.startswith("warning:"):
            continue
        print(line, file=sys.stderr if line.startswith("warning:") else sys.stdout)
    return 0


def main_entry() -> None:
    raise SystemExit(main())
