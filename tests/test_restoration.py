"""Stored restoration multipliers (format 3): the encoder solves them, the decoder only applies
them, and both give the same bits with the moments and the content-block set held."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_file

from vdfzip import conservation, content, physics, reconstruct, vlasiator
from vdfzip.codecs import get_codec
from vdfzip.decode import decode_file
from vdfzip.encode import encode_file
from vdfzip.errors import CorruptFileError
from vdfzip.reconstruct import apply_restoration, cell_rows, restore, select_moments, solve_restoration, subset_offsets
from vdfzip.verify import verify_files

CELLS = np.array([3, 17, 30, 44, 58, 70])


@pytest.fixture(scope="module")
def coarse():
    """Six shock-restart cells, their octree decodes at rel L2 3e-2 (moments and content off),
    their moments, content sets and the mesh."""
    with vlasiator.open_file(shared_file("restart_ipshock_small.vlsv")) as f:
        p = f.population("proton")
        batch = p.cells(0, p.cell_count)
        rows = cell_rows(batch.offsets, CELLS)
        ids, values, offsets = batch.block_ids[rows], np.asarray(batch.values)[rows], subset_offsets(batch.offsets, CELLS)
        codec = get_codec("octree")
        decoded = np.concatenate([codec.decode_cell(codec.encode_cell(ids[a:b], values[a:b], p.mesh, 3e-2), ids[a:b], p.mesh)
                                  for a, b in zip(offsets[:-1], offsets[1:])])
        moments = select_moments(physics.batch_moments(batch, p), CELLS)
        return ids, values, offsets, decoded, moments, content.content_blocks(values, p.threshold), p.mesh, p.threshold


@pytest.mark.parametrize("with_content", [False, True])
def test_applied_multipliers_restore_the_moments_and_match_any_grouping(coarse, with_content):
    ids, values, offsets, decoded, moments, mask, mesh, threshold = coarse
    keep = mask if with_content else None
    restorations, ok, solved = solve_restoration(ids, decoded, offsets, mesh, moments, keep, threshold)
    # the cells that the decode-time solve of formats 1–2 restores (one of the six is too coarse
    # for any reweighting at 3e-2: the encoder takes it down the chain)
    np.testing.assert_array_equal(ok, restore(ids, decoded, offsets, mesh, moments, keep, threshold)[1])
    assert ok.sum() >= 5
    multipliers = [reconstruct.unpack_multipliers(r) for r in restorations]
    assert all(1 <= len(m) <= reconstruct.MAX_ROUNDS for m in multipliers)
    whole = apply_restoration(ids, decoded, offsets, mesh, moments, multipliers, keep, threshold)
    np.testing.assert_array_equal(solved, whole)  # the encoder accepts the bits the decoder writes
    got = physics.moments(ids, whole, offsets, mesh, moments.mass)
    assert np.abs(got.density / moments.density - 1)[ok].max() < 1e-7
    scale = np.abs(moments.pressure).max(axis=(1, 2))
    assert (np.abs(got.pressure - moments.pressure).max(axis=(1, 2)) / scale)[ok].max() < 1e-7
    assert np.abs((got.velocity - moments.velocity) / moments.thermal_speed[:, None])[ok].max() < 1e-7
    if with_content:
        restored_rows = cell_rows(offsets, np.flatnonzero(ok))
        np.testing.assert_array_equal(content.content_blocks(whole, threshold)[restored_rows], mask[restored_rows])
    for i in range(len(CELLS)):  # each cell alone gives the bits it gets among the others
        rows = slice(offsets[i], offsets[i + 1])
        alone = apply_restoration(ids[rows], decoded[rows], np.array([0, offsets[i + 1] - offsets[i]]), mesh,
                                  select_moments(moments, np.array([i])), [multipliers[i]],
                                  None if keep is None else keep[rows], threshold)
        np.testing.assert_array_equal(alone, whole[rows])


def test_stored_multipliers_are_checked(coarse):
    good = reconstruct.pack_multipliers(np.zeros((2, reconstruct.MULTIPLIERS_PER_ROUND)))
    assert len(good) == 2 * 40 and reconstruct.unpack_multipliers(good).shape == (2, 10)
    nan = reconstruct.pack_multipliers(np.full((1, 10), np.nan))
    too_many = reconstruct.pack_multipliers(np.zeros((reconstruct.MAX_ROUNDS + 1, 10)))
    for bad in (b"", good[:-1], nan, too_many):
        with pytest.raises(CorruptFileError):
            reconstruct.unpack_multipliers(bad)


def test_decoding_applies_stored_multipliers_without_solving(tmp_path, monkeypatch):
    source = shared_file("restart_ipshock_small.vlsv")
    compressed = encode_file(source, tmp_path / "c.vdfz.vlsv", tol=3e-2, progress=False)["output"]

    def no_solve(*args, **kwargs):
        raise AssertionError("decoding solved for multipliers")

    monkeypatch.setattr(conservation, "restore_moments", no_solve)
    report = verify_files(source, decode_file(compressed, tmp_path / "d.vlsv", progress=False))
    assert report["rel_l2"]["max"] <= 3e-2 and report["content_blocks_lost_fraction"] == 0
    assert max(report["density_rel_err_max"], report["velocity_err_over_vth_max"],
               report["pressure_tensor_rel_err_max"]) < 1e-7
