"""The synthetic restart generator: analytic moments of every kind, the content-plus-halo block
set, determinism, and the layout of a real Vlasiator restart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import shared_file
from vdfzip import mesh as geometry
from vdfzip import physics, synth, vlsv
from vdfzip.errors import VdfzipError
from vdfzip.vlasiator import PROTON_MASS, VelocityMesh, open_file

THRESHOLD = 1e-15
# Measured over 300 cells of every kind and population (seeds [11, i]): density ≤ 1e-6 relative,
# velocity ≤ 6e-7 thermal speeds, pressure components ≤ 1.3e-5 of the scalar pressure (hot
# magnetosheath helium: its sub-threshold wings beyond the halo are not stored); medians 1e-8.
# The tolerances keep a margin of ~8 over those maxima, yet catch an under-resolved model (a
# Gaussian only dv/2 wide misses 1e-3 of its density) and any normalisation or unit slip.
DENSITY_TOL, VELOCITY_TOL, PRESSURE_TOL = 1e-5, 1e-5, 1e-4
SEEDS = range(3)


def _cell(kind: str, species: synth.Species, seed: int) -> synth.SyntheticCell:
    rng = np.random.default_rng([seed, synth.KINDS.index(kind)])
    scale = rng.uniform(*species.abundance)
    return synth.make_cell(kind, species.mesh, THRESHOLD, rng, species.mass, density_scale=scale)


@pytest.mark.parametrize("species", synth.SPECIES, ids=lambda s: s.name)
@pytest.mark.parametrize("kind", synth.KINDS)
def test_moments_of_the_stored_vdf_match_the_analytic_moments(kind, species):
    for seed in SEEDS:
        cell = _cell(kind, species, seed)
        assert cell.block_ids.dtype == np.uint32 and cell.values.dtype == np.float32
        assert cell.values.shape == (len(cell.block_ids), species.mesh.cells_per_block)
        found = physics.moments(cell.block_ids, cell.values, [0, len(cell.block_ids)], species.mesh, cell.mass)
        scalar = np.trace(cell.pressure) / 3
        thermal_speed = np.sqrt(scalar / (cell.density * cell.mass))
        assert abs(found.density[0] / cell.density - 1) < DENSITY_TOL
        assert np.max(np.abs(found.velocity[0] - cell.velocity)) < VELOCITY_TOL * thermal_speed
        assert np.max(np.abs(found.pressure[0] - cell.pressure)) < PRESSURE_TOL * scalar


def _dense_content(model: synth.Model, mesh: VelocityMesh) -> set[int]:
    """Ids of the blocks with a float32 value ≥ the threshold, from every block of the mesh."""
    ids = np.arange(mesh.block_count, dtype=np.uint32)
    offsets = geometry.in_block_offsets(mesh.wid) * np.asarray(mesh.dv)
    content = []
    for chunk in np.array_split(ids, 16):
        first_voxels = geometry.block_coordinates(chunk, mesh) * mesh.wid + 0.5
        corners = np.asarray(mesh.vmin) + first_voxels * np.asarray(mesh.dv)
        peak = model.sample(corners, offsets).astype(np.float32).max(axis=1)
        content.append(chunk[peak.astype(np.float64) >= THRESHOLD])
    return set(np.concatenate(content).tolist())


def _with_halo(block_ids: set[int], mesh: VelocityMesh) -> set[int]:
    """The blocks and their 26 neighbours inside the mesh."""
    coordinates = geometry.block_coordinates(np.fromiter(block_ids, dtype=np.int64), mesh)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3)))
    near = (coordinates[:, None, :] + shifts).reshape(-1, 3)
    near = near[np.all((near >= 0) & (near < np.asarray(mesh.nblocks)), axis=1)]
    return set(geometry.block_ids_of(near, mesh).tolist())


@pytest.mark.parametrize("kind", synth.KINDS)
def test_stored_blocks_are_the_content_blocks_plus_a_one_block_halo(kind):
    species = synth.SPECIES[0]
    cell = _cell(kind, species, seed=0)
    content = _dense_content(cell.model, species.mesh)
    stored = set(cell.block_ids.tolist())
    assert len(stored) == len(cell.block_ids) > 0
    assert stored == _with_halo(content, species.mesh)
    has_content = cell.values.max(axis=1).astype(np.float64) >= THRESHOLD
    assert set(cell.block_ids[has_content].tolist()) == content
    assert np.any(np.diff(cell.block_ids.astype(np.int64)) < 0), "blocks should be shuffled, not sorted"
    reference = cell.model(geometry.voxel_velocities(cell.block_ids, species.mesh)).astype(np.float32)
    np.testing.assert_allclose(cell.values, reference, rtol=3e-7, atol=1e-35)


def test_make_cell_refuses_unknown_kinds_and_meshes_too_small():
    rng = np.random.default_rng(0)
    with pytest.raises(synth.SynthError, match="unknown cell kind 'plasmoid'"):
        synth.make_cell("plasmoid", synth.SPECIES[0].mesh, THRESHOLD, rng)
    small = VelocityMesh((10, 10, 10), 4, (-6e5, -6e5, -6e5), (3e4, 3e4, 3e4))
    with pytest.raises(synth.SynthError, match="too small"):
        synth.make_cell("magnetosheath", small, THRESHOLD, rng, PROTON_MASS)
    assert issubclass(synth.SynthError, VdfzipError) and issubclass(synth.SynthError, ValueError)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "restart.vlsv"
    summary = synth.write_synthetic_restart(path, cells=12, seed=0)
    return path, summary


def _layout(path, skip: str | None = None) -> list[tuple[str, dict]]:
    """(tag, attributes without arraysize) of every element in write order, leaving out the
    elements of population ``skip``."""
    with vlsv.read(path) as f:
        return [
            (e.tag, {k: v for k, v in e.attrs.items() if k != "arraysize"})
            for e in f.write_order()
            if skip is None or skip not in (e.name, e.mesh)
        ]


def test_layout_matches_the_real_restart(synthetic):
    path, _ = synthetic
    real = _layout(shared_file("restart_ipshock_small.vlsv"))
    assert _layout(path, skip="helium") == real
    # Helium's eight arrays follow proton's, with the same attributes.
    full = _layout(path)
    proton, helium = full[len(real) - 8 : len(real)], full[len(real) :]
    rename = {"proton": "helium"}
    assert helium == [(tag, {k: rename.get(v, v) for k, v in attrs.items()}) for tag, attrs in proton]


def test_file_reads_back_as_a_two_population_restart(synthetic):
    path, summary = synthetic
    with open_file(path) as f:
        assert f.is_restart and list(f.populations) == ["proton", "helium"]
        np.testing.assert_array_equal(f.spatial_cell_ids, np.arange(1, 13))
        assert summary.cells == 12 and set(summary.kinds) == set(synth.KINDS)
        for species in synth.SPECIES:
            p = f.population(species.name)
            assert (p.threshold, p.threshold_source) == (THRESHOLD, "config")
            assert (p.mass, p.mass_source) == (pytest.approx(species.mass, rel=1e-15), "config")
            assert p.mesh == species.mesh and p.dtype == np.float32
            np.testing.assert_array_equal(p.cell_ids, f.spatial_cell_ids)
            assert p.block_count == summary.blocks[species.name]
            assert 100 <= p.blocks_per_cell.min() and p.blocks_per_cell.max() <= 5000


def test_moment_variables_are_the_moments_of_the_stored_vdfs(synthetic):
    path, _ = synthetic
    with open_file(path) as f:
        charges = {"proton": 1, "helium": 2}
        parts = []
        for name, p in f.populations.items():
            batch = p.cells(0, p.cell_count)
            parts.append((physics.batch_moments(batch, p), charges[name]))
        mass_density = sum(m.mass * m.density for m, _ in parts)
        velocity = sum(m.mass * m.density[:, None] * m.velocity for m, _ in parts) / mass_density[:, None]
        charge_density = sum(q * synth.ELEMENTARY_CHARGE * m.density for m, q in parts)
        pressure = sum(
            np.diagonal(m.pressure, axis1=1, axis2=2) + m.mass * m.density[:, None] * (m.velocity - velocity) ** 2
            for m, _ in parts
        )
        expected = np.column_stack([mass_density, velocity, charge_density])
        for suffix in ("", "_dt2", "_r", "_v"):
            np.testing.assert_allclose(f.vlsv.read("VARIABLE", name=f"moments{suffix}"), expected, rtol=1e-12)
            np.testing.assert_allclose(f.vlsv.read("VARIABLE", name=f"pressure{suffix}"), pressure, rtol=1e-12)


def test_same_seed_same_bytes_other_seed_other_vdfs(tmp_path):
    paths = [tmp_path / name for name in ("a.vlsv", "b.vlsv", "c.vlsv")]
    for path, seed in zip(paths, (3, 3, 4)):
        synth.write_synthetic_restart(path, cells=6, seed=seed)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with vlsv.read(paths[0]) as a, vlsv.read(paths[2]) as c:
        for name in ("proton", "helium"):
            ids_a, ids_c = a.read("BLOCKIDS", name=name), c.read("BLOCKIDS", name=name)
            assert len(ids_a) != len(ids_c) or not np.array_equal(ids_a, ids_c)
    assert not list(tmp_path.glob(".*.part")), "no temporary file may be left behind"


def test_bad_arguments_raise_before_writing(tmp_path):
    for cells, seed in ((0, 0), (2.5, 0), (3, -1)):
        with pytest.raises(synth.SynthError):
            synth.write_synthetic_restart(tmp_path / "x.vlsv", cells=cells, seed=seed)
    assert not list(tmp_path.iterdir())
