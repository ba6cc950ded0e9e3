"""The ten-moment projection restores density, velocity and the full pressure tensor exactly."""

from __future__ import annotations

import numpy as np
import pytest

from vdfzip import conservation, physics, vlasiator
from vdfzip.kernels import projection as kernel
from vdfzip.kernels.launch import launch_per_item


def _perturbed_batch(path, first, last, noise, seed=0):
    with vlasiator.open_file(path) as f:
        p = f.population("proton")
        batch = p.cells(first, last)
        ids, values = np.array(batch.block_ids), np.array(batch.values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    floor = noise * 1e-5 * values.max() * rng.random(values.shape)  # codec noise in the tails
    decoded = values * (1 + noise * rng.standard_normal(values.shape)) + floor
    return p, batch.offsets, ids, values, decoded


def _moment_errors(result: physics.Moments, target: physics.Moments) -> dict:
    vth, p = target.thermal_speed, target.scalar_pressure
    return {
        "density": np.abs(result.density / target.density - 1).max(),
        "velocity": (np.abs(result.velocity - target.velocity).max(axis=1) / vth).max(),
        "pressure": (np.abs(result.pressure - target.pressure).max(axis=(1, 2)) / p).max(),
    }


@pytest.mark.parametrize("noise", [0.02, 0.3])
def test_projection_restores_all_ten_moments_on_real_cells(restart_small, noise):
    p, offsets, ids, original, decoded = _perturbed_batch(restart_small, 0, 72, noise)
    target = physics.moments(ids, original, offsets, p.mesh, p.mass)
    before = _moment_errors(physics.moments(ids, np.maximum(decoded, 0), offsets, p.mesh, p.mass), target)
    assert max(before.values()) > 1e-4  # the perturbation really moved the moments

    result = conservation.restore_moments(ids, decoded, offsets, p.mesh, target)
    assert result.converged.all() and result.iterations < 20
    assert np.all(result.values >= 0) and np.all(result.values[decoded <= 0] == 0)
    after = _moment_errors(physics.moments(ids, result.values, offsets, p.mesh, p.mass), target)
    assert max(after.values()) < 1e-9, after
    stored = _moment_errors(physics.moments(ids, result.values.astype(np.float32), offsets, p.mesh, p.mass), target)
    assert max(stored.values()) < 1e-6, stored


def test_projection_changes_an_already_consistent_vdf_by_nothing(fullf):
    with vlasiator.open_file(fullf) as f:
        p = f.population("proton")
        ids, values = p.cell(0)
    values = np.maximum(values.astype(np.float64), 0)
    offsets = np.array([0, len(ids)])
    target = physics.moments(ids, values, offsets, p.mesh, p.mass)
    result = conservation.restore_moments(ids, values, offsets, p.mesh, target)
    assert result.converged.all() and result.iterations == 0
    np.testing.assert_allclose(result.values, values, rtol=1e-12)


def test_cell_without_support_is_reported_not_converged(restart_small):
    p, offsets, ids, original, decoded = _perturbed_batch(restart_small, 0, 3, 0.05)
    decoded[offsets[1] : offsets[2]] = 0.0
    target = physics.moments(ids, original, offsets, p.mesh, p.mass)
    result = conservation.restore_moments(ids, decoded, offsets, p.mesh, target)
    assert result.converged.tolist() == [True, False, True]
    assert np.all(result.values[offsets[1] : offsets[2]] == 0)


def test_projection_kernels_cuda_twins_match_cpu(restart_small):
    p, offsets, ids, _, decoded = _perturbed_batch(restart_small, 0, 2, 0.1)
    rows = np.r_[0:4, offsets[1] : offsets[1] + 4]
    ids, values = ids[rows].astype(np.int64), np.maximum(decoded[rows], 0)
    offsets = np.array([0, 4, 8], dtype=np.int64)
    rng = np.random.default_rng(1)
    mesh = (p.mesh.nblocks[0], p.mesh.nblocks[1], p.mesh.wid, np.array(p.mesh.vmin), np.array(p.mesh.dv))
    centers, scales = rng.normal(0, 1e5, (2, 3)), np.array([1e5, 2e5])
    lams = rng.normal(0, 0.01, (2, kernel.BASIS))
    args = (ids, values, offsets, *mesh, centers, scales, lams)
    cells = np.array([0, 1])
    for cpu_kernel, cuda_kernel, shape, head in (
        (kernel.newton_sums_cpu, kernel.newton_sums_cuda, (2, kernel.MONOMIALS), (cells,)),
        (kernel.apply_cpu, kernel.apply_cuda, values.shape, ()),
    ):
        cpu, gpu = np.zeros(shape), np.zeros(shape)
        cpu_kernel(*head, *args, cpu)
        launch_per_item(cuda_kernel, 2, *head, *args, gpu, threads=2)
        assert np.abs(cpu).max() > 0
        np.testing.assert_allclose(gpu, cpu, rtol=1e-12, atol=0)


def test_newton_sums_match_a_float64_statement_of_the_gradient_and_hessian(restart_small):
    """Σ g·w·φ and Σ g·w·φφᵀ from the kernel's 35 monomial sums (kernel.PAIR) against numpy."""
    from vdfzip.mesh import voxel_velocities

    p, offsets, ids, _, decoded = _perturbed_batch(restart_small, 0, 2, 0.1)
    values = np.maximum(decoded, 0)
    rng = np.random.default_rng(2)
    centers, scales = rng.normal(0, 1e5, (2, 3)), np.array([3e5, 5e5])
    lams = rng.normal(0, 0.05, (2, kernel.BASIS))
    out = np.zeros((2, kernel.MONOMIALS))
    kernel.newton_sums_cpu(np.arange(2), ids.astype(np.int64), values, offsets.astype(np.int64), p.mesh.nblocks[0],
                           p.mesh.nblocks[1], p.mesh.wid, np.array(p.mesh.vmin), np.array(p.mesh.dv), centers, scales,
                           lams, out)
    for c in range(2):
        rows = slice(offsets[c], offsets[c + 1])
        u = (voxel_velocities(ids[rows], p.mesh).reshape(-1, 3) - centers[c]) / scales[c]
        x, y, z = u.T
        phi = np.stack([np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z], axis=1)
        w = values[rows].reshape(-1) * np.exp(phi @ lams[c])
        np.testing.assert_allclose(out[c, : kernel.BASIS], w @ phi, rtol=1e-11)
        hessian = (phi * w[:, None]).T @ phi
        np.testing.assert_allclose(out[c][kernel.PAIR], hessian, rtol=1e-11, atol=1e-13 * np.abs(hessian).max())
