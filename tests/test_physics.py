"""Moments against the files' own moments, a float64 numpy reference, and analytic VDFs."""

from __future__ import annotations

import numpy as np
import pytest

from vdfzip import mesh as geometry
from vdfzip import physics, vlasiator
from vdfzip.vlasiator import PROTON_MASS, VelocityMesh

K_B = 1.380649e-23


def _max_velocity_error_over_vth(computed: physics.Moments, velocity: np.ndarray) -> float:
    return float((np.abs(computed.velocity - velocity).max(axis=1) / computed.thermal_speed).max())


@pytest.mark.parametrize("name", ["proton", "antiproton"])
def test_fullf_density_and_velocity_match_the_bulk_variables(fullf, name):
    with vlasiator.open_file(fullf) as f:
        p = f.population(name)
        m = physics.batch_moments(p.cells(0, p.cell_count), p)
        rho = f.vlsv.read("VARIABLE", name=f"{name}/vg_rho")
        v = f.vlsv.read("VARIABLE", name=f"{name}/vg_v")
    np.testing.assert_allclose(m.density, rho, rtol=1e-6)
    assert 2e5 < m.thermal_speed[0] < 4e5
    assert _max_velocity_error_over_vth(m, v) < 1e-4


def test_restart_moments_match_moments_v_and_pressure_v(restart_small):
    with vlasiator.open_file(restart_small) as f:
        p = f.population("proton")
        m = physics.batch_moments(p.cells(0, p.cell_count), p)
        moments_v = f.vlsv.read("VARIABLE", name="moments_v")
        pressure_v = f.vlsv.read("VARIABLE", name="pressure_v")
    np.testing.assert_allclose(m.density, moments_v[:, 0] / p.mass, rtol=1e-6)
    assert _max_velocity_error_over_vth(m, moments_v[:, 1:4]) < 1e-6
    np.testing.assert_allclose(np.diagonal(m.pressure, axis1=1, axis2=2), pressure_v, rtol=1e-6)


def _reference_moments(block_ids, values, mesh, mass):
    """One cell, float64 numpy, velocities from the mesh module: an independent implementation."""
    f = values.astype(np.float64).reshape(-1) * mesh.cell_volume
    v = geometry.voxel_velocities(block_ids, mesh).reshape(-1, 3)
    n = f.sum()
    velocity = (f[:, None] * v).sum(axis=0) / n
    c = v - velocity
    pressure = mass * np.einsum("i,ia,ib->ab", f, c, c)
    heat_flux = 0.5 * mass * np.einsum("i,i,ia->a", f, (c * c).sum(axis=1), c)
    return n, velocity, pressure, heat_flux


def test_kernel_matches_a_float64_numpy_reference(restart_small):
    with vlasiator.open_file(restart_small) as f:
        p = f.population("proton")
        batch = p.cells(20, 40)
        m = physics.batch_moments(batch, p)
        for i in range(len(batch)):
            n, velocity, pressure, heat_flux = _reference_moments(*batch.cell(i), p.mesh, p.mass)
            vth = m.thermal_speed[i]
            np.testing.assert_allclose(m.density[i], n, rtol=1e-12)
            np.testing.assert_allclose(m.velocity[i], velocity, rtol=0, atol=1e-10 * vth)
            np.testing.assert_allclose(m.pressure[i], pressure, rtol=0, atol=1e-10 * np.abs(pressure).max())
            q_scale = 0.5 * p.mass * n * vth**3
            np.testing.assert_allclose(m.heat_flux[i], heat_flux, rtol=0, atol=1e-9 * q_scale)


def _two_beam_cell(mesh: VelocityMesh, beams):
    """Every block of ``mesh`` filled with a sum of isotropic drifting Maxwellians."""
    ids = np.arange(mesh.block_count, dtype=np.uint32)
    v = geometry.voxel_velocities(ids, mesh)
    f = np.zeros(v.shape[:2])
    for n, u, temperature in beams:
        sigma2 = K_B * temperature / PROTON_MASS
        f += n * (2 * np.pi * sigma2) ** -1.5 * np.exp(-((v - u) ** 2).sum(axis=-1) / (2 * sigma2))
    return ids, f


def test_two_drifting_maxwellians_give_analytic_moments():
    mesh = VelocityMesh((24, 24, 24), 4, (-1.2e6,) * 3, (2.5e4,) * 3)
    beams = [(1e6, np.array([2e5, -1e5, 0.0]), 2e5), (3e5, np.array([-3e5, 1.5e5, 5e4]), 5e5)]
    ids, f = _two_beam_cell(mesh, beams)
    m = physics.moments(ids, f.astype(np.float32), np.array([0, len(ids)]), mesh, PROTON_MASS)

    n_total = sum(n for n, _, _ in beams)
    velocity = sum(n * u for n, u, _ in beams) / n_total
    pressure = np.zeros((3, 3))
    heat_flux = np.zeros(3)
    for n, u, temperature in beams:
        w, sigma2 = u - velocity, K_B * temperature / PROTON_MASS
        pressure += n * PROTON_MASS * (np.outer(w, w) + sigma2 * np.eye(3))
        heat_flux += 0.5 * PROTON_MASS * n * ((w @ w) * w + 5 * sigma2 * w)
    vth = np.sqrt(np.trace(pressure) / 3 / (n_total * PROTON_MASS))

    np.testing.assert_allclose(m.density[0], n_total, rtol=1e-6)
    np.testing.assert_allclose(m.velocity[0], velocity, rtol=0, atol=1e-6 * vth)
    np.testing.assert_allclose(m.pressure[0], pressure, rtol=0, atol=1e-6 * np.abs(pressure).max())
    np.testing.assert_allclose(m.heat_flux[0], heat_flux, rtol=0, atol=1e-5 * np.abs(heat_flux).max())
    np.testing.assert_allclose(m.thermal_speed[0], vth, rtol=1e-6)


def test_empty_cell_has_zero_moments_and_no_nans():
    mesh = VelocityMesh((4, 4, 4), 4, (-1.0,) * 3, (0.125,) * 3)
    m = physics.moments(np.zeros(0, np.uint32), np.zeros((0, 64), np.float32), np.array([0, 0]), mesh, 1.0)
    assert m.density[0] == 0 and m.thermal_speed[0] == 0 and np.all(np.isfinite(m.pressure))
