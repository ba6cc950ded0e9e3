"""Read throughput of VDF block data: vdfzip's memory-mapped batches against plain np.fromfile.

Writes (or reuses) a synthetic restart of at least ``--min-gb`` GB, then reads every
population's BLOCKIDS and BLOCKVARIABLE bytes into memory three ways, cold (page cache dropped
for the file with posix_fadvise) and warm:

- ``np.fromfile``: one call per array, the floor any reader has to beat;
- ``vdfzip batches``: ``Population.batches()`` copied into memory, bounded batches of whole cells;
- ``vdfzip batches + moments``: the same plus the moment kernel over each batch.

Usage: ``python bench/io.py [--path FILE] [--min-gb 1.0] [--repeat 3] [--markdown bench/RESULTS-io.md]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from vdfzip import physics, vlasiator, vlsv
from vdfzip.synth import write_synthetic_restart

BATCH_BLOCKS = 1 << 18


def drop_page_cache(path: Path) -> None:
    """Evict ``path`` from the page cache so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def ensure_file(path: Path, min_bytes: int, seed: int) -> Path:
    """Reuse ``path`` if it is large enough, else synthesize one (cells sized from a probe)."""
    if path.exists() and path.stat().st_size >= min_bytes:
        return path
    probe = path.with_suffix(".probe.vlsv")
    write_synthetic_restart(probe, cells=64, seed=seed)
    cells = int(np.ceil(min_bytes / probe.stat().st_size * 64 * 1.05))
    probe.unlink()
    print(f"writing a {cells}-cell synthetic restart to {path} ...", flush=True)
    start = time.perf_counter()
    write_synthetic_restart(path, cells=cells, seed=seed, progress=True)
    print(f"  {path.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def block_arrays(path: Path) -> list[vlsv.Element]:
    with vlsv.read(path) as f:
        return [e for e in f.elements if e.tag in ("BLOCKIDS", "BLOCKVARIABLE")]


def read_fromfile(path: Path) -> int:
    total = 0
    with open(path, "rb") as handle:
        for element in block_arrays(path):
            handle.seek(element.offset)
            total += np.fromfile(handle, element.dtype, element.arraysize * element.vectorsize).nbytes
    return total


def read_batches(path: Path, with_moments: bool = False) -> int:
    total = 0
    with vlasiator.open_file(path) as f:
        for population in f.populations.values():
            for batch in population.batches(max_blocks=BATCH_BLOCKS):
                ids, values = np.array(batch.block_ids), np.array(batch.values)
                total += ids.nbytes + values.nbytes
                if with_moments:
                    physics.moments(ids, values, batch.offsets, population.mesh, population.mass)
    return total


METHODS = {
    "np.fromfile": read_fromfile,
    "vdfzip batches": read_batches,
    "vdfzip batches + moments": lambda path: read_batches(path, with_moments=True),
}


def measure(path: Path, repeat: int) -> list[dict]:
    read_batches(path, with_moments=True)  # compile the moment kernel before timing
    rows = []
    for name, method in METHODS.items():
        for cache in ("cold", "warm"):
            seconds = []
            for _ in range(repeat):
                if cache == "cold":
                    drop_page_cache(path)
                else:
                    method(path)
                start = time.perf_counter()
                nbytes = method(path)
                seconds.append(time.perf_counter() - start)
            best = min(seconds)
            rows.append({"method": name, "cache": cache, "bytes": nbytes, "seconds": best, "MB_per_s": nbytes / best / 1e6})
            print(f"{name:28s} {cache}: {nbytes / 1e6:9.1f} MB in {best:6.2f} s = {nbytes / best / 1e6:8.1f} MB/s", flush=True)
    return rows


def markdown(rows: list[dict], path: Path, machine: str) -> str:
    lines = [
        "# Read throughput of VDF block data (`bench/io.py`)",
        "",
        f"File: synthetic restart, {path.stat().st_size / 1e9:.2f} GB. Machine: {machine}.",
        "Command: `python bench/io.py --repeat 2 --markdown bench/RESULTS-io.md`.",
        "Best of the repeats; cold = file evicted from the page cache before each read.",
        "",
        "| method | cache | MB read | s | MB/s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['cache']} | {r['bytes'] / 1e6:.0f} | {r['seconds']:.2f} | {r['MB_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path("/tmp/vdfzip-bench-io.vlsv"))
    parser.add_argument("--min-gb", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", type=Path, help="write the results table to this file")
    args = parser.parse_args()

    path = ensure_file(args.path, int(args.min_gb * 1e9), args.seed)
    machine = f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    rows = measure(path, args.repeat)
    print(json.dumps({"file_bytes": path.stat().st_size, "machine": machine, "rows": rows}))
    if args.markdown:
        args.markdown.write_text(markdown(rows, path, machine))


if __name__ == "__main__":
    main()
