"""The ``vdfzip`` command line. ``main(argv)`` returns the exit code, so tests call it in-process.

Errors the user can fix (bad files, bad options) print one ``vdfzip: error: ...`` line and exit 2;
Ctrl-C and SIGTERM remove what the command was writing, print ``vdfzip: interrupted`` and exit
130 / 143.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import warnings

from . import __version__
from .distributed import is_root
from .errors import VdfzipError
from .fileio import check_output_path

EXIT_OK, EXIT_USAGE = 0, 2
#: 128 + the signal number, as a shell reports a job ended by SIGINT or SIGTERM.
EXIT_INTERRUPTED, EXIT_TERMINATED = 128 + signal.SIGINT, 128 + signal.SIGTERM


class _Terminated(BaseException):
    """SIGTERM (a batch scheduler's wall-time limit) as an exception: like Ctrl-C's
    KeyboardInterrupt, it unwinds every open output, which removes its temporary file."""


class _UsageError(Exception):
    """A command-line usage mistake, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of printing usage and exiting."""

    def error(self, message):
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 1e-6 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [1e-6, 1), got {text}")
    return value


def _decades(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of decades, got {text!r}") from None


def _hint(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def _add_mpi_hints(command: argparse.ArgumentParser) -> None:
    command.add_argument("--mpi-hint", action="append", type=_hint, default=[], metavar="KEY=VALUE",
                         help="MPI-IO hint for the files read and written under an MPI launcher, e.g. striping_factor=32 on Lustre "
                              "(repeatable)")


def _add_jobs(command: argparse.ArgumentParser) -> None:
    command.add_argument("--jobs", type=_positive_int, metavar="N",
                         help="worker processes (default: $VDFZIP_JOBS, else every core this process may use; "
                              "the same output for any N; under an MPI launcher each rank is one process)")


def _add_verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument("--verbose", action="store_true",
                         help="log vdfzip's details to stderr, among them, per MPI rank, a VDFZIP_TIMES line: its wall "
                              "time split into MPI-IO read, write, seal, waiting for the other ranks and compute")


def _log_details() -> None:
    """vdfzip's DEBUG log to stderr, one plain line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("vdfzip")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vdfzip", description="Compress Vlasiator velocity distribution functions.")
    parser.add_argument("--version", action="version", version=f"vdfzip {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    encode = commands.add_parser("encode", help="compress the VDFs of a VLSV file")
    encode.add_argument("input")
    encode.add_argument("-o", "--output", help="output file (default: INPUT with .vdfz before .vlsv)")
    encode.add_argument("--tol", type=_tolerance, default=1e-2, help="max rel L2 per cell after decoding (default 1e-2)")
    encode.add_argument("--method", help="comma-separated codec fallback chain (default: octree; "
                        "lossless always ends it), or auto: per cell the smallest payload of all codecs")
    encode.add_argument("--profile", choices=("restart", "core"),
                        help="restart: also keep the content-block set and the tails (default for restart files); "
                        "core: rel L2 only (default otherwise)")
    encode.add_argument("--tail-tol", type=_decades, metavar="DECADES",
                        help="restart profile: p95 of |log10 g - log10 f| over voxels above the sparsity threshold "
                        "(default 0.3)")
    encode.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    encode.add_argument("--population", action="append", help="compress only this population (repeatable)")
    encode.add_argument("--batch-cells", type=_positive_int, default=256, help="cells per batch (default 256)")
    encode.add_argument("--block-order", default="sorted", choices=("keep", "sorted"),
                        help="sorted: decoded cells list their blocks sorted by id (default; the same block set, "
                             "and Vlasiator addresses blocks by id); keep: Vlasiator's order, byte-identical "
                             "BLOCKIDS, at ~8 bits per block")
    _add_mpi_hints(encode)
    _add_jobs(encode)
    _add_verbose(encode)
    encode.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    encode.add_argument("--json", action="store_true", help="print the summary as JSON")
    encode.set_defaults(run=_run_encode)

    decode = commands.add_parser("decode", help="restore a plain VLSV file from a vdfzip file")
    decode.add_argument("input")
    decode.add_argument("-o", "--output", help="output file (default: INPUT with .vdfz replaced by .decoded)")
    _add_mpi_hints(decode)
    _add_jobs(decode)
    _add_verbose(decode)
    decode.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    decode.set_defaults(run=_run_decode)

    verify = commands.add_parser("verify", help="compare a decoded or compressed file with its original")
    verify.add_argument("original")
    verify.add_argument("other")
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument("--plot", metavar="PNG", help="also draw per-cell errors along the file and VDF slices of "
                        "the worst cells (needs vdfzip[plot])")
    verify.set_defaults(run=_run_verify)

    check = commands.add_parser("check", help="check a compressed file's integrity, without the original")
    check.add_argument("file")
    check.add_argument("--deep", action="store_true",
                       help="also decode every cell and compare its moments with the stored ones")
    check.set_defaults(run=_run_check)

    info = commands.add_parser("info", help="describe a VLSV file: populations, cells, blocks, meshes (compressed ones: ratio, codecs)")
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


def _run_encode(args) -> int:
    from .encode import encode_file
    from .report import format_encode_summary

    summary = encode_file(
        args.input, args.output, tol=args.tol, method=args.method, profile=args.profile, tail_tol=args.tail_tol,
        device=args.device, populations=args.population,
        batch_cells=args.batch_cells, block_order=args.block_order, force=args.force, mpi_hints=dict(args.mpi_hint),
        jobs=args.jobs,
    )
    if summary is not None:  # under MPI: rank 0 reports for the job
        print(json.dumps(summary, indent=2) if args.json else format_encode_summary(summary))
    return EXIT_OK


def _run_decode(args) -> int:
    from .decode import decode_file

    output = decode_file(args.input, args.output, force=args.force, jobs=args.jobs, mpi_hints=dict(args.mpi_hint))
    if is_root():  # under MPI: rank 0 reports for the job
        print(f"wrote {output}")
    return EXIT_OK


def _run_verify(args) -> int:
    from .report import format_verify_report
    from .verify import verify_files

    plot = None if args.plot is None else check_output_path(args.plot, inputs=[args.original, args.other],
                                                            overwrite=True)
    report = verify_files(args.original, args.other, plot=plot)
    if report is not None:  # under MPI: rank 0 reports for the job
        print(json.dumps(report, indent=2) if args.json else format_verify_report(report))
    return EXIT_OK


def _run_check(args) -> int:
    from .check import check_file

    print(check_file(args.file, deep=args.deep))
    return EXIT_OK


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


def _on_signal(signum, frame):
    # the first signal starts the cleanup; more of them must not cut it short. They are caught
    # and dropped, not ignored: a process started during the cleanup (the worker pool replaces
    # workers a group-wide SIGTERM ended, through a new forkserver) would inherit SIG_IGN, drop
    # the pool's own SIGTERM and leave the parent waiting for it forever
    for later in (signal.SIGINT, signal.SIGTERM):
        signal.signal(later, _drop_signal)
    raise KeyboardInterrupt if signum == signal.SIGINT else _Terminated


def _drop_signal(signum, frame):
    """A signal that comes while an earlier one's cleanup runs."""


@contextlib.contextmanager
def _signals_unwind():
    """SIGINT and SIGTERM raise, so outputs clean up; the previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    with _signals_unwind():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    try:
        args = _build_parser().parse_args(argv)
        if getattr(args, "verbose", False):
            _log_details()
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return args.run(args)
    except _UsageError as exc:
        print(f"vdfzip: error: {exc} (see vdfzip --help)", file=sys.stderr)
    except VdfzipError as exc:
        if is_root():  # under MPI every rank has the same agreed error: rank 0 says it once
            print(f"vdfzip: error: {exc}", file=sys.stderr)
    except (KeyboardInterrupt, _Terminated) as exc:
        if is_root():  # under MPI the launcher signals every rank
            print("vdfzip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_TERMINATED
    except BrokenPipeError:  # output piped into e.g. head: nothing left to say
        sys.stderr.close()
        return EXIT_OK
    except OSError as exc:
        print(f"vdfzip: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
