"""Velocity-mesh geometry against a direct transcription of VLSV.md's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from vdfzip import mesh as geometry
from vdfzip.vlasiator import VelocityMesh

MESH = VelocityMesh(nblocks=(7, 5, 3), wid=4, vmin=(-1e6, -2e5, 3e5), dv=(1e4, 2e4, 3e4))


def _reference_velocity(block_id, c, m):
    """VLSV.md, one value at a time: v = vmin + (b·WID + (i, j, k) + 0.5)·dv."""
    nbx, nby, _ = m.nblocks
    b = (block_id % nbx, (block_id // nbx) % nby, block_id // (nbx * nby))
    ijk = (c % m.wid, (c // m.wid) % m.wid, c // (m.wid * m.wid))
    return [m.vmin[a] + (b[a] * m.wid + ijk[a] + 0.5) * m.dv[a] for a in range(3)]


def test_block_ids_round_trip_through_coordinates():
    ids = np.arange(MESH.block_count, dtype=np.uint32)
    coords = geometry.block_coordinates(ids, MESH)
    assert coords.max(axis=0).tolist() == [6, 4, 2]
    np.testing.assert_array_equal(geometry.block_ids_of(coords, MESH), ids)
    with pytest.raises(ValueError):
        geometry.block_ids_of(np.array([[7, 0, 0]]), MESH)


def test_voxel_velocities_match_the_format_definition():
    ids = np.array([0, 1, 7, 34, MESH.block_count - 1], dtype=np.uint32)
    v = geometry.voxel_velocities(ids, MESH)
    assert v.shape == (5, 64, 3)
    for n, block_id in enumerate(ids):
        for c in (0, 1, 5, 17, 63):
            np.testing.assert_allclose(v[n, c], _reference_velocity(int(block_id), c, MESH), rtol=0, atol=1e-6)


def test_dense_box_round_trip_and_mask():
    rng = np.random.default_rng(0)
    ids = rng.choice(MESH.block_count, size=20, replace=False).astype(np.uint32)
    values = rng.random((20, 64)).astype(np.float32) + 0.5
    box = geometry.to_dense(ids, values, MESH)
    assert box.mask.sum() == 20 * 64
    assert np.all(box.values[~box.mask] == 0) and np.all(box.values[box.mask] > 0)
    index = geometry.voxel_indices(ids, MESH).reshape(-1, 3)
    np.testing.assert_array_equal(box.origin, index.min(axis=0))
    assert box.values.shape == tuple(index.max(axis=0) - index.min(axis=0) + 1)
    order = rng.permutation(20)
    np.testing.assert_array_equal(geometry.from_dense(box, ids[order], MESH), values[order])


def test_dense_box_orientation_is_x_y_z():
    ids = np.array([0], dtype=np.uint32)
    values = np.arange(64, dtype=np.float32)[None, :]
    box = geometry.to_dense(ids, values, MESH)
    # value index c = i + 4 j + 16 k lands at box[i, j, k]
    assert box.values[1, 0, 0] == 1 and box.values[0, 1, 0] == 4 and box.values[0, 0, 1] == 16
