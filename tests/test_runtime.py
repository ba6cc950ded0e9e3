"""The runtime API: Compressor (cells in memory, asynchronous), CompressedCells blobs, write_compressed.

The file path and the runtime path are one engine: cells compressed in memory and written with
the input as template give the very bytes ``encode_file`` writes, and every decoding of a blob
equals the file's decoding. References are independent: moments recomputed in float64 from the
original arrays, and the file pipeline.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from vdfzip import CompressedCells, Compressor, synth, vlsv, write_compressed
from vdfzip.blockset import BlockSetError
from vdfzip.cells import CorruptBlobError
from vdfzip.decode import CompressedFile, decode_file
from vdfzip.encode import encode_file
from vdfzip.engine import OptionError
from vdfzip.layout import UnsupportedFormatError
from vdfzip.physics import moments
from vdfzip.runtime import InputError, MeshMismatchError
from vdfzip.vlasiator import VDF_TAGS, VelocityMesh, VlasiatorFile
from vdfzip.writer import TemplateError


@pytest.fixture(scope="module")
def restart(tmp_path_factory):
    """A synthetic restart: one cell of every kind, two populations."""
    path = tmp_path_factory.mktemp("runtime") / "restart.vlsv"
    synth.write_synthetic_restart(path, cells=len(synth.KINDS), seed=11)
    return path


def _arrays(path, name="proton", start=0, stop=None):
    """(cell ids, blocks per cell, block ids, values) of a population's cells, as Vlasiator holds them."""
    p = VlasiatorFile(path).population(name)
    b = p.cells(start, p.cell_count if stop is None else stop)
    return b.cell_ids.copy(), np.diff(b.offsets).astype(np.uint32), b.block_ids.copy(), np.array(b.values)


@pytest.fixture(scope="module")
def compressed(restart):
    """Both populations compressed in memory with the defaults (restart profile, octree)."""
    out = {}
    for name in ("proton", "helium"):
        with Compressor(restart, population=name) as compressor:
            out[name] = compressor.submit(*_arrays(restart, name)).result()
    return out


def test_write_compressed_is_encode_file_byte_for_byte(restart, compressed, tmp_path):
    """One pipeline: cells compressed in memory, written with the restart as template, are the
    file ``vdfzip encode`` writes, and a blob decodes to what that file decodes to."""
    encode_file(restart, tmp_path / "encoded.vlsv", progress=False)
    write_compressed(tmp_path / "written.vlsv", restart, compressed)
    assert (tmp_path / "written.vlsv").read_bytes() == (tmp_path / "encoded.vlsv").read_bytes()
    with CompressedFile(tmp_path / "encoded.vlsv") as file:
        for name, cells in compressed.items():
            reference = file.cells(name, 0, file.populations[name].cell_count)
            decoded = CompressedCells.from_bytes(cells.to_bytes()).decode()
            assert np.array_equal(decoded.block_ids, reference.block_ids)
            assert np.array_equal(decoded.values, reference.values) and decoded.values.dtype == reference.values.dtype


def test_decoded_cells_keep_the_moments_and_the_block_sets(restart, compressed):
    """Against float64 moments of the original arrays, independently of the stored ones."""
    mesh = VlasiatorFile(restart).population("proton").mesh
    ids, counts, blocks, values = _arrays(restart)
    decoded = compressed["proton"].decode()
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    assert np.array_equal(decoded.cell_ids, ids) and np.array_equal(decoded.offsets, offsets)
    for i in range(len(ids)):
        rows = slice(offsets[i], offsets[i + 1])
        assert np.array_equal(np.sort(decoded.block_ids[rows]), np.sort(blocks[rows]))
    order = np.concatenate([offsets[i] + np.argsort(blocks[offsets[i] : offsets[i + 1]]) for i in range(len(ids))])
    want = moments(blocks[order], values[order].astype(np.float64), offsets, mesh, 1.0)
    got = moments(decoded.block_ids, decoded.values.astype(np.float64), offsets, mesh, 1.0)
    assert np.allclose(got.density, want.density, rtol=1e-6, atol=0)
    scale = np.abs(want.pressure).max(axis=(1, 2))[:, None, None]
    assert np.all(np.abs(got.pressure - want.pressure) <= 1e-6 * scale)
    stored = compressed["proton"].moments  # in SI units: the compressor's particle mass
    assert np.allclose(stored.density, want.density, rtol=1e-6, atol=0)
    summary = compressed["proton"].summary()
    assert summary["cells"] == len(ids) and summary["rel_l2"]["max"] <= 1e-2 and summary["ratio"] > 1


def test_template_without_vdf_arrays(restart, compressed, tmp_path):
    """A template of everything but the VDF: the arrays are appended; decoding gives the decoded
    cells as its VDF and every other array of the template byte for byte."""
    template = tmp_path / "no-vdf.vlsv"
    with vlsv.read(restart) as src, vlsv.VlsvWriter(template) as dst:
        for element in src.write_order():
            if element.tag not in VDF_TAGS:
                dst.copy_element(element, src.raw(element))
    decoded = decode_file(write_compressed(tmp_path / "c.vlsv", template, compressed), tmp_path / "d.vlsv",
                          progress=False)
    with VlasiatorFile(decoded) as out, vlsv.read(template) as plain:
        for element in plain.write_order():
            assert bytes(out.vlsv.raw(out.vlsv.element(element.tag, **element.attrs))) == bytes(plain.raw(element))
        for name, cells in compressed.items():
            p = out.population(name)
            batch = p.cells(0, p.cell_count)
            assert np.array_equal(batch.values, cells.decode().values)
            assert np.array_equal(p.cell_ids, cells.cell_ids)


def test_template_must_fit_the_cells(restart, compressed, tmp_path):
    other = tmp_path / "other.vlsv"
    synth.write_synthetic_restart(other, cells=2, seed=3)  # fewer spatial cells
    with pytest.raises(TemplateError, match="not in the template's spatial grid"):
        write_compressed(tmp_path / "x.vlsv", other, compressed)
    assert not (tmp_path / "x.vlsv").exists()
    with pytest.raises(TemplateError, match="different"):
        write_compressed(tmp_path / "x.vlsv", restart, {"proton": [compressed["proton"], compressed["helium"]]})


def test_blob_refuses_corruption_and_other_versions(compressed):
    blob = compressed["helium"].to_bytes()
    for i in (3, 20, len(blob) // 2, len(blob) - 2):
        damaged = bytearray(blob)
        damaged[i] ^= 0x40
        with pytest.raises((CorruptBlobError, UnsupportedFormatError)):
            CompressedCells.from_bytes(bytes(damaged))
    with pytest.raises(CorruptBlobError):
        CompressedCells.from_bytes(blob[:-9])
    newer = bytearray(blob)
    newer[8] = 2  # the blob version
    with pytest.raises(UnsupportedFormatError, match="version 2"):
        CompressedCells.from_bytes(bytes(newer))


@pytest.fixture(scope="module")
def proton(restart):
    return Compressor(restart, population="proton")


@pytest.mark.parametrize("change, error, message", [
    (lambda a: (a[0], a[1][:-1], a[2], a[3]), InputError, "cell ids but"),
    (lambda a: (a[0], a[1], a[2][:-1], a[3]), InputError, "sums to"),
    (lambda a: (a[0], a[1], np.where(a[2] == a[2][0], 10**9, a[2]), a[3]), InputError, "outside the"),
    (lambda a: (a[0], a[1], a[2], np.where(np.arange(len(a[3]))[:, None] == 7, np.nan, a[3])), InputError, "NaN"),
    (lambda a: (a[0], a[1], a[2], np.where(a[3] > 0, -a[3], a[3])), InputError, "negative"),
    (lambda a: (a[0], a[1], a[2], a[3][:, :27]), MeshMismatchError, "blocks of 27 values"),
    (lambda a: (a[0], a[1], a[2], a[3].astype(np.int32)), InputError, "float32 or float64"),
    (lambda a: (np.zeros_like(a[0]), a[1], a[2], a[3]), InputError, "distinct"),
])
def test_bad_arrays_are_refused_by_submit(restart, proton, change, error, message):
    with pytest.raises(error, match=message):
        proton.submit(*change(_arrays(restart, stop=2)))


def test_errors_of_the_work_come_from_result_and_the_pool_goes_on(restart, proton):
    ids, counts, blocks, values = _arrays(restart, stop=1)
    blocks[1] = blocks[0]  # one block id twice in the cell
    with pytest.raises(BlockSetError):
        proton.submit(ids, counts, blocks, values).result(timeout=60)
    assert len(proton.submit(*_arrays(restart, start=1, stop=2)).result(timeout=60)) == 1


def test_mesh_and_device_mismatch(restart, proton):
    mesh = proton.mesh
    other = VelocityMesh(mesh.nblocks, mesh.wid, mesh.vmin, tuple(2 * d for d in mesh.dv))
    with pytest.raises(MeshMismatchError):
        proton.submit(*_arrays(restart, stop=1), mesh=other)
    try:
        import cupy

        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if not has_gpu:
        with pytest.raises(OptionError, match="--device cuda"):
            Compressor(mesh, device="cuda")


def test_submit_copies_so_the_simulation_may_overwrite(restart, proton):
    arrays = _arrays(restart, stop=3)
    reference = proton.compress(*[a.copy() for a in arrays])
    handle = proton.submit(*arrays)
    for a in arrays:
        a[...] = 0  # the simulation's next step, while the batch is still being encoded
    again = handle.result()
    assert again.records == reference.records and np.array_equal(again.index, reference.index)


def test_copy_false_and_dlpack_read_the_callers_memory(restart, monkeypatch):
    """``copy=False`` hands the caller's own memory to the work, numpy's or torch's (DLPack)."""
    torch = pytest.importorskip("torch")
    seen = []
    compressor = Compressor(restart)
    monkeypatch.setattr(compressor, "compress_batch", lambda batch: seen.append(batch.values) or batch)
    ids, counts, blocks, values = _arrays(restart, stop=2)
    compressor.submit(ids, counts, blocks, values, copy=False).result()
    tensor = torch.from_numpy(values.copy())
    compressor.submit(ids, counts, blocks, tensor, copy=False).result()
    compressor.submit(ids, counts, blocks, tensor).result()
    assert np.shares_memory(seen[0], values) and np.shares_memory(seen[1], tensor.numpy())
    assert not np.shares_memory(seen[2], tensor.numpy()) and np.array_equal(seen[2], values)
    compressor.close()


def test_handles_report_without_blocking(restart, monkeypatch):
    release = threading.Event()
    compressor = Compressor(restart)
    monkeypatch.setattr(compressor, "compress_batch", lambda batch: release.wait(30) and batch)
    handle = compressor.submit(*_arrays(restart, stop=1))
    assert not handle.done() and not handle.wait(0.05) and handle.event is None
    release.set()
    assert handle.wait(30) and handle.done()
    compressor.close()


def test_warm_start_fits_in_fewer_steps_and_survives_a_restart(restart):
    """The neural codec's second call on the same cells starts from their networks: fewer steps.
    A compressor loaded with the state continues exactly as the one that made it."""
    arrays = _arrays(restart, stop=3)
    options = {"method": "mlp", "tol": 3e-2}
    with Compressor(restart, **options) as warm, Compressor(restart, **options, warm_start=False) as cold:
        first = warm.compress(*arrays)
        state = warm.state_dict()
        second = warm.compress(*arrays)
        assert 0 < second.fit_steps < first.fit_steps / 2
        assert cold.compress(*arrays).records == first.records and cold.state_dict() == {}
    with Compressor(restart, **options) as resumed:
        resumed.load_state_dict(state)
        assert resumed.compress(*arrays).records == second.records
    assert "mlp" in first.methods


def test_the_runtime_example_runs_and_checks_its_invariants(tmp_path):
    """examples/runtime_loop.py: a toy time loop that compresses while it evolves its VDFs; its
    own checks (rel L2, density and pressure tensor of every decoded call) must hold."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("runtime_loop", Path(__file__).parents[1] / "examples" / "runtime_loop.py")
    example = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    restart = tmp_path / "restart.vlsv"
    synth.write_synthetic_restart(restart, cells=2, seed=4)
    calls = example.run(restart, steps=4, every=2, warm_start=True, method="mlp,octree", tol=3e-2)
    assert [c.step for c in calls] == [0, 2]
    assert not np.array_equal(calls[0].snapshot[3], calls[1].snapshot[3])  # the VDFs did evolve
