"""Does a shallow octree of residual leaves on top of the global Tucker pay? (issue 4)

For every proton cell of ``restart_ipshock_small.vlsv`` (72 cells) and ``fullf.0000001.vlsv``
(1 cell) and every target rel L2 (1e-2, 3e-3), in linear f normalised by the cell's max, over
the cell's whole dense bounding box (voxels outside the stored blocks are 0 in f and count too):

- **global**: the truncated HOSVD of the box with the fewest stored numbers (core + factor
  entries) whose exact truncation error meets the target (``choose_ranks`` of the codec).
- **global + refinement** (k, depth): the global truncated HOSVD at the looser error
  ``k · target``, then the residual box split at the midpoints of its axes into 8 (depth 1) or 64
  (depth 2) leaves; per leaf a full HOSVD of the residual leaf and every rank triple (rank 0 =
  leaf not stored: 0 numbers, error ‖R_leaf‖²). Per-leaf triples are chosen by a Lagrangian
  rate–distortion allocation (minimise numbers + λ·err², λ bisected so that Σ leaf err² ≤
  target²·‖f‖²; the squared error splits exactly across disjoint leaves), then a greedy pass
  spends the budget the Lagrangian left over. Every leaf of the partition adds 3 small ints
  (its rank triple) of overhead. k = inf is the same with no global Tucker at all: a plain
  partition of f into independently fitted leaves (the other lead of issue 4), for reference.

Per case and target it prints global-only totals against the best variant fixed for all cells
and the best variant per cell (global where none beats it), for the residual variants alone and
with the plain partition, and the ratio global/refined of the case total for every (k, depth).

The count of stored numbers, unquantized, is the proxy for bytes: truncation error only.
Usage: ``python bench/octree_refinement.py [--data ../shared/data] [--verify]``
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vdfzip import vlasiator  # noqa: E402
from vdfzip.codecs.octree import Tucker, choose_ranks, hosvd, truncate  # noqa: E402
from vdfzip.mesh import to_dense  # noqa: E402

TARGETS = (1e-2, 3e-3)
LOOSENESS = (1.5, 2.0, 3.0, 5.0, 10.0, np.inf)  # inf: no global Tucker, leaves of f itself
DEPTHS = (1, 2)
LEAF_OVERHEAD = 3  # small ints per leaf: its rank triple (the split itself is implicit)


@dataclass(frozen=True)
class Options:
    """A leaf's Pareto front of (numbers, squared error), cheapest first; option 0 is rank 0."""

    cost: np.ndarray
    err2: np.ndarray
    ranks: list[tuple[int, int, int]]


# ---------------------------------------------------------------- decomposition helpers


def tucker_numbers(ranks, shape) -> int:
    """Stored numbers of a Tucker decomposition: core entries plus factor entries."""
    return int(np.prod(ranks)) + sum(n * r for n, r in zip(shape, ranks))


def dense(tucker: Tucker) -> np.ndarray:
    """The dense box of a Tucker decomposition."""
    return np.einsum("abc,xa,yb,zc->xyz", tucker.core, *tucker.factors, optimize=True)


def split(slices: tuple[slice, ...]) -> list[tuple[slice, ...]]:
    """The octants of a box region, split at the midpoint of every axis at least 2 long."""
    halves = []
    for s in slices:
        middle = (s.start + s.stop) // 2
        halves.append([s] if s.stop - s.start < 2 else [slice(s.start, middle), slice(middle, s.stop)])
    return [(a, b, c) for a in halves[0] for b in halves[1] for c in halves[2]]


def leaves(shape, depth: int) -> list[tuple[slice, ...]]:
    """The leaf regions of a uniform octree of ``depth`` levels over a box of ``shape``."""
    regions = [tuple(slice(0, n) for n in shape)]
    for _ in range(depth):
        regions = [octant for region in regions for octant in split(region)]
    return regions


# ---------------------------------------------------------------- per-leaf options


def leaf_options(leaf: np.ndarray) -> tuple[Options, Tucker]:
    """Pareto front of every rank triple of the leaf's full HOSVD (plus rank 0), and the HOSVD.
    Errors are exact: ‖leaf‖² − ‖core[:r1,:r2,:r3]‖² for orthonormal factors."""
    full = hosvd(leaf)
    total = float(np.square(leaf).sum())
    kept = np.square(full.core).cumsum(0).cumsum(1).cumsum(2)
    r1, r2, r3 = np.ix_(*(np.arange(1, n + 1) for n in full.core.shape))
    cost = r1 * r2 * r3 + leaf.shape[0] * r1 + leaf.shape[1] * r2 + leaf.shape[2] * r3
    cost = np.concatenate([[0], cost.ravel()])
    err2 = np.concatenate([[total], np.maximum(total - kept.ravel(), 0.0)])
    order = np.lexsort((err2, cost))
    front = order[err2[order] < np.minimum.accumulate(np.concatenate([[np.inf], err2[order][:-1]]))]
    ranks = [(0, 0, 0) if i == 0 else tuple(int(j) + 1 for j in np.unravel_index(i - 1, kept.shape)) for i in front]
    return Options(cost[front].astype(np.float64), err2[front], ranks), full


def padded(options: list[Options]) -> tuple[np.ndarray, np.ndarray]:
    """(leaves, options) cost and err² arrays, padded with +inf cost, for a vectorized argmin."""
    width = max(len(o.cost) for o in options)
    cost = np.full((len(options), width), np.inf)
    err2 = np.zeros((len(options), width))
    for i, o in enumerate(options):
        cost[i, : len(o.cost)] = o.cost
        err2[i, : len(o.err2)] = o.err2
    return cost, err2


# ---------------------------------------------------------------- rate–distortion allocation


def lagrangian(cost: np.ndarray, err2: np.ndarray, budget: float, steps: int = 100) -> np.ndarray:
    """Per-leaf option indices minimising numbers + λ·err² for the smallest λ (bisected in log
    space) whose total err² ≤ ``budget``: the convex-hull optimum of the allocation."""
    rows = np.arange(len(cost))

    def pick(log_lambda: float) -> np.ndarray:
        return np.argmin(cost + 10.0**log_lambda * err2, axis=1)

    low, high = -12.0, 30.0
    while err2[rows, pick(high)].sum() > budget and high < 300:  # err² of full rank is ~0
        high += 30.0
    for _ in range(steps):
        middle = 0.5 * (low + high)
        low, high = (low, middle) if err2[rows, pick(middle)].sum() <= budget else (middle, high)
    return pick(high)


def spend_slack(cost: np.ndarray, err2: np.ndarray, choice: np.ndarray, budget: float) -> np.ndarray:
    """Greedy pass after the Lagrangian: while the budget allows, move the leaf whose next-cheaper
    Pareto option saves the most numbers to it (the hull skips such points)."""
    choice = choice.copy()
    rows = np.arange(len(cost))
    while True:
        spent = err2[rows, choice].sum()
        movable = choice > 0
        previous = np.maximum(choice - 1, 0)
        extra = err2[rows, previous] - err2[rows, choice]
        saving = np.where(movable & (spent + extra <= budget), cost[rows, choice] - cost[rows, previous], 0.0)
        if saving.max() <= 0:
            return choice
        best = int(saving.argmax())
        choice[best] -= 1


@dataclass(frozen=True)
class Refined:
    """One refinement variant of one cell: total numbers and how it was made."""

    numbers: int
    k: float
    depth: int
    global_ranks: tuple[int, int, int]
    stored_leaves: int


def refine(box: np.ndarray, full: Tucker, norm: float, target: float, k: float, depth: int, verify: bool) -> Refined:
    """Global HOSVD at error k·target (none if k is inf), then residual leaves allocated to
    meet the target."""
    ranks = (0, 0, 0) if np.isinf(k) else choose_ranks(full.core, box.shape, k * target * norm)
    residual = box - dense(truncate(full, ranks))
    regions = leaves(box.shape, depth)
    fronts, fulls = zip(*(leaf_options(residual[region]) for region in regions))
    cost, err2 = padded(list(fronts))
    budget = (target * norm) ** 2
    choice = spend_slack(cost, err2, lagrangian(cost, err2, budget), budget)
    rows = np.arange(len(cost))
    if verify:
        check(box, full, ranks, regions, fronts, fulls, choice, err2[rows, choice].sum(), budget)
    numbers = tucker_numbers(ranks, box.shape) + int(cost[rows, choice].sum()) + LEAF_OVERHEAD * len(regions)
    return Refined(numbers, k, depth, ranks, int((choice > 0).sum()))


def check(box, full, ranks, regions, fronts, fulls, choice, err2, budget) -> None:
    """Rebuild the refined box and assert that its true error is the bookkept one and meets the
    budget (guards the exact-error bookkeeping the whole comparison relies on)."""
    approx = dense(truncate(full, ranks))
    for region, front, leaf_full, index in zip(regions, fronts, fulls, choice):
        if index > 0:
            approx[region] += dense(truncate(leaf_full, front.ranks[index]))
    true = float(np.square(box - approx).sum())
    assert abs(true - err2) <= 1e-6 * budget + 1e-12, (true, err2)
    assert true <= budget * (1 + 1e-9), (true, budget)


# ---------------------------------------------------------------- the bench


def cell_results(block_ids, values, mesh, verify: bool) -> dict:
    """For one cell: {target: (global numbers, [Refined of every k and depth], global ranks)}."""
    box = to_dense(block_ids, np.asarray(values, dtype=np.float64), mesh).values
    box = box / np.abs(box).max()
    norm = float(np.linalg.norm(box))
    full = hosvd(box)
    results = {}
    for target in TARGETS:
        variants = [refine(box, full, norm, target, k, d, verify) for k in LOOSENESS for d in DEPTHS]
        ranks = choose_ranks(full.core, box.shape, target * norm)
        results[target] = (tucker_numbers(ranks, box.shape), variants, ranks)
    return results


def load_cases(data: Path) -> dict[str, list]:
    """{case: [(block_ids, values, mesh)]} of the proton cells of both files."""
    cases = {}
    for name, file in (("fullf proton", "fullf.0000001.vlsv"), ("restart proton (72)", "restart_ipshock_small.vlsv")):
        with vlasiator.open_file(data / file) as f:
            p = f.population("proton")
            cases[name] = [(*p.cell(i), p.mesh) for i in range(p.cell_count)]
    return cases


FAMILIES = (
    ("residual leaves on a global Tucker (k ≤ 10)", lambda v: np.isfinite(v.k)),
    ("also a plain partition (k = inf)", lambda v: True),
)


def summarize(name: str, cells: list[dict]) -> list[str]:
    """Markdown rows of one case per target and variant family: global-only, the best variant
    fixed for all cells, the best variant per cell (or global when none beats it), cells helped."""
    rows = []
    for target in TARGETS:
        globals_ = np.array([c[target][0] for c in cells])
        for family, keep in FAMILIES:
            variants = [[v for v in c[target][1] if keep(v)] for c in cells]
            sums = np.array([[v.numbers for v in vs] for vs in variants]).sum(axis=0)
            best = int(sums.argmin())
            fixed = variants[0][best]
            cell_best = np.array([min(v.numbers for v in vs) for vs in variants])
            per_cell = np.minimum(cell_best, globals_)
            label = f"k={fixed.k:g}, depth {fixed.depth}"
            if len(cells) == 1:
                label += f" (global ranks {fixed.global_ranks}, {fixed.stored_leaves}/{8**fixed.depth} leaves stored)"
                family += f"; global-only ranks {cells[0][target][2]}"
            rows.append(
                f"| {name} | {target:g} | {family} | {globals_.sum()} | {label} | {sums[best]} "
                f"| {globals_.sum() / sums[best]:.3f} | {per_cell.sum()} | {globals_.sum() / per_cell.sum():.3f} "
                f"| {int((cell_best < globals_).sum())}/{len(cells)} |"
            )
    return rows


def variant_table(name: str, cells: list[dict]) -> list[str]:
    """Markdown rows: ratio global/refined of the case total for every (k, depth)."""
    rows = []
    for target in TARGETS:
        total = sum(c[target][0] for c in cells)
        sums = np.array([[v.numbers for v in c[target][1]] for c in cells]).sum(axis=0)
        ratios = {(v.k, v.depth): total / s for v, s in zip(cells[0][target][1], sums)}
        cols = " | ".join(f"{ratios[(k, 1)]:.3f} / {ratios[(k, 2)]:.3f}" for k in LOOSENESS)
        rows.append(f"| {name} | {target:g} | {cols} |")
    return rows


def main() -> None:
    """Run every case, print the two markdown tables and the time taken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--verify", action="store_true", help="rebuild every refined box and check its error")
    args = parser.parse_args()
    start = time.perf_counter()
    cases = load_cases(args.data)
    results = {name: [cell_results(*cell, args.verify) for cell in cells] for name, cells in cases.items()}
    print("| case | target | variants | global numbers | best variant (fixed for all cells) | its numbers "
          "| global/fixed | per-cell best (or global) | global/per-cell | cells helped |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, cells in results.items():
        print("\n".join(summarize(name, cells)))
    print()
    print("| case | target | " + " | ".join(f"k={k:g} (d1 / d2)" for k in LOOSENESS) + " |")
    print("|---|---|" + "---|" * len(LOOSENESS))
    for name, cells in results.items():
        print("\n".join(variant_table(name, cells)))
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
