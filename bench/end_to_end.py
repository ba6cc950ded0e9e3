"""End to end on synthetic restarts: ratio, errors and speed at ``--tol``, and peak memory on a ≥ 2 GB file.

Every step is the ``vdfzip`` command line run alone in a child process, so its wall time and
peak RSS (``ru_maxrss`` from ``os.wait4``: anonymous memory plus resident pages of mapped files)
are its own. A 6-cell warm-up round trip first fills numba's kernel cache, as on any machine that
has run vdfzip once.

1. Speed and errors: ``vdfzip synth`` of ``--cells`` cells (all six kinds, two populations),
   ``encode --tol`` with the default chain, ``decode``, ``verify --json``. The ratio is the honest
   file-level one: the VDF bytes of the input over every byte of the vdfzip arrays that replace
   them (index, moments, header, records). Cells/s counts cell VDFs (cells × populations) over
   the child's wall time, Python start-up included.
2. Memory: a synthetic restart of at least ``--big-gb`` GB (reused from ``--workdir`` if there),
   ``encode --method lossless``, then ``decode`` of that (checked byte-identical to the input).
   The octree encode and decode of step 1 give the lossy path's peak RSS on the smaller file (an
   octree encode of 2 GB takes about 15 minutes on 2 cores); ``--octree-big`` runs them on the big
   file as well.

The files written go to ``--workdir`` and are deleted at the end unless ``--keep``.

Usage: ``python bench/end_to_end.py [--cells 600] [--big-gb 2.0] [--octree-big] [--markdown bench/RESULTS-e2e.md]``
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Run:
    """One child process: what it ran, for how long, its peak RSS and its standard output."""

    label: str
    args: list[str]
    seconds: float
    peak_rss_bytes: int
    stdout: str

    @property
    def command(self) -> str:
        """The command line with file names only (the work directory left out)."""
        return "vdfzip " + " ".join(Path(a).name if os.sep in a else a for a in self.args)


def run(label: str, *args: str | Path) -> Run:
    """Run ``vdfzip ARGS`` in a fresh Python process; its own wall time and peak RSS."""
    argv = [str(a) for a in args]
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        child = os.posix_spawn(sys.executable, [sys.executable, "-m", "vdfzip.cli", *argv], os.environ,
                               file_actions=[(os.POSIX_SPAWN_DUP2, out.fileno(), 1)])
        _, status, usage = os.wait4(child, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        stdout = out.read()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"vdfzip {' '.join(argv)} failed with exit status {os.waitstatus_to_exitcode(status)}")
    result = Run(label, argv, seconds, usage.ru_maxrss * 1024, stdout)  # ru_maxrss is in KiB on Linux
    print(f"{label:34s} {seconds:8.1f} s  peak RSS {result.peak_rss_bytes / 2**20:7.0f} MiB", flush=True)
    return result


def machine() -> str:
    """CPU model, core count and Python version of this machine."""
    model = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def vdf_cells(info: dict) -> int:
    """Cell VDFs of a file: cells summed over its populations."""
    return sum(p["cells"] for p in info["populations"].values())


def speed_and_errors(workdir: Path, cells: int, seed: int, tol: float) -> dict:
    """Part 1: synth, encode with the default chain, decode, verify."""
    source, compressed, decoded = (workdir / f"restart-{cells}{s}.vlsv" for s in ("", ".vdfz", ".decoded"))
    runs = {"synth": run(f"synth {cells} cells", "synth", source, "--cells", cells, "--seed", seed, "--force")}
    runs["encode"] = run(f"encode default chain tol {tol:g}", "encode", source, "-o", compressed, "--tol", tol,
                         "--force", "--json")
    runs["decode"] = run("decode", "decode", compressed, "-o", decoded, "--force")
    runs["verify"] = run("verify --json", "verify", source, decoded, "--json")
    summary, report = json.loads(runs["encode"].stdout), json.loads(runs["verify"].stdout)
    return {
        "cells": cells, "seed": seed, "tol": tol, "runs": runs, "summary": summary, "report": report,
        "file_bytes": source.stat().st_size, "compressed_bytes": compressed.stat().st_size,
        "vdf_cells": vdf_cells(summary),
    }


def memory(workdir: Path, min_bytes: int, bytes_per_cell: float, seed: int, octree: bool) -> dict:
    """Part 2: peak RSS of encode and decode on a synthetic restart of at least ``min_bytes``."""
    source = workdir / "restart-big.vlsv"
    runs = {}
    if not (source.exists() and source.stat().st_size >= min_bytes):
        cells = math.ceil(min_bytes / bytes_per_cell * 1.05)
        runs["synth"] = run(f"synth {cells} cells", "synth", source, "--cells", cells, "--seed", seed, "--force")
    methods = ("lossless", "octree") if octree else ("lossless",)
    for method in methods:
        compressed, decoded = workdir / f"restart-big.{method}.vdfz.vlsv", workdir / f"restart-big.{method}.decoded.vlsv"
        runs[f"encode {method}"] = run(f"encode --method {method} (big)", "encode", source, "-o", compressed,
                                       "--method", method, "--force", "--json")
        runs[f"decode {method}"] = run(f"decode {method} (big)", "decode", compressed, "-o", decoded, "--force")
        if method == "lossless" and not filecmp.cmp(source, decoded, shallow=False):
            raise SystemExit(f"{decoded} differs from {source} after a lossless round trip")
        decoded.unlink()
    return {"file_bytes": source.stat().st_size, "runs": runs,
            "vdf_cells": vdf_cells(json.loads(runs["encode lossless"].stdout))}


def markdown(part1: dict, part2: dict, context: dict) -> str:
    s, r, runs = part1["summary"], part1["report"], part1["runs"]
    n, mb = part1["vdf_cells"], 1e6
    lines = [
        "# End to end on synthetic restarts (`bench/end_to_end.py`)",
        "",
        (f"Machine: {context['machine']}; load average {context['load_before']} before, {context['load_after']} "
         "after (a shared machine: other work ran beside the bench)."),
        f"Command: `{context['command']}`. Each step is one `vdfzip` child process; wall time and peak RSS",
        "(`ru_maxrss`, which counts resident pages of memory-mapped files) are its own.",
        "",
        f"## {part1['cells']} cells, all six kinds, two populations, `--tol {part1['tol']:g}`, default chain",
        "",
        (f"`vdfzip synth restart.vlsv --cells {part1['cells']} --seed {part1['seed']}`: "
         f"{part1['file_bytes'] / mb:.1f} MB, {n} cell VDFs ({part1['cells']} cells × {len(s['populations'])} "
         f"populations), {sum(p['blocks'] for p in s['populations'].values()):,} blocks."),
        "",
        "| population | VDF MB | vdfzip arrays kB | ratio | methods | rel L2 p50 | p95 | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, p in s["populations"].items():
        rel = r["populations"][name]["rel_l2"]
        methods = ", ".join(f"{k} {v}" for k, v in p["methods"].items())
        lines.append(f"| {name} | {p['input_vdf_bytes'] / mb:.1f} | {p['output_vdf_bytes'] / 1e3:.0f} | {p['ratio']:.1f} | "
                     f"{methods} | {rel['median']:.2e} | {rel['p95']:.2e} | {rel['max']:.2e} |")
    rel = r["rel_l2"]
    input_vdf = sum(p["input_vdf_bytes"] for p in s["populations"].values())
    output_vdf = sum(p["output_vdf_bytes"] for p in s["populations"].values())
    lines += [
        (f"| **all** | {input_vdf / mb:.1f} | {output_vdf / 1e3:.0f} | **{s['ratio']:.1f}** | | "
         f"**{rel['median']:.2e}** | **{rel['p95']:.2e}** | **{rel['max']:.2e}** |"),
        "",
        (f"Whole file: {part1['file_bytes'] / mb:.1f} MB → {part1['compressed_bytes'] / mb:.2f} MB "
         f"({part1['file_bytes'] / part1['compressed_bytes']:.1f}×). `vdfzip verify` of the decoded file: blocks "
         f"identical {r['blocks_identical']}, non-VDF identical {r['non_vdf_identical']}, max errors density "
         f"{r['density_rel_err_max']:.1e}, velocity/vth {r['velocity_err_over_vth_max']:.1e}, pressure tensor "
         f"{r['pressure_tensor_rel_err_max']:.1e}, negative values {r['negative_values']}; profile "
         f"{s['profile']['name']} (tails within {s['profile']['tail_tol']} decades): content blocks lost / gained "
         f"{r['content_blocks_lost_fraction']:.2%} / {r['content_blocks_gained_fraction']:.2%}, log10 error over voxels "
         f"above the sparsity threshold p50 / p95 / worst cell's p95 {r['log10_err']['p50']:.3f} / "
         f"{r['log10_err']['p95']:.3f} / {r['log10_err']['cell_p95_max']:.3f}, those voxels lost "
         f"{r['content_lost_fraction']:.1%}."),
        "",
        "| step | wall s | cell VDFs/s | VDF MB/s | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for key in ("encode", "decode", "verify"):
        run_ = runs[key]
        lines.append(f"| `{run_.command}` | {run_.seconds:.1f} | {n / run_.seconds:.1f} | {input_vdf / mb / run_.seconds:.1f} | "
                     f"{run_.peak_rss_bytes / 2**20:.0f} |")
    lines += [
        "",
        f"## Peak memory on a {part2['file_bytes'] / 1e9:.2f} GB synthetic restart",
        "",
        f"{part2['vdf_cells']} cell VDFs. Target: every step under 1 GB of RSS.",
        "",
        "| step | file GB | wall s | peak RSS MiB |",
        "|---|---|---|---|",
    ]
    for run_ in part2["runs"].values():
        lines.append(f"| `{run_.command}` | {part2['file_bytes'] / 1e9:.2f} | {run_.seconds:.1f} | {run_.peak_rss_bytes / 2**20:.0f} |")
    for key in ("encode", "decode"):
        run_ = runs[key]
        lines.append(f"| `{run_.command}` (octree, from the table above) | {part1['file_bytes'] / 1e9:.2f} | "
                     f"{run_.seconds:.1f} | {run_.peak_rss_bytes / 2**20:.0f} |")
    lines.append("")
    if "encode octree" not in part2["runs"]:
        minutes = part2["vdf_cells"] / (n / runs["encode"].seconds) / 60
        lines.append(f"The octree rows come from the {part1['file_bytes'] / 1e9:.2f} GB file: at the speed above an octree "
                     f"encode of the big file would take {minutes:.0f} minutes (`--octree-big` runs it).")
    lines += [
        "What bounds RSS whatever the file size: one batch of at most 128 Ki blocks (`vdfzip.encode.MAX_BATCH_BLOCKS`;",
        "its float64 copies take ~300 MiB), pages of the memory-mapped input handed back every 64 MiB read",
        "(`vdfzip.vlsv.RELEASE_BYTES`), and ~200 MiB of Python, numba and libraries.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=600, help="cells of the speed/error restart (≥ 500 for the target)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--big-gb", type=float, default=2.0, help="minimum size of the memory restart in GB")
    parser.add_argument("--octree-big", action="store_true", help="also encode and decode the big file with octree")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vdfzip-bench-e2e")
    parser.add_argument("--keep", action="store_true", help="keep the files in --workdir (the big one is reused)")
    parser.add_argument("--markdown", type=Path, help="write the results to this file")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    context = {"machine": machine(), "load_before": load(),
               "command": "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])}
    print(context["machine"], flush=True)
    try:
        warm = args.workdir / "warm-up.vlsv"
        run("warm-up synth", "synth", warm, "--cells", 6, "--seed", 1, "--force")
        run("warm-up encode", "encode", warm, "-o", args.workdir / "warm-up.vdfz.vlsv", "--force")
        run("warm-up decode", "decode", args.workdir / "warm-up.vdfz.vlsv", "-o", args.workdir / "warm-up.d.vlsv", "--force")
        part1 = speed_and_errors(args.workdir, args.cells, args.seed, args.tol)
        part2 = memory(args.workdir, int(args.big_gb * 1e9), part1["file_bytes"] / args.cells, args.seed, args.octree_big)
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    context["load_after"] = load()
    text = markdown(part1, part2, context)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
