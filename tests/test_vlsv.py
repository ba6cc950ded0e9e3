"""The VLSV container: exact round trips of real files, the writer, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from badfiles import BAD_INPUTS, corrupt_copy
from conftest import shared_file
from vdfzip import vlsv
from vdfzip.errors import MissingArrayError

SHARED_FILES = [
    "1d_single.vlsv",
    "bulk.1d.vlsv",
    "bulk.amr.vlsv",
    "bulk_hermite_compressed.0000001.vlsv",
    "fullf.0000001.vlsv",
    "init.vlsv",
    "restart_ipshock_small.vlsv",
]


@pytest.mark.parametrize("name", SHARED_FILES)
def test_rewrite_is_byte_identical(name, tmp_path):
    source = shared_file(name)
    copy = tmp_path / name
    vlsv.rewrite(source, copy)
    assert copy.read_bytes() == source.read_bytes()


def test_read_array_dtype_and_shape(restart_small):
    with vlsv.read(restart_small) as f:
        values = f.read("BLOCKVARIABLE", name="proton")
        assert values.dtype == np.float32 and values.shape == (48538, 64)
        moments = f.read("VARIABLE", name="moments_v")
        assert moments.dtype == np.float64 and moments.shape == (72, 5)
        cell_ids = f.read("VARIABLE", name="CellID")
        assert cell_ids.dtype == np.uint64 and cell_ids.shape == (72,)
        assert f.read("PARAMETER", name="velocity_block_width")[0] == 4
        assert "[proton_sparse]" in f.read_text("CONFIG")


def test_read_rows_matches_whole_array_and_reads_from_the_file(restart_small):
    with vlsv.read(restart_small) as f:
        element = f.element("BLOCKVARIABLE", name="proton")
        rows = f.read_rows(element, 100, 110)
        np.testing.assert_array_equal(rows, f.read(element)[100:110])
        raw = restart_small.read_bytes()[element.offset + 100 * 256 : element.offset + 110 * 256]
        np.testing.assert_array_equal(rows, np.frombuffer(raw, "<f4").reshape(10, 64))
        with pytest.raises(IndexError):
            f.read_rows(element, 5, element.arraysize + 1)


def test_find_follows_the_cpp_reader_and_missing_arrays_raise(fullf):
    with vlsv.read(fullf) as f:
        assert f.find("BLOCKIDS", name="antiproton").arraysize == 1395
        assert f.find("MESH_BBOX", mesh="proton").mesh == "proton"
        assert f.find("BLOCKIDS", name="electron") is None
        with pytest.raises(MissingArrayError, match="BLOCKIDS name=electron"):
            f.element("BLOCKIDS", name="electron")


def test_footer_sorts_tags_stably_and_attributes_bytewise():
    elements = [
        vlsv.Element("VARIABLE", {"name": "b", "arraysize": "1", "vectorsize": "1", "datasize": "8", "datatype": "float", "Zed": "1"}, 16),
        vlsv.Element("MESH", {"name": "m", "arraysize": "0", "vectorsize": "1", "datasize": "8", "datatype": "uint"}, 24),
        vlsv.Element("VARIABLE", {"name": "a", "arraysize": "1", "vectorsize": "1", "datasize": "8", "datatype": "float"}, 24),
    ]
    text = vlsv.format_footer(elements).decode()
    assert text == (
        "<VLSV>\n"
        '   <MESH arraysize="0" datasize="8" datatype="uint" name="m" vectorsize="1">24</MESH>\n'
        '   <VARIABLE Zed="1" arraysize="1" datasize="8" datatype="float" name="b" vectorsize="1">16</VARIABLE>\n'
        '   <VARIABLE arraysize="1" datasize="8" datatype="float" name="a" vectorsize="1">24</VARIABLE>\n'
        "</VLSV>\n"
    )


def test_writer_round_trip_with_streamed_array(tmp_path):
    path = tmp_path / "out.vlsv"
    blocks = np.arange(24, dtype=np.float32).reshape(3, 8)
    with vlsv.VlsvWriter(path) as w:
        w.write_array("PARAMETER", np.array([1.5]), name="time")
        with w.stream_array("BLOCKVARIABLE", np.float32, 8, name="proton", mesh="SpatialGrid") as sink:
            sink.write(blocks[:1])
            sink.write(blocks[1:])
        w.write_array("VARIABLE", np.array([], dtype=np.uint64), name="empty")
    with vlsv.read(path) as f:
        element = f.element("BLOCKVARIABLE", name="proton")
        assert (element.arraysize, element.vectorsize, element.datasize, element.datatype) == (3, 8, 4, "float")
        np.testing.assert_array_equal(f.read(element), blocks)
        assert f.read("PARAMETER", name="time")[0] == 1.5
        assert f.element("VARIABLE", name="empty").arraysize == 0
        assert f.footer_offset == 16 + 8 + blocks.nbytes
    copy = tmp_path / "copy.vlsv"
    vlsv.rewrite(path, copy)
    assert copy.read_bytes() == path.read_bytes()


def _resident_file_pages_mib() -> int:
    """RssFile of this process (Linux): pages of mapped files, memory maps included."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile:")) // 1024


@pytest.mark.skipif(not hasattr(vlsv.mmap, "MADV_DONTNEED"), reason="needs madvise (Linux)")
def test_streaming_a_file_keeps_its_pages_out_of_rss_and_views_stay_valid(tmp_path, monkeypatch):
    path = tmp_path / "big.vlsv"
    rows = np.arange(3072 * 4096, dtype=np.float32).reshape(3072, 4096)  # 48 MiB, rows of 16 KiB
    with vlsv.VlsvWriter(path) as w:
        w.write_array("BLOCKVARIABLE", rows, name="proton")
    monkeypatch.setattr(vlsv, "RELEASE_BYTES", 4 << 20)
    with vlsv.read(path) as f:
        element = f.element("BLOCKVARIABLE", name="proton")
        first = f.read_rows(element, 0, 64)
        before = _resident_file_pages_mib()
        total = sum(float(f.read_rows(element, a, a + 64).sum(dtype=np.float64)) for a in range(0, 3072, 64))
        grown = _resident_file_pages_mib() - before
        assert total == float(rows.sum(dtype=np.float64))
        assert grown < 24, f"{grown} MiB of the 48 MiB file stayed resident"  # without releases: ≥ 48
        np.testing.assert_array_equal(first, rows[:64])  # released pages read back from the file
    copy = tmp_path / "copy.vlsv"
    with vlsv.read(path) as f, vlsv.VlsvWriter(copy) as w:
        element = f.element("BLOCKVARIABLE", name="proton")
        with pytest.raises(ValueError, match="bytes given"):
            w.copy_element(element, b"short")  # a wrong size leaves the output as it was
        w.copy_element(element, f.raw_chunks(element, size=1 << 20))
    assert copy.read_bytes() == path.read_bytes()


def test_writer_leaves_nothing_behind_on_error(tmp_path):
    path = tmp_path / "out.vlsv"
    with pytest.raises(RuntimeError):
        with vlsv.VlsvWriter(path) as w:
            w.write_array("PARAMETER", np.array([1.0]), name="time")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_raises_specific_error(case, tmp_path, fullf):
    edit, error, message = BAD_INPUTS[case]
    path = corrupt_copy(tmp_path, fullf, edit)
    with pytest.raises(error, match=message):
        vlsv.read(path)


