"""Velocity-mesh geometry: block ids ↔ block coordinates ↔ voxel indices and velocities, and
a cell's sparse blocks ↔ a dense bounding box with a mask.

Conventions (``shared/VLSV.md``): ``bx = id % nbx``, ``by = (id // nbx) % nby``,
``bz = id // (nbx·nby)``; inside a block the value index is ``c = i + j·WID + k·WID²``
(x fastest); the voxel centre is ``vmin + (b·WID + (i, j, k) + 0.5)·dv``. Voxel indices and
dense boxes here are ordered ``(x, y, z)``: ``box[ix, iy, iz]``.
"""

from __future__ import annotations

import functools
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


@dataclass(frozen=True)
class BoxLayout:
    """Where one cell's voxels sit in its dense bounding box: computed once, scattered into for
    as many value arrays as needed (the octree codec fits several transforms of a cell)."""

    origin: np.ndarray  # (3,) voxel index of the box's corner
    corners: np.ndarray  # (n, 3) voxel index of each block's value 0 inside the box
    wid: int
    shape: tuple[int, int, int]

    @classmethod
    def of(cls, block_ids: np.ndarray, mesh: VelocityMesh) -> BoxLayout:
        if len(block_ids) == 0:
            raise ValueError("a cell without blocks has no bounding box")
        coords = block_coordinates(block_ids, mesh)
        low = coords.min(axis=0)
        shape = tuple(int(n) for n in (coords.max(axis=0) - low + 1) * mesh.wid)
        return cls(low * mesh.wid, (coords - low) * mesh.wid, mesh.wid, shape)

    def flat(self, order: str = "xyz") -> np.ndarray:
        """``(n·wid³,)`` flat indices of the cell's voxels (block by block, value index order) in
        the box held as ``box[ix, iy, iz]`` (``order="xyz"``) or as its transpose ``box[iz, iy, ix]`` ("zyx")."""
        n1, n2, n3 = self.shape
        strides = np.array({"xyz": [n2 * n3, n3, 1], "zyx": [1, n1, n1 * n2]}[order], dtype=np.int64)
        return ((self.corners @ strides)[:, None] + (in_block_offsets(self.wid) @ strides)[None, :]).reshape(-1)

    @functools.cached_property
    def _xyz(self) -> np.ndarray:
        return self.flat()

    def scatter(self, values: np.ndarray) -> np.ndarray:
        """The dense box holding ``values`` (``(n, wid³)``) at the blocks' voxels, zero elsewhere."""
        values = np.asarray(values)
        dense = np.zeros(self.shape, dtype=values.dtype)
        dense.reshape(-1)[self._xyz] = values.reshape(-1)
        return dense


def to_dense(block_ids: np.ndarray, values: np.ndarray, mesh: VelocityMesh) -> DenseBox:
    """Scatter one cell's blocks (``values``: ``(n, wid³)``) into their dense bounding box."""
    layout = BoxLayout.of(block_ids, mesh)
    return DenseBox(layout.origin, layout.scatter(values), layout.scatter(np.ones(np.shape(values), dtype=bool)))


def from_dense(box: DenseBox, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
    """Gather the ``(n, wid³)`` block values of ``block_ids`` (in that order) from a dense box."""
    local = voxel_indices(block_ids, mesh).reshape(-1, 3) - box.origin
    if local.size and (local.min() < 0 or np.any(local.max(axis=0) >= box.values.shape)):
        raise ValueError("blocks outside the dense box")
    return box.values[local[:, 0], local[:, 1], local[:, 2]].reshape(len(block_ids), mesh.cells_per_block)
