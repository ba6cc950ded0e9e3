"""Restart profile against the core profile and against ZFP and SZ3 in the asinh domain.

For every case (the 72-cell shock restart, the proton VDF of ``fullf``, a synthetic restart with
every kind) vdfzip encodes the file in-process with ``--tol 1e-2`` under the core profile and
the restart profile at several tail tolerances, and ``verify`` measures the result (the ratio is
the file's honest VDF ratio: block order kept, moments, index and headers counted). ZFP and SZ3
code ``asinh(f / threshold)`` on each cell's dense box, their absolute bound bisected per cell
until the cell meets the same target as vdfzip (rel L2 ≤ tol and tail p95 ≤ tail tol), or the
tail bound alone ("only", the issue's comparison at the same tail error), before any moment
restoration, which they lack; their bytes are stream + the same block structure vdfzip stores
(ids in their order), against the same original bytes. Encode seconds: vdfzip's whole
``encode_file`` on one core (the peers' bisection is not timed).

The "roughness" column is the data's own voxel-scale noise in log f: per cell, the 95th
percentile over content voxels (away from the stored set's edge) of |log10 f − mean of log10 f
over the 3×3×3 neighbourhood|; the median over cells and how many cells exceed 0.1 decades.

Usage: ``python bench/restart_profile.py [--data ../shared/data] [--synthetic-cells 60]
[--markdown bench/RESULTS-restart-profile.md]``.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rate_distortion import PEERS  # noqa: E402

from vdfzip import blockset, metrics, physics, synth, vlasiator  # noqa: E402
from vdfzip.codecs import Target  # noqa: E402
from vdfzip.encode import encode_file  # noqa: E402
from vdfzip.mesh import DenseBox, from_dense, to_dense  # noqa: E402
from vdfzip.reconstruct import cell_rel_l2  # noqa: E402
from vdfzip.verify import verify_files  # noqa: E402

TOL = 1e-2
TAIL_TOLS = (0.1, 0.2, 0.3, 0.5)
PEER_TAIL_TOLS = (0.1, 0.3)
BISECTION_STEPS = 24
CELL_OVERHEAD = 4 + 8  # BLOCKSPERCELL + CELLSWITHBLOCKS entry
BLOCK_BYTES = 4 + 256


def roughness(block_ids, values, mesh, threshold) -> float:
    """Per-cell 95th percentile of |log10 f − its 3×3×3 mean| over interior content voxels."""
    box = to_dense(block_ids, np.asarray(values, dtype=np.float64), mesh).values
    content = box >= threshold
    y = np.where(content, np.log10(np.maximum(box, threshold) / threshold), 0.0)
    weight = ndimage.uniform_filter(content.astype(float), 3, mode="constant")
    mean = ndimage.uniform_filter(y, 3, mode="constant") / np.maximum(weight, 1e-12)
    inside = content & (weight > 0.99)
    return float(np.percentile(np.abs(y - mean)[inside], 95)) if inside.any() else 0.0


def peer_cell(name: str, block_ids, values, mesh, target: Target) -> tuple[int, np.ndarray] | None:
    """Smallest stream (bytes, decoded values) of peer ``name`` on asinh(f/threshold) meeting
    ``target``, over a bisection of its absolute bound; None if no bound met it."""
    encode, decode = PEERS[name]
    box = to_dense(block_ids, np.asarray(values, dtype=np.float64), mesh)
    y = np.arcsinh(box.values / target.threshold).astype(np.float32)
    best = None
    low, high = np.log(1e-6), np.log(10.0)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        stream = encode(y, float(np.exp(middle)))
        dense = np.sinh(decode(stream, y.shape).astype(np.float64)) * target.threshold
        decoded = from_dense(DenseBox(box.origin, dense, box.mask), block_ids, mesh)
        if target.met(decoded, values):
            low = middle
            if best is None or len(stream) < best[0]:
                best = (len(stream), decoded)
        else:
            high = middle
    return best


def peer_row(name: str, cells, mesh, threshold: float, mass: float, tail_tol: float, rel_l2: float) -> dict:
    """Honest ratio and the profile's quantities of a peer over a case's cells (cells it cannot
    bring to the target are counted as misses and left out of the quality columns)."""
    target = Target(rel_l2, tail_tol, threshold)
    original, stored, misses = 0, 0, 0
    decoded, kept, density_error, pressure_error = [], [], 0.0, 0.0
    for ids, values in cells:
        original += CELL_OVERHEAD + BLOCK_BYTES * len(ids)
        result = peer_cell(name, ids, values, mesh, target)
        if result is None:
            misses += 1
            continue
        stored += result[0] + len(blockset.encode(ids, True))
        decoded.append(result[1])
        kept.append(np.asarray(values, dtype=np.float64))
        single = np.array([0, len(ids)])
        mine, theirs = (physics.moments(ids, v, single, mesh, mass) for v in (kept[-1], result[1]))
        density_error = max(density_error, abs(theirs.density[0] / mine.density[0] - 1))
        scale = np.linalg.norm(mine.pressure[0])
        pressure_error = max(pressure_error, np.linalg.norm(theirs.pressure[0] - mine.pressure[0]) / scale)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in kept])])
    quality = _quality(np.concatenate(decoded), np.concatenate(kept), offsets, threshold)
    return quality | {
        "ratio": original / stored if stored else float("nan"),
        "misses": misses,
        "density_rel_err_max": density_error,
        "pressure_tensor_rel_err_max": pressure_error,
    }


def _quality(g: np.ndarray, f: np.ndarray, offsets: np.ndarray, threshold: float) -> dict:
    """Rel L2, tail and content-block columns of decoded rows ``g`` against ``f``."""
    fractions = metrics.content_fractions(metrics.tail_counts(g, f, threshold))
    errors = metrics.log10_errors(g, f, threshold)
    return {
        "rel_l2_max": float(cell_rel_l2(g, f, offsets).max()),
        "log10_p50": float(np.percentile(errors, 50)),
        "log10_p95": float(np.percentile(errors, 95)),
        "cell_p95_max": float(metrics.cell_log10_p95(g, f, offsets, threshold).max()),
        "blocks_lost": fractions["content_blocks_lost_fraction"],
        "blocks_gained": fractions["content_blocks_gained_fraction"],
    }


def vdfzip_row(source: Path, population: str, work: Path, **options) -> dict:
    """Encode ``source`` in-process with Vlasiator's block order kept (the order the peers' bytes
    pay for), verify the compressed file; the population's columns."""
    out = work / "case.vdfz.vlsv"
    start = time.perf_counter()
    summary = encode_file(source, out, tol=TOL, populations=[population], block_order="keep", force=True,
                          progress=False, **options)
    seconds = time.perf_counter() - start
    p = verify_files(source, out)["populations"][population]
    return {
        "ratio": p["ratio"],
        "misses": 0,
        "rel_l2_max": p["rel_l2"]["max"],
        "log10_p50": p["log10_err"]["p50"],
        "log10_p95": p["log10_err"]["p95"],
        "cell_p95_max": p["log10_err"]["cell_p95_max"],
        "blocks_lost": p["content_blocks_lost_fraction"],
        "blocks_gained": p["content_blocks_gained_fraction"],
        "density_rel_err_max": p["density_rel_err_max"],
        "pressure_tensor_rel_err_max": p["pressure_tensor_rel_err_max"],
        "methods": summary["populations"][population]["methods"],
        "encode_s": seconds,
    }


def cases(data: Path, work: Path, synthetic_cells: int) -> list[tuple[str, Path, str]]:
    """(label, file, population) of every case; the synthetic restart is written into ``work``."""
    path = work / "synthetic.vlsv"
    synth.write_synthetic_restart(path, cells=synthetic_cells, seed=2026)
    return [
        ("restart_ipshock_small, 72 cells", data / "restart_ipshock_small.vlsv", "proton"),
        ("fullf proton, 1 cell", data / "fullf.0000001.vlsv", "proton"),
        (f"synthetic, {synthetic_cells} cells (every kind)", path, "proton"),
    ]


COLUMNS = ("ratio", "rel_l2_max", "log10_p50", "log10_p95", "cell_p95_max", "blocks_lost", "blocks_gained",
           "density_rel_err_max", "pressure_tensor_rel_err_max")


def table_row(case: str, method: str, row: dict) -> str:
    missed = f" ({row['misses']} cells missed)" if row["misses"] else ""
    cells = [f"**{row['ratio']:.1f}**", f"{row['rel_l2_max']:.2e}", f"{row['log10_p50']:.3f}", f"{row['log10_p95']:.3f}",
             f"{row['cell_p95_max']:.3f}", f"{row['blocks_lost']:.2%}", f"{row['blocks_gained']:.2%}",
             f"{row['density_rel_err_max']:.1e}", f"{row['pressure_tensor_rel_err_max']:.1e}",
             f"{row['encode_s']:.1f}" if "encode_s" in row else "–"]
    return f"| {case} | {method}{missed} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--synthetic-cells", type=int, default=60)
    parser.add_argument("--markdown", type=Path, default=Path(__file__).with_name("RESULTS-restart-profile.md"))
    args = parser.parse_args(argv)
    lines = [
        "# Restart profile: vdfzip's profiles against ZFP and SZ3 in the asinh domain",
        "",
        f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        " one thread (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1).",
        "",
        f"Command: `python bench/restart_profile.py --synthetic-cells {args.synthetic_cells}`. rel L2 target {TOL:g}.",
        "",
        __doc__.split("\n\n", 1)[1].rsplit("\n\nUsage", 1)[0],
        "",
        "| case | method | ratio | max rel L2 | log10 err p50 | p95 | worst cell p95 | content blocks lost | gained "
        "| density err max | pressure tensor err max | encode s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, path, name in cases(args.data, work, args.synthetic_cells):
            with vlasiator.open_file(path) as f:
                p = f.population(name)
                cells = [p.cell(i) for i in range(p.cell_count)]
                mesh, threshold, mass = p.mesh, p.threshold, p.mass
            rough = np.array([roughness(ids, v, mesh, threshold) for ids, v in cells])
            notes.append(f"- {label}: roughness median {np.median(rough):.2f} decades, "
                         f"{int((rough > 0.1).sum())} of {len(rough)} cells above 0.1.")
            rows = [("vdfzip core", vdfzip_row(path, name, work, profile="core"))]
            for tail in TAIL_TOLS:
                rows.append((f"vdfzip restart, tail {tail:g}", vdfzip_row(path, name, work, profile="restart", tail_tol=tail)))
            for peer in ("zfp", "sz3"):
                for tail in PEER_TAIL_TOLS:
                    rows.append((f"{peer} asinh, tail {tail:g} and rel L2 {TOL:g}",
                                 peer_row(peer, cells, mesh, threshold, mass, tail, TOL)))
                    rows.append((f"{peer} asinh, tail {tail:g} only",
                                 peer_row(peer, cells, mesh, threshold, mass, tail, np.inf)))
            for method, row in rows:
                lines.append(table_row(label, method, row))
                print(lines[-1], row.get("methods", ""), flush=True)
    lines += ["", "Voxel-scale roughness of log f (see above):", *notes]
    args.markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
