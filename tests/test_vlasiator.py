"""The Vlasiator view: populations, meshes, cells, thresholds, and inconsistent or foreign VDFs."""

from __future__ import annotations

import numpy as np
import pytest

from badfiles import copy_with_arrays
from conftest import shared_file
from vdfzip import vlasiator, vlsv
from vdfzip.errors import AlreadyCompressedError, InconsistentPopulationError, MissingArrayError


def test_fullf_populations(fullf):
    with vlasiator.open_file(fullf) as f:
        assert list(f.populations) == ["proton", "antiproton"]
        assert not f.is_restart and f.has_vdf
        for name, blocks in (("proton", 1390), ("antiproton", 1395)):
            p = f.population(name)
            assert (p.cell_count, p.block_count, p.dtype) == (1, blocks, np.float32)
            assert (p.threshold, p.threshold_source) == (1e-16, "config")
            assert p.mesh.nblocks == (50, 50, 50) and p.mesh.wid == 4
            assert p.mesh.vmin == (-2e6, -2e6, -2e6) and p.mesh.dv == (2e4, 2e4, 2e4)
        with pytest.raises(MissingArrayError, match="populations: proton, antiproton"):
            f.population("helium")


def test_restart_population_and_cells(restart_small):
    with vlasiator.open_file(restart_small) as f:
        assert f.is_restart
        p = f.population("proton")
        assert (p.cell_count, p.block_count, p.threshold) == (72, 48538, 1e-15)
        np.testing.assert_array_equal(p.cell_ids, f.spatial_cell_ids)
        raw_ids = f.vlsv.read("BLOCKIDS", name="proton")
        raw_values = f.vlsv.read("BLOCKVARIABLE", name="proton")
        start = int(p.blocks_per_cell[:10].sum())
        ids, values = p.cell(10)
        np.testing.assert_array_equal(ids, raw_ids[start : start + p.blocks_per_cell[10]])
        np.testing.assert_array_equal(values, raw_values[start : start + p.blocks_per_cell[10]])


def test_batches_cover_every_cell_once_within_the_block_budget(restart_small):
    with vlasiator.open_file(restart_small) as f:
        p = f.population("proton")
        batches = list(p.batches(max_blocks=3000))
        assert len(batches) > 10
        assert np.concatenate([b.cell_ids for b in batches]).tolist() == p.cell_ids.tolist()
        for batch in batches:
            assert len(batch.block_ids) <= 3000 or len(batch) == 1
            assert batch.offsets[0] == 0 and batch.offsets[-1] == len(batch.block_ids) == len(batch.values)
        assert sum(len(b) for b in p.batches(max_blocks=10**9, max_cells=7)) == 72


def test_bulk_file_with_subset_of_cells_warns_about_default_threshold():
    with pytest.warns(vlasiator.SparsityThresholdWarning, match="1e-15"):
        f = vlasiator.open_file(shared_file("bulk.1d.vlsv"))
    p = f.population("proton")
    assert sorted(p.cell_ids.tolist()) == [5, 10] and len(f.spatial_cell_ids) == 10
    assert p.threshold_source == "default" and p.mesh.nblocks == (10, 10, 10)


@pytest.mark.parametrize("name", ["bulk.amr.vlsv", "init.vlsv", "1d_single.vlsv"])
def test_files_without_vdf_are_valid(name):
    with vlasiator.open_file(shared_file(name)) as f:
        assert not f.has_vdf
        assert all(p.cell_count == 0 for p in f.populations.values())


def test_file_compressed_by_another_tool_is_refused():
    with pytest.raises(AlreadyCompressedError, match="HERMITE"):
        vlasiator.open_file(shared_file("bulk_hermite_compressed.0000001.vlsv"))


def test_inconsistent_blocks_per_cell_is_refused(tmp_path, restart_small):
    with vlsv.read(restart_small) as f:
        bpc = f.read("BLOCKSPERCELL", name="proton").copy()
    bpc[3] += 1
    copy_with_arrays(restart_small, tmp_path / "bad.vlsv", {("BLOCKSPERCELL", "proton"): bpc})
    with pytest.raises(InconsistentPopulationError, match="sums to 48539 blocks"):
        vlasiator.open_file(tmp_path / "bad.vlsv")


def test_block_id_outside_the_mesh_is_refused(tmp_path, fullf):
    with vlsv.read(fullf) as f:
        ids = f.read("BLOCKIDS", name="proton").copy()
    ids[5] = 50**3
    copy_with_arrays(fullf, tmp_path / "bad.vlsv", {("BLOCKIDS", "proton"): ids})
    with vlasiator.open_file(tmp_path / "bad.vlsv") as f:
        with pytest.raises(InconsistentPopulationError, match="outside its 125000-block"):
            f.population("proton").cell(0)


def test_parse_config_keeps_repeated_keys_and_sections():
    config = vlasiator.parse_config("project = X\nParticlePopulations = a\nParticlePopulations = b\n"
                                    "[a_sparse]\nminValue = 1e-17 # comment\n")
    assert config[""]["ParticlePopulations"] == ["a", "b"]
    assert config["a_sparse"]["minValue"] == ["1e-17"]
