"""Issue 16, lead 2: does one shared decoder with a short latent per cell beat the octree codec?

An auto-decoder: one sine network for all cells of a file, g_c(v) = base_c(v) · exp(s(γ(u), z_c)),
with γ the mlp codec's Fourier features of the cell's whitened velocity u, base_c the codec's
per-cell Gaussian mixture, and z_c a per-cell latent that shifts every layer's pre-activations
(shift modulations: h ← sin(h W + b + z A)). Shared weights and all latents are trained jointly
with torch autograd and Adam on the codec's loss (Σ w (g − f)² / Σ w f² over an importance
sample of each cell, 70% of it drawn ∝ f), minibatches of cells, a cosine schedule. The weights
and latents stay float32: an upper bound on what an 8-bit codec would reach.

Scored on every stored voxel of every cell, twice: the field itself, and the values the product
decodes from it, after its moment restoration (``vdfzip.reconstruct.solve_restoration``; in the
restart profile also keeping the content-block set), the ``restored`` columns. A cell meets the
core profile with rel L2 ≤ tol, the restart profile also with tail p95 ≤ 0.3 decades over the
content voxels (and restored: with the restoration solved). Bytes: a cell that meets a profile
costs its latent (1 B per entry, 4 B of step) and its mixture payload (4 + 40 B per component),
restored also the restoration's bytes; the shared network costs 1 B per weight, once; a cell that
misses costs the octree codec's payload (``transform="auto"``, the profile's target; lossless
bytes where it refuses). The chain's ratio is set against the
octree codec alone on the same cells, the issue's target being ≥ 1.5× (real) and ≥ 1.3× (synthetic).

    python bench/mlp_shared_decoder.py ../shared/data/restart_ipshock_small.vlsv --synth-cells 2000 \\
        --markdown bench/RESULTS-mlp-shared-decoder.md
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlp_tail_loss import draw, markdown_table, prepared_cells  # noqa: E402

from vdfzip import content, layout, physics  # noqa: E402
from vdfzip.codecs import ToleranceNotMetError  # noqa: E402
from vdfzip.codecs.octree import OctreeCodec  # noqa: E402
from vdfzip.metrics import cell_log10_p95  # noqa: E402
from vdfzip.profiles import DEFAULT_TAIL_TOL, resolve_profile  # noqa: E402
from vdfzip.reconstruct import cell_rel_l2, solve_restoration  # noqa: E402
from vdfzip.synth import write_synthetic_restart  # noqa: E402
from vdfzip.vlasiator import VlasiatorFile  # noqa: E402

#: Latent lengths measured by default; the shared network's width and hidden layers.
LATENTS = (8, 32)
WIDTH, HIDDEN = 64, 3
S_MAX = 30.0  # the codec's ceiling on the network's log-ratio
RESTORATION_CELLS = 100  # cells restored at once (memory: the float64 values of that many cells)
PROFILES = ("core", "restart")


class SharedField(torch.nn.Module):
    """The shared sine network with per-cell latents that shift every hidden layer."""

    def __init__(self, cells: int, inputs: int, latent: int, generator: torch.Generator):
        super().__init__()
        dims = [inputs] + [WIDTH] * HIDDEN
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.shifts = torch.nn.ModuleList(torch.nn.Linear(latent, WIDTH, bias=False) for _ in range(HIDDEN))
        self.out = torch.nn.Linear(WIDTH, 1)
        for layer in list(self.layers[1:]) + [self.out]:  # SIREN's initialisation past the first layer
            bound = np.sqrt(6.0 / layer.in_features)
            torch.nn.init.uniform_(layer.weight, -bound, bound, generator=generator)
        self.latents = torch.nn.Parameter(torch.zeros(cells, latent))

    def shared_parameters(self) -> int:
        return sum(p.numel() for name, p in self.named_parameters() if name != "latents")

    def forward(self, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """s(γ(u), z_c) for features ``x`` (cells, points, inputs) of the cells ``cells``."""
        z = self.latents[cells][:, None, :]
        h = x
        for layer, shift in zip(self.layers, self.shifts):
            h = torch.sin(layer(h) + shift(z))
        return self.out(h)[..., 0].clamp(max=S_MAX)


def training_data(arch, cells, threshold, samples, rng) -> dict[str, torch.Tensor]:
    """Each cell's importance sample: features, ln base, f and weights (all over the cell's max)."""
    rows = {k: [] for k in ("x", "log_base", "f", "w")}
    for cell in cells:
        index, w, _ = draw(cell, samples, 0.7, 0.0, threshold, rng)
        rows["x"].append(arch.features(cell["u"][index]))
        rows["log_base"].append(cell["log_base"][index] - np.log(cell["scale"]))
        rows["f"].append(cell["f"][index] / cell["scale"])
        rows["w"].append(w)
    return {k: torch.tensor(np.stack(v), dtype=torch.float32) for k, v in rows.items()}


def train(arch, cells, threshold, latent, steps, samples, cells_per_step) -> SharedField:
    generator = torch.Generator().manual_seed(0)
    data = training_data(arch, cells, threshold, samples, np.random.default_rng(0))
    model = SharedField(len(cells), data["x"].shape[-1], latent, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=1e-5)
    norm = (data["w"] * data["f"] ** 2).sum(1)
    for _ in range(steps):
        batch = torch.randperm(len(cells), generator=generator)[:cells_per_step]
        g = torch.exp(data["log_base"][batch] + model(data["x"][batch], batch))
        loss = ((data["w"][batch] * (g - data["f"][batch]) ** 2).sum(1) / norm[batch]).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model


def scores(model, arch, cells, path: str, tol: float) -> dict[str, np.ndarray]:
    """Per cell, over all its stored voxels: rel L2 and tail p95 of the field (``rel``, ``tail``),
    and after the product's moment restoration of the field's values, per profile (the restart
    profile also keeping the content-block set), whether the cell meets the profile (restored,
    rel L2 ≤ tol, and in the restart profile tails ≤ the default bound) and the restoration's bytes."""
    with VlasiatorFile(path) as file:
        population = file.population(next(iter(file.populations)))
        species, threshold, count = population.species, population.threshold, population.cell_count
        out = {k: np.zeros(count) for k in ("rel", "tail")} | {
            f"{k} {profile}": np.zeros(count) for k in ("met", "restoration bytes") for profile in PROFILES}
        for start in range(0, count, RESTORATION_CELLS):
            batch = population.cells(start, min(count, start + RESTORATION_CELLS))
            fields = []
            with torch.no_grad():
                for c in range(start, start + len(batch)):
                    x = torch.tensor(arch.features(cells[c]["u"]))[None]
                    s = model(x, torch.tensor([c]))[0].double().numpy()
                    fields.append(np.exp(cells[c]["log_base"] + s))
            decoded = np.concatenate(fields).reshape(np.shape(batch.values))
            chunk = slice(start, start + len(batch))
            out["rel"][chunk] = cell_rel_l2(decoded, batch.values, batch.offsets)
            out["tail"][chunk] = cell_log10_p95(decoded, batch.values, batch.offsets, threshold)
            target = layout.columns_to_moments(layout.moments_to_columns(physics.batch_moments(batch, species)),
                                               species.mass)
            for profile in PROFILES:
                keep = content.content_blocks(batch.values, threshold) if profile == "restart" else None
                restorations, solved, values = solve_restoration(batch.block_ids, decoded, batch.offsets, species.mesh,
                                                                 target, keep, threshold)
                values = values.astype(species.dtype)
                rel = cell_rel_l2(values, batch.values, batch.offsets)
                tails_ok = profile == "core" or cell_log10_p95(values, batch.values, batch.offsets,
                                                               threshold) <= DEFAULT_TAIL_TOL
                out[f"met {profile}"][chunk] = solved & (rel <= tol) & tails_ok
                out[f"restoration bytes {profile}"][chunk] = [len(r) for r in restorations]
    return out


def octree_bytes(path: str, tol: float) -> dict[str, np.ndarray]:
    """Per profile, per cell of the first population: the octree codec's payload bytes for the
    profile's target (the raw values' bytes where it refuses)."""
    codec = OctreeCodec("auto")
    with VlasiatorFile(path) as file:
        population = file.population(next(iter(file.populations)))
        batch, mesh, threshold = population.cells(0, population.cell_count), population.mesh, population.threshold
    sizes = {}
    for profile in PROFILES:
        target = resolve_profile(profile, None, True).target(tol, threshold)
        sizes[profile] = np.zeros(len(batch), dtype=np.int64)
        for c in range(len(batch)):
            ids, values = batch.cell(c)
            try:
                sizes[profile][c] = len(codec.encode_cell(ids, values, mesh, target))
            except ToleranceNotMetError:
                sizes[profile][c] = np.asarray(values).nbytes
    return sizes


def measure(path: str, label: str, latents: list[int], tol: float, steps: int, samples: int,
            cells_per_step: int) -> list[dict]:
    arch, cells, threshold = prepared_cells(path)
    octree = octree_bytes(path, tol)
    if len(octree["core"]) != len(cells):  # why: the rows below pair cells by position
        raise SystemExit(f"{path}: cells without positive values; this bench needs every cell to have a field")
    mixture_bytes = np.array([4 + 40 * cell["components"] for cell in cells])
    rows = []
    for latent in latents:
        started = time.perf_counter()
        model = train(arch, cells, threshold, latent, steps, samples, min(cells_per_step, len(cells)))
        seconds = time.perf_counter() - started
        score = scores(model, arch, cells, path, tol)
        rel, tail = score["rel"], score["tail"]
        for profile, met in (("core", rel <= tol), ("restart", (rel <= tol) & (tail <= DEFAULT_TAIL_TOL))):
            field_bytes = latent + 4 + mixture_bytes
            chain = model.shared_parameters() + np.where(met, field_bytes, octree[profile]).sum()
            restored = score[f"met {profile}"].astype(bool)
            restored_chain = model.shared_parameters() + np.where(
                restored, field_bytes + score[f"restoration bytes {profile}"], octree[profile]).sum()
            rows.append({"case": label, "profile": profile, "latent": latent, "shared weights": model.shared_parameters(),
                         "cells met": f"{int(met.sum())} / {len(cells)}", "median rel L2": float(np.median(rel)),
                         "median tail p95": float(np.median(tail)),
                         "octree B/cell where met": float(octree[profile][met].mean()) if met.any() else float("nan"),
                         "chain / octree ratio": float(octree[profile].sum() / chain),
                         "cells met restored": f"{int(restored.sum())} / {len(cells)}",
                         "chain / octree restored": float(octree[profile].sum() / restored_chain),
                         "train s": round(seconds)})
            print(rows[-1], flush=True)
    return rows


def table(rows: list[dict], command: str) -> str:
    lines = ["# One shared decoder with per-cell latents (issue 16, lead 2)", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"torch {torch.__version__}, one thread; {datetime.now(timezone.utc):%Y-%m-%d}.", "",
             f"Command: `{command}`", ""]
    return "\n".join(lines) + "\n" + markdown_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--synth-cells", type=int, default=0, help="also a synthetic restart of this many cells")
    parser.add_argument("--latents", type=int, nargs="+", default=list(LATENTS), help="latent lengths to measure")
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--cells-per-step", type=int, default=64)
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = (args.latents, args.tol, args.steps, args.samples, args.cells_per_step)
    rows = measure(args.file, Path(args.file).stem, *options)
    if args.synth_cells:
        with tempfile.TemporaryDirectory() as scratch:
            synth = Path(scratch) / "synth.vlsv"
            write_synthetic_restart(synth, args.synth_cells, seed=1)
            rows += measure(str(synth), f"synth-{args.synth_cells} (proton)", *options)
    text = table(rows, "python bench/mlp_shared_decoder.py " + " ".join(sys.argv[1:]))
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
