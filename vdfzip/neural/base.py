"""The base of a neural field: a one- or two-component Gaussian mixture fitted to a cell's VDF.

The network only learns the log-ratio to this base, so the base carries the bulk shape (density,
drifts, temperatures, anisotropy) in 10 numbers per component, and it defines the whitened
coordinates u the network sees: a drifting hot beam and a cold core look alike in u.

Stored per component: amplitude, centre (3) and the lower Cholesky factor of the covariance (6),
as float32. Everything the decoder derives from them (precisions, whitening) is computed from
the float32-rounded values by :meth:`Mixture.derived`, on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A second component is kept only if it cuts the base's rel L2 by this factor (it costs 40 bytes).
SECOND_COMPONENT_GAIN = 0.8
EM_ITERATIONS = 20
_TRIL = np.tril_indices(3)


@dataclass(frozen=True)
class Mixture:
    """Gaussian components: ``amplitude`` (K,), ``centre`` (K, 3), ``cholesky`` (K, 3, 3) lower."""

    amplitude: np.ndarray
    centre: np.ndarray
    cholesky: np.ndarray

    @property
    def components(self) -> int:
        return len(self.amplitude)

    def packed(self) -> np.ndarray:
        """float32 (K, 10): amplitude, centre, Cholesky lower triangle."""
        tril = self.cholesky[:, _TRIL[0], _TRIL[1]]
        return np.concatenate([self.amplitude[:, None], self.centre, tril], axis=1).astype(np.float32)

    @classmethod
    def unpacked(cls, packed: np.ndarray) -> Mixture:
        packed = np.asarray(packed, dtype=np.float64).reshape(-1, 10)
        cholesky = np.zeros((len(packed), 3, 3))
        cholesky[:, _TRIL[0], _TRIL[1]] = packed[:, 4:]
        return cls(packed[:, 0].copy(), packed[:, 1:4].copy(), cholesky)

    def rounded(self) -> Mixture:
        """The mixture as the decoder sees it (float32 storage)."""
        return Mixture.unpacked(self.packed())

    def derived(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``precision`` (K, 3, 3) with q = |P(v − centre)|², the whole mixture's f-weighted ``mean``
        (3,) and ``whiten`` (3, 3) mapping v − mean to unit covariance."""
        precision = np.linalg.inv(self.cholesky)
        mass = self.amplitude * np.abs(np.linalg.det(self.cholesky))
        share = mass / mass.sum()
        mean = share @ self.centre
        spread = self.centre - mean
        covariance = np.einsum("k,kij->ij", share, self.cholesky @ self.cholesky.transpose(0, 2, 1))
        covariance += np.einsum("k,ki,kj->ij", share, spread, spread)
        return precision, mean, np.linalg.inv(np.linalg.cholesky(covariance))

    def shapes(self, velocities: np.ndarray) -> np.ndarray:
        """(N, K) unit-amplitude component values exp(−q/2) at the velocities (N, 3)."""
        precision, _, _ = self.derived()
        points = np.asarray(velocities).T
        q = [p @ (points - c[:, None]) for p, c in zip(precision, self.centre)]
        return np.exp(-0.5 * np.stack([(qk * qk).sum(axis=0) for qk in q], axis=1))

    def __call__(self, velocities: np.ndarray) -> np.ndarray:
        return self.shapes(velocities) @ self.amplitude


def fit_mixture(velocities: np.ndarray, values: np.ndarray, weight: np.ndarray | None = None,
                max_components: int = 2) -> Mixture:
    """The mixture of one or two components with the better cost-aware linear rel L2 to f.

    Components come from f-weighted EM (so the fit follows the particles, not the box), the
    amplitudes from a non-negative least-squares fit to f itself (so the base is good in the
    norm that is scored). ``weight`` makes a voxel sample stand for the whole cell (the
    importance weights of :func:`vdfzip.neural.fit.training_sample`). Raises ValueError for a
    cell whose f has no positive mass.
    """
    f = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    weight = np.ones_like(f) if weight is None else np.asarray(weight, dtype=np.float64)
    if not (f * weight).sum() > 0:
        raise ValueError("a VDF without positive values has no Gaussian base")
    root = np.sqrt(weight)
    norm = np.linalg.norm(root * f)
    best, best_error = None, np.inf
    for k in range(1, max_components + 1):
        try:
            mixture = _least_squares_amplitudes(_em(velocities, f * weight, k), velocities, f, root).rounded()
        except np.linalg.LinAlgError:
            continue
        error = np.linalg.norm(root * (mixture(velocities) - f)) / norm
        if best is None or error < SECOND_COMPONENT_GAIN * best_error:
            best, best_error = mixture, error
    if best is None:
        raise ValueError("the VDF's covariance is singular")
    return best


def _em(velocities: np.ndarray, mass: np.ndarray, components: int) -> Mixture:
    """EM for a Gaussian mixture of the point masses ``mass`` at ``velocities``, started by
    splitting along the principal axis."""
    points = np.ascontiguousarray(velocities.T)  # (3, voxels): every sum below runs along a row
    weight = mass / mass.sum()
    mean = points @ weight
    covariance = _weighted_covariance(points, weight, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    axis = eigenvectors[:, -1] * np.sqrt(eigenvalues[-1])
    centres = mean + np.outer(np.linspace(-0.5, 0.5, components) if components > 1 else [0.0], axis)
    covariances = np.repeat(covariance[None], components, axis=0)
    shares = np.full(components, 1.0 / components)
    for _ in range(EM_ITERATIONS if components > 1 else 0):  # arrays (components, voxels)
        log_density = np.stack([_log_gaussian(points, c, s) for c, s in zip(centres, covariances)])
        log_density += np.log(shares)[:, None]
        log_density -= log_density.max(axis=0)
        responsibility = np.exp(log_density)
        responsibility /= responsibility.sum(axis=0)
        owned = weight * responsibility
        shares = owned.sum(axis=1)
        if np.any(shares < 1e-6):
            raise np.linalg.LinAlgError("an EM component vanished")
        centres = (owned @ points.T) / shares[:, None]
        covariances = np.stack([_weighted_covariance(points, owned[k] / shares[k], centres[k])
                                for k in range(components)])
    return Mixture(shares, centres, np.linalg.cholesky(covariances))


def _weighted_covariance(points: np.ndarray, weight: np.ndarray, mean: np.ndarray) -> np.ndarray:
    offset = points - mean[:, None]
    return (offset * weight) @ offset.T


def _log_gaussian(points: np.ndarray, centre: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    cholesky = np.linalg.cholesky(covariance)
    q = np.linalg.inv(cholesky) @ (points - centre[:, None])
    return -0.5 * (q * q).sum(axis=0) - np.log(np.diag(cholesky)).sum()


def _least_squares_amplitudes(mixture: Mixture, velocities: np.ndarray, f: np.ndarray, root: np.ndarray) -> Mixture:
    """The same components with amplitudes minimising ‖root · (Σ aₖ shapeₖ − f)‖₂, aₖ ≥ 0."""
    shapes = mixture.shapes(velocities) * root[:, None]
    f = f * root
    amplitude, *_ = np.linalg.lstsq(shapes, f, rcond=None)
    if np.any(amplitude <= 0):  # keep the single best component
        single = np.array([max(s @ f / (s @ s), 0.0) for s in shapes.T])
        k = int(np.argmax(single * np.sqrt((shapes**2).sum(axis=0))))
        return Mixture(single[k : k + 1], mixture.centre[k : k + 1], mixture.cholesky[k : k + 1])
    return Mixture(amplitude, mixture.centre, mixture.cholesky)
