"""Velocity-mesh geometry: block ids ↔ block coordinates ↔ voxel indices and velocities, and
a cell's sparse blocks ↔ a dense bounding box with a mask.

Conventions (``shared/VLSV.md``): ``bx = id % nbx``, ``by = (id // nbx) % nby``,
``bz = id // (nbx·nby)``; inside a block the value index is ``c = i + j·WID + k·WID²``
(x fastest); the voxel centre is ``vmin + (b·WID + (i, j, k) + 0.5)·dv``. Voxel indices and
dense boxes here are ordered ``(x, y, z)``: ``box[ix, iy, iz]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vlasiator import VelocityMesh


def block_coordinates(block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """``(n, 3)`` int64 block coordinates ``(bx, by, bz)`` of the given block ids."""
    ids = np.asarray(block_ids, dtype=np.int64)
    nbx, nby, _ = mesh.nblocks
    return np.stack([ids % nbx, (ids // nbx) % nby, ids // (nbx * nby)], axis=-1)


def block_ids_of(coordinates: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """uint32 block ids of ``(n, 3)`` block coordinates (inverse of :func:`block_coordinates`)."""
    c = np.asarray(coordinates, dtype=np.int64)
    if c.size and (c.min() < 0 or np.any(c.max(axis=0) >= mesh.nblocks)):
        raise ValueError("block coordinates outside the velocity mesh")
    nbx, nby, _ = mesh.nblocks
    return (c[:, 0] + nbx * (c[:, 1] + nby * c[:, 2])).astype(np.uint32)


def in_block_offsets(wid: int) -> np.ndarray:
    """``(wid³, 3)`` offsets ``(i, j, k)`` of value index ``c = i + j·wid + k·wid²``."""
    c = np.arange(wid**3)
    return np.stack([c % wid, (c // wid) % wid, c // (wid * wid)], axis=-1)


def voxel_indices(block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """``(n, wid³, 3)`` global voxel indices ``(ix, iy, iz)`` of every value of the blocks."""
    corner = block_coordinates(block_ids, mesh) * mesh.wid
    return corner[:, None, :] + in_block_offsets(mesh.wid)[None, :, :]


def voxel_velocities(block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """``(n, wid³, 3)`` float64 velocities (m/s) of the voxel centres of the blocks."""
    return np.asarray(mesh.vmin) + (voxel_indices(block_ids, mesh) + 0.5) * np.asarray(mesh.dv)


@dataclass(frozen=True)
class DenseBox:
    """A cell's blocks scattered into their bounding box of voxels.

    ``values[ix, iy, iz]`` holds voxel ``origin + (ix, iy, iz)``; ``mask`` is True on voxels of
    the cell's stored blocks, and ``values`` is 0 elsewhere.
    """

    origin: np.ndarray
    values: np.ndarray
    mask: np.ndarray


def to_dense(block_ids: np.ndarray, values: np.ndarray, mesh: VelocityMesh) -> DenseBox:
    """Scatter one cell's blocks (``values``: ``(n, wid³)``) into their dense bounding box."""
    if len(block_ids) == 0:
        raise ValueError("a cell without blocks has no bounding box")
    index = voxel_indices(block_ids, mesh).reshape(-1, 3)
    origin = index.min(axis=0)
    local = index - origin
    shape = tuple(local.max(axis=0) + 1)
    dense = np.zeros(shape, dtype=values.dtype)
    mask = np.zeros(shape, dtype=bool)
    dense[local[:, 0], local[:, 1], local[:, 2]] = np.asarray(values).reshape(-1)
    mask[local[:, 0], local[:, 1], local[:, 2]] = True
    return DenseBox(origin, dense, mask)


def from_dense(box: DenseBox, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """Gather the ``(n, wid³)`` block values of ``block_ids`` (in that order) from a dense box."""
    local = voxel_indices(block_ids, mesh).reshape(-1, 3) - box.origin
    if local.size and (local.min() < 0 or np.any(local.max(axis=0) >= box.values.shape)):
        raise ValueError("blocks outside the dense box")
    return box.values[local[:, 0], local[:, 1], local[:, 2]].reshape(len(block_ids), mesh.cells_per_block)
