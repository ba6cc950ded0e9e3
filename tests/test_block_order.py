"""Every block order × profile × codec chain round-trips: what the encoder accepted is what decode
writes, bit for bit, in any batch and on any number of threads (issue 15: ``--block-order sorted``
used to pair lossless rows and content flags with the wrong blocks).

Each round trip is checked against the original independently of verify's alignment: blocks
matched by id, rel L2 per cell in float64, the content-block set block by block."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from badfiles import copy_with_arrays
from conftest import by_block_id, shared_file

from vdfzip import content, engine, layout, synth, vlasiator
from vdfzip.decode import CompressedFile, decode_file
from vdfzip.encode import encode_file
from vdfzip.errors import VdfzipError
from vdfzip.reconstruct import cell_rel_l2
from vdfzip.verify import verify_files

PROFILES = ("restart", "core")
ORDERS = ("sorted", "keep")
#: The cells of the real restart that decoded wrong or not at all with sorted blocks (ids 34 and
#: 41: "moments not restored"), with inflow, ramp and downstream cells around them.
SUBSET = (1, 12, 20, 30, 34, 38, 41, 45, 52, 60, 66, 72)


@pytest.fixture(scope="module")
def restart_subset(tmp_path_factory):
    """The real restart cut to the cells of :data:`SUBSET` (the mlp chains fit every cell)."""
    source = shared_file("restart_ipshock_small.vlsv")
    with vlasiator.open_file(source) as f:
        p = f.population("proton")
        keep = np.flatnonzero(np.isin(p.cell_ids, SUBSET))
        batches = [p.cells(int(c), int(c) + 1) for c in keep]
        arrays = {
            ("CELLSWITHBLOCKS", "proton"): p.cell_ids[keep].astype(np.uint64),
            ("BLOCKSPERCELL", "proton"): np.diff(p.offsets)[keep].astype(np.uint32),
            ("BLOCKIDS", "proton"): np.concatenate([b.block_ids for b in batches]),
            ("BLOCKVARIABLE", "proton"): np.concatenate([b.values for b in batches]),
        }
    path = tmp_path_factory.mktemp("subset") / "restart_subset.vlsv"
    copy_with_arrays(source, path, arrays)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """One cell of every synthetic kind, two populations."""
    path = tmp_path_factory.mktemp("synth") / "restart.vlsv"
    synth.write_synthetic_restart(path, cells=len(synth.KINDS), seed=5)
    return path


def _encode_recording(monkeypatch, source, output, **options) -> dict:
    """``encode_file`` that also returns, per (population, cell id), the block ids and values the
    encoder accepted (from the pipeline's own batches, not a second encoding)."""
    accepted = {}
    encode_batch = engine.encode_batch

    def recording(batch, population, *args, **kwargs):
        result = encode_batch(batch, population, *args, **kwargs)
        for i, cell_id in enumerate(result.batch.cell_ids):
            rows = slice(result.batch.offsets[i], result.batch.offsets[i + 1])
            accepted[population.name, int(cell_id)] = (result.batch.block_ids[rows].copy(), result.values[rows].copy())
        return result

    monkeypatch.setattr(engine, "encode_batch", recording)
    encode_file(source, output, progress=False, **options)
    monkeypatch.undo()
    return accepted


def _check_round_trip(source, tmp_path, monkeypatch, *, tol, profile, block_order, method):
    compressed = tmp_path / "c.vdfz.vlsv"
    accepted = _encode_recording(monkeypatch, source, compressed, tol=tol, profile=profile, block_order=block_order,
                                 method=method)
    decoded = decode_file(compressed, tmp_path / "d.vlsv", progress=False)
    with vlasiator.open_file(source) as original, vlasiator.open_file(decoded) as restored:
        for name, population in original.populations.items():
            if not population.block_count:
                continue
            f = population.cells(0, population.cell_count)
            g = restored.population(name).cells(0, population.cell_count)
            np.testing.assert_array_equal(g.cell_ids, f.cell_ids)
            for i, cell_id in enumerate(g.cell_ids):
                ids, values = g.cell(i)
                accepted_ids, accepted_values = accepted[name, int(cell_id)]
                np.testing.assert_array_equal(ids, accepted_ids)
                assert np.array_equal(values, accepted_values), f"{name} cell {cell_id}: decoded != accepted"
                expected = f.cell(i)[0] if block_order == "keep" else np.sort(f.cell(i)[0])
                np.testing.assert_array_equal(ids, expected)
            f_values, g_values = by_block_id(f), by_block_id(g)
            errors = cell_rel_l2(g_values, f_values, f.offsets)
            assert errors.max() <= (0 if method == "lossless" else tol), (name, errors.max())
            if profile == "restart":
                threshold = population.threshold
                kept = content.content_blocks(g_values, threshold) == content.content_blocks(f_values, threshold)
                assert kept.all(), f"{name}: {np.count_nonzero(~kept)} blocks changed their content flag"
    report = verify_files(source, decoded)
    assert report["block_sets_identical"] and report["non_vdf_identical"]
    assert report["blocks_identical"] == (block_order == "keep")
    for key in ("density_rel_err_max", "velocity_err_over_vth_max", "pressure_tensor_rel_err_max"):
        assert report[key] <= 1e-6, (key, report[key])
    if profile == "restart":
        assert report["log10_err"]["cell_p95_max"] <= 0.3
    return compressed


@pytest.mark.slow
@pytest.mark.parametrize("method", ["octree", "lossless"])
@pytest.mark.parametrize("block_order", ORDERS)
@pytest.mark.parametrize("profile", PROFILES)
def test_real_restart_round_trips_in_every_order(tmp_path, monkeypatch, profile, block_order, method):
    """The whole real restart; with sorted blocks these were issue 15's two repros."""
    _check_round_trip(shared_file("restart_ipshock_small.vlsv"), tmp_path, monkeypatch, tol=1e-2, profile=profile,
                      block_order=block_order, method=method)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mlp,octree", "auto"])
@pytest.mark.parametrize("block_order", ORDERS)
@pytest.mark.parametrize("profile", PROFILES)
def test_real_restart_cells_round_trip_with_the_neural_chains(tmp_path, monkeypatch, restart_subset, profile,
                                                              block_order, method):
    _check_round_trip(restart_subset, tmp_path, monkeypatch, tol=1e-2, profile=profile, block_order=block_order,
                      method=method)


# auto (every codec per cell) runs in every order on the real restart's cells above
@pytest.mark.parametrize("method", ["octree", "mlp,octree", "lossless"])
@pytest.mark.parametrize("block_order", ORDERS)
@pytest.mark.parametrize("profile", PROFILES)
def test_synthetic_restart_round_trips_in_every_order(tmp_path, monkeypatch, synthetic, profile, block_order, method):
    _check_round_trip(synthetic, tmp_path, monkeypatch, tol=3e-2, profile=profile, block_order=block_order,
                      method=method)


@pytest.fixture(scope="module")
def subset_encoded(tmp_path_factory, restart_subset):
    """The restart cells encoded with the design's chain: mlp, octree and lossless cells alike."""
    path = tmp_path_factory.mktemp("encoded") / "c.vdfz.vlsv"
    encode_file(restart_subset, path, tol=1e-2, method="mlp,octree", progress=False)
    return path


def test_decoding_does_not_depend_on_threads(tmp_path, subset_encoded):
    threads = numba.get_num_threads()
    if threads < 2:
        pytest.skip("numba runs one thread on this machine")
    outputs = []
    try:
        for count in (1, threads):
            numba.set_num_threads(count)
            outputs.append(decode_file(subset_encoded, tmp_path / f"d{count}.vlsv", progress=False).read_bytes())
    finally:
        numba.set_num_threads(threads)
    assert outputs[0] == outputs[1]


def test_decoding_does_not_depend_on_the_batch(subset_encoded):
    with CompressedFile(subset_encoded) as f:
        cells = f.populations["proton"].cell_count
        whole = f.cells("proton", 0, cells).values
        alone = np.concatenate([f.cells("proton", c, c + 1).values for c in range(cells)])
        halves = np.concatenate([f.cells("proton", 0, 5).values, f.cells("proton", 5, cells).values])
    assert np.array_equal(whole, alone) and np.array_equal(whole, halves)


def test_decode_refuses_a_cell_whose_content_set_does_not_hold(tmp_path, monkeypatch, restart_subset):
    """A stored content-block set that the decoded values do not have is an error naming the cell,
    never a silent file (here a lossless cell, which decoding does not enforce, with a flipped flag)."""
    compressed = tmp_path / "c.vdfz.vlsv"
    encode_file(restart_subset, compressed, method="lossless", progress=False)
    with CompressedFile(compressed) as f:
        blocks = dict(zip(f.populations["proton"].cell_ids.tolist(), f.populations["proton"].blocks_per_cell.tolist()))
    victim = 34
    assert list(blocks.values()).count(blocks[victim]) == 1  # its block count singles it out below
    decode_structure = layout.decode_structure

    def one_flag_flipped(structure, mesh):
        ids, mask = decode_structure(structure, mesh)
        if len(ids) == blocks[victim]:
            mask = mask.copy()
            mask[0] = not mask[0]
        return ids, mask

    monkeypatch.setattr(layout, "decode_structure", one_flag_flipped)
    with pytest.raises(VdfzipError, match=rf"content-block set not restored for cells \[{victim}\]"):
        decode_file(compressed, tmp_path / "d.vlsv", progress=False)
    assert not (tmp_path / "d.vlsv").exists()


@pytest.mark.parametrize("method", ["mlp,octree", "octree"])
def test_encoding_does_not_depend_on_the_batch_or_the_threads(tmp_path, synthetic, method):
    """What a later MPI rank or a thread pool needs: a cell's bytes come from the cell alone
    (the mlp codec's random numbers are seeded by cell id; the numba kernels allocate their
    scratch per cell, not in a prange loop that numba hoists it out of)."""
    threads = numba.get_num_threads()
    outputs = []
    try:
        for batch_cells, count in ((256, threads), (1, threads), (2, 1)):
            numba.set_num_threads(count)
            out = tmp_path / f"{batch_cells}-{count}.vdfz.vlsv"
            encode_file(synthetic, out, tol=3e-2, method=method, batch_cells=batch_cells, progress=False)
            outputs.append(out.read_bytes())
    finally:
        numba.set_num_threads(threads)
    assert outputs[0] == outputs[1] == outputs[2]
