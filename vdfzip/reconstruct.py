"""From payloads to restored block values: decode, restore the ten moments, enforce the
content-block set (restart profile), cast to the stored dtype.

The encoder runs exactly this on every candidate payload and accepts a cell only if the result
meets the tolerance, so what ``vdfzip decode`` writes is what the encoder checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import conservation, content
from .codecs import Codec
from .physics import Moments
from .vlasiator import CellBatch, VelocityMesh

LOSSLESS = "lossless"


@dataclass(frozen=True)
class Reconstruction:
    values: np.ndarray  # (nblocks, wid³) in the stored dtype
    moments_restored: np.ndarray  # (cells,) bool: the moment restoration converged (lossless cells: True)
    content_kept: np.ndarray  # (cells,) bool: the decoded content-block set is the stored one (True without one)

    @property
    def restored(self) -> np.ndarray:
        """Per cell: does it decode to what was stored (moments and content-block set)?"""
        return self.moments_restored & self.content_kept


def select_moments(moments: Moments, cells: np.ndarray) -> Moments:
    """The moments of a subset of cells."""
    return Moments(
        moments.density[cells], moments.velocity[cells], moments.pressure[cells], moments.heat_flux[cells], moments.mass
    )


def cell_rows(offsets: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Block-row indices of the given cells, in order."""
    return np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in cells]) if len(cells) else np.zeros(0, int)


def reconstruct(
    batch: CellBatch,
    payloads: Sequence[bytes],
    codec_of_cell: np.ndarray,
    codecs: Sequence[Codec],
    moments: Moments,
    mesh: VelocityMesh,
    dtype: np.dtype,
    content_set: np.ndarray | None = None,
    threshold: float = 0.0,
) -> Reconstruction:
    """Values of every cell of ``batch`` (its ``values`` are ignored) from its payload and codec.

    Lossless cells are returned exactly as stored; the others are clipped at 0 and reweighted
    so their density, velocity and pressure tensor equal ``moments``, and given a per-block
    ``content_set`` (restart profile), exactly those blocks reach ``threshold``; every cell's
    result is then checked against that set in the stored dtype. Each cell's values depend on
    its own payload, blocks and moments only, never on the other cells of the batch, so the
    encoder's check on a few cells sees the bytes the decoder writes in any batch.
    """
    values = np.empty((len(batch.block_ids), mesh.cells_per_block), dtype=dtype)
    moments_ok = np.ones(len(batch), dtype=bool)
    for index, codec in enumerate(codecs):
        cells = np.flatnonzero(codec_of_cell == index)
        if not len(cells):
            continue
        rows, offsets = cell_rows(batch.offsets, cells), subset_offsets(batch.offsets, cells)
        decoded = codec.decode_cells([payloads[c] for c in cells], [batch.cell(c)[0] for c in cells], mesh)
        if codec.codec_id != LOSSLESS:
            target = select_moments(moments, cells)
            keep = None if content_set is None else content_set[rows]
            decoded, moments_ok[cells] = restore(batch.block_ids[rows], decoded, offsets, mesh, target, keep, threshold)
        values[rows] = decoded.astype(dtype)
    kept = np.ones(len(batch), dtype=bool)
    if content_set is not None:
        wrong_rows = np.flatnonzero(content.content_blocks(values, threshold) != content_set)
        kept[np.searchsorted(batch.offsets, wrong_rows, side="right") - 1] = False
    return Reconstruction(values, moments_ok, kept)


def subset_offsets(offsets: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Block offsets of the given cells' rows taken in order (:func:`cell_rows`)."""
    return np.concatenate([[0], np.cumsum(np.diff(offsets)[cells])])


#: Restoration–enforcement rounds of the restart profile. Each round shrinks the moment error the
#: enforcement leaves by ~25× (measured on the 72 restart cells from coarse linear decodes: max
#: residual 1.1, 6e-6, 2e-7, 1e-8, 5e-11), so a handful reaches ENFORCED_RESIDUAL.
MAX_ROUNDS = 8


def restore(block_ids, values, offsets, mesh, target: Moments, content_set, threshold) -> tuple[np.ndarray, np.ndarray]:
    """Restored values and per cell whether the moments hold. With a ``content_set`` the
    restoration and the enforcement of the set alternate: the enforcement moves values of the
    threshold's size (which can carry pressure far out in a cold cell's tails), the next
    restoration corrects that with factors ever closer to 1, until the moments hold as they stand.
    A cell leaves the rounds as soon as its own moments hold, so its result does not depend on
    which other cells share the batch."""
    projection = conservation.restore_moments(block_ids, values, offsets, mesh, target)
    if content_set is None:
        return projection.values, projection.converged
    values, converged = projection.values, projection.converged.copy()
    residual = np.full(len(offsets) - 1, np.inf)
    pending = np.arange(len(offsets) - 1)
    for first_round in [True] + [False] * (MAX_ROUNDS - 1):
        rows, sub_offsets = cell_rows(offsets, pending), subset_offsets(offsets, pending)
        sub_target = select_moments(target, pending)
        if not first_round:
            projection = conservation.restore_moments(block_ids[rows], values[rows], sub_offsets, mesh, sub_target)
            values[rows] = projection.values
            converged[pending] &= projection.converged
        values[rows] = content.enforce(values[rows], content_set[rows], threshold)
        residual[pending] = conservation.moment_residual(block_ids[rows], values[rows], sub_offsets, mesh, sub_target)
        pending = pending[residual[pending] > conservation.ENFORCED_RESIDUAL]
        if not len(pending):
            break
    return values, converged & (residual <= conservation.ENFORCED_RESIDUAL)


def cell_rel_l2(decoded: np.ndarray, original: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-cell ‖decoded − original‖₂ / ‖original‖₂ over each cell's rows (float64; 0 for a cell
    without blocks or with an all-zero original that is decoded exactly)."""
    offsets = np.asarray(offsets)
    error, norm = np.zeros(len(offsets) - 1), np.zeros(len(offsets) - 1)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty):
        original = np.asarray(original, dtype=np.float64).reshape(offsets[-1], -1)
        decoded = np.asarray(decoded, dtype=np.float64).reshape(original.shape)
        starts = offsets[nonempty]
        error[nonempty] = np.add.reduceat(((decoded - original) ** 2).sum(axis=1), starts)
        norm[nonempty] = np.add.reduceat((original**2).sum(axis=1), starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, np.sqrt(error / norm), np.where(error > 0, 1.0, 0.0))
