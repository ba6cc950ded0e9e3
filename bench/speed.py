"""Throughput: vdfzip's encode and decode MB/s per core and on all cores, beside ZFP and SZ3.

Cases: the real restart ``restart_ipshock_small`` (72 cells) and a synthetic restart written by
``vdfzip synth --cells N --seed 1`` (all six kinds, two populations). On each, every vdfzip
variant (the default: restart profile, ``--tol 1e-2``; ``--profile core``; ``--method lossless``)
is timed in-process, ``encode_file`` then ``decode_file`` with the wall clock around each call,
the best of ``--repeat`` calls, after a warm-up round trip of every variant on a 6-cell file (so
numba's JIT and the imports stay out of the rows). MB/s = the input's VDF bytes (the summary's
``input_vdf_bytes`` over all populations) / wall seconds, for encode and for decode alike; the
ratio is the summary's file-level one. With a ``jobs`` keyword in the library, each call runs with
``jobs=1`` and with ``jobs=os.cpu_count()``; without it, the all-cores columns read n/a. BLAS,
OpenMP and numba are held to one thread per process. ``vdfzip verify`` of the decoded file gives
the quality columns (the guarantees held): worst cell rel L2, p95 of the log10 error over voxels
above the sparsity threshold (the upper edge of verify's 1e-3-decade bin: 0.001 is exact), content
blocks lost, and the worst density / velocity (over vth) /
pressure tensor errors.

ZFP (zfpy) and SZ3 (pysz) run on the same cells in the same run: per cell the bound meeting rel
L2 1e-2 is searched as ``bench/rate_distortion.py`` does (``peer_at_target``), and only the final
compress and decompress at that bound are timed (one thread, dense-box scatter and gather
included). Their ratio is the VDF bytes over stream + zstd of the sorted block ids (rd's honest
bytes); the quality columns are ``vdfzip.verify``'s metrics of their decoded cells.

Start-up, reported apart: one ``vdfzip encode`` of the real restart (default variant, one job) as
a child process, against the in-process time of the same work; the difference is Python's start,
the imports and numba loading vdfzip's kernels from their on-disk cache.

Files go to ``--workdir`` (default: a temporary directory), deleted at the end unless ``--keep``.

Usage: ``python bench/speed.py [--synth-cells 600] [--repeat 1] [--markdown bench/RESULTS-speed.md]``
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import filecmp  # noqa: E402
import importlib.metadata  # noqa: E402
import inspect  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rate_distortion as rd  # noqa: E402

from vdfzip import __version__, vlasiator  # noqa: E402
from vdfzip.decode import decode_file  # noqa: E402
from vdfzip.encode import MAX_BATCH_BLOCKS, encode_file  # noqa: E402
from vdfzip.verify import Accumulator, compare_batch, verify_files  # noqa: E402

TOL = 1e-2
VARIANTS = {"vdfzip default (restart)": {}, "vdfzip --profile core": {"profile": "core"},
            "vdfzip --method lossless": {"method": "lossless"}}
ENCODE_JOBS = "jobs" in inspect.signature(encode_file).parameters
DECODE_JOBS = "jobs" in inspect.signature(decode_file).parameters
VDFZIP = [sys.executable, "-m", "vdfzip.cli"]


def timed(function, *args, repeat: int = 1, **kwargs):
    """(result, best wall seconds) of ``repeat`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return result, best


def round_trip(source: Path, work: Path, options: dict, jobs: int | None, repeat: int) -> dict:
    """Encode and decode ``source`` in-process with ``jobs`` workers (None: the library has no
    ``jobs``): summary, seconds and the paths written."""
    stem = f"{source.stem}.jobs-{jobs}"
    out, decoded = work / f"{stem}.vdfz.vlsv", work / f"{stem}.decoded.vlsv"
    summary, encode_s = timed(encode_file, source, out, tol=TOL, force=True, progress=False, repeat=repeat,
                              **options, **({"jobs": jobs} if ENCODE_JOBS else {}))
    _, decode_s = timed(decode_file, out, decoded, force=True, progress=False, repeat=repeat,
                        **({"jobs": jobs} if DECODE_JOBS else {}))
    vdf_bytes = sum(p["input_vdf_bytes"] for p in summary["populations"].values())
    return {"summary": summary, "encode_mbs": vdf_bytes / 1e6 / encode_s, "decode_mbs": vdf_bytes / 1e6 / decode_s,
            "encode_s": encode_s, "out": out, "decoded": decoded}


def vdfzip_row(source: Path, work: Path, options: dict, repeat: int) -> dict:
    """One variant on one case: one job, all cores when the library can, verify of the result."""
    one = round_trip(source, work, options, 1, repeat)
    row = {"encode": [one["encode_mbs"], None], "decode": [one["decode_mbs"], None], "ratio": one["summary"]["ratio"],
           "encode_s": one["encode_s"], "report": verify_files(source, one["decoded"]), "note": ""}
    if ENCODE_JOBS or DECODE_JOBS:
        every = round_trip(source, work, options, os.cpu_count(), repeat)
        row["encode"][1], row["decode"][1] = every["encode_mbs"], every["decode_mbs"]
        if not filecmp.cmp(one["out"], every["out"], shallow=False):
            row["note"] = f"the jobs={os.cpu_count()} file differs from the jobs=1 file"
        for path in (every["out"], every["decoded"]):
            path.unlink()
    for path in (one["out"], one["decoded"]):
        path.unlink()
    return row


def peer_row(name: str, source: Path) -> dict:
    """ZFP or SZ3 on every cell of ``source`` at rel L2 ``TOL``: the final call's speed, the
    honest ratio and verify's metrics of the decoded cells."""
    encode_s = decode_s = 0.0
    vdf_bytes = honest = cells = 0
    acc = Accumulator()
    with vlasiator.open_file(source) as file:
        for population in (p for p in file.populations.values() if p.block_count):
            vdf_bytes += population.vdf_bytes
            cells += population.cell_count
            for batch in population.batches(MAX_BATCH_BLOCKS):
                decoded = np.empty(batch.values.shape, dtype=np.float64)
                for i in range(len(batch)):
                    cell = rd.Cell(*batch.cell(i), population.mesh)
                    stream, values, cell_encode_s, cell_decode_s = rd.peer_at_target(name, cell, TOL)
                    decoded[batch.offsets[i] : batch.offsets[i + 1]] = values
                    encode_s, decode_s = encode_s + cell_encode_s, decode_s + cell_decode_s
                    honest += len(stream) + rd.id_bytes(cell.block_ids)
                acc.merge(compare_batch(batch, replace(batch, values=decoded), population))
    return {"encode": [vdf_bytes / 1e6 / encode_s, None], "decode": [vdf_bytes / 1e6 / decode_s, None],
            "ratio": vdf_bytes / honest, "report": acc.report(cells), "note": ""}


def start_up(source: Path, work: Path, in_process_s: float) -> dict:
    """One ``vdfzip encode`` child process against the in-process time of the same work."""
    jobs = ["--jobs", "1"] if "--jobs" in subprocess.run([*VDFZIP, "encode", "--help"], capture_output=True,
                                                         text=True).stdout else []
    args = [*VDFZIP, "encode", str(source), "-o", str(work / "cli.vdfz.vlsv"), "--tol", str(TOL), "--force", *jobs]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    child_s = time.perf_counter() - start
    return {"command": f"vdfzip encode {source.name} --tol {TOL:g} {' '.join(jobs)}".strip(), "child_s": child_s,
            "in_process_s": in_process_s}


def speed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def speed_up(pair: list) -> str:
    return "n/a" if pair[1] is None else f"{pair[1] / pair[0]:.2f}×"


def table_row(case: str, method: str, row: dict) -> str:
    r = row["report"]
    moments = " / ".join(f"{r[key]:.1e}" for key in
                         ("density_rel_err_max", "velocity_err_over_vth_max", "pressure_tensor_rel_err_max"))
    encode, decode = row["encode"], row["decode"]
    return (f"| {case} | {method} | {speed(encode[0])} | {speed(encode[1])} | {speed_up(encode)} "
            f"| {speed(decode[0])} | {speed(decode[1])} | {speed_up(decode)} | **{row['ratio']:.1f}** "
            f"| {r['rel_l2']['max']:.2e} | {r['log10_err']['p95']:.3f} | {r['content_blocks_lost_fraction']:.2%} "
            f"| {moments} |")


HEADER = (
    "| case | method | encode MB/s 1 job | all cores | speed-up | decode MB/s 1 job | all cores | speed-up | ratio "
    "| max rel L2 | log10 err p95 | content blocks lost | max density / velocity/vth / pressure tensor err |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()}: {model}, {os.cpu_count()} cores, {ram:.0f} GiB RAM"


def versions() -> str:
    names = ("numpy", "numba", "zfpy", "pysz")
    return f"Python {platform.python_version()}, vdfzip {__version__}, " + ", ".join(
        f"{n} {importlib.metadata.version(n)}" for n in names)


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--synth-cells", type=int, default=600, help="cells of the synthetic restart (≥ 500)")
    parser.add_argument("--repeat", type=int, default=1, help="timed calls per measurement; the best is kept")
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep --workdir at the end")
    parser.add_argument("--markdown", type=Path, help="write the results to this file")
    args = parser.parse_args(argv)

    command = "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vdfzip-bench-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    context = {"date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"), "load_before": load()}
    jobs = [1, os.cpu_count()] if ENCODE_JOBS or DECODE_JOBS else [None]
    print(machine(), versions(), f"jobs {jobs}", sep="\n", flush=True)
    rows = []
    try:
        warm = work / "warm-up.vlsv"
        subprocess.run([*VDFZIP, "synth", str(warm), "--cells", "6", "--seed", "1", "--force"], check=True,
                       capture_output=True)
        start = time.perf_counter()
        for options in VARIANTS.values():
            for n in jobs:
                round_trip(warm, work, options, n, 1)
        warm_up_s = time.perf_counter() - start
        print(f"warm-up round trips: {warm_up_s:.1f} s", flush=True)
        synthetic = work / f"synth-{args.synth_cells}.vlsv"
        subprocess.run([*VDFZIP, "synth", str(synthetic), "--cells", str(args.synth_cells), "--seed", "1", "--force"],
                       check=True, capture_output=True)
        real = args.data / "restart_ipshock_small.vlsv"
        startup = None
        for source in (real, synthetic):
            with vlasiator.open_file(source) as f:
                pops = [p for p in f.populations.values() if p.block_count]
                case = (f"{source.stem}: {pops[0].cell_count} cells × {len(pops)} population{'s' * (len(pops) > 1)}, "
                        f"{sum(p.vdf_bytes for p in pops) / 1e6:.1f} MB of VDF")
            for method, options in VARIANTS.items():
                row = vdfzip_row(source, work, options, args.repeat)
                rows.append((case, method, row))
                print(table_row(case, method, row), flush=True)
                if startup is None:
                    startup = start_up(real, work, row["encode_s"])
            for name in rd.PEERS:
                row = peer_row(name, source)
                rows.append((case, f"{name} at rel L2 {TOL:g}", row))
                print(table_row(case, rows[-1][1], row), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    notes = [f"- {case}, {method}: {row['note']}" for case, method, row in rows if row["note"]]
    text = "\n".join([
        "# Throughput: vdfzip against ZFP and SZ3 (`bench/speed.py`)",
        "",
        f"Machine: {machine()}; load average {context['load_before']} before, {load()} after. {versions()}.",
        f"Date: {context['date']}. Command: `{command}`.",
        ("All cores: `jobs=1` against `jobs=os.cpu_count()`." if len(jobs) > 1 else
         "All cores: n/a (`encode_file` / `decode_file` have no `jobs` keyword yet; one process, one thread)."),
        "",
        (__doc__ or "").split("\n\n", 1)[1].split("Usage:")[0].strip(),
        "",
        HEADER,
        *(table_row(case, method, row) for case, method, row in rows),
        "",
        *(notes and ["Notes:", *notes, ""]),
        "## Start-up",
        "",
        f"Warm-up round trips of every variant on a 6-cell restart: {warm_up_s:.1f} s (first calls: JIT, imports).",
        "",
        "| work | child process s | in-process s (warm) | start-up s |",
        "|---|---|---|---|",
        (f"| `{startup['command']}` | {startup['child_s']:.1f} | {startup['in_process_s']:.1f} "
         f"| {startup['child_s'] - startup['in_process_s']:.1f} |"),
        "",
    ])
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
