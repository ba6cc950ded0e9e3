"""Per-cell error metrics of a decoded VDF against the original (``shared/DESIGN.md``).

Relative L2 alone hides what a lossy VDF does to its tails: at rel L2 1e-2 a codec can keep the
moments and still wipe out most of the voxels above the sparsity threshold, and Vlasiator then
deletes the blocks that lost their content at its next step. So besides rel L2 these functions
measure, against the population's sparsity ``threshold``:

- the log10 error ``|log10 g − log10 f|`` over voxels with ``f ≥ threshold`` (``g`` floored at
  ``1e-3·threshold`` so a zeroed voxel counts as 3 decades below the threshold, not infinity);
- the fraction of those voxels whose decoded value fell below the threshold;
- the fraction of content blocks (max ≥ threshold) that lose their content, and of the other
  stored blocks that gain some.

Every function takes ``(n, wid³)`` block values (or any arrays of matching shape for the voxel
metrics), so metrics over many cells are the same calls on their concatenated rows.
"""

from __future__ import annotations

import numpy as np

#: Decoded values are floored at this multiple of the threshold before taking the log.
LOG_FLOOR = 1e-3

__all__ = [
    "LOG_FLOOR",
    "Log10Reference",
    "percentile_95",
    "relative_l2",
    "log10_errors",
    "log10_error_percentiles",
    "cell_log10_p95",
    "content_lost_fraction",
    "content_blocks_changed",
    "content_fractions",
    "tail_counts",
    "tail_metrics",
]


def relative_l2(decoded: np.ndarray, original: np.ndarray) -> float:
    """‖decoded − original‖₂ / ‖original‖₂ over all given voxels (float64): the error of a cell."""
    original = np.asarray(original, dtype=np.float64)
    norm = np.linalg.norm(original)
    difference = np.linalg.norm(np.asarray(decoded, dtype=np.float64) - original)
    return float(difference / norm) if norm > 0 else float(difference > 0)


def _fraction(count: int, total: int) -> float:
    """``count / total``, 0 when there is nothing to count."""
    return float(count) / total if total else 0.0


class Log10Reference:
    """An original's voxels with ``f ≥ threshold`` and their log10, prepared once for measuring
    many decodings of it (the encoders' rate control measures dozens per cell)."""

    def __init__(self, original: np.ndarray, threshold: float):
        f = np.asarray(original, dtype=np.float64).reshape(-1)
        self.content = np.flatnonzero(f >= threshold)
        self.log10 = np.log10(f[self.content])
        self.floor = LOG_FLOOR * threshold

    def errors(self, decoded: np.ndarray) -> np.ndarray:
        """:func:`log10_errors` of ``decoded`` (the original's shape) against the original."""
        g = np.maximum(np.asarray(decoded, dtype=np.float64).reshape(-1)[self.content], self.floor)
        return np.abs(np.log10(g) - self.log10)

    def p95(self, decoded: np.ndarray) -> float:
        """The 95th percentile of :meth:`errors` (0 without content)."""
        return percentile_95(self.errors(decoded))


def percentile_95(values: np.ndarray) -> float:
    """``np.percentile(values, 95)`` bit for bit (numpy's linear method), 0 for no values, by one
    partition: numpy's own call costs 3× more, and rate control asks for it at every probe."""
    count = values.size
    if not count:
        return 0.0
    index = (count - 1) * (95 / 100)
    low = int(np.floor(index))
    high = min(low + 1, count - 1)
    ordered = np.partition(values, (low, high))
    a, b, t = float(ordered[low]), float(ordered[high]), index - low
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def log10_errors(decoded: np.ndarray, original: np.ndarray, threshold: float) -> np.ndarray:
    """``|log10 g − log10 f|`` of every voxel with ``f ≥ threshold`` (g floored at LOG_FLOOR·threshold)."""
    return Log10Reference(original, threshold).errors(decoded)


def cell_log10_p95(decoded: np.ndarray, original: np.ndarray, offsets: np.ndarray, threshold: float) -> np.ndarray:
    """Per cell (rows ``offsets[i]:offsets[i+1]``): the 95th percentile of its log10 errors, the
    quantity the restart profile bounds (0 for a cell without content)."""
    result = np.zeros(len(offsets) - 1)
    for i, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        result[i] = Log10Reference(original[lo:hi], threshold).p95(decoded[lo:hi])
    return result


def log10_error_percentiles(errors: np.ndarray) -> dict[str, float]:
    """``{"p50", "p95"}`` of log10 errors (0 when no voxel has content)."""
    if errors.size == 0:
        return {"p50": 0.0, "p95": 0.0}
    p50, p95 = np.percentile(errors, [50, 95])
    return {"p50": float(p50), "p95": float(p95)}


def tail_counts(decoded: np.ndarray, original: np.ndarray, threshold: float) -> dict[str, int]:
    """The counts behind the content metrics, so they can be summed over batches of cells:
    voxels with f ≥ threshold and those of them that fell below it; content blocks (max ≥
    threshold) and those that lost their content; the other blocks and those that gained some."""
    f, g = np.asarray(original), np.asarray(decoded)
    content = f >= threshold
    before, after = f.max(axis=1) >= threshold, g.max(axis=1) >= threshold
    return {
        "content_voxels": int(content.sum()),
        "content_lost": int((content & (g < threshold)).sum()),
        "content_blocks": int(before.sum()),
        "blocks_lost": int((before & ~after).sum()),
        "other_blocks": int((~before).sum()),
        "blocks_gained": int((~before & after).sum()),
    }


def content_fractions(counts: dict[str, int]) -> dict[str, float]:
    """``content_lost_fraction``, ``content_blocks_lost_fraction`` and
    ``content_blocks_gained_fraction`` from (summed) :func:`tail_counts`."""
    return {
        "content_lost_fraction": _fraction(counts["content_lost"], counts["content_voxels"]),
        "content_blocks_lost_fraction": _fraction(counts["blocks_lost"], counts["content_blocks"]),
        "content_blocks_gained_fraction": _fraction(counts["blocks_gained"], counts["other_blocks"]),
    }


def content_lost_fraction(decoded: np.ndarray, original: np.ndarray, threshold: float) -> float:
    """Fraction of the voxels with ``f ≥ threshold`` whose decoded value is below it."""
    return content_fractions(tail_counts(decoded, original, threshold))["content_lost_fraction"]


def content_blocks_changed(decoded: np.ndarray, original: np.ndarray, threshold: float) -> tuple[float, float]:
    """``(lost, gained)``: the fraction of content blocks (max ≥ threshold) whose decoded max falls
    below the threshold, and the fraction of the other blocks whose decoded max reaches it."""
    fractions = content_fractions(tail_counts(decoded, original, threshold))
    return fractions["content_blocks_lost_fraction"], fractions["content_blocks_gained_fraction"]


def tail_metrics(decoded: np.ndarray, original: np.ndarray, threshold: float) -> dict:
    """Every metric of this module for ``(n, wid³)`` block values, keyed as in ``vdfzip verify --json``."""
    return {
        "rel_l2": relative_l2(decoded, original),
        "log10_err": log10_error_percentiles(log10_errors(decoded, original, threshold)),
    } | content_fractions(tail_counts(decoded, original, threshold))
