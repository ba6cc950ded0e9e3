"""The ``vdfzip`` command line. ``main(argv)`` returns the exit code, so tests call it in-process.

Errors the user can fix (bad files, bad options) print one ``vdfzip: error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import __version__
from .errors import VdfzipError
from .fileio import check_output_path

EXIT_OK, EXIT_USAGE = 0, 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of printing usage and exiting."""

    def error(self, message):
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdfzip", description="Compress Vlasiator velocity distribution functions.")
    parser.add_argument("--version", action="version", version=f"vdfzip {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("info", help="describe a VLSV file: populations, cells, blocks, meshes")
    info.add_argument("file")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_run_info)

    synth = commands.add_parser("synth", help="write a synthetic Vlasiator restart with varied VDFs")
    synth.add_argument("out")
    synth.add_argument("--cells", type=_positive_int, default=100, help="spatial cells (default 100)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    synth.set_defaults(run=_run_synth)
    return parser


def _run_info(args) -> int:
    from .info import describe, format_report
    from .vlasiator import open_file

    with open_file(args.file) as file:
        info = describe(file)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return EXIT_OK


def _run_synth(args) -> int:
    from .synth import write_synthetic_restart

    out = check_output_path(args.out, overwrite=args.force)
    summary = write_synthetic_restart(out, cells=args.cells, seed=args.seed, progress=True)
    print(f"wrote {out}: {summary}")
    return EXIT_OK


def _print_warning(message, category, filename, lineno, file=None, line=None):
    print(f"vdfzip: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        args = _build_parser().parse_args(argv)
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return args.run(args)
    except _UsageError as exc:
        print(f"vdfzip: error: {exc} (see vdfzip --help)", file=sys.stderr)
    except VdfzipError as exc:
        print(f"vdfzip: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"vdfzip: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
