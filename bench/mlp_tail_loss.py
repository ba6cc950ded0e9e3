"""Issue 16, lead 1: does a tail-aware training loss let the neural field meet the restart profile?

Trains the ``mlp`` codec's field (its mixture base, whitening, Fourier features and default
architecture: g = base · exp(s(u))) on every cell of a file with torch autograd, float weights,
full-batch Adam with the codec's cosine schedule, a fixed number of steps, no early stop and no
quantization (an upper bound on what the codec's 8-bit fit reaches). The loss is

    Σ w (g − f)² / Σ w f²  +  λ · mean(w_c (ln g − ln f)²)

over a per-cell sample of voxels drawn with shares ``imp`` ∝ f, ``content`` uniform over the
voxels with f ≥ the sparsity threshold, the rest uniform; w and w_c keep both terms unbiased
(the L2 term over all voxels, the log term over the content voxels). ``--skip`` adds two
per-cell linear terms c₁ ln(1 + |u|²) + c₂ |u|² to s (the sine network's output is bounded, so
alone it cannot follow a tail that falls slower than the Gaussian base). Each row is then scored
on all stored voxels: rel L2, the tail p95 of |log10 g − log10 f| over content voxels, and the
cells meeting the restart profile's two bounds (rel L2 ≤ tol, tail p95 ≤ 0.3 decades).

A second table bounds what any smooth field can reach: each cell's ln f smoothed by a Gaussian of
``σ`` voxels on its own velocity mesh (normalised over the stored voxels), scored the same way.
If smoothing at a fraction of a voxel already misses the tail bound, the tails carry voxel-scale
detail that a small field cannot hold, whatever its loss.

    python bench/mlp_tail_loss.py ../shared/data/restart_ipshock_small.vlsv --markdown bench/RESULTS-mlp-tail-loss.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.special import logsumexp

from vdfzip.codecs.mlp import MlpCodec
from vdfzip.mesh import voxel_velocities
from vdfzip.metrics import Log10Reference
from vdfzip.profiles import DEFAULT_TAIL_TOL
from vdfzip.vlasiator import VlasiatorFile

#: (λ, content share, ∝f share, skip terms): the codec's loss first, then the variants.
VARIANTS = [(0.0, 0.0, 0.7, False), (1e-3, 0.3, 0.5, False), (1e-2, 0.3, 0.5, False),
            (0.0, 0.0, 0.7, True), (1e-3, 0.3, 0.5, True), (1e-2, 0.3, 0.5, True), (1e-1, 0.5, 0.3, True)]
#: Widths (voxels) of the smoothing floor.
SIGMAS = (0.5, 1.0, 2.0)
#: Ceiling on s with the skip terms (the codec's S_MAX is 30): the tails may need more.
S_CEILING = 80.0


def log_base(mixture, velocities):
    """ln base(v) by a log-sum-exp over the components: the base underflows far in the tails."""
    precision, _, _ = mixture.derived()
    points = velocities.T
    exponents = np.stack([-0.5 * ((p @ (points - c[:, None])) ** 2).sum(0) for p, c in zip(precision, mixture.centre)],
                         axis=1)
    return logsumexp(exponents, axis=1, b=mixture.amplitude)


def prepared_cells(path):
    """Per cell: f, whitened velocities u, ln base and the scale, as the codec prepares them."""
    with VlasiatorFile(path) as file:
        name = next(iter(file.populations))
        population = file.population(name)
        batch, mesh, threshold = population.cells(0, population.cell_count), population.mesh, population.threshold
    codec = MlpCodec()
    cells = []
    for c in range(len(batch)):
        prepared = codec.prepare_cell(batch, c, mesh, np.random.default_rng([0, int(batch.cell_ids[c]), 0]))
        if prepared is None:
            continue
        ids, values = batch.cell(c)
        velocities = voxel_velocities(ids, mesh).reshape(-1, 3)
        _, mean, whiten = prepared.mixture.derived()
        f = np.asarray(values, np.float64).ravel()
        voxel = np.rint((velocities - np.asarray(mesh.vmin)) / np.asarray(mesh.dv) - 0.5).astype(int)
        cells.append({"f": f, "u": (velocities - mean) @ whiten.T, "log_base": log_base(prepared.mixture, velocities),
                      "scale": f.max(), "voxel": voxel - voxel.min(axis=0),
                      "components": prepared.mixture.components})
    return codec.architecture, cells, threshold


def draw(cell, samples, imp, content_share, threshold, rng):
    f = np.clip(cell["f"], 0, None)
    n, content = f.size, f >= threshold
    nc = max(int(content.sum()), 1)
    p = (1 - imp - content_share) / n + imp * f / f.sum() + content_share * content / nc
    index = np.minimum(np.searchsorted(np.cumsum(p), rng.random(samples) * p.sum()), n - 1)
    return index, 1.0 / (n * p[index]), content[index] / (nc * p[index])


def radial(u):
    r2 = (u * u).sum(axis=-1)
    return np.stack([np.log1p(r2), r2], axis=-1)


def train_and_score(arch, cells, threshold, tol, lam, content_share, imp, skip, steps, samples):
    rng = np.random.default_rng(0)
    rows = {k: [] for k in ("x", "radial", "log_base", "f", "log_f", "w", "w_content")}
    for cell in cells:
        index, w, w_content = draw(cell, samples, imp, content_share, threshold, rng)
        u = cell["u"][index]
        rows["x"].append(arch.features(u))
        rows["radial"].append(radial(u))
        rows["log_base"].append(cell["log_base"][index] - np.log(cell["scale"]))
        rows["f"].append(cell["f"][index] / cell["scale"])
        rows["log_f"].append(np.log(np.maximum(cell["f"][index], 1e-3 * threshold) / cell["scale"]))
        rows["w"].append(w)
        rows["w_content"].append(w_content)
    t = {k: torch.tensor(np.stack(v), dtype=torch.float32) for k, v in rows.items()}
    theta = torch.tensor(arch.initial(len(cells), np.random.default_rng(1)))
    weights = [theta[:, w].reshape(-1, d_in, d_out).clone().requires_grad_() for w, _, d_in, d_out in arch.layers]
    biases = [theta[:, b].reshape(-1, 1, d_out).clone().requires_grad_() for _, b, _, d_out in arch.layers]
    radial_weights = torch.zeros(len(cells), 2, 1, requires_grad=True)
    params = weights + biases + ([radial_weights] if skip else [])
    ceiling = S_CEILING if skip else 30.0

    def log_ratio(x, r, cells=slice(None)):
        a = x
        for layer, (w, b) in enumerate(zip(weights, biases)):
            a = a @ w[cells] + b[cells]
            if layer < len(weights) - 1:
                a = torch.sin(a)
        return (a[..., 0] + (r @ radial_weights[cells])[..., 0]).clamp(max=ceiling)

    optimiser = torch.optim.Adam(params, lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=5e-4)
    norm = (t["w"] * t["f"] ** 2).sum(1)
    for _ in range(steps):
        log_g = t["log_base"] + log_ratio(t["x"], t["radial"])
        l2 = (t["w"] * (torch.exp(log_g) - t["f"]) ** 2).sum(1) / norm
        tails = (t["w_content"] * (log_g - t["log_f"]) ** 2).mean(1)
        optimiser.zero_grad()
        (l2 + lam * tails).sum().backward()
        optimiser.step()
        schedule.step()
    scores = []
    with torch.no_grad():
        for c, cell in enumerate(cells):
            x = torch.tensor(arch.features(cell["u"]))[None]
            r = torch.tensor(radial(cell["u"]), dtype=torch.float32)[None]
            g = np.exp(cell["log_base"] + log_ratio(x, r, slice(c, c + 1))[0].double().numpy())
            scores.append((np.linalg.norm(g - cell["f"]) / np.linalg.norm(cell["f"]),
                           Log10Reference(cell["f"], threshold).p95(g)))
    rel, tail = np.array(scores).T
    return {"lambda": lam, "content share": content_share, "∝f share": imp, "skip terms": skip,
            "cells meeting both": int(((rel <= tol) & (tail <= DEFAULT_TAIL_TOL)).sum()),
            "rel L2 ≤ tol": int((rel <= tol).sum()), "median rel L2": float(np.median(rel)),
            "tail ≤ 0.3": int((tail <= DEFAULT_TAIL_TOL).sum()), "median tail p95": float(np.median(tail))}


def smoothing_floor(cells, threshold, tol, sigma):
    """The scores of exp(Gaussian-smoothed ln f) over every cell's stored voxels with f > 0."""
    rel, tail = [], []
    for cell in cells:
        f, where = cell["f"], tuple(cell["voxel"].T)
        shape = cell["voxel"].max(axis=0) + 1
        log_f, stored = np.zeros(shape), np.zeros(shape)
        log_f[where] = np.log(np.where(f > 0, f, 1.0))
        stored[where] = f > 0
        smooth = gaussian_filter(log_f, sigma, mode="constant") / np.maximum(gaussian_filter(stored, sigma, mode="constant"), 1e-300)
        g = np.where(f > 0, np.exp(smooth[where]), 0.0)
        rel.append(np.linalg.norm(g - f) / np.linalg.norm(f))
        tail.append(Log10Reference(f, threshold).p95(g))
    rel, tail = np.array(rel), np.array(tail)
    return {"σ (voxels)": sigma, "cells meeting both": int(((rel <= tol) & (tail <= DEFAULT_TAIL_TOL)).sum()),
            "rel L2 ≤ tol": int((rel <= tol).sum()), "median rel L2": float(np.median(rel)),
            "tail ≤ 0.3": int((tail <= DEFAULT_TAIL_TOL).sum()), "median tail p95": float(np.median(tail))}


def markdown_table(rows) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |"
              for row in rows]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path")
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    arch, cells, threshold = prepared_cells(args.path)
    results = []
    for variant in VARIANTS:
        start = time.perf_counter()
        row = train_and_score(arch, cells, threshold, args.tol, *variant, args.steps, args.samples)
        row["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        results.append(row)
    floors = [smoothing_floor(cells, threshold, args.tol, sigma) for sigma in SIGMAS]
    for row in floors:
        print(json.dumps(row, ensure_ascii=False), flush=True)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(f"# Tail-aware loss for the neural field (`bench/mlp_tail_loss.py`)\n\n"
                      f"Machine: {platform.processor() or platform.machine()}, one torch thread. "
                      f"Date: {datetime.now(timezone.utc):%Y-%m-%dT%H:%M}+00:00. File: `{args.path}` "
                      f"({len(cells)} cells), --tol {args.tol}, {args.steps} steps, {args.samples} samples per cell. "
                      "What the rows mean: the module's docstring.\n\n")
            out.write("## Training variants\n\n" + markdown_table(results))
            out.write("\n## Smoothing floor: exp(Gaussian-smoothed ln f)\n\n" + markdown_table(floors))


if __name__ == "__main__":
    main()
