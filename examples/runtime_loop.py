"""A toy simulation that compresses its VDFs while it runs, with vdfzip's runtime API.

The "simulation" holds the proton VDFs of a restart in memory (a synthetic one, or ``--restart
FILE``) and evolves them: every step the bulk flow of every cell drifts a little and gyrates
about the magnetic field (each value is multiplied by exp(k·v) with k turning about B: for a
Maxwellian that shifts its mean by k·σ², so the VDF moves as a whole while its block set stays). Every ``--every`` steps it hands
its cells to a :class:`vdfzip.Compressor` and keeps computing while they are encoded on the
compressor's thread; at the end it waits for the handles, sends every result through bytes (as
over MPI), decodes it and checks the invariants: rel L2 within the tolerance and density, bulk
velocity and pressure tensor as submitted.

    python examples/runtime_loop.py --cells 12 --steps 40 --every 10

prints one row per call, for a warm-started compressor (each cell's fit starts from its last
network) and a cold one. ``bench/runtime.py`` runs it larger and commits the numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import vdfzip
from vdfzip.mesh import voxel_velocities
from vdfzip.physics import moments
from vdfzip.synth import write_synthetic_restart
from vdfzip.vlasiator import VlasiatorFile

#: Per step: the largest change of a value (exp(±DRIFT) at the fastest stored voxel) and the
#: gyration angle of the drift direction (radians).
DRIFT, GYRATION = 0.01, 0.15


@dataclass
class Call:
    """One compression call: when it was submitted, how long ``submit`` took, its result."""

    step: int
    submit_seconds: float
    snapshot: tuple  # the arrays as submitted (a copy, for the checks)
    result: vdfzip.CompressedCells | None = None


class ToySimulation:
    """Proton VDFs of a synthetic restart, evolved in place step after step."""

    def __init__(self, restart: Path):
        population = VlasiatorFile(restart).population("proton")
        batch = population.cells(0, population.cell_count)
        self.mesh = population.mesh
        self.cell_ids, self.blocks_per_cell = batch.cell_ids.copy(), np.diff(batch.offsets).astype(np.uint32)
        self.block_ids, self.values = batch.block_ids.copy(), np.array(batch.values, dtype=np.float32)
        self.velocities = voxel_velocities(self.block_ids, self.mesh).reshape(len(self.block_ids), -1, 3)
        self.speed = float(np.linalg.norm(self.velocities, axis=-1).max())
        self.offsets = batch.offsets
        self.step_count = 0

    def step(self) -> None:
        """Drift every VDF a little along a direction that turns about B (here z)."""
        angle = GYRATION * self.step_count
        k = DRIFT / self.speed * np.array([np.cos(angle), np.sin(angle), 0.0])
        self.values *= np.exp(self.velocities @ k).astype(np.float32)
        self.step_count += 1

    def arrays(self) -> tuple:
        return self.cell_ids, self.blocks_per_cell, self.block_ids, self.values


def run(restart: Path, steps: int, every: int, warm_start: bool, **options) -> list[Call]:
    """Evolve the cells for ``steps`` steps, compressing them every ``every`` steps."""
    simulation = ToySimulation(restart)
    calls, handles = [], []
    with vdfzip.Compressor(restart, warm_start=warm_start, **options) as compressor:
        for step in range(steps):
            if step % every == 0:
                started = time.perf_counter()
                handles.append(compressor.submit(*simulation.arrays()))  # copies: the loop may go on
                calls.append(Call(step, time.perf_counter() - started, tuple(a.copy() for a in simulation.arrays())))
            simulation.step()
        for call, handle in zip(calls, handles):
            call.result = vdfzip.CompressedCells.from_bytes(handle.result().to_bytes())  # as if sent over MPI
    for call in calls:
        check(call, simulation.mesh, options.get("tol", 1e-2))
    return calls


def check(call: Call, mesh, tol: float) -> None:
    """The decoded cells: rel L2 within ``tol``, moments as submitted (1e-6)."""
    ids, counts, blocks, values = call.snapshot
    decoded = call.result.decode()
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    by_id = np.concatenate([offsets[i] + np.argsort(blocks[offsets[i] : offsets[i + 1]]) for i in range(len(ids))])
    back = np.concatenate([decoded.offsets[i] + np.argsort(decoded.block_ids[decoded.offsets[i] : decoded.offsets[i + 1]])
                           for i in range(len(ids))])
    f, g = values[by_id].astype(np.float64), decoded.values[back].astype(np.float64)
    for i in range(len(ids)):
        rows = slice(offsets[i], offsets[i + 1])
        error = np.linalg.norm(g[rows] - f[rows]) / np.linalg.norm(f[rows])
        assert error <= tol * (1 + 1e-9), f"cell {ids[i]}: rel L2 {error:.3g} > {tol:g}"
    want = moments(blocks[by_id], f, offsets, mesh, 1.0)
    got = moments(decoded.block_ids[back], g, offsets, mesh, 1.0)
    assert np.allclose(got.density, want.density, rtol=1e-6, atol=0), "density not kept"
    scale = np.abs(want.pressure).max(axis=(1, 2))[:, None, None]
    assert np.all(np.abs(got.pressure - want.pressure) <= 1e-6 * scale), "pressure tensor not kept"


def table(calls: list[Call], label: str) -> str:
    rows = [f"| {label} | {c.step} | {1e3 * c.submit_seconds:.1f} | {c.result.seconds:.2f} | {c.result.fit_steps} | "
            f"{len(c.result.to_bytes())} | {c.result.summary()['ratio']:.1f} | "
            f"{', '.join(f'{k} {v}' for k, v in c.result.summary()['methods'].items())} |" for c in calls]
    return "\n".join(rows)


HEADER = ("| start | step | submit ms | encode s | fit steps | bytes | ratio | cells per codec |\n"
          "|---|---|---|---|---|---|---|---|")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=12, help="spatial cells of the synthetic restart")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="compress every N steps")
    parser.add_argument("--method", default="mlp,octree")
    parser.add_argument("--tol", type=float, default=3e-2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--restart", type=Path, help="the restart whose proton VDFs to evolve (default: synthetic)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        restart = args.restart or Path(tmp) / "restart.vlsv"
        if args.restart is None:
            write_synthetic_restart(restart, cells=args.cells, seed=args.seed)
        print(HEADER)
        for warm in (True, False):
            calls = run(restart, args.steps, args.every, warm, method=args.method, tol=args.tol)
            print(table(calls, "warm" if warm else "cold"))
    print("every decoded call: rel L2 within tol, density and pressure tensor as submitted (1e-6)")


if __name__ == "__main__":
    main()
