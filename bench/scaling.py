"""Strong scaling of the MPI commands, and a model of a production restart.

Synthesizes a restart of at least ``--gigabytes`` of VDF, then encodes it (default options and
``--method lossless``, the I/O-bound floor: read, zstd, write) and decodes it with 1 and 2 MPI
ranks (``mpiexec -n R``, one process per rank, ``VDFZIP_JOBS=1``): wall time, speed-up, each
rank's peak RSS and elapsed time (``/usr/bin/time``), and whether the outputs of 1 and 2 ranks
are byte-identical. From the per-rank throughput it models a 6 TiB restart on 500 nodes × 128
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
_RANK_LINE = re.compile(r"^VDFZIP_RANK (\S+) (\d+)$", re.M)


def job(ranks: int, *argv) -> dict:
    """Run ``vdfzip argv`` on ``ranks`` MPI ranks: wall seconds, per-rank (elapsed s, peak RSS MiB)."""
    command = [MPIEXEC, "-n", str(ranks), "/usr/bin/time", "-f", "VDFZIP_RANK %e %M", sys.executable, "-m", "vdfzip",
               *map(str, argv)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"VDFZIP_JOBS": "1"})
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr}")
    per_rank = [(float(e), int(kib) / 1024) for e, kib in _RANK_LINE.findall(done.stderr)]
    return {"wall": wall, "ranks": per_rank}


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
            for ranks in (1, 2):
                out = tmp / f"{label.replace(', ', '-')}-{ranks}.vlsv"
                source = outputs.get(("encode, default", 1))
                run = job(ranks, *(argv if argv[0] == "encode" else ("decode", source)), "-o", out, "--force")
                outputs[label, ranks] = out
                rates[label, ranks] = vdf / run["wall"]
                base = rows[-1][2] if ranks == 2 else None
                per_rank = ", ".join(f"{e:.0f} s / {m:.0f} MiB" for e, m in run["ranks"])
                identical = "" if ranks == 1 else ("yes" if filecmp.cmp(outputs[label, 1], out, shallow=False) else "NO")
                rows.append((label, ranks, run["wall"], base, per_rank, identical))
    lines = ["# Strong scaling of the MPI commands, and a 6 TiB restart modelled\n",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, vdfzip "
             f"{vdfzip.__version__}, MPICH from the `mpi` extra. Command: `python bench/scaling.py --gigabytes "
             f"{args.gigabytes:g}` (`make bench-scaling`).\n",
             f"A synthetic restart of {cells} cells, {vdf / 1e9:.2f} GB of VDF (both populations); each command "
             "on R ranks is `mpiexec -n R vdfzip ...`, one process per rank (`VDFZIP_JOBS=1`); the decode decodes "
             "the 1-rank default encoding. MB/s = VDF bytes / wall time.\n",
             "| command | ranks | wall s | MB/s | speed-up | per rank: elapsed / peak RSS | same bytes as 1 rank |",
             "|---|---|---|---|---|---|---|"]
    for label, ranks, wall, base, per_rank, identical in rows:
        speedup = f"{base / wall:.2f}×" if base else ""
        lines.append(f"| {label} | {ranks} | {wall:.1f} | {vdf / wall / 1e6:.1f} | {speedup} | {per_rank} | "
                     f"{identical} |")
    ranks_total = NODES * CORES
    lines += ["", f"## A {RESTART_BYTES / 2**40:.0f} TiB restart on {NODES} nodes × {CORES} cores ({ranks_total} ranks)",
              "", "Per-rank throughput measured here (2 ranks) times the ranks, against the file system: the job "
              f"reads the restart and writes its output once; {PFS_BYTES_PER_S / 1e9:.0f} GB/s is LUMI-P's published "
              "aggregate bandwidth of one Lustre file system (docs.lumi-supercomputer.eu/hardware/storage/lumip/), "
              "what a job striped over all its OSTs can at best share with the other jobs.", "",
              "| command | per rank MB/s | compute s | I/O s (read + write at the PFS's bandwidth) | bound by |",
              "|---|---|---|---|---|"]
    for label, out_ratio in (("encode, default", 67.0), ("encode, lossless", 1.25), ("decode, default", 1 / 67.0)):
        per_rank = rates[label, 2] / 2
        compute = RESTART_BYTES / (per_rank * ranks_total)
        moved = RESTART_BYTES * (1 + 1 / out_ratio) if label.startswith("encode") else RESTART_BYTES * (1 + out_ratio)
        io = moved / PFS_BYTES_PER_S
        lines.append(f"| {label} | {per_rank / 1e6:.2f} | {compute:.0f} | {io:.0f} | "
                     f"{'compute' if compute > io else 'I/O'} |")
    lines += ["", "Output sizes assumed: the real shock restart's ratio 67 for the default profile (README), ~1.25 for "
              "the synthetic and real files; decode reads the compressed file and writes the full restart. Per-rank "
              "rates from synthetic cells overstate a real restart's by ~10% (bench/RESULTS-speed.md)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
