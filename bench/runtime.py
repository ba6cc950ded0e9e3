"""Runtime API bench: warm-started against cold neural fits, and what ``submit`` costs the simulation.

Runs the toy simulation of ``examples/runtime_loop.py`` (the VDFs of a real restart drifting and
gyrating about B, compressed every ``--every`` steps) with a warm-started compressor and a cold
one, same cells, same tolerance; per call: fit steps, encode seconds, bytes. Then, with the
default chain (octree), how long ``submit`` takes against the batch's encoding, and how much
slower the simulation's own steps run while a batch is encoded on the compressor's thread.

    python bench/runtime.py --markdown bench/RESULTS-runtime.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import vdfzip  # noqa: E402
from runtime_loop import DRIFT, GYRATION, HEADER, ToySimulation, run, table  # noqa: E402


def overlap(restart: Path, steps: int) -> dict:
    """Seconds of ``steps`` simulation steps alone and while a batch is encoded beside them
    (default chain), and ``submit``'s share of the batch's encoding time."""
    simulation = ToySimulation(restart)
    started = time.perf_counter()
    for _ in range(steps):
        simulation.step()
    alone = time.perf_counter() - started
    with vdfzip.Compressor(restart) as compressor:
        compressor.compress(*simulation.arrays())  # warm-up: kernels compiled and cached
        started = time.perf_counter()
        handle = compressor.submit(*simulation.arrays())
        submit = time.perf_counter() - started
        beside, done = 0, 0
        while not handle.done():
            t = time.perf_counter()
            simulation.step()
            beside += time.perf_counter() - t
            done += 1
        result = handle.result()
    return {"alone": alone / steps, "beside": beside / max(done, 1), "steps": done, "submit": submit,
            "encode": result.seconds, "cells": len(result), "blocks": result.block_count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restart", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                        / "restart_ipshock_small.vlsv", help="whose proton VDFs the toy simulation evolves")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--methods", default="mlp;mlp,octree", help="chains to compare, separated by ;")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = ["# Runtime API: warm against cold fits, submit's cost\n",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, vdfzip {vdfzip.__version__}. Command: `python bench/runtime.py --restart "
             f"{args.restart.name} --steps {args.steps} --every {args.every} --tol {args.tol:g} --methods "
             f"'{args.methods}'` (`make bench-runtime`).\n",
             f"The proton VDFs of `{args.restart.name}`, evolved by `examples/runtime_loop.py` (each step every "
             f"value times exp(k·v), |k·v| ≤ {DRIFT:g} at the fastest voxel, k turning {GYRATION:g} rad about B), "
             f"compressed every {args.every} steps at rel L2 {args.tol:g}, restart profile; every call decoded from "
             "its blob and checked (rel L2, density, pressure tensor to 1e-6). Warm: each cell's fit starts from "
             "its network of the previous call; cold: from random weights. The first call of both is cold.\n"]
    summary = []
    for method in args.methods.split(";"):
        lines += [f"## `--method {method}`\n", HEADER]
        totals = {}
        for warm in (True, False):
            calls = run(args.restart, args.steps, args.every, warm, method=method, tol=args.tol)
            lines.append(table(calls, "warm" if warm else "cold"))
            later = calls[1:]
            totals[warm] = (np.mean([c.result.fit_steps for c in later]), np.mean([c.result.seconds for c in later]),
                            np.mean([len(c.result.to_bytes()) for c in later]))
        (ws, wt, wb), (cs, ct, cb) = totals[True], totals[False]
        lines += ["", f"Calls after the first: warm {ws:.0f} fit steps, {wt:.2f} s, {wb:.0f} B per call; cold {cs:.0f} "
                      f"steps, {ct:.2f} s, {cb:.0f} B: **{cs / ws:.2f}× fewer steps, {ct / wt:.2f}× less time**, "
                      f"bytes {wb / cb:.3f}× cold's.\n"]
        summary.append(f"| `{method}` | {cs / ws:.2f} | {ct / wt:.2f} | {wb / cb:.3f} |")
    o = overlap(args.restart, 20)
    lines += ["## Summary: warm against cold, calls after the first\n", "| chain | fewer steps | less time | bytes |",
              "|---|---|---|---|", *summary, "", "## What submit costs the simulation (default chain: octree)\n",
              f"{o['cells']} cells, {o['blocks']} blocks: `submit` returned in {1e3 * o['submit']:.1f} ms, the batch "
              f"took {o['encode']:.2f} s on the compressor's thread: **{100 * o['submit'] / o['encode']:.2f}%**. The "
              f"simulation's own step took {1e3 * o['alone']:.1f} ms alone and {1e3 * o['beside']:.1f} ms while the "
              f"batch was encoded beside it ({o['steps']} steps), on this {os.cpu_count()}-core machine."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
