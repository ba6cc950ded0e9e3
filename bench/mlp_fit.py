"""Fitting speed of the neural codec's batched engine on CPU, next to the machine's own float32
GEMM rate and a naive per-cell torch loop, all measured in one run.

- **GEMM rate**: numpy float32 matmul of two 1024² matrices, and the engine's own batched shape
  (cells × samples × width), best of 20 (the dev machine is shared and noisy).
- **Batched engine**: the cells of ``restart_ipshock_small`` (all 72 by default) at ``--tol``:
  preparation (mixture fit, sample, features), :func:`vdfzip.neural.fit.fit` on all cells at
  once, and the decode that checks every cell over all its voxels; cells/s, core-seconds per
  cell and per 1000 blocks (process CPU time), achieved GFLOP/s from the steps each cell
  actually trained (6 · samples · Σ d_in·d_out per step: forward, weight and input gradients).
  The fit runs the fused training kernel (the default on CPU), also timed alone on one step of
  all cells (the fit's average rate includes the steps where few cells are left); the same fit
  through numpy's batched GEMMs (``fused=False``, the statement the GPU runs on cuBLAS) is
  timed beside it.
- **Warm start**: the same fit started from each cell's own fitted network (what an unchanged
  cell of the next restart would get) and from its neighbour's (cells in file order).
- **Naive torch loop**: the same prepared cells, the same network, loss, Adam settings, cosine
  schedule and early stop, one cell at a time with ``torch.optim.Adam`` (float32, torch's default
  threads), on ``--torch-cells`` cells; no quantization phase (it only flatters torch).
- **CUDA** (when cupy sees a GPU): the same fit on the device, through cuBLAS batched GEMMs and
  through the fused CUDA kernel.

Every timed section runs after a warm-up (kernel compilation, torch's first step); the engine's
fit and the torch loop are the fastest of ``--rounds`` runs each, as timings on this shared
machine vary by up to ±30% from run to run.

Usage: ``python bench/mlp_fit.py [--tol 3e-2] [--cells 72] [--torch-cells 24] [--rounds 3]
[--out bench/RESULTS-mlp-fit.md]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vdfzip import vlasiator
from vdfzip.codecs import get_codec, relative_l2
from vdfzip.codecs.mlp import GOAL_SHARE
from vdfzip.engine import array_namespace
from vdfzip.neural import fit as engine
from vdfzip.neural.network import Architecture, dequantize

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gemm_rate(a_shape, b_shape, repeat: int = 20) -> float:
    """Best GFLOP/s of ``a @ b`` (float32) over ``repeat`` runs."""
    rng = np.random.default_rng(0)
    a, b = rng.random(a_shape, dtype=np.float32), rng.random(b_shape, dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * np.prod(a_shape) * b_shape[-1] / best / 1e9


def step_flops(arch: Architecture, samples: int) -> int:
    return 6 * samples * sum(d_in * d_out for d_in, d_out in zip(arch.dims[:-1], arch.dims[1:]))


class Clock:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def best_of(rounds: int, work):
    """What ``work()`` returns and the :class:`Clock` of its fastest of ``rounds`` runs."""
    best = None
    for _ in range(rounds):
        with Clock() as clock:
            result = work()
        best = clock if best is None or clock.wall < best.wall else best
    return result, best


def cuda_lines(arch: Architecture, stacked, goal, schedule: engine.Schedule, rounds: int) -> list[str]:
    """The same fit on a GPU, through cuBLAS and through the fused CUDA kernel, when cupy sees one."""
    xp = array_namespace("auto")
    if xp is np:
        return ["CUDA: no GPU was available to this run (cupy missing or no device); not measured."]
    device = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)["name"].decode()
    on_device = [xp.asarray(a) for a in stacked]
    lines = [f"CUDA on {device} (cupy {xp.__version__}), the same {len(goal)} cells:", ""]
    for name, fused in (("cuBLAS batched GEMMs", False), ("fused CUDA kernel", True)):
        engine.fit(arch, *on_device, goal, engine.Schedule(max_steps=2, quantized_steps=1), xp, fused=fused)

        def run():
            result = engine.fit(arch, *on_device, goal, schedule, xp, fused=fused)
            result.ready.synchronize()
            return result

        result, clock = best_of(rounds, run)
        lines.append(f"- {name}: fit {clock.wall:.2f} s wall, {len(goal) / clock.wall:.1f} cells/s, "
                     f"{result.trained_steps.mean():.0f} steps per cell, "
                     f"median estimate {np.median(result.estimate):.3g}")
    return lines + [""]


def warm_up(codec, batch, mesh) -> None:
    """One-off costs outside the timed sections: compiling the numba kernels (cached on disk after
    the first run) and torch's first forward/backward/Adam step (about a second here)."""
    payloads = codec.fit_cells(batch, [0, 1], mesh, 0.5)
    codec.decode_cells(list(payloads.values()), [batch.cell(c)[0] for c in (0, 1)], mesh)
    prepared = [codec.prepare_cell(batch, c, mesh, np.random.default_rng(0)) for c in (0, 1)]
    stacked = [np.stack([getattr(q, n) for q in prepared]) for n in ("inputs", "base", "target", "weight")]
    short = engine.Schedule(max_steps=2, quantized_steps=1)
    engine.fit(codec.architecture, *stacked, np.ones(2), short, fused=False)
    torch_fit(codec.architecture, [a[0] for a in stacked], 1.0, short)


def torch_fit(arch: Architecture, data, goal: float, schedule: engine.Schedule) -> tuple[int, float]:
    """One cell, plain torch: steps trained and the final estimate."""
    inputs, base, target, weight = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    theta = torch.nn.Parameter(torch.from_numpy(arch.initial(1, np.random.default_rng(schedule.seed))[0]))
    optimizer = torch.optim.Adam([theta], lr=schedule.rate)
    norm = (weight * target**2).sum()
    history = []
    for step in range(1, schedule.max_steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = engine.cosine_rate(step, schedule)
        a = inputs
        for index, (w, b, d_in, d_out) in enumerate(arch.layers):
            a = a @ theta[w].reshape(d_in, d_out) + theta[b]
            if index < len(arch.layers) - 1:
                a = torch.sin(a)
        loss = (weight * (base * torch.exp(torch.clamp(a[:, 0], max=30.0)) - target) ** 2).sum() / norm
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % schedule.check_every == 0:
            estimate = float(loss.detach()) ** 0.5
            history.append(estimate)
            stalled = len(history) > schedule.patience and (
                estimate > (1 - schedule.min_progress) * history[-1 - schedule.patience])
            if estimate <= goal or stalled:
                return step, estimate
    return schedule.max_steps, float(loss.detach()) ** 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--tol", type=float, default=3e-2)
    parser.add_argument("--cells", type=int, default=72)
    parser.add_argument("--torch-cells", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of the engine and torch fits; best kept")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS-mlp-fit.md")
    args = parser.parse_args(argv)

    codec = get_codec("mlp")
    arch, schedule = codec.architecture, codec.schedule
    with vlasiator.open_file(args.data / "restart_ipshock_small.vlsv") as f:
        p = f.population("proton")
        batch = p.cells(0, min(args.cells, p.cell_count))
        mesh = p.mesh
    cells = len(batch)
    blocks = len(batch.block_ids)
    gemm_square = gemm_rate((1024, 1024), (1024, 1024))
    gemm_batched = gemm_rate((cells, schedule.samples, arch.dims[1]), (cells, arch.dims[1], arch.dims[2]))

    warm_up(codec, batch, mesh)
    rng = np.random.default_rng(schedule.seed)
    with Clock() as prepare:
        prepared = [codec.prepare_cell(batch, c, mesh, rng) for c in range(cells)]
    stacked = [np.stack([getattr(q, n) for q in prepared]) for n in ("inputs", "base", "target", "weight")]
    engine_goal = GOAL_SHARE * args.tol
    goal = np.full(cells, engine_goal)
    result, fitting = best_of(args.rounds, lambda: engine.fit(arch, *stacked, goal, schedule))
    steps = result.trained_steps.sum() + cells * (schedule.quantized_steps + 1)
    flops = steps * step_flops(arch, schedule.samples)
    theta = arch.initial(cells, np.random.default_rng(0))
    _, one_step = best_of(10 * args.rounds, lambda: engine.step_gradient(arch, theta, stacked))
    with Clock() as checking:
        payloads = [codec.payload(q.mixture, result.codes[i], result.steps[i]) for i, q in enumerate(prepared)]
        decoded = codec.decode_cells(payloads, [batch.cell(c)[0] for c in range(cells)], mesh)
        bounds = np.cumsum([0] + [len(batch.cell(c)[0]) for c in range(cells)])
        errors = np.array([relative_l2(decoded[bounds[c] : bounds[c + 1]], batch.cell(c)[1]) for c in range(cells)])
    total_cpu = prepare.cpu + fitting.cpu + checking.cpu
    total_wall = prepare.wall + fitting.wall + checking.wall

    with Clock() as gemm_fitting:
        gemm_result = engine.fit(arch, *stacked, goal, schedule, fused=False)

    fitted = dequantize(arch, result.codes, result.steps)
    warm = {}
    for name, initial in (("own network (an unchanged cell)", fitted), ("neighbour's network", np.roll(fitted, 1, 0))):
        with Clock() as clock:
            again = engine.fit(arch, *stacked, goal, schedule, initial=initial)
        warm[name] = (clock.wall, again.trained_steps.mean(), (again.estimate <= args.tol).sum())

    chosen = np.linspace(0, cells - 1, min(args.torch_cells, cells)).astype(int)
    torch_runs, naive = best_of(
        args.rounds, lambda: [torch_fit(arch, [a[c] for a in stacked], engine_goal, schedule) for c in chosen])
    torch_steps = np.array([s for s, _ in torch_runs])
    torch_estimates = np.array([e for _, e in torch_runs])

    lines = [
        "# Fitting speed of the mlp codec's batched engine (CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average before the run {os.getloadavg()[0]:.1f}.",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        (__doc__ or "").split("\n\n", 1)[1].split("Usage:")[0].strip(),
        "",
        f"Network {arch.dims} ({arch.parameter_count} parameters, {arch.activation}, {arch.fourier} Fourier "
        f"frequencies), {schedule.samples} samples per cell, goal {engine_goal:.3g} (0.7 × tol {args.tol:g}), "
        f"{cells} cells, {blocks} blocks.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| float32 GEMM 1024² (numpy) | {gemm_square:.1f} GFLOP/s |",
        f"| float32 batched GEMM {cells}×{schedule.samples}×{arch.dims[1]}·{arch.dims[1]}×{arch.dims[2]} "
        f"| {gemm_batched:.1f} GFLOP/s |",
        f"| engine: preparation | {prepare.wall:.1f} s wall, {prepare.cpu:.1f} s CPU |",
        f"| engine: fit ({result.trained_steps.mean():.0f} steps per cell on average + "
        f"{schedule.quantized_steps} quantized) | {fitting.wall:.1f} s wall, {fitting.cpu:.1f} s CPU |",
        f"| same fit through numpy's batched GEMMs ({gemm_result.trained_steps.mean():.0f} steps per cell) "
        f"| {gemm_fitting.wall:.1f} s wall, {gemm_fitting.cpu:.1f} s CPU "
        f"({gemm_fitting.wall / fitting.wall:.1f}× the fused kernel's time) |",
        f"| engine: decode and check | {checking.wall:.1f} s wall, {checking.cpu:.1f} s CPU |",
        f"| engine: cells/s (wall) | **{cells / total_wall:.2f}** |",
        f"| engine: core-s per cell / per 1000 blocks | {total_cpu / cells:.2f} "
        f"/ **{total_cpu * 1000 / blocks:.2f}** |",
        f"| engine: achieved GFLOP/s in the fit | {flops / fitting.wall / 1e9:.1f} "
        f"({100 * flops / fitting.wall / 1e9 / gemm_square:.0f}% of the square GEMM rate) |",
        f"| fused kernel alone: one step of all {cells} cells | {one_step.wall * 1e3:.2f} ms, "
        f"{cells * step_flops(arch, schedule.samples) / one_step.wall / 1e9:.1f} GFLOP/s "
        f"({100 * cells * step_flops(arch, schedule.samples) / one_step.wall / 1e9 / gemm_square:.0f}%) |",
        f"| engine: cells within tol {args.tol:g} over all voxels | {(errors <= args.tol).sum()}/{cells} "
        f"(median rel L2 {np.median(errors):.3g}) |",
        f"| naive torch loop: cells/s (wall, {len(chosen)} cells, fit only) | **{len(chosen) / naive.wall:.3f}** |",
        f"| naive torch loop: steps per cell, median estimate | {torch_steps.mean():.0f}, "
        f"{np.median(torch_estimates):.3g} (engine: {result.trained_steps[chosen].mean():.0f}, "
        f"{np.median(result.estimate[chosen]):.3g}) |",
        f"| engine fit vs torch loop, cells/s (fit only) "
        f"| **{(cells / fitting.wall) / (len(chosen) / naive.wall):.1f}×** |",
        *[f"| warm start from the {name}: fit | {wall:.1f} s wall, {steps:.0f} steps per cell, "
          f"{met}/{cells} estimates within tol |" for name, (wall, steps, met) in warm.items()],
        "",
        *cuda_lines(arch, stacked, goal, schedule, args.rounds),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
