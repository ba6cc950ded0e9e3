"""Where encode and decode spend their time: cProfile of one variant on one file, one thread.

Runs ``encode_file`` then ``decode_file`` (``jobs=1``; BLAS, OpenMP and numba held to one
thread) once to warm up (numba's JIT, imports), then once each under cProfile, and prints the
wall time, MB/s of the input's VDF bytes and the functions with the most own time
(``tottime``) and the most time below them (``cumtime``). Profiling slows Python-heavy code
more than numpy or zstd calls, so the MB/s here are below ``bench/speed.py``'s.

Usage: ``python bench/profile_calls.py FILE.vlsv [--method lossless] [--profile core] [--top 25]``
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from vdfzip.decode import decode_file  # noqa: E402
from vdfzip.encode import encode_file  # noqa: E402


def _profiled(label: str, call, vdf_bytes: int | None, top: int):
    """Run ``call`` under cProfile, print its wall time and top functions, return its result."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    result = profiler.runcall(call)
    seconds = time.perf_counter() - start
    rate = f", {vdf_bytes / seconds / 1e6:.1f} MB/s" if vdf_bytes else ""
    print(f"\n## {label}: {seconds:.2f} s under cProfile{rate}\n")
    stats = pstats.Stats(profiler)
    for order in ("tottime", "cumulative"):
        print(f"### by {order}")
        stats.sort_stats(order).print_stats(top)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="a VLSV file (e.g. one from `vdfzip synth`)")
    parser.add_argument("--method", help="codec chain, as vdfzip encode --method")
    parser.add_argument("--profile", help="error profile, as vdfzip encode --profile")
    parser.add_argument("--top", type=int, default=25, help="functions listed per ordering")
    args = parser.parse_args()
    options = {k: v for k, v in (("method", args.method), ("profile", args.profile)) if v}
    with tempfile.TemporaryDirectory() as workdir:
        encoded, decoded = Path(workdir) / "e.vdfz", Path(workdir) / "d.vlsv"

        def encode():
            return encode_file(args.file, encoded, jobs=1, force=True, **options)

        def decode():
            return decode_file(encoded, decoded, jobs=1, force=True)

        encode(), decode()  # warm-up: JIT and imports stay out of the profile
        summary = _profiled("encode", encode, None, args.top)
        vdf_bytes = sum(p["input_vdf_bytes"] for p in summary["populations"].values())
        print(f"input VDF bytes: {vdf_bytes}, {vdf_bytes / 1e6:.1f} MB")
        _profiled("decode", decode, vdf_bytes, args.top)


if __name__ == "__main__":
    main()
