"""Issue 16's scoreboard: does the neural chain earn the default? One run, both profiles, the peers.

For every case of the rate–distortion bench (the 72 proton cells of ``restart_ipshock_small``,
``fullf`` proton and antiproton, the 2 VDF cells of ``bulk.1d``, ``--synthetic-per-kind`` cells
of each synthetic kind) and both profiles (``core``: rel L2 ≤ tol; ``restart``: also the
content-block set kept and the tail p95 within the default tail tolerance) at ``--tol 1e-2``,
every method compresses all cells of the case as one batch:

- ``octree``, ``mlp,octree`` (the design's chain: the first codec that meets the target) and
  ``auto`` (per cell, the smallest payload of every lossy codec that meets it: the per-cell
  choice of issue 16's lead 4) run the product's engine (:func:`vdfzip.engine.compress_batch`,
  what ``vdfzip encode`` and the runtime API run, sorted block order, one core) and decode with
  :meth:`~vdfzip.cells.CompressedCells.decode`; bytes are what a compressed file stores for the
  cells (records with structure, restoration and payload; stored moments; index chunks; the
  settings header), so every guarantee of the profile is paid for;
- ``zfp`` / ``sz3`` code each cell's dense box, their bound searched per cell: in the core
  profile on f itself at rel L2 ≤ tol (``bench/rate_distortion.py``'s search), in the restart
  profile on asinh(f / threshold) until rel L2 and the tail bound both hold
  (``bench/restart_profile.py``'s search); they have no moment restoration and no content-set
  enforcement, so their moment and content columns are what they leave. Their bytes are stream +
  the block structure vdfzip stores (sorted ids); cells a peer cannot bring to the target count
  as misses, outside its ratio.

The ratio is original bytes (Vlasiator's 12 B per cell + 260 B per block) over stored bytes; the
quality columns are :func:`vdfzip.verify.compare_batch`'s, the ones ``vdfzip verify`` prints.
"ms/cell" is encode wall time per cell on one core, after an untimed warm-up that compiles the
kernels (the peers' search is not timed). "mlp cells"
is how many cells the neural codec stores. The targets section checks the issue's targets on the
same rows; its "without headers" column leaves out the settings a file stores once per
population (every codec's config: 214 B for ``octree``, 418 B with ``mlp`` in the chain), which
decide the cases of one or two cells but vanish in a real restart. The other variants of issue 16 (tail-aware loss, shared decoder, field as predictor)
are bench-only models measured in their own benches, each against octree alone in its run.

Usage: ``python bench/neural_default.py [--data ../shared/data] [--synthetic-per-kind 50]
[--markdown bench/RESULTS-neural-default.md] [--plot bench/neural-default.png] [--cases NAME...]``
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "VDFZIP_JOBS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rate_distortion import BLOCK_BYTES, CELL_OVERHEAD, Cell, peer_at_target  # noqa: E402
from restart_profile import peer_cell  # noqa: E402

from vdfzip import blockset, chunks, engine, layout, synth, vlasiator  # noqa: E402
from vdfzip.profiles import resolve_profile  # noqa: E402
from vdfzip.reconstruct import cell_rows, subset_offsets  # noqa: E402
from vdfzip.verify import compare_batch  # noqa: E402
from vdfzip.vlasiator import CellBatch, Species  # noqa: E402

TOL = 1e-2
PROFILES = ("core", "restart")
METHODS = ("octree", "mlp,octree", "auto")
PEERS = ("zfp", "sz3")
SYNTHETIC_THRESHOLD = 1e-15


def load_cases(data: Path, synthetic_per_kind: int) -> list[tuple[str, CellBatch, Species, bool]]:
    """(label, all cells as one batch, species, whether it is a synthetic kind) of every case."""
    cases = []
    for file, names in (("restart_ipshock_small.vlsv", ("proton",)), ("fullf.0000001.vlsv", ("proton", "antiproton")),
                        ("bulk.1d.vlsv", ("proton",))):
        with vlasiator.open_file(data / file) as f:
            for name in names:
                p = f.population(name)
                batch = p.cells(0, p.cell_count)
                cases.append((f"{file.split('.')[0]} {name} ({p.cell_count})", batch, p.species, False))
    species = synth.SPECIES[0]
    rng = np.random.default_rng(2026)
    for kind in synth.KINDS if synthetic_per_kind else ():
        made = [synth.make_cell(kind, species.mesh, SYNTHETIC_THRESHOLD, rng, species.mass)
                for _ in range(synthetic_per_kind)]
        counts = [len(c.block_ids) for c in made]
        batch = CellBatch(species.name, 0, np.arange(1, len(made) + 1, dtype=np.uint64),
                          np.concatenate([[0], np.cumsum(counts)]), np.concatenate([c.block_ids for c in made]),
                          np.concatenate([c.values for c in made]).astype(np.float32))
        cases.append((f"synthetic {kind} ({synthetic_per_kind})", batch,
                      Species(species.name, species.mesh, SYNTHETIC_THRESHOLD, species.mass, np.dtype(np.float32)),
                      True))
    return cases


def original_bytes(batch: CellBatch) -> int:
    return CELL_OVERHEAD * len(batch) + BLOCK_BYTES * len(batch.block_ids)


def cell_bytes(compressed) -> int:
    """What a compressed file stores per cell for these cells: records, moments and index chunks
    (as :mod:`vdfzip.chunks` frames them); not the runtime blob's extras."""
    frames = chunks.frames(compressed.index.astype(layout.INDEX_DTYPE))
    return len(compressed.records) + compressed.moment_columns.astype("<f8").nbytes + sum(map(len, frames))


def header_bytes(settings: engine.Settings) -> int:
    """The settings a compressed file stores once per population (every codec's config)."""
    return len(json.dumps(settings.header(), sort_keys=True).encode())


def quality(batch: CellBatch, decoded: CellBatch, species: Species) -> dict:
    """``vdfzip verify``'s columns of the decoded cells against the batch."""
    report = compare_batch(batch, decoded, species).report(len(batch))
    return {"rel_l2_max": report["rel_l2"]["max"], "cell_p95_max": report["log10_err"]["cell_p95_max"],
            "blocks_lost": report["content_blocks_lost_fraction"],
            "blocks_gained": report["content_blocks_gained_fraction"],
            "density_rel_err_max": report["density_rel_err_max"],
            "pressure_tensor_rel_err_max": report["pressure_tensor_rel_err_max"]}


def vdfzip_row(batch: CellBatch, species: Species, profile: str, method: str) -> dict:
    """The product's engine on the whole batch: ratio of the bytes a file stores, quality after decode."""
    settings = engine.settings(TOL, method, profile, restart=True)
    start = time.perf_counter()
    compressed = engine.compress_batch(batch, species, settings)
    seconds = time.perf_counter() - start
    methods, stored, header = compressed.methods, cell_bytes(compressed), header_bytes(settings)
    return quality(batch, compressed.decode(), species) | {
        "ratio": original_bytes(batch) / (stored + header), "misses": 0,
        "cells_ratio": original_bytes(batch) / stored, "header_bytes": header,
        "mlp_cells": methods.count("mlp"), "methods": dict(Counter(methods)),
        "ms_per_cell": 1e3 * seconds / len(batch)}


def peer_row(batch: CellBatch, species: Species, profile: str, peer: str) -> dict:
    """A peer on every cell at the profile's target (the bound searched per cell); misses left out."""
    target = resolve_profile(profile, None, True).target(TOL, species.threshold)
    kept, decoded, stored = [], [], 0
    for i in range(len(batch)):
        ids, values = batch.cell(i)
        if profile == "core":
            stream, cell_decoded, _, _ = peer_at_target(peer, Cell(ids, values, species.mesh), TOL)
            found = (len(stream), cell_decoded)
        else:
            found = peer_cell(peer, ids, values, species.mesh, target)
        if found is not None:
            kept.append(i)
            decoded.append(found[1])
            stored += found[0] + len(blockset.encode(ids, keep_order=False))
    if not kept:
        return {"ratio": float("nan"), "misses": len(batch)}
    met = subset(batch, kept)
    return quality(met, replace(met, values=np.concatenate(decoded)), species) | {
        "ratio": original_bytes(met) / stored, "misses": len(batch) - len(kept)}


def subset(batch: CellBatch, cells: list[int]) -> CellBatch:
    rows = cell_rows(batch.offsets, cells)
    return CellBatch(batch.population, 0, batch.cell_ids[cells], subset_offsets(batch.offsets, cells),
                     batch.block_ids[rows], np.asarray(batch.values)[rows])


def table_row(case: str, profile: str, method: str, row: dict, cells: int) -> str:
    if np.isnan(row["ratio"]):
        return f"| {case} | {profile} | {method} (missed every cell) |" + " – |" * 9
    missed = f" ({row['misses']} missed)" if row["misses"] else ""
    mlp = f"{row['mlp_cells']} / {cells}" if "mlp_cells" in row else "–"
    speed = f"{row['ms_per_cell']:.0f}" if "ms_per_cell" in row else "–"
    return (f"| {case} | {profile} | {method}{missed} | **{row['ratio']:.1f}** | {row['rel_l2_max']:.2e} "
            f"| {row['cell_p95_max']:.2f} | {row['blocks_lost']:.2%} | {row['blocks_gained']:.2%} "
            f"| {row['density_rel_err_max']:.0e} | {row['pressure_tensor_rel_err_max']:.0e} | {mlp} | {speed} |")


def target_lines(results: dict, cases: list) -> list[str]:
    """The issue's targets, checked on this run's rows."""
    lines = ["| case | profile | mlp,octree / octree | auto / octree | auto / octree without headers | mlp cells "
             "(chain, auto) | issue's target | met |",
             "|---|---|---|---|---|---|---|---|"]
    for label, batch, _, synthetic in cases:
        for profile in PROFILES:
            octree, chain, auto = (results[(label, profile, m)] for m in METHODS)
            gain, auto_gain = chain["ratio"] / octree["ratio"], auto["ratio"] / octree["ratio"]
            auto_cells_gain = auto["cells_ratio"] / octree["cells_ratio"]
            share = chain["mlp_cells"] / len(batch)
            if profile == "core":
                wanted, met = "chain never below octree", gain >= 1.0
            elif synthetic:
                wanted, met = "chain ≥ 1.3× octree", gain >= 1.3
            elif label.startswith("restart_ipshock_small"):
                wanted, met = "chain ≥ 1.5× octree, mlp on ≥ 50% of cells", gain >= 1.5 and share >= 0.5
            else:
                wanted, met = "–", None
            verdict = "–" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {label} | {profile} | {gain:.3f} | {auto_gain:.3f} | {auto_cells_gain:.3f} "
                         f"| {chain['mlp_cells']}, {auto['mlp_cells']} / {len(batch)} | {wanted} | {verdict} |")
    return lines


def plot(results: dict, cases: list, path: Path) -> None:
    """Ratio per case, one panel per profile, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [c[0] for c in cases]
    methods = METHODS + PEERS
    figure, axes = plt.subplots(1, len(PROFILES), figsize=(16, 5), squeeze=False)
    width = 0.8 / len(methods)
    for axis, profile in zip(axes.flat, PROFILES):
        for k, method in enumerate(methods):
            ratios = [results[(label, profile, method)]["ratio"] for label in labels]
            axis.bar(np.arange(len(labels)) + (k - len(methods) / 2 + 0.5) * width, ratios, width, label=method)
        axis.set(yscale="log", ylim=(1, None), ylabel="ratio", title=f"{profile} profile, tol {TOL:g}")
        axis.set_xticks(np.arange(len(labels)), labels, rotation=35, ha="right", fontsize=8)
        axis.grid(True, axis="y", which="both", alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=here.parents[1] / "shared" / "data")
    parser.add_argument("--synthetic-per-kind", type=int, default=50)
    parser.add_argument("--markdown", type=Path, default=here / "RESULTS-neural-default.md")
    parser.add_argument("--plot", type=Path, default=here / "neural-default.png")
    parser.add_argument("--cases", nargs="*", help="only the cases whose label starts with one of these")
    args = parser.parse_args(argv)
    cases = [c for c in load_cases(args.data, args.synthetic_per_kind)
             if not args.cases or any(c[0].startswith(prefix) for prefix in args.cases)]
    for method in METHODS:  # untimed: numba compiles the kernels on first use
        for profile in PROFILES:
            vdfzip_row(subset(cases[0][1], [0]), cases[0][2], profile, method)
    started = time.perf_counter()
    results = {}
    rows = []
    for label, batch, species, _ in cases:
        for profile in PROFILES:
            for method in METHODS + PEERS:
                row = (vdfzip_row(batch, species, profile, method) if method in METHODS
                       else peer_row(batch, species, profile, method))
                results[(label, profile, method)] = row
                rows.append(table_row(label, profile, method, row, len(batch)))
                print(rows[-1], row.get("methods", ""), flush=True)
    minutes = (time.perf_counter() - started) / 60
    command = "python bench/neural_default.py" + (f" --synthetic-per-kind {args.synthetic_per_kind}"
                                                  if args.synthetic_per_kind != 50 else "")
    lines = [
        "# Issue 16's scoreboard: the neural chain against octree alone, ZFP and SZ3, both profiles",
        "",
        f"Machine: {platform.node()}, {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" one thread (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1). Whole run: {minutes:.1f} min.",
        "",
        f"Command: `{command}`. Target rel L2 {TOL:g}; restart profile tail tolerance "
        f"{resolve_profile('restart', None, True).tail_tol:g} decades (the default).",
        "",
        f"![ratio per case and method]({args.plot.name})",
        "",
        __doc__.split("\n\n", 1)[1].rsplit("\n\nUsage", 1)[0],
        "",
        "| case | profile | method | ratio | max rel L2 | worst cell tail p95 | content blocks lost | gained "
        "| density err max | pressure tensor err max | mlp cells | ms/cell |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## The issue's targets on these rows",
        "",
        *target_lines(results, cases),
    ]
    args.markdown.write_text("\n".join(lines) + "\n")
    plot(results, cases, args.plot)
    print(f"wrote {args.markdown} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
