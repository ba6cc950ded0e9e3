"""The restart profile's content-block set: which of a cell's blocks hold a value ≥ the sparsity
threshold, stored losslessly and enforced on the decoded values.

Vlasiator tests every block against the threshold at its next step after a restart, deleting
blocks that lost their content and adding neighbours around those that gained some; so the set
of content blocks must come out of a lossy round trip exactly as it went in.

Vlasiator stores a block when it has content or touches one that has (26 neighbours), so the
content blocks are almost exactly the *interior* of a cell's stored set: the set is coded as the
positions where it differs from that prediction (measured: 8 B per cell on the 72-cell shock
restart and 3 B on ``fullf``, against 76 and 141 B for a zstd-coded bitmap).
"""

from __future__ import annotations

import numpy as np
import zstandard
from scipy import ndimage

from .blockset import VARINT_BYTES, BlockSetError, bounded_decompress, varint_decode, varint_encode
from .mesh import block_coordinates
from .vlasiator import VelocityMesh

#: Enforced values keep this relative distance from the threshold, so that float32 rounding and
#: a further moment restoration (factors within ~1e-8 of 1) cannot move them back across it.
MARGIN = 1e-5
_ZSTD_LEVEL = 19


def content_blocks(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per block of ``(n, wid³)`` values: does its maximum reach the threshold?"""
    return np.asarray(values).max(axis=1, initial=-np.inf) >= threshold


def interior(block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """Per block: are all 26 of its neighbours among ``block_ids``? (Vlasiator's prediction of
    which blocks have content.)"""
    coords = block_coordinates(block_ids, mesh)
    if not len(coords):
        return np.zeros(0, dtype=bool)
    local = coords - coords.min(axis=0)
    stored = np.zeros(tuple(local.max(axis=0) + 1), dtype=bool)
    stored[tuple(local.T)] = True
    # a block outside the box is not stored: an erosion by the 3×3×3 cube with a False border
    inner = ndimage.binary_erosion(stored, np.ones((3, 3, 3), dtype=bool), border_value=0)
    return inner[tuple(local.T)]


def encode(block_ids: np.ndarray, content: np.ndarray, mesh: VelocityMesh) -> bytes:
    """Bytes of a cell's content-block set: varint gaps between the blocks (in the given order)
    where ``content`` differs from :func:`interior`, zstd-coded when smaller (flag byte 1)."""
    differs = np.flatnonzero(np.asarray(content, dtype=bool) != interior(block_ids, mesh))
    raw = varint_encode(np.diff(differs, prepend=0))
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw)
    return b"\x01" + packed if len(packed) < len(raw) else b"\x00" + raw


def decode(data: bytes, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """The content-block mask coded by :func:`encode` for the same block ids."""
    if not data or data[0] > 1:
        raise BlockSetError("content-block set has no valid flag byte")
    limit = VARINT_BYTES * len(block_ids)  # one varint per block at most
    raw = bounded_decompress(data[1:], limit, BlockSetError, "content-block set") if data[0] else data[1:]
    gaps = varint_decode(raw)
    if len(gaps) and int(gaps.max()) >= len(block_ids):  # why: a gap ≥ 2⁶³ turned negative in int64
        raise BlockSetError("content-block set names blocks the cell does not have")
    differs = np.cumsum(gaps.astype(np.int64))
    if len(differs) and differs[-1] >= len(block_ids):
        raise BlockSetError("content-block set names blocks the cell does not have")
    content = interior(block_ids, mesh)
    content[differs] = ~content[differs]
    return content


def enforce(values: np.ndarray, content: np.ndarray, threshold: float) -> np.ndarray:
    """``values`` changed as little as possible so that exactly the ``content`` blocks reach the
    threshold: other blocks are clipped just below it, and a content block that fell short has its
    largest voxel raised just above it. Changes are of the threshold's size, far below the moments'
    scale (the caller restores the moments once more)."""
    out = np.array(values, dtype=np.float64)
    np.minimum(out, threshold * (1 - MARGIN), out=out, where=~np.asarray(content, dtype=bool)[:, None])
    short = np.flatnonzero(content & (out.max(axis=1, initial=-np.inf) < threshold))
    out[short, out[short].argmax(axis=1)] = threshold * (1 + MARGIN)
    return out
