"""The restart profile: content-block set coded exactly and enforced, tails bounded, moments exact,
on the real shock restart and on synthetic cells of every kind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import by_block_id, shared_file

from vdfzip import blockset, content, layout, physics, synth, vlasiator, vlsv
from vdfzip.cli import main
from vdfzip.codecs import Target, get_codec, octree, register_codec
from vdfzip.decode import decode_file
from vdfzip.encode import encode_file
from vdfzip.metrics import cell_log10_p95
from vdfzip.profiles import DEFAULT_TAIL_TOL, ProfileError, resolve_profile
from vdfzip.reconstruct import restore, select_moments
from vdfzip.verify import verify_files

THRESHOLD = 1e-15


@pytest.fixture(scope="module")
def restart_population():
    with vlasiator.open_file(shared_file("restart_ipshock_small.vlsv")) as f:
        p = f.population("proton")
        batch = p.cells(0, p.cell_count)
        return batch, p.mesh, physics.batch_moments(batch, p)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Six cells: one of every synthetic kind (and a helium population)."""
    path = tmp_path_factory.mktemp("synth") / "restart.vlsv"
    write = synth.write_synthetic_restart(path, cells=len(synth.KINDS), seed=5)
    assert sorted(synth._cell_kinds(len(synth.KINDS), 5)) == sorted(synth.KINDS), write
    return path


def test_content_set_codes_exactly_and_cheaply(restart_population):
    batch, mesh, _ = restart_population
    rng = np.random.default_rng(0)
    total_coded = total_bitmap = 0
    for c in (0, 30, 71):
        ids, values = batch.cell(c)
        mask = content.content_blocks(values, THRESHOLD)
        coded = content.encode(ids, mask, mesh)
        np.testing.assert_array_equal(content.decode(coded, ids, mesh), mask)
        scrambled = rng.random(len(ids)) < 0.5  # any mask, however far from the prediction
        np.testing.assert_array_equal(content.decode(content.encode(ids, scrambled, mesh), ids, mesh), scrambled)
        total_coded += len(coded)
        total_bitmap += len(np.packbits(mask))
    assert total_coded < total_bitmap / 4  # the interior prediction is nearly exact on real cells


def test_interior_prediction_of_a_cube():
    mesh = vlasiator.VelocityMesh((10, 10, 10), 4, (0, 0, 0), (1, 1, 1))
    from vdfzip.mesh import block_ids_of

    coords = np.array(list(np.ndindex(3, 3, 3))) + 2
    inside = content.interior(block_ids_of(coords, mesh), mesh)
    assert inside.sum() == 1 and inside[np.flatnonzero((coords == 3).all(axis=1))[0]]


def test_interior_of_real_cells_against_a_neighbour_lookup(restart_population):
    """Every block whose 26 neighbours are all stored, found by a set lookup per block."""
    from vdfzip.mesh import block_coordinates

    batch, mesh, _ = restart_population
    for cell in range(0, len(batch), 9):
        ids = batch.cell(cell)[0]
        coords = block_coordinates(ids, mesh).tolist()
        stored = set(map(tuple, coords))
        expected = [all((x + a - 1, y + b - 1, z + c - 1) in stored for a, b, c in np.ndindex(3, 3, 3))
                    for x, y, z in coords]
        np.testing.assert_array_equal(content.interior(ids, mesh), expected)


@pytest.mark.parametrize("keep_order", [True, False])
def test_block_structure_carries_the_content_section(restart_population, keep_order):
    batch, mesh, _ = restart_population
    ids, values = batch.cell(5)
    section = content.encode(ids, content.content_blocks(values, THRESHOLD), mesh)
    decoded, carried = blockset.decode(blockset.encode(ids, keep_order, section))
    assert carried == section
    np.testing.assert_array_equal(decoded, ids if keep_order else np.sort(ids))
    assert blockset.decode(blockset.encode(ids, keep_order))[1] is None


def test_enforcement_after_restoration_keeps_set_and_moments(restart_population):
    """A coarse linear octree decode loses content blocks; restoring and enforcing gives exactly
    the original set with the moments still exact."""
    batch, mesh, moments = restart_population
    codec = get_codec("octree")
    for c in (10, 40, 60):
        ids, values = batch.cell(c)
        decoded = codec.decode_cell(codec.encode_cell(ids, values, mesh, 3e-2), ids, mesh)
        mask = content.content_blocks(values, THRESHOLD)
        assert not np.array_equal(content.content_blocks(decoded, THRESHOLD), mask)
        target = select_moments(moments, np.array([c]))
        offsets = np.array([0, len(ids)])
        restored, ok = restore(ids, decoded, offsets, mesh, target, mask, THRESHOLD)
        assert ok.all()
        np.testing.assert_array_equal(content.content_blocks(restored.astype(np.float32), THRESHOLD), mask)
        got = physics.moments(ids, restored, offsets, mesh, target.mass)
        assert abs(got.density[0] / target.density[0] - 1) < 1e-7
        scale = np.abs(target.pressure[0]).max()
        assert np.abs(got.pressure[0] - target.pressure[0]).max() / scale < 1e-7
        unenforced = restore(ids, decoded, offsets, mesh, target, None, THRESHOLD)[0]
        assert np.abs(restored - unenforced).max() < 1e-3 * values.max()  # threshold-sized changes only


def _profile_report(source, tmp_path, **options):
    compressed = tmp_path / "c.vdfz.vlsv"
    summary = encode_file(source, compressed, progress=False, force=True, **options)
    report = verify_files(source, decode_file(compressed, tmp_path / "d.vlsv", progress=False, force=True))
    return summary, report, compressed


def _assert_profile(report: dict, tol: float, tail_tol: float):
    for p in [report, *report["populations"].values()]:
        assert p["content_blocks_lost_fraction"] == 0 and p["content_blocks_gained_fraction"] == 0, p
        assert p["log10_err"]["cell_p95_max"] <= tail_tol
        assert p["rel_l2"]["max"] <= tol
        for key in ("density_rel_err_max", "velocity_err_over_vth_max", "pressure_tensor_rel_err_max"):
            assert p[key] <= 1e-6, (key, p[key])
        assert p["negative_values"] == 0 and p["block_sets_identical"]
    assert report["non_vdf_identical"]


def test_restart_profile_is_the_default_for_the_real_restart(tmp_path, restart_population):
    source = shared_file("restart_ipshock_small.vlsv")
    summary, report, compressed = _profile_report(source, tmp_path, tol=1e-2)
    assert summary["profile"] == {"name": "restart", "tail_tol": DEFAULT_TAIL_TOL}
    _assert_profile(report, 1e-2, DEFAULT_TAIL_TOL)
    assert summary["ratio"] > 30  # bench/RESULTS-restart-profile.md: ~50 with the block order kept
    with vlsv.read(compressed) as f:
        header = layout.CompressedPopulation(f, "proton").header
    assert header["profile"]["name"] == "restart" and header["threshold"] == THRESHOLD
    assert {c["id"]: c["config"]["transform"] for c in header["codecs"] if c["id"] == "octree"} == {"octree": "auto"}


def test_restart_profile_on_synthetic_cells_of_every_kind(tmp_path, synthetic):
    _, report, _ = _profile_report(synthetic, tmp_path, tol=1e-2, tail_tol=0.2)
    _assert_profile(report, 1e-2, 0.2)
    _, core, _ = _profile_report(synthetic, tmp_path, tol=1e-2, profile="core")
    assert core["content_blocks_lost_fraction"] > 0  # what the restart profile is for


@register_codec
class _TailBlindOctree(octree.OctreeCodec):
    """A linear octree that ignores the tail bound: the pipeline must catch its cells."""

    codec_id = "test-tail-blind"

    def encode_cell(self, block_ids, values, mesh, target):
        return super().encode_cell(block_ids, values, mesh, Target.of(target).rel_l2)


def test_cells_that_miss_the_profile_fall_back_to_lossless(tmp_path, synthetic):
    options = {"tol": 1e-2, "method": "test-tail-blind", "populations": ["proton"]}
    summary, report, _ = _profile_report(synthetic, tmp_path, **options)
    assert summary["populations"]["proton"]["methods"].get("lossless", 0) > 0  # tighter retries rescue some
    _assert_profile(report, 1e-2, DEFAULT_TAIL_TOL)
    summary, core, _ = _profile_report(synthetic, tmp_path, profile="core", **options)
    assert summary["populations"]["proton"]["methods"] == {"test-tail-blind": len(synth.KINDS)}
    assert core["log10_err"]["cell_p95_max"] > DEFAULT_TAIL_TOL


def test_profile_options_are_checked(tmp_path, capsys, synthetic):
    assert resolve_profile(None, None, is_restart=False).name == "core"
    assert resolve_profile(None, 0.2, is_restart=True).tail_tol == 0.2
    with pytest.raises(ProfileError):
        resolve_profile("core", 0.2, is_restart=True)
    out = tmp_path / "o.vlsv"
    for argv, message in (
        (["--profile", "core", "--tail-tol", "0.2"], "--tail-tol applies to --profile restart only"),
        (["--tail-tol", "-1"], "--tail-tol must be in (0, 10]"),
        (["--tail-tol", "x"], "must be a number of decades"),
        (["--profile", "lossy"], "invalid choice"),
    ):
        code = main(["encode", str(synthetic), "-o", str(out), *argv])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
        assert not out.exists()


def test_verify_reports_the_worst_cell_tail_and_the_profile(tmp_path, capsys, synthetic):
    out = tmp_path / "s.vdfz.vlsv"
    assert main(["encode", str(synthetic), "-o", str(out), "--tail-tol", "0.25"]) == 0
    capsys.readouterr()
    assert main(["verify", str(synthetic), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    proton = report["populations"]["proton"]
    assert proton["profile"] == {"name": "restart", "tail_tol": 0.25}
    with vlasiator.open_file(synthetic) as original, vlasiator.open_file(decode_file(out, progress=False)) as decoded:
        f, g = (x.population("proton").cells(0, len(synth.KINDS)) for x in (original, decoded))
        direct = cell_log10_p95(by_block_id(g), by_block_id(f), f.offsets, THRESHOLD)
    assert proton["log10_err"]["cell_p95_max"] == pytest.approx(direct.max())
    assert direct.max() <= 0.25
