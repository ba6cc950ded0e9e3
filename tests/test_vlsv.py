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


