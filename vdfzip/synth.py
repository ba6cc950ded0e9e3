"""Synthetic Vlasiator restart files, deterministic for a seed.

Why: the project has one small real restart (72 cells, one population). Codecs, the pipeline
and benchmarks need variety (six kinds of VDF, two populations), known truth (every cell is a
parametric model whose moments are known in closed form or by 1D quadrature, independently of
the voxel sums) and size (GB files, written at tens of MB/s by vectorised numpy).

A cell is a model f(v) in SI units (s³/m⁶) sampled at the voxel centres of its population's
velocity mesh and kept as Vlasiator keeps it: every block with a value ≥ the sparsity threshold,
plus the one-block halo around them (sub-threshold values included), float32, blocks in shuffled
order. The file has the layout of a real restart (``restart_ipshock_small.vlsv``): the same
arrays, attributes and write order, sized to the cells, with two populations (proton, helium).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__, physics, vlsv
from . import mesh as geometry
from .errors import VdfzipError
from .physics import BOLTZMANN
from .vlasiator import PROTON_MASS, VelocityMesh

KINDS = ("solar_wind", "magnetosheath", "foreshock", "kappa", "ring", "structured")
ELEMENTARY_CHARGE = 1.60217653e-19  # C, Vlasiator's physicalconstants::CHARGE (RHOQ/RHOM of the real restart)
SPARSITY_THRESHOLD = 1.0e-15  # s³/m⁶, Vlasiator's default [<pop>_sparse] minValue, written to CONFIG
WID = 4
CELL_SIZE = 1.0e5  # m, as restart_ipshock_small
TAPER_LEVEL = 200.0  # kappa tails end where the untapered tail is this many thresholds: ≥ (c_max/4.5dv)³
_CHUNK_CELLS = 32  # cells generated (and their moments computed) together
_SPILL_CHUNK = 1 << 24  # bytes copied per step from a spill file: a multiple of one block row
_SPILL_IN_MEMORY = 1 << 25  # bytes of a population's values held in memory before spilling to disk
_NO_CONTENT = "no value of the cell reaches the sparsity threshold: it would have no blocks"
_MAX_ACCELERATION_ROTATION = 22.0  # degrees per step, [vlasovsolver] maxSlAccelerationRotation


class SynthError(VdfzipError, ValueError):
    """Bad arguments to the generator, or a velocity mesh too small for the cell drawn."""


@dataclass(frozen=True)
class Species:
    """A population of the synthetic restart.

    ``mass_units`` and ``charge_units`` are in proton masses and elementary charges (as the
    CONFIG states them); ``abundance`` is the range of the factor on every density drawn.
    """

    name: str
    mass_units: int
    charge_units: int
    mesh: VelocityMesh
    abundance: tuple[float, float]

    @property
    def mass(self) -> float:
        return self.mass_units * PROTON_MASS

    @property
    def charge(self) -> float:
        return self.charge_units * ELEMENTARY_CHARGE


def _cube_mesh(nblocks: int, vmax: float) -> VelocityMesh:
    return VelocityMesh((nblocks,) * 3, WID, (-vmax,) * 3, (2 * vmax / (nblocks * WID),) * 3)


SPECIES = (
    # dv = 30 km/s over ±3000 km/s, as restart_ipshock_small.
    Species("proton", 1, 1, _cube_mesh(50, 3.0e6), (1.0, 1.0)),
    # Alphas at the protons' temperatures have half their thermal speed: dv = 15 km/s, 60³ blocks.
    Species("helium", 4, 2, _cube_mesh(60, 1.8e6), (0.03, 0.1)),
)


@dataclass(frozen=True)
class Region:
    """Velocities in the box ``[lo, hi]`` and within ``radius`` of ``center``: a model promises
    that every v with f(v) ≥ its threshold lies in the union of its regions."""

    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray
    radius: float


def _ball(center: np.ndarray, radius: float) -> Region:
    return Region(center - radius, center + radius, center, radius)


class Model:
    """A parametric f(v) in s³/m⁶: ``model(v)`` at velocities of shape (..., 3), ``support`` (regions
    holding every v where f ≥ a threshold) and ``moments`` (density, velocity, pressure tensor)."""

    def sample(self, corners: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """f at ``corners[:, None] + offsets``: one row per block (the blocks' first voxel centres
        plus the in-block offsets); models override it where blocks allow a faster form."""
        return self(corners[:, None, :] + offsets)


def _inverse_3x3(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses and determinants of stacked 3×3 matrices from cross products of their rows.

    Why not numpy.linalg: its LAPACK calls on 3×3 matrices cost ~4 ms each when OpenBLAS threads
    compete with numba's (measured while writing restarts); this is elementwise numpy."""
    r0, r1, r2 = m[..., 0, :], m[..., 1, :], m[..., 2, :]
    cofactors = np.stack([np.cross(r1, r2), np.cross(r2, r0), np.cross(r0, r1)], axis=-1)
    determinant = np.sum(r0 * cofactors[..., 0], axis=-1)
    return cofactors / determinant[..., None, None], determinant


class GaussianMixture(Model):
    """f = Σᵢ nᵢ N(v; μᵢ, Σᵢ): Maxwellians, bi-Maxwellians and their sums, with closed-form moments."""

    def __init__(self, densities, means, covariances):
        self.densities = np.asarray(densities, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64).reshape(-1, 3)
        self.covariances = np.asarray(covariances, dtype=np.float64).reshape(-1, 3, 3)
        self._precisions, determinants = _inverse_3x3(self.covariances)
        self._peaks = self.densities / np.sqrt((2 * np.pi) ** 3 * determinants)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        f = np.zeros(v.shape[:-1])
        for peak, mean, precision in zip(self._peaks, self.means, self._precisions):
            d = v - mean
            f += peak * np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, precision, d))
        return f

    def sample(self, corners: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Per block, −q/2 at corner + offset splits into a block term, a term linear in the offset
        and a constant: three products and one exp per voxel and component instead of a 3×3 form."""
        f = np.zeros((len(corners), len(offsets)))
        for peak, mean, precision in zip(self._peaks, self.means, self._precisions):
            d = corners - mean
            slope = np.einsum("bi,ij->bj", d, precision)
            exponent = -0.5 * np.einsum("bi,bi->b", d, slope)[:, None] - 0.5 * np.einsum(
                "oi,ij,oj->o", offsets, precision, offsets
            )
            for axis in range(3):
                exponent -= slope[:, axis, None] * offsets[:, axis]
            f += peak * np.exp(exponent)
        return f

    def support(self, threshold: float) -> list[Region]:
        """f ≥ threshold needs one of the K components ≥ threshold/K: the union of their
        ellipsoids, each bounded by its box and by a ball no shorter than its longest axis (the
        Gershgorin bound on the largest eigenvalue of Σᵢ)."""
        regions = []
        for peak, mean, covariance in zip(self._peaks, self.means, self.covariances):
            r2 = 2 * np.log(peak * len(self._peaks) / threshold)
            if r2 > 0:
                half = np.sqrt(r2 * np.diag(covariance))
                radius = float(np.sqrt(r2 * np.abs(covariance).sum(axis=1).max()))
                regions.append(Region(mean - half, mean + half, mean, radius))
        return regions

    def moments(self, mass: float) -> tuple[float, np.ndarray, np.ndarray]:
        """n = Σnᵢ, V = Σnᵢμᵢ/n, P = m Σnᵢ(Σᵢ + (μᵢ − V)(μᵢ − V)ᵀ)."""
        density = float(self.densities.sum())
        velocity = np.einsum("i,ij->j", self.densities, self.means) / density
        d = self.means - velocity
        spread = self.covariances + d[:, :, None] * d[:, None, :]
        return density, velocity, mass * np.einsum("i,ijk->jk", self.densities, spread)


_GAUSS_LEGENDRE = np.polynomial.legendre.leggauss(128)


class Kappa(Model):
    """Isotropic kappa distribution tapered to zero at speed ``c_max``:
    f = A (1 + c²/(κθ²))^−(κ+1) (1 − c²/c_max²)³ for c = |v − V| < c_max, 0 beyond.

    Why the taper: an untapered κ = 2 tail holds pressure ∝ 1/c beyond any speed c, so no finite
    mesh holds its moments, and a tail fading below the threshold leaves mass outside the stored
    blocks (measured: 2e-3 of the pressure with a Gaussian cutoff). :func:`kappa_extent` puts
    c_max where the tail is still far above the threshold, so f falls from above the threshold
    to 0 within the halo and every nonzero value is stored. Normalisation and pressure come from
    1D radial quadrature."""

    def __init__(self, density: float, velocity, theta: float, kappa: float, c_max: float):
        self.density, self.velocity = density, np.asarray(velocity, dtype=np.float64)
        self.theta, self.kappa, self.c_max = theta, kappa, c_max
        self._norm = density / (4 * np.pi * theta**3 * self._radial(2))

    def _shape(self, c2):
        taper = np.maximum(1 - c2 / self.c_max**2, 0.0) ** 3
        return np.exp(-(self.kappa + 1) * np.log1p(c2 / (self.kappa * self.theta**2))) * taper

    def _radial(self, k: int) -> float:
        """∫₀^{c_max/θ} xᵏ shape(θx) dx, x = c/θ, by 128-point Gauss–Legendre: the integrand is
        analytic on the interval (poles at x = ±i√κ, the taper a polynomial), and the rule agrees
        with adaptive quadrature to 1e-14 for κ in 2–6."""
        nodes, weights = _GAUSS_LEGENDRE
        half = self.c_max / self.theta / 2
        x = (nodes + 1) * half
        return float(np.sum(weights * half * x**k * self._shape((self.theta * x) ** 2)))

    def __call__(self, v: np.ndarray) -> np.ndarray:
        return self._norm * self._shape(np.sum((v - self.velocity) ** 2, axis=-1))

    def support(self, threshold: float) -> list[Region]:
        return [_ball(self.velocity, self.c_max)]

    def moments(self, mass: float) -> tuple[float, np.ndarray, np.ndarray]:
        pressure = mass * 4 * np.pi / 3 * self._norm * self.theta**5 * self._radial(4)
        return self.density, self.velocity.copy(), pressure * np.eye(3)


def kappa_extent(density: float, theta: float, kappa: float, level: float) -> float:
    """The speed where the untapered kappa distribution of ``density`` falls to ``level``
    (its peak is n (πκθ²)^−3/2 Γ(κ+1)/Γ(κ−1/2))."""
    peak = density * (np.pi * kappa * theta**2) ** -1.5 * math.exp(math.lgamma(kappa + 1) - math.lgamma(kappa - 0.5))
    if peak <= level:
        raise SynthError(f"a kappa distribution of density {density:g} m^-3 never reaches {level:g} s^3/m^6")
    return theta * math.sqrt(kappa * ((peak / level) ** (1 / (kappa + 1)) - 1))


def _radial_gaussian_integral(k: int, center: float, width: float) -> float:
    """∫₀^∞ uᵏ exp(−(u − center)²/(2 width²)) du in closed form: with u = center + width·t, a
    binomial sum of the truncated Gaussian moments Sⱼ = ∫_{−a}^∞ tʲ e^{−t²/2} dt, a = center/width,
    which obey Sⱼ = (−a)^{j−1} e^{−a²/2} + (j − 1) S_{j−2}."""
    a = center / width
    edge = math.exp(-a * a / 2)
    s = [math.sqrt(math.pi / 2) * (1 + math.erf(a / math.sqrt(2))), edge]
    for j in range(2, k + 1):
        s.append((-a) ** (j - 1) * edge + (j - 1) * s[j - 2])
    return width * sum(math.comb(k, j) * center ** (k - j) * width**j * s[j] for j in range(k + 1))


def _perpendicular_basis(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    helper = np.eye(3)[np.argmin(np.abs(b))]
    e1 = np.cross(b, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(b, e1)


class Ring(Model):
    """Gyrotropic ring about the unit vector ``b`` at bulk velocity V (pickup-ion-like):
    f = A exp(−c∥²/(2σ∥²) − (c⊥ − v_r)²/(2σ⊥²)). Moments in closed form."""

    ARCS = 16  # boxes covering the torus, so its hole is not evaluated

    def __init__(self, density: float, velocity, b, radius: float, sigma_par: float, sigma_perp: float):
        self.density, self.velocity = density, np.asarray(velocity, dtype=np.float64)
        self.b = np.asarray(b, dtype=np.float64)
        self.radius, self.sigma_par, self.sigma_perp = radius, sigma_par, sigma_perp
        perp = 2 * np.pi * _radial_gaussian_integral(1, radius, sigma_perp)
        self._norm = density / (math.sqrt(2 * np.pi) * sigma_par * perp)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        c = v - self.velocity
        par = np.einsum("...i,i->...", c, self.b)
        perp = np.sqrt(np.maximum(np.sum(c * c, axis=-1) - par * par, 0.0))
        return self._norm * np.exp(-0.5 * ((par / self.sigma_par) ** 2 + ((perp - self.radius) / self.sigma_perp) ** 2))

    def support(self, threshold: float) -> list[Region]:
        """f ≥ threshold inside the elliptic torus (c∥/σ∥)² + ((c⊥ − v_r)/σ⊥)² ≤ R²; each point of it
        is within R·σ∥ along b and R·σ⊥ + 2·v_r·sin(π/2M) across b of one of M points on the ring."""
        if self._norm <= threshold:
            return []
        r = math.sqrt(2 * math.log(self._norm / threshold))
        along, across = r * self.sigma_par, r * self.sigma_perp + 2 * self.radius * math.sin(np.pi / (2 * self.ARCS))
        half = np.abs(self.b) * along + np.sqrt(1 - self.b**2) * across
        e1, e2 = _perpendicular_basis(self.b)
        regions = []
        for phi in 2 * np.pi * np.arange(self.ARCS) / self.ARCS:
            point = self.velocity + self.radius * (math.cos(phi) * e1 + math.sin(phi) * e2)
            regions.append(Region(point - half, point + half, point, math.hypot(along, across)))
        return regions

    def moments(self, mass: float) -> tuple[float, np.ndarray, np.ndarray]:
        """P = m n (σ∥² b bᵀ + ½⟨c⊥²⟩ (I − b bᵀ)), ⟨c⊥²⟩ = ∫u³g / ∫u g."""
        mean_perp2 = _radial_gaussian_integral(3, self.radius, self.sigma_perp) / _radial_gaussian_integral(
            1, self.radius, self.sigma_perp
        )
        bb = np.outer(self.b, self.b)
        pressure = mass * self.density * (self.sigma_par**2 * bb + 0.5 * mean_perp2 * (np.eye(3) - bb))
        return self.density, self.velocity.copy(), pressure


class Shell(Model):
    """Isotropic shell: f = A exp(−(|v − V| − v_s)²/(2σ²)). Moments in closed form."""

    def __init__(self, density: float, velocity, radius: float, sigma: float):
        self.density, self.velocity = density, np.asarray(velocity, dtype=np.float64)
        self.radius, self.sigma = radius, sigma
        self._norm = density / (4 * np.pi * _radial_gaussian_integral(2, radius, sigma))

    def __call__(self, v: np.ndarray) -> np.ndarray:
        c = np.sqrt(np.sum((v - self.velocity) ** 2, axis=-1))
        return self._norm * np.exp(-0.5 * ((c - self.radius) / self.sigma) ** 2)

    def support(self, threshold: float) -> list[Region]:
        if self._norm <= threshold:
            return []
        return [_ball(self.velocity, self.radius + self.sigma * math.sqrt(2 * math.log(self._norm / threshold)))]

    def moments(self, mass: float) -> tuple[float, np.ndarray, np.ndarray]:
        i2 = _radial_gaussian_integral(2, self.radius, self.sigma)
        i4 = _radial_gaussian_integral(4, self.radius, self.sigma)
        return self.density, self.velocity.copy(), mass * self.density * i4 / (3 * i2) * np.eye(3)


@dataclass(frozen=True)
class SyntheticCell:
    """One synthetic cell of one population.

    ``block_ids`` (uint32) and ``values`` (float32, ``(nblocks, WID³)``) are what a restart stores,
    blocks in shuffled order. ``density`` (m⁻³), ``velocity`` (m/s) and ``pressure`` (Pa, 3×3)
    are the analytic moments of ``model``, the parametric f(v) the cell samples; ``params`` its
    drawn parameters (SI units, JSON-friendly)."""

    kind: str
    block_ids: np.ndarray
    values: np.ndarray
    params: dict
    density: float
    velocity: np.ndarray
    pressure: np.ndarray
    mass: float
    model: Model = field(repr=False)


# ---- parameter draws: each returns (model, params); densities are scaled by the abundance ----


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _flow(rng: np.random.Generator, speeds: tuple[float, float], spread: float) -> np.ndarray:
    """A bulk velocity of speed in ``speeds`` along −x, deflected by ~``spread`` radians."""
    direction = np.array([-1.0, 0.0, 0.0]) + spread * rng.normal(size=3)
    return rng.uniform(*speeds) * direction / np.linalg.norm(direction)


def _thermal_speed(temperature: float, mass: float) -> float:
    """sqrt(kT/m): the standard deviation of a Maxwellian along one axis."""
    return math.sqrt(BOLTZMANN * temperature / mass)


def _gyrotropic(b: np.ndarray, sigma_par: float, sigma_perp: float) -> np.ndarray:
    return sigma_perp**2 * np.eye(3) + (sigma_par**2 - sigma_perp**2) * np.outer(b, b)


def _bi_temperatures(temperature: float, anisotropy: float) -> tuple[float, float]:
    """T∥, T⊥ with (T∥ + 2T⊥)/3 = T and T⊥/T∥ = anisotropy."""
    t_par = 3 * temperature / (1 + 2 * anisotropy)
    return t_par, anisotropy * t_par


def _draw_solar_wind(rng, mass, mesh, scale, threshold):
    """Cold Maxwellian drifting at 400–700 km/s, mostly along −x."""
    n, t = scale * _log_uniform(rng, 1e6, 1e7), _log_uniform(rng, 1e5, 3e5)
    v, b = _flow(rng, (4e5, 7e5), 0.05), _unit(rng)
    model = GaussianMixture([n], [v], [_thermal_speed(t, mass) ** 2 * np.eye(3)])
    return model, {"n": n, "T": t, "V": v.tolist(), "b": b.tolist()}


def _draw_magnetosheath(rng, mass, mesh, scale, threshold):
    """Hot bi-Maxwellian, T⊥/T∥ in 0.5–3 about a random B, slower and deflected flow."""
    n, t = scale * _log_uniform(rng, 5e6, 5e7), _log_uniform(rng, 1e6, 5e6)
    anisotropy = _log_uniform(rng, 0.5, 3.0)
    v, b = _flow(rng, (5e4, 3e5), 0.5), _unit(rng)
    t_par, t_perp = _bi_temperatures(t, anisotropy)
    covariance = _gyrotropic(b, _thermal_speed(t_par, mass), _thermal_speed(t_perp, mass))
    model = GaussianMixture([n], [v], [covariance])
    return model, {"n": n, "T": t, "T_perp_over_T_par": anisotropy, "V": v.tolist(), "b": b.tolist()}


def _draw_foreshock(rng, mass, mesh, scale, threshold):
    """Solar-wind core plus a hot sunward field-aligned beam of 2–5% of the density. The core is
    at least 2e6 m⁻³ so that the beam peaks ~3 decades above the threshold: the sub-threshold
    wings of a more dilute beam lie beyond the halo and are not stored (as in Vlasiator): with
    1e6 m⁻³ cores and 1% beams the stored pressure was up to 6e-4 off the model's (measured)."""
    n, t = scale * _log_uniform(rng, 2e6, 1e7), _log_uniform(rng, 1e5, 3e5)
    v, b = _flow(rng, (4e5, 7e5), 0.05), _unit(rng)
    b *= np.sign(b[0]) or 1.0  # B oriented sunward, along the beam
    fraction, t_beam, anisotropy = rng.uniform(0.02, 0.05), _log_uniform(rng, 3e5, 1.5e6), rng.uniform(1.0, 3.0)
    v_beam = v + rng.uniform(1.0, 2.0) * np.linalg.norm(v) * b
    t_par, t_perp = _bi_temperatures(t_beam, anisotropy)
    beam = _gyrotropic(b, _thermal_speed(t_par, mass), _thermal_speed(t_perp, mass))
    core = _thermal_speed(t, mass) ** 2 * np.eye(3)
    model = GaussianMixture([n * (1 - fraction), n * fraction], [v, v_beam], [core, beam])
    params = {"n": n, "T": t, "V": v.tolist(), "b": b.tolist(), "beam_fraction": fraction, "T_beam": t_beam,
              "beam_T_perp_over_T_par": anisotropy, "V_beam": v_beam.tolist()}
    return model, params


def _draw_kappa(rng, mass, mesh, scale, threshold):
    """Kappa distribution, κ in 2–6, its suprathermal tail tapered to zero where it falls to
    ``TAPER_LEVEL`` times the threshold. T ≥ 1e6 K: a kappa core narrower than ~2 dv (θ) loses
    ~1e-5 of its density to the sampling (the Fourier transform of a kappa decays only exponentially)."""
    n, t, kappa = scale * _log_uniform(rng, 1e6, 1e7), _log_uniform(rng, 1e6, 4e6), rng.uniform(2.0, 6.0)
    v, b = _flow(rng, (2e5, 6e5), 0.2), _unit(rng)
    theta = math.sqrt((2 * kappa - 3) / kappa * BOLTZMANN * t / mass)  # the untapered kappa's temperature is T
    c_max = kappa_extent(n, theta, kappa, TAPER_LEVEL * threshold)
    model = Kappa(n, v, theta, kappa, c_max)
    return model, {"n": n, "T": t, "kappa": kappa, "theta": theta, "c_max": c_max, "V": v.tolist(), "b": b.tolist()}


def _draw_ring(rng, mass, mesh, scale, threshold):
    """A pickup-ion-like ring about B, or an isotropic shell, of radius 4–8 thermal widths σ.
    Widths stay ≥ ~dv (T ≥ 1.5e5 K): a Gaussian σ = dv/2 wide loses ~1e-3 of its density to the
    sampling. Radius ≥ 4σ: f has a cusp on the axis (ring) or at the centre (shell) of height
    exp(−radius²/2σ²) times the peak, which the sampling misses (1e-5 of the density at 1.7σ)."""
    n, t = scale * _log_uniform(rng, 1e6, 5e6), _log_uniform(rng, 1.5e5, 6e5)
    v, b = _flow(rng, (3e5, 5e5), 0.05), _unit(rng)
    sigma = _thermal_speed(t, mass)
    radius = rng.uniform(4.0, 8.0) * sigma
    params = {"n": n, "T": t, "radius": radius, "V": v.tolist(), "b": b.tolist()}
    if rng.random() < 0.5:
        return Shell(n, v, radius, sigma), params | {"shape": "shell"}
    sigma_par = rng.uniform(0.8, 1.5) * sigma
    return Ring(n, v, b, radius, sigma_par, sigma), params | {"shape": "ring", "sigma_par": sigma_par}


def _draw_structured(rng, mass, mesh, scale, threshold):
    """A Maxwellian core with 3–8 beamlets 1–1.6 dv wide (structure on the mesh scale) within
    1–3 thermal speeds of the core centre."""
    n, t = scale * _log_uniform(rng, 2e6, 2e7), _log_uniform(rng, 5e5, 2e6)
    v, b = _flow(rng, (1e5, 5e5), 0.3), _unit(rng)
    vth = _thermal_speed(t, mass)
    count = int(rng.integers(3, 9))
    fractions = rng.uniform(0.005, 0.03, count)
    widths = rng.uniform(1.0, 1.6, count) * min(mesh.dv)
    centres = v + vth * rng.uniform(1.0, 3.0, (count, 1)) * np.array([_unit(rng) for _ in range(count)])
    densities = n * np.concatenate([[1.0], fractions])
    covariances = np.concatenate([[vth**2], widths**2])[:, None, None] * np.eye(3)
    model = GaussianMixture(densities, np.vstack([v, centres]), covariances)
    params = {"n": n, "T": t, "V": v.tolist(), "b": b.tolist(), "beamlet_fractions": fractions.tolist(),
              "beamlet_widths": widths.tolist(), "beamlet_centres": centres.tolist()}
    return model, params


_DRAWS = {
    "solar_wind": _draw_solar_wind,
    "magnetosheath": _draw_magnetosheath,
    "foreshock": _draw_foreshock,
    "kappa": _draw_kappa,
    "ring": _draw_ring,
    "structured": _draw_structured,
}


# ---- discretisation: sample the model on the sparse block set Vlasiator would keep ----


def _dilate(mask: np.ndarray) -> np.ndarray:
    """Grow a 3D block mask by one block in all 26 directions (a separable 3×3×3 cube), clipped
    at the grid's edges."""
    for axis in range(mask.ndim):
        grown = mask.copy()
        lower = [slice(None)] * mask.ndim
        upper = [slice(None)] * mask.ndim
        lower[axis], upper[axis] = slice(None, -1), slice(1, None)
        grown[tuple(lower)] |= mask[tuple(upper)]
        grown[tuple(upper)] |= mask[tuple(lower)]
        mask = grown
    return mask


def _block_range(lo: np.ndarray, hi: np.ndarray, mesh: VelocityMesh) -> tuple[np.ndarray, np.ndarray]:
    """First and last block (per axis, clipped to the mesh) whose span meets ``[lo, hi]``."""
    size = np.asarray(mesh.dv) * mesh.wid
    last = np.asarray(mesh.nblocks) - 1
    first = np.clip(np.floor((lo - np.asarray(mesh.vmin)) / size).astype(np.int64), 0, last)
    return first, np.clip(np.floor((hi - np.asarray(mesh.vmin)) / size).astype(np.int64), 0, last)


def _candidates(regions: list[Region], mesh: VelocityMesh) -> tuple[np.ndarray, np.ndarray]:
    """The blocks that may hold content (some voxel centre in a region) and their halo, as a
    boolean grid ``[bx, by, bz]`` over a sub-box of the mesh starting at block ``origin``."""
    ranges = [_block_range(r.lo, r.hi, mesh) for r in regions]
    origin = np.maximum(np.min([first for first, _ in ranges], axis=0) - 1, 0)
    end = np.minimum(np.max([last for _, last in ranges], axis=0) + 2, mesh.nblocks)
    grid = np.zeros(tuple(end - origin), dtype=bool)
    vmin, dv, wid = np.asarray(mesh.vmin), np.asarray(mesh.dv), mesh.wid
    for region, (first, last) in zip(regions, ranges):
        distance2 = []
        for axis in range(3):
            blocks = np.arange(first[axis], last[axis] + 1)
            low = vmin[axis] + (blocks * wid + 0.5) * dv[axis]  # first and last voxel centre of each block
            high = low + (wid - 1) * dv[axis]
            gap = np.maximum(np.maximum(low - region.center[axis], region.center[axis] - high), 0.0)
            distance2.append(gap**2)
        near = distance2[0][:, None, None] + distance2[1][None, :, None] + distance2[2][None, None, :]
        box = tuple(slice(a - o, b - o + 1) for a, b, o in zip(first, last, origin))
        grid[box] |= near <= region.radius**2
    return origin, _dilate(grid)


def _discretise(model: Model, mesh: VelocityMesh, threshold: float, rng: np.random.Generator):
    """Block ids (shuffled) and float32 values of the blocks with content and their halo."""
    regions = model.support(threshold)
    if not regions:
        raise SynthError(_NO_CONTENT)
    origin, candidates = _candidates(regions, mesh)
    local = np.argwhere(candidates)
    block_ids = geometry.block_ids_of(origin + local, mesh)
    corners = np.asarray(mesh.vmin) + ((origin + local) * mesh.wid + 0.5) * np.asarray(mesh.dv)
    values = model.sample(corners, geometry.in_block_offsets(mesh.wid) * np.asarray(mesh.dv)).astype(np.float32)
    content = np.zeros_like(candidates)
    has_content = values.max(axis=1).astype(np.float64) >= threshold  # float vs double, as Vlasiator
    content[tuple(local[has_content].T)] = True
    if not has_content.any():
        raise SynthError(_NO_CONTENT)
    edge = origin + local[has_content]
    if edge.min() == 0 or np.any(edge.max(axis=0) == np.asarray(mesh.nblocks) - 1):
        raise SynthError("the velocity mesh is too small for this cell: its content reaches the mesh edge")
    stored = _dilate(content)
    if np.any(stored & ~candidates):
        raise AssertionError("a model's support regions missed blocks with content")
    keep = np.flatnonzero(stored[tuple(local.T)])
    order = keep[rng.permutation(len(keep))]
    return block_ids[order], values[order]


def make_cell(
    kind: str,
    mesh: VelocityMesh,
    threshold: float,
    rng: np.random.Generator,
    mass: float = PROTON_MASS,
    *,
    density_scale: float = 1.0,
) -> SyntheticCell:
    """One synthetic cell of ``kind`` (one of :data:`KINDS`), its parameters drawn from ``rng``.

    Temperatures are drawn in kelvin, so ``mass`` sets the thermal speeds; flow speeds are in m/s
    whatever the mass. ``density_scale`` multiplies every density (helium abundance). On the
    :data:`SPECIES` meshes cells hold ~120–4800 blocks across kinds. Raises :class:`SynthError`
    if the distribution does not fit inside ``mesh``: the analytic moments assume the mesh holds
    all of it."""
    try:
        draw = _DRAWS[kind]
    except KeyError:
        raise SynthError(f"unknown cell kind {kind!r}; known kinds: {', '.join(KINDS)}") from None
    model, params = draw(rng, mass, mesh, density_scale, threshold)
    block_ids, values = _discretise(model, mesh, threshold, rng)
    density, velocity, pressure = model.moments(mass)
    return SyntheticCell(kind, block_ids, values, params, density, velocity, pressure, mass, model)


# ---- the restart file ----


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`write_synthetic_restart` wrote."""

    path: Path
    cells: int
    seed: int
    blocks: dict[str, int]  # stored blocks per population
    kinds: dict[str, int]  # cells per kind
    bytes: int

    def __str__(self) -> str:
        blocks = ", ".join(f"{name} {count} blocks" for name, count in self.blocks.items())
        return f"{self.cells} cells (seed {self.seed}), {blocks}, {self.bytes / 1e6:.1f} MB"


@dataclass
class _Population:
    """A population's per-cell results of the generating pass; its values sit in a spill file."""

    species: Species
    spill: object
    block_ids: list[np.ndarray] = field(default_factory=list)
    density: list[np.ndarray] = field(default_factory=list)
    velocity: list[np.ndarray] = field(default_factory=list)
    pressure: list[np.ndarray] = field(default_factory=list)
    max_vx: list[float] = field(default_factory=list)

    def add(self, cells: list[SyntheticCell]) -> None:
        """Spill the cells' values, keep their ids, and their moments from the stored float32
        values (one kernel pass over the whole chunk)."""
        mesh = self.species.mesh
        block_ids = [cell.block_ids for cell in cells]
        values = np.concatenate([cell.values for cell in cells])
        self.spill.write(values.astype("<f4").tobytes())
        self.block_ids += block_ids
        offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in block_ids])])
        found = physics.moments(np.concatenate(block_ids), values, offsets, mesh, self.species.mass)
        self.density.append(found.density)
        self.velocity.append(found.velocity)
        self.pressure.append(found.pressure)
        self.max_vx += [_max_vx(ids, mesh) for ids in block_ids]


def _cell_kinds(cells: int, seed: int) -> list[str]:
    """Every kind equally often (±1), in an order drawn from the seed."""
    return [KINDS[i] for i in np.random.default_rng(seed).permutation(np.arange(cells) % len(KINDS))]


def _max_vx(block_ids: np.ndarray, mesh: VelocityMesh) -> float:
    """Largest |vx| over the outer edges of the blocks (the spatial CFL speed of a 1D run)."""
    bx = geometry.block_coordinates(block_ids, mesh)[:, 0]
    size = mesh.wid * mesh.dv[0]
    return float(max(abs(mesh.vmin[0] + bx.min() * size), abs(mesh.vmin[0] + (bx.max() + 1) * size)))


def _make(species: Species, kind: str, seed: int, index: int, number: int) -> SyntheticCell:
    """Cell ``index`` of population ``number``, from its own random stream: any cell can be
    remade alone, whatever the chunking."""
    rng = np.random.default_rng([seed, index, number])
    scale = rng.uniform(*species.abundance)
    return make_cell(kind, species.mesh, SPARSITY_THRESHOLD, rng, species.mass, density_scale=scale)


def _generate(populations: list[_Population], kinds: list[str], seed: int, progress: bool) -> np.ndarray:
    """Make every cell of every population in chunks of ``_CHUNK_CELLS`` cells; return the unit
    vectors of B (the proton cells' ``b``)."""
    directions = np.empty((len(kinds), 3))
    with tqdm(total=len(kinds), desc="synth", unit="cell", disable=None if progress else True) as bar:
        for start in range(0, len(kinds), _CHUNK_CELLS):
            chunk = range(start, min(start + _CHUNK_CELLS, len(kinds)))
            for number, population in enumerate(populations):
                cells = [_make(population.species, kinds[i], seed, i, number) for i in chunk]
                population.add(cells)
                if number == 0:
                    directions[start : chunk.stop] = [cell.params["b"] for cell in cells]
            bar.update(len(chunk))
    return directions


def _total_moments(populations: list[_Population]) -> tuple[np.ndarray, np.ndarray]:
    """Vlasiator's cell moments [RHOM, VX, VY, VZ, RHOQ] and diagonal pressure [P11, P22, P33]:
    summed over populations, the pressure taken about the mass-weighted bulk velocity."""
    density = [np.concatenate(p.density) for p in populations]
    velocity_of = [np.concatenate(p.velocity) for p in populations]
    mass = [p.species.mass for p in populations]
    mass_density = sum(m * n for m, n in zip(mass, density))
    charge_density = sum(p.species.charge * n for p, n in zip(populations, density))
    velocity = sum(m * n[:, None] * v for m, n, v in zip(mass, density, velocity_of)) / mass_density[:, None]
    pressure = 0.0
    for p, m, n, v in zip(populations, mass, density, velocity_of):
        drift = v - velocity
        pressure = pressure + np.concatenate(p.pressure) + m * n[:, None, None] * drift[:, :, None] * drift[:, None, :]
    moments = np.column_stack([mass_density, velocity, charge_density])
    return moments, np.diagonal(pressure, axis1=1, axis2=2).copy()


def _relative_jump(x: np.ndarray) -> np.ndarray:
    """Largest relative difference of a cell's value to its neighbours along x (AMR indicator)."""
    padded = np.concatenate([x[:1], x, x[-1:]])
    return np.maximum(np.abs(padded[2:] - x), np.abs(padded[:-2] - x)) / x


def _config_text(cells: int, seed: int) -> str:
    """A Vlasiator .cfg for the synthetic run: populations, their meshes and thresholds, the grid."""
    lines = [
        "",
        "*------------Configuration File------------*",
        "",
        f"# Synthetic restart written by vdfzip.synth {__version__} (seed {seed}, {cells} cells): not a Vlasiator run.",
        "# Cells of kinds " + ", ".join(KINDS) + ", drawn at random.",
        "project = MultiPeak",
    ]
    lines += [f"ParticlePopulations = {s.name}" for s in SPECIES]
    lines += ["", "dynamic_timestep = 1", ""]
    for s in SPECIES:
        m = s.mesh
        lines += [f"[{s.name}_properties]", f"mass = {s.mass_units}", "mass_units = PROTON"]
        lines += [f"charge = {s.charge_units}", ""]
        lines += [f"[{s.name}_vspace]"]
        for axis, lo, hi in zip("xyz", m.vmin, m.vmax):
            lines += [f"v{axis}_min = {lo:.6e}", f"v{axis}_max = {hi:.6e}"]
        lines += [f"v{axis}_length = {n}" for axis, n in zip("xyz", m.nblocks)]
        lines += ["", f"[{s.name}_sparse]", f"minValue = {SPARSITY_THRESHOLD:.1e}", ""]
    lines += [
        "[gridbuilder]",
        f"x_length = {cells}",
        "y_length = 1",
        "z_length = 1",
        "x_min = 0.0",
        f"x_max = {cells * CELL_SIZE:.6e}",
        f"y_min = {-CELL_SIZE / 2:.6e}",
        f"y_max = {CELL_SIZE / 2:.6e}",
        f"z_min = {-CELL_SIZE / 2:.6e}",
        f"z_max = {CELL_SIZE / 2:.6e}",
        "t_max = 0",
        "",
        "[boundaries]",
        "periodic_x = no",
        "periodic_y = yes",
        "periodic_z = yes",
        "",
        "[vlasovsolver]",
        f"maxSlAccelerationRotation = {_MAX_ACCELERATION_ROTATION:g}",
        "",
    ]
    return "\n".join(lines)


def _version_text() -> str:
    return (
        "----------- Compilation --------- \n"
        f"vdfzip.synth {__version__}: synthetic restart, not written by Vlasiator\n"
        "CXXFLAGS: -DDP -DSPF (float32 VDF, float64 moments and fields)\n"
    )


def _text(out: vlsv.VlsvWriter, tag: str, name: str, text: str) -> None:
    out.write_array(tag, np.frombuffer(text.encode("ascii"), dtype=np.uint8), name=name)


def _parameter(out: vlsv.VlsvWriter, name: str, value, dtype) -> None:
    out.write_array("PARAMETER", np.array([value], dtype=dtype), name=name)


def _variable(out: vlsv.VlsvWriter, name: str, data: np.ndarray, mesh: str = "SpatialGrid", **units) -> None:
    attrs = {"unit": "", "unitConversion": "", "unitLaTeX": "", "variableLaTeX": ""} | units
    out.write_array("VARIABLE", data, mesh=mesh, name=name, **attrs)


def _write_mesh_coordinates(out: vlsv.VlsvWriter, mesh: str, bbox_dtype, bbox, nodes, **attrs) -> None:
    out.write_array("MESH_BBOX", np.asarray(bbox, dtype=bbox_dtype), mesh=mesh, **attrs)
    for axis, crds in zip("XYZ", nodes):
        out.write_array(f"MESH_NODE_CRDS_{axis}", np.asarray(crds, dtype=np.float64), mesh=mesh, **attrs)


def _write_grids(out: vlsv.VlsvWriter, cells: int, dt: float) -> None:
    """The spatial grid, CellID, the run's parameters and the fsgrid metadata, in Vlasiator's order.
    A 1D grid of ``cells`` cells along x, written by one rank."""
    x = np.arange(cells + 1) * CELL_SIZE
    yz = np.array([-CELL_SIZE / 2, CELL_SIZE / 2])
    bbox = [cells, 1, 1, 1, 1, 1]
    cell_ids = np.arange(1, cells + 1, dtype=np.uint64)
    _write_mesh_coordinates(out, "SpatialGrid", np.uint64, bbox, (x, yz, yz))
    out.write_array("VARIABLE", cell_ids, mesh="SpatialGrid", name="CellID")
    for name, value, dtype in [
        ("time", 0.0, np.float64),
        ("dt", dt, np.float64),
        ("timestep", 0, np.uint32),
        ("fieldSolverSubcycles", 1, np.uint32),
        ("fileIndex", 0, np.uint32),
        ("xmin", x[0], np.float64),
        ("xmax", x[-1], np.float64),
        ("ymin", yz[0], np.float64),
        ("ymax", yz[1], np.float64),
        ("zmin", yz[0], np.float64),
        ("zmax", yz[1], np.float64),
        ("xcells_ini", cells, np.uint32),
        ("ycells_ini", 1, np.uint32),
        ("zcells_ini", 1, np.uint32),
        ("velocity_block_width", WID, np.int32),
        ("version", 3.0, np.float32),
    ]:
        _parameter(out, name, value, dtype)
    periodic = {"xperiodic": "no", "yperiodic": "yes", "zperiodic": "yes"}
    out.write_array("MESH", cell_ids - 1, name="SpatialGrid", type="amr_ucd", max_refinement_level="0", **periodic)
    out.write_array("MESH_DOMAIN_SIZES", np.array([[cells, 0]], dtype=np.uint32), mesh="SpatialGrid")
    _write_mesh_coordinates(out, "fsgrid", np.uint32, bbox, (x, yz, yz))
    out.write_array("MESH_GHOST_DOMAINS", np.zeros(0, dtype=np.int32), mesh="fsgrid")
    out.write_array("MESH_GHOST_LOCALIDS", np.zeros(0, dtype=np.int32), mesh="fsgrid")
    out.write_array("MESH_DOMAIN_SIZES", np.array([[cells, 0]], dtype=np.uint64), mesh="fsgrid")
    _parameter(out, "numWritingRanks", 1, np.int32)
    out.write_array("MESH_DECOMPOSITION", np.array([1, 1, 1], dtype=np.int32), mesh="fsgrid")
    out.write_array("MESH", np.arange(cells, dtype=np.int32), name="fsgrid", type="multi_ucd", **periodic)


def _write_cell_variables(out, populations: list[_Population], b_field: np.ndarray, max_v_dt, max_r_dt) -> None:
    """Moments consistent with the stored VDFs (all four sub-step copies equal), load-balance and
    time-step bookkeeping, B and the ideal-MHD E = −V × B on both grids."""
    moments, pressure = _total_moments(populations)
    cells = len(moments)
    for suffix in ("", "_dt2", "_r", "_v"):
        _variable(out, f"moments{suffix}", moments)
    for suffix in ("", "_dt2", "_r", "_v"):
        _variable(out, f"pressure{suffix}", pressure)
    _variable(out, "LB_weight", sum(np.array([len(ids) for ids in p.block_ids], dtype=np.float64) for p in populations))
    _variable(out, "max_v_dt", max_v_dt)
    _variable(out, "max_r_dt", max_r_dt)
    _variable(out, "max_fields_dt", np.zeros(cells))
    _variable(out, "vg_drift", np.zeros((cells, 3)))
    _variable(out, "vg_amr_alpha1", _relative_jump(moments[:, 0]))
    _variable(out, "vg_amr_alpha2", _relative_jump(pressure.sum(axis=1)))
    _variable(out, "vg_b_vol", b_field, unit="T", unitConversion="1.0", unitLaTeX=r"$\mathrm{T}$",
              variableLaTeX=r"$B_\mathrm{vol,vg}$")
    _variable(out, "vg_rank", np.zeros(cells, dtype=np.int32))
    _variable(out, "vg_boundarytype", np.ones(cells, dtype=np.int32))  # NOT_SYSBOUNDARY
    _variable(out, "vg_boundarylayer", np.zeros(cells, dtype=np.int32))
    _variable(out, "fg_E", -np.cross(moments[:, 1:4], b_field), mesh="fsgrid")
    _variable(out, "fg_PERB", b_field, mesh="fsgrid")


def _write_population(out: vlsv.VlsvWriter, population: _Population, cell_ids: np.ndarray) -> None:
    """The eight VDF arrays of a population in Vlasiator's order; values streamed from the spill."""
    species, name = population.species, population.species.name
    out.write_array("CELLSWITHBLOCKS", cell_ids, mesh="SpatialGrid", name=name)
    counts = np.array([len(ids) for ids in population.block_ids], dtype=np.uint32)
    out.write_array("BLOCKSPERCELL", counts, mesh="SpatialGrid", name=name)
    m = species.mesh
    nodes = [lo + np.arange(n * m.wid + 1) * d for lo, n, d in zip(m.vmin, m.nblocks, m.dv)]
    bbox = [*m.nblocks, m.wid, m.wid, m.wid]
    _write_mesh_coordinates(out, name, np.uint64, bbox, nodes, type="amr_ucd", max_velocity_ref_level="0")
    out.write_array("BLOCKIDS", np.concatenate(population.block_ids), mesh="SpatialGrid", name=name)
    population.spill.seek(0)
    with out.stream_array("BLOCKVARIABLE", np.float32, m.cells_per_block, mesh="SpatialGrid", name=name) as sink:
        while chunk := population.spill.read(_SPILL_CHUNK):
            sink.write(np.frombuffer(chunk, dtype="<f4").reshape(-1, m.cells_per_block))


def _field(directions: np.ndarray, cells: int, seed: int) -> np.ndarray:
    """vg_b_vol: the proton cells' B directions with magnitudes of 3–30 nT."""
    rng = np.random.default_rng([seed, cells, len(SPECIES)])
    return directions * np.exp(rng.uniform(np.log(3e-9), np.log(3e-8), (cells, 1)))


def write_synthetic_restart(path, cells: int = 100, seed: int = 0, *, progress: bool = False) -> SynthSummary:
    """Write a synthetic Vlasiator restart of ``cells`` spatial cells to ``path``, atomically.

    Deterministic: the same ``cells`` and ``seed`` give a byte-identical file. Cell kinds cycle
    through :data:`KINDS` in a seeded order; every cell has a ``proton`` and a ``helium`` VDF.
    Memory stays bounded for GB files: block values go to a temporary spill file beside ``path``
    during the generating pass (moments must be written before the VDF arrays) and are streamed
    into the restart afterwards; only block ids (1/64 of the values) are held."""
    if not isinstance(cells, (int, np.integer)) or cells < 1:
        raise SynthError(f"cells must be a positive integer, got {cells!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthError(f"seed must be a non-negative integer, got {seed!r}")
    path = Path(path)
    kinds = _cell_kinds(cells, seed)
    with contextlib.ExitStack() as stack:
        spill = [tempfile.SpooledTemporaryFile(_SPILL_IN_MEMORY, dir=path.parent) for _ in SPECIES]
        populations = [_Population(s, stack.enter_context(f)) for s, f in zip(SPECIES, spill)]
        b_field = _field(_generate(populations, kinds, seed, progress), cells, seed)
        gyrofrequency = ELEMENTARY_CHARGE * np.linalg.norm(b_field, axis=1) / PROTON_MASS
        max_v_dt = np.radians(_MAX_ACCELERATION_ROTATION) / gyrofrequency
        max_r_dt = CELL_SIZE / np.max([p.max_vx for p in populations], axis=0)
        cell_ids = np.arange(1, cells + 1, dtype=np.uint64)
        with vlsv.VlsvWriter(path) as out:
            _write_grids(out, cells, dt=0.9 * float(min(max_r_dt.min(), max_v_dt.min())))
            _text(out, "VERSION", "version_information", _version_text())
            _text(out, "CONFIG", "config_file", _config_text(cells, seed))
            _write_cell_variables(out, populations, b_field, max_v_dt, max_r_dt)
            for population in populations:
                _write_population(out, population, cell_ids)
    return SynthSummary(
        path=path,
        cells=cells,
        seed=seed,
        blocks={p.species.name: int(sum(len(ids) for ids in p.block_ids)) for p in populations},
        kinds={kind: kinds.count(kind) for kind in KINDS},
        bytes=path.stat().st_size,
    )
