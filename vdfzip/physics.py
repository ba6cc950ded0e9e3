"""Velocity moments of VDFs: density, bulk velocity, pressure tensor, heat flux.

Layer 3 of vdfzip. Moments of many cells come from one kernel pass over their blocks
(:mod:`vdfzip.kernels.moments`); conventions follow Vlasiator: density in m⁻³, velocity in m/s,
pressure ``P_ab = m ∫ f c_a c_b d³v`` in Pa with ``c = v − V``, heat flux
``q_a = (m/2) ∫ f |c|² c_a d³v`` in W/m².
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels import moments as kernel
from .vlasiator import CellBatch, Population, VelocityMesh


@dataclass(frozen=True)
class Moments:
    """Moments of ``n`` cells; arrays are float64, first axis the cell."""

    density: np.ndarray  # (n,) m^-3
    velocity: np.ndarray  # (n, 3) m/s
    pressure: np.ndarray  # (n, 3, 3) Pa, symmetric
    heat_flux: np.ndarray  # (n, 3) W/m^2
    mass: float  # kg, particle mass of the population

    @property
    def scalar_pressure(self) -> np.ndarray:
        """Trace of the pressure tensor over 3."""
        return np.trace(self.pressure, axis1=1, axis2=2) / 3

    @property
    def thermal_speed(self) -> np.ndarray:
        """sqrt(p / (n m)) = sqrt(kT/m): the velocity scale errors are measured against."""
        with np.errstate(divide="ignore", invalid="ignore"):
            vth = np.sqrt(self.scalar_pressure / (self.density * self.mass))
        return np.where(self.density > 0, vth, 0.0)

    @property
    def temperature(self) -> np.ndarray:
        """Scalar temperature p / (n k_B) in K."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = self.scalar_pressure / (self.density * BOLTZMANN)
        return np.where(self.density > 0, t, 0.0)


#: Order of the six independent pressure components wherever they are stored: xx, yy, zz, xy, xz, yz.
PRESSURE_COMPONENTS = kernel.PAIRS

BOLTZMANN = 1.3806503e-23  # J/K, Vlasiator's physicalconstants::K_B


def moments(
    block_ids: np.ndarray, values: np.ndarray, offsets: np.ndarray, mesh: VelocityMesh, mass: float
) -> Moments:
    """Moments of the cells whose blocks are ``block_ids[offsets[i]:offsets[i+1]]`` and the
    same rows of ``values`` (``(nblocks, wid³)``, float32 or float64)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    sums = np.zeros((len(offsets) - 1, kernel.COLUMNS))
    kernel.cell_sums_cpu(
        np.ascontiguousarray(block_ids, dtype=np.int64),
        np.ascontiguousarray(values).reshape(len(block_ids), mesh.cells_per_block),
        offsets,
        mesh.nblocks[0],
        mesh.nblocks[1],
        mesh.wid,
        np.asarray(mesh.vmin, dtype=np.float64),
        np.asarray(mesh.dv, dtype=np.float64),
        sums,
    )
    return moments_from_sums(sums, mesh.cell_volume, mass)


def moments_from_sums(sums: np.ndarray, cell_volume: float, mass: float) -> Moments:
    """Scale the kernel's per-cell sums (see :mod:`vdfzip.kernels.moments`) to physical moments."""
    pressure = np.empty((len(sums), 3, 3))
    for column, (a, b) in enumerate(PRESSURE_COMPONENTS):
        pressure[:, a, b] = pressure[:, b, a] = mass * cell_volume * sums[:, kernel.CENTRAL_VV][:, column]
    return Moments(
        density=sums[:, kernel.SUM_F] * cell_volume,
        velocity=sums[:, kernel.MEAN_V].copy(),
        pressure=pressure,
        heat_flux=0.5 * mass * cell_volume * sums[:, kernel.CENTRAL_C2C],
        mass=mass,
    )


def batch_moments(batch: CellBatch, population: Population) -> Moments:
    """Moments of every cell of a batch read from ``population``."""
    return moments(batch.block_ids, batch.values, batch.offsets, population.mesh, population.mass)
