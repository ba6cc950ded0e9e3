"""Would size-adaptive networks pay? Smaller mlp networks next to the octree codec, per cell.

The mlp codec's payload is ~440 B whatever the cell, which is why it loses to the octree codec
on most cells (``bench/RESULTS-rd.md``). This bench fits the 72 cells of the shock restart with
the default network and with two smaller ones, and asks what a per-cell choice of the smallest
payload that meets the target (``--method auto`` with every size registered) would store,
against the octree codec alone. Ratios are of values only (256 B per block / payload bytes):
block ids cost every method the same.

Usage: ``python bench/mlp_sizes.py [--data ../shared/data] [--tol 3e-2] [--markdown bench/RESULTS-mlp-sizes.md]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

from vdfzip import vlasiator
from vdfzip.codecs import get_codec

SIZES = {
    "mlp (default: 8 Fourier, 2 × 12)": {},
    "mlp 6 Fourier, 1 × 10": {"fourier": 6, "width": 10, "hidden_layers": 1},
    "mlp 4 Fourier, 1 × 8": {"fourier": 4, "width": 8, "hidden_layers": 1},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--tol", type=float, default=3e-2)
    parser.add_argument("--markdown", type=Path, default=Path(__file__).with_name("RESULTS-mlp-sizes.md"))
    args = parser.parse_args(argv)
    with vlasiator.open_file(args.data / "restart_ipshock_small.vlsv") as f:
        p = f.population("proton")
        batch, mesh = p.cells(0, p.cell_count), p.mesh
    cells = len(batch)
    value_bytes = 256 * len(batch.block_ids)
    octree = get_codec("octree")
    sizes = {"octree": np.array([len(octree.encode_cell(*batch.cell(c), mesh, args.tol)) for c in range(cells)], float)}
    rows = []
    for label, config in SIZES.items():
        codec = get_codec("mlp", **config)
        start = time.perf_counter()
        payloads = codec.encode_cells(batch, range(cells), mesh, args.tol)
        seconds = time.perf_counter() - start
        sizes[label] = np.array([len(payloads[c]) if c in payloads else np.inf for c in range(cells)])
        met = np.isfinite(sizes[label])
        rows.append(f"| {label} | {codec.architecture.parameter_count} | {met.sum()}/{cells} | "
                    f"{np.median(sizes[label][met]):.0f} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    choices = [("octree",), ("octree", *SIZES)]
    lines = [
        "# Size-adaptive networks: would smaller mlp networks pay next to the octree codec?",
        "",
        f"Machine: {platform.machine()}, Python {platform.python_version()}. Command: `python bench/mlp_sizes.py "
        f"--tol {args.tol:g}`.",
        "",
        __doc__.split("\n\n", 1)[1].rsplit("\n\nUsage", 1)[0],
        "",
        f"The 72 proton cells of restart_ipshock_small at rel L2 {args.tol:g}:",
        "",
        "| network | parameters | cells met | median payload B | fit s (all cells) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "| per-cell choice among | values-only ratio | cells not won by octree |",
        "|---|---|---|",
    ]
    for choice in choices:
        best = np.min(np.stack([sizes[k] for k in choice]), axis=0)
        lines.append(f"| {', '.join(choice)} | **{value_bytes / best.sum():.0f}** | {int((best < sizes['octree']).sum())} |")
        print(lines[-1], flush=True)
    args.markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
