"""Exact moments after lossy decoding: the positivity-preserving ten-moment projection.

A decoded VDF g (clipped at 0) is reweighted to ``g·exp(λ·φ(u))`` with
``φ(u) = (1, u, u⊗u)``, ``u = (v − V)/vth``, so that density, bulk velocity and all six
pressure components equal the original's. The ten multipliers solve the convex dual
``min_λ Σ g·exp(λ·φ) − λ·T`` (T: the target sums of f·φ) by damped Newton; the result is the
closest VDF to g in relative entropy with the target moments, stays ≥ 0 and is zero wherever
g is. The targets come from the float64 moments stored at encode time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import projection as kernel
from .physics import PRESSURE_COMPONENTS, Moments
from .vlasiator import VelocityMesh

#: Moment residual (units of n, n·vth, n·vth²) accepted after the restart profile's content
#: enforcement, well inside the round-trip contract of 1e-6.
ENFORCED_RESIDUAL = 1e-8


@dataclass(frozen=True)
class Projection:
    """Values with restored moments, and per cell whether the solve converged."""

    values: np.ndarray  # (nblocks, wid³) float64, ≥ 0
    converged: np.ndarray  # (ncells,) bool
    iterations: int
    residual: np.ndarray  # (ncells,) max |moment error| in units of n (and n·vth, n·vth²)
    multipliers: np.ndarray  # (ncells, 10): the λ applied (0 for cells that did not converge)


def target_sums(target: Moments, mesh: VelocityMesh, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Σ f·φ(u) of the original VDFs, from their moments, in the kernel's basis order.

    Exact for discrete sums: Σf·(v−c) = N·(V−c) and Σf·(v−c)(v−c)ᵀ = P/(m·dv³) + N·(V−c)(V−c)ᵀ.
    """
    count = target.density / mesh.cell_volume
    shift = (target.velocity - centers) / scales[:, None]
    second = target.pressure / (target.mass * mesh.cell_volume * scales[:, None, None] ** 2)
    second = second + count[:, None, None] * shift[:, :, None] * shift[:, None, :]
    sums = np.empty((len(count), kernel.BASIS))
    sums[:, 0] = count
    sums[:, 1:4] = count[:, None] * shift
    for column, (a, b) in enumerate(PRESSURE_COMPONENTS):
        sums[:, 4 + column] = second[:, a, b]
    return sums


class _Problem:
    """The kernel arguments of one batch, fixed during the Newton iterations."""

    def __init__(self, block_ids, values, offsets, mesh: VelocityMesh, centers, scales):
        self.cells = len(offsets) - 1
        self.args = (
            np.ascontiguousarray(block_ids, dtype=np.int64),
            np.ascontiguousarray(values, dtype=np.float64),
            np.ascontiguousarray(offsets, dtype=np.int64),
            mesh.nblocks[0],
            mesh.nblocks[1],
            mesh.wid,
            np.asarray(mesh.vmin, dtype=np.float64),
            np.asarray(mesh.dv, dtype=np.float64),
            np.ascontiguousarray(centers, dtype=np.float64),
            np.ascontiguousarray(scales, dtype=np.float64),
        )

    def sums(self, lams: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Σ g·w·φ, Σ g·w·φφᵀ) at multipliers ``lams`` for the listed ``cells`` (others: 0)."""
        out = np.zeros((self.cells, kernel.MONOMIALS))
        kernel.newton_sums_cpu(cells, *self.args, np.ascontiguousarray(lams), out)
        return out[:, : kernel.BASIS], out[:, kernel.PAIR]

    def apply(self, lams: np.ndarray) -> np.ndarray:
        out = np.empty_like(self.args[1])
        kernel.apply_cpu(*self.args, np.ascontiguousarray(lams), out)
        return out


def _regularised(hessian: np.ndarray) -> np.ndarray:
    """The Hessians plus a tiny ridge, so cells with (almost) no support still give a finite step."""
    ridge = 1e-12 * np.trace(hessian, axis1=1, axis2=2) / kernel.BASIS + 1e-300
    return hessian + ridge[:, None, None] * np.eye(kernel.BASIS)


def _setup(block_ids, values, offsets, mesh: VelocityMesh, target: Moments):
    """The kernel problem of g = max(values, 0) (the kernels clip) and the target sums with their
    normalisation."""
    scales = np.where(target.thermal_speed > 0, target.thermal_speed, max(mesh.dv))
    problem = _Problem(block_ids, values, offsets, mesh, target.velocity, scales)
    goal = target_sums(target, mesh, target.velocity, scales)
    norm = np.where(goal[:, 0] > 0, goal[:, 0], 1.0)
    return problem, goal, norm


@dataclass(frozen=True)
class Unweighted:
    """Per cell, the sums of a Newton step at λ = 0 (the values' own moment sums and their
    Jacobian) and the moment residual they give: a moment check and the first step of a solve."""

    sums: np.ndarray  # (ncells, 10)
    hessian: np.ndarray  # (ncells, 10, 10)
    residual: np.ndarray  # (ncells,) max |moment error| in units of n (and n·vth, n·vth²)

    def of(self, cells) -> Unweighted:
        """The same for a subset of the cells (an index or a mask)."""
        return Unweighted(self.sums[cells], self.hessian[cells], self.residual[cells])


def unweighted(block_ids, values, offsets, mesh: VelocityMesh, target: Moments) -> Unweighted:
    """:class:`Unweighted` of ``values`` against ``target``."""
    problem, goal, norm = _setup(block_ids, values, offsets, mesh, target)
    return _unweighted(problem, goal, norm)


def _unweighted(problem: _Problem, goal: np.ndarray, norm: np.ndarray) -> Unweighted:
    sums, hessian = problem.sums(np.zeros((problem.cells, kernel.BASIS)), np.arange(problem.cells))
    return Unweighted(sums, hessian, np.abs(sums - goal).max(axis=1) / norm)


def moment_residual(block_ids, values, offsets, mesh: VelocityMesh, target: Moments) -> np.ndarray:
    """Per cell, max |moment error| of ``values`` against ``target`` (units of n, n·vth, n·vth²)."""
    return unweighted(block_ids, values, offsets, mesh, target).residual


@dataclass(frozen=True)
class Solution:
    """The multipliers that restore each cell's moments, without applying them."""

    multipliers: np.ndarray  # (ncells, 10): the λ solved (0 for cells that did not converge)
    converged: np.ndarray  # (ncells,) bool
    iterations: int
    residual: np.ndarray  # (ncells,) max |moment error| at the multipliers, in units of n (n·vth, n·vth²)


def restore_moments(
    block_ids: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    mesh: VelocityMesh,
    target: Moments,
    tolerance: float = 1e-10,
    max_iterations: int = 40,
) -> Projection:
    """Reweight decoded ``values`` (negatives clipped to 0) so every cell's density, bulk velocity
    and pressure tensor equal ``target``'s to ``tolerance`` (relative to n, n·vth, n·vth²).

    Cells that do not converge (e.g. g is zero where the target needs mass) keep the clipped
    values and are flagged in ``converged``; the caller decides the fallback.
    """
    problem, goal, norm = _setup(block_ids, values, offsets, mesh, target)
    solution = _solve(problem, goal, norm, tolerance, max_iterations)
    return Projection(problem.apply(solution.multipliers), solution.converged, solution.iterations, solution.residual,
                      solution.multipliers)


def solve_multipliers(block_ids, values, offsets, mesh: VelocityMesh, target: Moments, start: Unweighted | None = None,
                      tolerance: float = 1e-10, max_iterations: int = 40) -> Solution:
    """:func:`restore_moments`'s multipliers without the reweighted values (the encoder applies
    them rounded, as the decoder will); ``start``: the values' :class:`Unweighted` if known."""
    problem, goal, norm = _setup(block_ids, values, offsets, mesh, target)
    return _solve(problem, goal, norm, tolerance, max_iterations, start)


def _solve(problem: _Problem, goal: np.ndarray, norm: np.ndarray, tolerance: float, max_iterations: int,
           start: Unweighted | None = None) -> Solution:
    """Damped Newton on the convex dual from λ = 0, cells in lockstep, each leaving once its
    moment residual is within ``tolerance``."""
    lams = np.zeros((problem.cells, kernel.BASIS))
    start = start or _unweighted(problem, goal, norm)
    sums, hessian, residual = start.sums.copy(), start.hessian.copy(), start.residual
    objective = sums[:, 0] - (lams * goal).sum(axis=1)
    iteration = 0
    while iteration < max_iterations and np.any(active := residual > tolerance):
        iteration += 1
        step = np.zeros_like(lams)
        with np.errstate(all="ignore"):
            solved = np.linalg.solve(_regularised(hessian[active]), (goal - sums)[active][..., None])[..., 0]
        step[active] = np.where(np.isfinite(solved), solved, 0.0)
        fraction = np.ones(problem.cells)
        pending = active.copy()
        accepted = np.zeros(problem.cells, dtype=bool)
        for _ in range(30):  # backtracking: halve the step of cells whose objective did not drop
            trial = lams + fraction[:, None] * step
            with np.errstate(over="ignore", invalid="ignore"):
                trial_sums, trial_hessian = problem.sums(trial, np.flatnonzero(active & pending))
            trial_objective = trial_sums[:, 0] - (trial * goal).sum(axis=1)
            now = pending & np.isfinite(trial_objective) & (trial_objective <= objective + 1e-12 * np.abs(objective))
            lams[now], sums[now], hessian[now], objective[now] = (
                trial[now], trial_sums[now], trial_hessian[now], trial_objective[now]
            )
            accepted |= now
            pending &= ~now
            if not pending.any():
                break
            fraction[pending] /= 2
        residual = np.abs(sums - goal).max(axis=1) / norm
        if not accepted.any():
            break

    converged = residual <= tolerance
    lams[~converged] = 0.0
    return Solution(lams, converged, iteration, residual)


def apply_multipliers(block_ids, values, offsets, mesh: VelocityMesh, target: Moments, multipliers) -> np.ndarray:
    """``max(values, 0)·exp(λ·φ)`` with given per-cell multipliers ``λ`` (``φ`` normalised by
    ``target``'s bulk velocity and thermal speed, as :func:`restore_moments` solves them): the
    restoration without the solve, for multipliers stored at encode time."""
    problem, _, _ = _setup(block_ids, values, offsets, mesh, target)
    return problem.apply(np.asarray(multipliers, dtype=np.float64))
