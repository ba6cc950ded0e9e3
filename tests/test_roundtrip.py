"""encode → decode → verify end to end: the round-trip invariants of DESIGN.md, and robustness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from badfiles import reseal_with_header
from conftest import by_block_id, shared_file

from vdfzip import engine, layout, reconstruct, vlasiator, vlsv
from vdfzip.cli import main
from vdfzip.codecs import Target, codec_ids, get_codec, octree, register_codec
from vdfzip.decode import CompressedFile, decode_file
from vdfzip.encode import encode_file
from vdfzip.engine import encode_batch
from vdfzip.profiles import Profile
from vdfzip.synth import write_synthetic_restart
from vdfzip.verify import verify_files
from vdfzip.vlasiator import VlasiatorFile


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "restart.vlsv"
    write_synthetic_restart(path, cells=6, seed=3)
    return path


def _assert_invariants(report: dict, tol: float, lossless: bool = False):
    assert report["block_sets_identical"] and report["non_vdf_identical"], report
    assert report["rel_l2"]["max"] <= tol
    for key in ("density_rel_err_max", "velocity_err_over_vth_max", "pressure_tensor_rel_err_max"):
        assert report[key] <= (0 if lossless else 1e-6), (key, report[key])
    if not lossless:
        assert report["negative_values"] == 0


@pytest.mark.filterwarnings("ignore::vdfzip.vlasiator.SparsityThresholdWarning")
@pytest.mark.parametrize(
    "name, tol", [("fullf.0000001.vlsv", 1e-2), ("bulk.1d.vlsv", 3e-2), ("restart_ipshock_small.vlsv", 1e-2)]
)
def test_octree_round_trip_of_real_files(tmp_path, name, tol):
    source = shared_file(name)
    compressed = tmp_path / "c.vdfz.vlsv"
    # the restart profile of the restart is tested in test_restart_profile.py; the order is kept
    # here for the byte-identical BLOCKIDS that --block-order keep promises
    summary = encode_file(source, compressed, tol=tol, method="octree", profile="core", block_order="keep",
                          progress=False)
    decoded = decode_file(compressed, tmp_path / "d.vlsv", progress=False)
    report = verify_files(source, decoded)
    _assert_invariants(report, tol)
    assert report["methods"] == {}  # a decoded file says nothing about codecs
    on_the_fly = verify_files(source, compressed)
    assert on_the_fly["rel_l2"] == report["rel_l2"] and on_the_fly["ratio"] == pytest.approx(summary["ratio"])
    assert sum(on_the_fly["methods"].values()) == report["cells"]
    original, restored = source.read_bytes(), decoded.read_bytes()
    assert len(original) == len(restored)
    with vlsv.read(source) as f:
        for e in f.elements:  # every byte outside BLOCKVARIABLE is identical
            if e.tag != "BLOCKVARIABLE":
                assert original[e.offset : e.offset + e.nbytes] == restored[e.offset : e.offset + e.nbytes]
        assert original[f.footer_offset :] == restored[f.footer_offset :]


def test_lossless_round_trip_of_the_real_restart_is_exact(tmp_path, restart_small):
    compressed = tmp_path / "c.vdfz.vlsv"
    encode_file(restart_small, compressed, method="lossless", block_order="keep", progress=False)
    decoded = decode_file(compressed, tmp_path / "d.vlsv", progress=False)
    assert decoded.read_bytes() == restart_small.read_bytes()


def test_synthetic_restart_round_trip_with_two_populations(tmp_path, synthetic):
    compressed = tmp_path / "c.vdfz.vlsv"
    summary = encode_file(synthetic, compressed, tol=3e-2, method="octree,lossless", progress=False)
    assert set(summary["populations"]) == {"proton", "helium"} and summary["ratio"] > 5
    report = verify_files(synthetic, decode_file(compressed, progress=False))
    _assert_invariants(report, 3e-2)
    assert set(report["populations"]) == {"proton", "helium"}


def test_population_selection_and_sorted_block_order(tmp_path, synthetic):
    compressed = tmp_path / "c.vdfz.vlsv"
    encode_file(synthetic, compressed, tol=3e-2, method="octree", populations=["helium"], block_order="sorted",
                progress=False)
    with vlsv.read(compressed) as f:
        assert layout.compressed_population_names(f) == ["helium"]
        assert f.find("BLOCKVARIABLE", name="proton") is not None
    report = verify_files(synthetic, decode_file(compressed, progress=False))
    assert report["populations"]["proton"]["rel_l2"]["max"] == 0
    assert not report["populations"]["helium"]["blocks_identical"] and report["non_vdf_identical"]
    assert report["populations"]["helium"]["rel_l2"]["max"] <= 3e-2
    on_the_fly = verify_files(synthetic, compressed)  # one population compressed, one plain
    assert on_the_fly["populations"]["proton"]["rel_l2"]["max"] == 0 and on_the_fly["methods"] == {"octree": 6}


def test_cells_are_decoded_from_their_own_bytes_only(tmp_path, fullf, monkeypatch):
    compressed = tmp_path / "c.vdfz.vlsv"
    encode_file(fullf, compressed, tol=3e-2, method="octree", progress=False)
    with CompressedFile(compressed) as f:
        read = []
        original_read_rows = f.vlsv.read_rows
        monkeypatch.setattr(f.vlsv, "read_rows", lambda e, a, b: read.append((e.tag, e.name, a, b)) or original_read_rows(e, a, b))
        batch = f.cells("antiproton", 0, 1)
        assert batch.values.shape == (1395, 64)
        records = [r for r in read if r[0] == "VDFZIP_RECORDS"]
        assert records == [("VDFZIP_RECORDS", "antiproton", 0, int(f.populations["antiproton"].record_offsets[1]))]


def _cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_chain_and_json_report(tmp_path, capsys, fullf):
    out = tmp_path / "f.vdfz.vlsv"
    assert _cli(capsys, "encode", fullf, "-o", out, "--method", "octree", "--tol", "3e-2")[0] == 0
    assert _cli(capsys, "decode", out)[0] == 0
    code, text, _ = _cli(capsys, "verify", fullf, tmp_path / "f.decoded.vlsv", "--json")
    report = json.loads(text)
    for key in ("cells", "ratio", "rel_l2", "density_rel_err_max", "velocity_err_over_vth_max", "pressure_rel_err_max",
                "pressure_tensor_rel_err_max", "heat_flux_err_over_vth3_max", "log10_err", "content_lost_fraction",
                "content_blocks_lost_fraction", "content_blocks_gained_fraction", "blocks_identical",
                "non_vdf_identical", "methods", "populations"):
        assert key in report, key
    assert code == 0 and report["rel_l2"]["max"] <= 3e-2
    code, text, _ = _cli(capsys, "verify", fullf, out)
    assert code == 0 and "non-VDF arrays identical: True" in text


def _one_line_error(result, expected):
    code, _, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("vdfzip: error:") and expected in err, err


def test_robustness(tmp_path, capsys, fullf):
    out = tmp_path / "f.vdfz.vlsv"
    _one_line_error(_cli(capsys, "encode", fullf, "-o", fullf, "--method", "lossless"), "is the input file")
    _one_line_error(_cli(capsys, "encode", fullf, "-o", out, "--tol", "2"), "must be in [1e-6, 1)")
    _one_line_error(_cli(capsys, "encode", fullf, "-o", out, "--method", "zip9"), "unknown codec 'zip9'")
    _one_line_error(_cli(capsys, "encode", fullf, "-o", out, "--population", "electron"), "no population 'electron'")
    _one_line_error(_cli(capsys, "encode", fullf, "-o", out, "--device", "cuda"), "--device cuda")
    _one_line_error(_cli(capsys, "decode", fullf), "not a vdfzip-compressed file")
    assert list(tmp_path.iterdir()) == []

    assert _cli(capsys, "encode", fullf, "-o", out, "--method", "octree")[0] == 0
    _one_line_error(_cli(capsys, "encode", fullf, "-o", out), "exists; pass --force")
    _one_line_error(_cli(capsys, "encode", out, "-o", tmp_path / "again.vlsv"), "already compressed by vdfzip")
    assert _cli(capsys, "encode", fullf, "-o", out, "--method", "octree", "--force")[0] == 0

    data = bytearray(out.read_bytes())
    with vlsv.read(out) as f:
        records = f.element("VDFZIP_RECORDS", name="antiproton")
    data[records.offset + 40] ^= 0xFF
    corrupt = tmp_path / "corrupt.vdfz.vlsv"
    corrupt.write_bytes(bytes(data))
    _one_line_error(_cli(capsys, "decode", corrupt, "-o", tmp_path / "x.vlsv"), "population antiproton: cell 1 (#0) fails its checksum")
    assert not (tmp_path / "x.vlsv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left

    truncated = tmp_path / "truncated.vdfz.vlsv"
    truncated.write_bytes(out.read_bytes()[: records.offset + 10])
    _one_line_error(_cli(capsys, "decode", truncated), "truncated")


def test_unknown_format_version_and_codec_are_refused(tmp_path, capsys, fullf):
    out = tmp_path / "f.vdfz.vlsv"
    encode_file(fullf, out, method="lossless", progress=False)
    current = f'"format": {layout.FORMAT_VERSION}'.encode()
    for old, new, expected in ((current, b'"format": 9', "format version 9"),
                               (b'"id": "lossless"', b'"id": "losslesX"', "unknown codec 'losslesX'")):
        data = out.read_bytes()
        with vlsv.read(out) as f:
            header = f.element("VDFZIP_HEADER", name="proton")
        text = data[header.offset : header.offset + header.nbytes].replace(old, new)
        changed = tmp_path / "changed.vlsv"
        reseal_with_header(out, changed, "proton", text)
        _one_line_error(_cli(capsys, "decode", changed, "-o", tmp_path / "x.vlsv"), expected)


def test_verify_tail_metrics_match_a_direct_computation(tmp_path, fullf):
    from vdfzip import metrics, vlasiator

    compressed = tmp_path / "c.vdfz.vlsv"
    encode_file(fullf, compressed, tol=3e-2, method="octree", progress=False)
    report = verify_files(fullf, compressed)["populations"]["antiproton"]
    with vlasiator.open_file(fullf) as f, CompressedFile(compressed) as c:
        p = f.population("antiproton")
        direct = metrics.tail_metrics(by_block_id(c.cells("antiproton", 0, 1)), by_block_id(p.cells(0, 1)), p.threshold)
    assert direct["content_lost_fraction"] > 0.05  # a linear-space codec at 3e-2 does lose tail voxels
    for key in ("content_lost_fraction", "content_blocks_lost_fraction", "content_blocks_gained_fraction"):
        assert report[key] == pytest.approx(direct[key])
    for q in ("p50", "p95"):
        assert report["log10_err"][q] == pytest.approx(direct["log10_err"][q], abs=2e-3)
    assert report["rel_l2"]["max"] == pytest.approx(direct["rel_l2"], rel=1e-6)


@pytest.mark.parametrize("profile", ["core", "restart"])
def test_cell_without_blocks_round_trips(tmp_path, fullf, profile):
    from badfiles import copy_with_arrays

    source = tmp_path / "with_empty_cell.vlsv"
    copy_with_arrays(fullf, source, {("CELLSWITHBLOCKS", "proton"): np.array([1, 2], np.uint64),
                                     ("BLOCKSPERCELL", "proton"): np.array([1390, 0], np.uint32)})
    compressed = tmp_path / "c.vdfz.vlsv"
    summary = encode_file(source, compressed, tol=3e-2, method="octree", profile=profile, progress=False)
    assert summary["populations"]["proton"]["methods"] == {"octree": 1, "lossless": 1}
    report = verify_files(source, decode_file(compressed, progress=False))
    _assert_invariants(report, 3e-2)
    assert report["populations"]["proton"]["cells"] == 2


def test_library_api_is_importable_from_the_package():
    import vdfzip

    assert (vdfzip.encode_file, vdfzip.decode_file, vdfzip.verify_files) == (encode_file, decode_file, verify_files)
    with pytest.raises(AttributeError):
        vdfzip.compress_everything  # noqa: B018


@register_codec
class _PaddedOctree(octree.OctreeCodec):
    """The octree codec with 100 useless bytes appended: meets every target, never the smallest."""

    codec_id = "test-padded"

    def encode_cell(self, block_ids, values, mesh, target):
        return super().encode_cell(block_ids, values, mesh, target) + bytes(100)

    def decode_cell(self, payload, block_ids, mesh):
        return super().decode_cell(payload[:-100], block_ids, mesh)


def test_best_of_keeps_the_smallest_payload_per_cell(synthetic):
    with VlasiatorFile(synthetic) as f:
        population = f.population("proton")
        batch = population.cells(0, population.cell_count)
    chain = [get_codec("test-padded"), get_codec("octree"), get_codec("lossless")]
    first = encode_batch(batch, population, chain, Profile("core"), 3e-2)
    best = encode_batch(batch, population, chain, Profile("core"), 3e-2, best_of=True)
    assert np.all(first.codec_of_cell == 0) and np.all(best.codec_of_cell == 1)
    assert [len(a) - len(b) for a, b in zip(first.payloads, best.payloads)] == [100] * len(batch)
    assert np.all(best.errors <= 3e-2)


def test_auto_method_tries_every_codec(tmp_path, synthetic):
    """``--method auto`` keeps per cell the smallest payload of every registered codec: never
    larger than the octree codec's alone, and still within tol."""
    sizes = {}
    for method in ("octree", "auto"):
        out = tmp_path / f"{method}.vdfz.vlsv"
        encode_file(synthetic, out, tol=3e-2, method=method, populations=["proton"], profile="core", progress=False)
        with CompressedFile(out) as f:
            p = f.populations["proton"]
            sizes[method] = p.index["payload_bytes"].astype(int)
            codecs = [c.codec_id for c in p.codecs]
        _assert_invariants(verify_files(synthetic, out), 3e-2)
    assert codecs == [c for c in codec_ids() if c != "lossless"] + ["lossless"]
    assert np.all(sizes["auto"] <= sizes["octree"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lossless_payload_decodes_to_the_stored_bits(dtype):
    """Into the stored dtype the bits come back as they were (a NaN's payload, −0, subnormals,
    infinities), in a strided view too; into float64 as their float64 values."""
    mesh = vlasiator.VelocityMesh((4, 4, 4), 4, (-1.0, -1.0, -1.0), (0.5, 0.5, 0.5))
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    values = np.random.default_rng(5).random((3, mesh.cells_per_block)).astype(dtype)
    special = np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(dtype).smallest_subnormal], dtype=dtype)
    values[1, : len(special)] = special
    values.view(bits)[2, 0] = values.view(bits)[1, 0] | 1  # a NaN with another payload
    ids = np.array([3, 9, 17], dtype=np.uint32)
    codec = get_codec("lossless")
    payload = codec.encode_cell(ids, values, mesh)
    exact = np.empty_like(values)
    codec.decode_into(payload, exact)
    np.testing.assert_array_equal(exact.view(bits), values.view(bits))
    np.testing.assert_array_equal(codec.decode_cell(payload, ids, mesh), values.astype(np.float64))
    strided = np.zeros((3, 2 * mesh.cells_per_block), dtype=dtype)[:, ::2]
    codec.decode_into(payload, strided)
    np.testing.assert_array_equal(strided.view(bits), values.view(bits))


def test_encoder_measures_lossless_cells_that_are_not_bit_exact():
    """The encoder's exactness check: cells with the original bits are 0 without measuring; a
    cell that differs gets its measured rel L2 and tail p95."""
    rng = np.random.default_rng(6)
    offsets = np.array([0, 2, 5, 5])
    original = rng.random((5, 8)).astype(np.float32)
    batch = vlasiator.CellBatch("proton", 0, np.arange(3), offsets, np.arange(5, dtype=np.uint32), original)
    decoded = original.copy()
    decoded[3] *= 1.5
    target = Target(1e-2, 0.3, threshold=0.5)
    rel_l2, tails = engine._errors(batch, np.arange(3), decoded, target, exact=True)
    assert rel_l2[0] == tails[0] == rel_l2[2] == tails[2] == 0
    assert rel_l2[1] == pytest.approx(reconstruct.cell_rel_l2(decoded[2:5], original[2:5], [0, 3])[0]) and rel_l2[1] > 0
    assert tails[1] == pytest.approx(target.tail_p95(decoded[2:5], original[2:5])) and tails[1] > 0
    measured, measured_tails = engine._errors(batch, np.arange(3), decoded, target, exact=False)
    np.testing.assert_allclose(measured, rel_l2), np.testing.assert_allclose(measured_tails, tails)
