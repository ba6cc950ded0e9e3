"""An independent reader agrees: pyvlasiator sees the same velocity cells and values as vdfzip.

pyvlasiator reads only the first population and fails on single-cell files, so the comparison
uses ``bulk.1d.vlsv`` and a small synthetic restart.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import shared_file
from vdfzip import mesh as geometry
from vdfzip import vlasiator

reader = pytest.importorskip("pyvlasiator.vlsv.reader", reason="pyvlasiator is in the dev extra")


def assert_readers_agree(path, population: str, cells: int | None = None):
    """Every (or the first ``cells``) stored cell: same voxel velocities and values in both readers."""
    independent = reader.Vlsv(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vlasiator.SparsityThresholdWarning)
        ours = vlasiator.open_file(path)
    p = ours.population(population)
    for index in range(p.cell_count if cells is None else cells):
        vcell_ids, their_values = independent.read_vcells(int(p.cell_ids[index]), species=population)
        their_velocities = independent.getvcellcoordinates(vcell_ids, species=population)
        block_ids, values = p.cell(index)
        velocities = geometry.voxel_velocities(block_ids, p.mesh).reshape(-1, 3)
        np.testing.assert_array_equal(their_values, values.reshape(-1))
        scale = np.abs(velocities).max()
        np.testing.assert_allclose(their_velocities, velocities, rtol=0, atol=1e-12 * scale)


def test_bulk_1d_cells_agree():
    assert_readers_agree(shared_file("bulk.1d.vlsv"), "proton")


def test_synthetic_restart_cells_agree(tmp_path):
    from vdfzip.synth import write_synthetic_restart

    path = tmp_path / "synthetic.vlsv"
    write_synthetic_restart(path, cells=3, seed=5)
    assert_readers_agree(path, "proton", cells=2)
