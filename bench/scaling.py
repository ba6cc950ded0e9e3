"""Strong scaling of the MPI commands, and a model of a production restart.

Synthesizes a restart of at least ``--gigabytes`` of VDF, then encodes it (default options and
``--method lossless``, the I/O-bound floor: read, zstd, write) and decodes it in one process,
on 2 MPI ranks (``mpiexec -n 2``, one process per rank, ``VDFZIP_JOBS=1``, one thread each),
in one process with 2 worker processes and in one process with 2 threads: wall time, speed-up, each rank's peak RSS and elapsed time
(``/usr/bin/time``), where each rank's time went (vdfzip's DEBUG log), and whether the outputs
are byte-identical to one process's. Beside them, the machine's ceiling: the one-process command
run twice at once, sharing nothing but the machine. From the per-rank throughput it models a 6 TiB restart on 500 nodes × 128
cores against a parallel file system's bandwidth (LUMI-P's published 240 GB/s per Lustre file
system), so that a user sees whether the job is compute- or I/O-bound and how long it takes.

    python bench/scaling.py --gigabytes 1 --markdown bench/RESULTS-scaling.md
"""

from __future__ import annotations

import argparse
import filecmp
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import vdfzip
from vdfzip import synth
from vdfzip.vlasiator import VlasiatorFile

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
#: LUMI-P: 4 Lustre file systems of 20 PB, each with an aggregate bandwidth of 240 GB/s
#: (https://docs.lumi-supercomputer.eu/hardware/storage/lumip/).
PFS_BYTES_PER_S = 240e9
RESTART_BYTES, NODES, CORES = 6 * 2**40, 500, 128
#: VDF bytes per cell of the real shock restart (12.6 MB over 72 cells): how many cells a 6 TiB restart has
REAL_VDF_PER_CELL = 175e3
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_TIMES_LINE = re.compile(r"^VDFZIP_TIMES \w+ rank (\d+): .* read (\S+) s, write (\S+) s, seal (\S+) s, "
                         r"wait (\S+) s, compute (\S+) s$", re.M)


def job(ranks: int, jobs: int, threads: int, *argv) -> dict:
    """Run ``vdfzip argv`` on ``ranks`` MPI ranks (or, for one rank, in one process with ``jobs``
    worker processes), ``threads`` numba threads per process: wall seconds, per rank (elapsed s,
    peak RSS MiB) and the ranks' time logs."""
    with tempfile.TemporaryDirectory() as folder:
        # each rank's /usr/bin/time to a file of its own: the ranks' stderr lines interleave
        timed = ["sh", "-c", f'exec /usr/bin/time -o "{folder}/rank-${{PMI_RANK:-0}}" -f "%e %M" "$@"', "sh",
                 sys.executable, "-m", "vdfzip", *map(str, argv), "--jobs", str(jobs), "--verbose"]
        command = [MPIEXEC, "-n", str(ranks), *timed] if ranks > 1 else timed
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_threads(threads))
        wall = time.perf_counter() - started
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
        per_rank = []
        for rank in range(ranks):
            elapsed, kib = (Path(folder) / f"rank-{rank}").read_text().split()[-2:]
            per_rank.append((float(elapsed), int(kib) / 1024))
    times = {int(r): tuple(map(float, rest)) for r, *rest in _TIMES_LINE.findall(done.stderr)}
    return {"wall": wall, "ranks": per_rank, "times": [times[r] for r in sorted(times)]}


def _threads(threads: int) -> dict:
    """The environment of a process with one worker and ``threads`` threads (numba's and BLAS's)."""
    return os.environ | {"VDFZIP_JOBS": "1"} | {name: str(threads) for name in THREAD_VARIABLES}


def independent_pair(*argvs) -> float:
    """Wall seconds of two one-process ``vdfzip`` commands run at the same time: what two cores
    of this machine give two processes that share nothing but the machine (the ceiling of any
    2-way speed-up here)."""
    started = time.perf_counter()
    running = [subprocess.Popen([sys.executable, "-m", "vdfzip", *map(str, argv), "--jobs", "1"],
                                stdout=subprocess.DEVNULL, env=_threads(1)) for argv in argvs]
    if any(r.wait() for r in running):
        raise RuntimeError(f"vdfzip {argvs} failed")
    return time.perf_counter() - started


def index_bytes_per_cell(compressed: Path) -> float:
    """Bytes of VDFZIP_INDEX (its chunk directory included) per cell of a compressed file."""
    from vdfzip import vlsv

    with vlsv.read(compressed) as f:
        indexes = f.find_all("VDFZIP_INDEX")
        return sum(e.nbytes for e in indexes) / sum(f.element("VDFZIP_MOMENTS", name=e.name).arraysize for e in indexes)


def per_cell_reads(index_per_cell: float, ranks: int) -> str:
    """What each rank reads of the per-cell arrays in the model's job (format 4: its own cells'
    rows, and 1/N of the block counts or of the chunk directory to balance the shares)."""
    from vdfzip import chunks

    cells = RESTART_BYTES / REAL_VDF_PER_CELL
    mine = cells / ranks
    encode = (8 + 4) * mine + 4 * mine  # its cell ids and block counts, and a 1/N slice of the block counts
    decode = (80 + index_per_cell) * mine + 4 * chunks.DIRECTORY_DTYPE.itemsize * (mine / chunks.CHUNK_CELLS + 2)
    return (f"Per-cell arrays: a {RESTART_BYTES / 2**40:.0f} TiB restart at the real shock restart's "
            f"{REAL_VDF_PER_CELL / 1e3:.0f} kB of VDF per cell has {cells / 1e6:.0f} M cells, {mine:.0f} per rank. "
            f"Each encoding rank reads {encode / 1e3:.0f} kB of CELLSWITHBLOCKS and BLOCKSPERCELL (its rows and 1/N "
            f"of the block counts, to balance the shares), each decoding rank {decode / 1e3:.0f} kB of VDFZIP_MOMENTS "
            f"and VDFZIP_INDEX ({index_per_cell:.1f} B per cell measured here, with the chunk directory); rank 0 "
            f"gathers 8 B per cell of rel L2 for the report ({8 * cells / 1e6:.0f} MB).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="VDF bytes of the synthetic restart, at least")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--workdir", type=Path, help="where the restart and outputs go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        restart = tmp / "restart.vlsv"
        cells = max(1, int(args.gigabytes * 1e9 / 0.47e6))  # the synthetic cells average 0.47 MB of VDF
        synth.write_synthetic_restart(restart, cells=cells, seed=3)
        with VlasiatorFile(restart) as f:
            vdf = sum(p.vdf_bytes for p in f.populations.values())
        rows, outputs, rates = [], {}, {}
        for label, argv in (("encode, default", ("encode", restart)), ("encode, lossless", ("encode", restart,
                            "--method", "lossless")), ("decode, default", ("decode",))):
            for ranks, jobs, threads in ((1, 1, 1), (2, 1, 1), (1, 2, 1), (1, 1, 2)):
                out = tmp / f"{label.replace(', ', '-')}-{ranks}-{jobs}-{threads}.vlsv"
                source = outputs.get(("encode, default", 1, 1, 1))
                run = job(ranks, jobs, threads, *(argv if argv[0] == "encode" else ("decode", source)), "-o", out,
                          "--force")
                outputs[label, ranks, jobs, threads] = out
                rates[label, ranks, jobs, threads] = vdf / run["wall"]
                base = vdf / rates[label, 1, 1, 1] if (ranks, jobs, threads) != (1, 1, 1) else None  # 1 thread's wall
                per_rank = ", ".join(f"{e:.0f} s / {m:.0f} MiB" for e, m in run["ranks"][:ranks])
                split = ", ".join(" / ".join(f"{x:.1f}" for x in t) for t in run["times"]) or "n/a"
                identical = "" if base is None else (
                    "yes" if filecmp.cmp(outputs[label, 1, 1, 1], out, shallow=False) else "NO")
                where = (f"{ranks} ranks × 1 thread" if ranks > 1 else f"1 process, {jobs} workers × 1 thread"
                         if jobs > 1 else f"1 process, {threads} thread{'s' * (threads > 1)}")
                rows.append((label, where, run["wall"], base, per_rank, split, identical))
            command = argv if argv[0] == "encode" else ("decode", outputs["encode, default", 1, 1, 1])
            pair = independent_pair(*[(*command, "-o", tmp / f"pair-{k}.vlsv", "--force") for k in (0, 1)])
            rows.append((label, "2 independent processes × 1 thread, one file each (the machine's ceiling)", pair / 2,
                         vdf / rates[label, 1, 1, 1], "", "", ""))
        index_per_cell = index_bytes_per_cell(outputs["encode, default", 1, 1, 1])
    lines = ["# Strong scaling of the MPI commands, and a 6 TiB restart modelled\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, vdfzip "
             f"{vdfzip.__version__}, MPICH from the `mpi` extra. Command: `python bench/scaling.py --gigabytes "
             f"{args.gigabytes:g}` (`make bench-scaling`).\n",
             f"A synthetic restart of {cells} cells, {vdf / 1e9:.2f} GB of VDF (both populations); each command "
             "on R ranks is `mpiexec -n R vdfzip ...`, one process per rank (`VDFZIP_JOBS=1`); the decode decodes "
             "the 1-rank default encoding. MB/s = VDF bytes / wall time; speed-ups are against one process with "
             "one thread. Threads are numba's and BLAS's (`NUMBA_NUM_THREADS`, `OMP_NUM_THREADS`, ...), set for "
             "each row.\n",
             "Per rank, a column splits its time (vdfzip's DEBUG log, `VDFZIP_TIMES`): MPI-IO reads / MPI-IO "
             "writes / the seal (rank 0 hashing the output and ending it) / waiting for the other ranks / the rest, "
             "compute. The worker row is one process with `--jobs 2` (two worker processes, no MPI; its RSS is the "
             "main process's), the threads row one process with numba's kernels on both cores. The ceiling row runs the one-process command twice at the same time, each on its own "
             "copy of the work: its wall time is per copy (half the pair's), so its speed-up is what two processes "
             "that share nothing but this machine get.\n",
             "| command | run on | wall s | MB/s | speed-up | per rank: elapsed / peak RSS (`/usr/bin/time` %M) | "
             "per rank s: read / write / seal / wait / compute | same bytes as 1 process |",
             "|---|---|---|---|---|---|---|---|"]
    for label, where, wall, base, per_rank, split, identical in rows:
        speedup = f"{base / wall:.2f}×" if base else ""
        lines.append(f"| {label} | {where} | {wall:.1f} | {vdf / wall / 1e6:.1f} | {speedup} | {per_rank} | "
                     f"{split} | {identical} |")
    ranks_total = NODES * CORES
    lines += ["", f"## A {RESTART_BYTES / 2**40:.0f} TiB restart on {NODES} nodes × {CORES} cores ({ranks_total} ranks)",
              "", "Per-rank throughput measured here (2 ranks) times the ranks, against the file system: the job "
              f"reads the restart and writes its output once; {PFS_BYTES_PER_S / 1e9:.0f} GB/s is LUMI-P's published "
              "aggregate bandwidth of one Lustre file system (docs.lumi-supercomputer.eu/hardware/storage/lumip/), "
              "what a job striped over all its OSTs can at best share with the other jobs.", "",
              "| command | per rank MB/s | compute s | I/O s (read + write at the PFS's bandwidth) | bound by |",
              "|---|---|---|---|---|"]
    for label, out_ratio in (("encode, default", 67.0), ("encode, lossless", 1.25), ("decode, default", 1 / 67.0)):
        per_rank = rates[label, 2, 1, 1] / 2
        compute = RESTART_BYTES / (per_rank * ranks_total)
        moved = RESTART_BYTES * (1 + 1 / out_ratio) if label.startswith("encode") else RESTART_BYTES * (1 + out_ratio)
        io = moved / PFS_BYTES_PER_S
        lines.append(f"| {label} | {per_rank / 1e6:.2f} | {compute:.0f} | {io:.0f} | "
                     f"{'compute' if compute > io else 'I/O'} |")
    lines += ["", "Output sizes assumed: the real shock restart's ratio 67 for the default profile (README), ~1.25 for "
              "the synthetic and real files; decode reads the compressed file and writes the full restart. Per-rank "
              "rates from synthetic cells overstate a real restart's by ~10% (bench/RESULTS-speed.md)."]
    lines += ["", per_cell_reads(index_per_cell, ranks_total)]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
