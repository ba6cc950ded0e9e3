"""Format 4's chunked index and moments: any run of chunks reads back as written, each damaged
part is refused by name, and a population opened for a window of cells holds exactly those."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from conftest import shared_file

from vdfzip import chunks, layout
from vdfzip.decode import CompressedFile
from vdfzip.encode import encode_file
from vdfzip.errors import CorruptFileError

CELLS = 150  # three chunks: 64, 64 and 22 cells


@dataclass
class _Array:
    """An array of a file as :class:`chunks.ChunkedIndex` reads it: rows of a byte string."""

    data: np.ndarray

    @property
    def arraysize(self) -> int:
        return len(self.data)


class _File:
    def read_rows(self, array: _Array, start: int, stop: int) -> np.ndarray:
        assert 0 <= start <= stop <= array.arraysize
        return array.data[start:stop]


def _population(seed: int = 0):
    """A random index and moments of CELLS cells, and their chunked index as a file holds it."""
    rng = np.random.default_rng(seed)
    index = np.zeros(CELLS, layout.INDEX_DTYPE)
    for name in ("blocks", "structure_bytes", "payload_bytes"):
        index[name] = rng.integers(1, 500, CELLS)
    index["cell_id"] = np.arange(CELLS) * 3 + 1
    moments = rng.normal(size=(CELLS, layout.MOMENT_COLUMNS))
    frames = chunks.frames(index)
    directory = chunks.directory(frames, layout.record_sizes(index), index["blocks"], moments)
    data = np.frombuffer(directory.tobytes() + b"".join(frames), np.uint8).copy()
    return index, moments, data


def _reader(index, moments, data) -> chunks.ChunkedIndex:
    return chunks.ChunkedIndex(_File(), _Array(data), _Array(moments), CELLS, chunks.CHUNK_CELLS, layout.INDEX_DTYPE,
                               int(layout.record_sizes(index).sum()), int(index["blocks"].sum()), "test")


@pytest.mark.parametrize("start, stop", [(0, 3), (0, 1), (1, 2), (2, 3), (1, 3), (3, 3), (0, 0)])
def test_any_run_of_chunks_reads_back_as_written(start, stop):
    index, moments, data = _population()
    rows = _reader(index, moments, data).read(start, stop)
    a, b = (min(k * chunks.CHUNK_CELLS, CELLS) for k in (start, stop))
    assert rows.index.tobytes() == index[a:b].tobytes() and np.array_equal(rows.moments, moments[a:b])
    records = np.concatenate([[0], np.cumsum(layout.record_sizes(index))])
    blocks = np.concatenate([[0], np.cumsum(index["blocks"], dtype=np.int64)])
    assert rows.records == (records[a], records[b]) and rows.blocks == (blocks[a], blocks[b])


def test_chunk_blocks_are_the_sums_of_their_cells():
    index, moments, data = _population()
    expected = [int(index["blocks"][a : a + chunks.CHUNK_CELLS].sum()) for a in range(0, CELLS, chunks.CHUNK_CELLS)]
    assert _reader(index, moments, data).unit_blocks(0, 3).tolist() == expected


def _flip(array: np.ndarray, position: int) -> np.ndarray:
    flipped = array.copy()
    flipped.reshape(-1).view(np.uint8)[position] ^= 0x10
    return flipped


def test_each_damaged_part_is_refused_by_name():
    index, moments, data = _population()
    entry = chunks.DIRECTORY_DTYPE.itemsize
    cases = [
        (index, moments, _flip(data, entry + 9), "directory entry 1 fails its checksum"),
        (index, moments, _flip(data, 3 * entry + 5), "VDFZIP_INDEX chunk 0 fails its checksum"),
        (index, _flip(moments, 8 * layout.MOMENT_COLUMNS * 130), data, "VDFZIP_MOMENTS chunk 2 fails its checksum"),
    ]
    for index_, moments_, data_, message in cases:
        with pytest.raises(CorruptFileError, match=message):
            _reader(index_, moments_, data_).read(0, 3)


def test_a_directory_out_of_order_is_refused_even_with_its_checksums_made_anew():
    index, moments, data = _population()
    directory = np.frombuffer(data[: 3 * chunks.DIRECTORY_DTYPE.itemsize].tobytes(), chunks.DIRECTORY_DTYPE).copy()
    directory["record_offset"][1] = directory["record_offset"][2] + 1
    directory["crc32"] = chunks.entry_checksums(directory)
    data = np.concatenate([np.frombuffer(directory.tobytes(), np.uint8), data[len(directory.tobytes()):]])
    with pytest.raises(CorruptFileError, match="record offsets out of order"):
        _reader(index, moments, data).read(0, 3)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """The real restart (72 cells: two chunks), compressed losslessly."""
    out = tmp_path_factory.mktemp("chunks") / "restart.vdfz.vlsv"
    encode_file(shared_file("restart_ipshock_small.vlsv"), out, method="lossless", progress=False)
    return out


@pytest.mark.parametrize("cells", [(0, 72), (10, 70), (64, 72), (63, 65), (5, 5)])
def test_a_window_of_cells_holds_exactly_those_cells(compressed, cells):
    with CompressedFile(compressed) as whole:
        everything = whole.populations["proton"]
        window = layout.CompressedPopulation(whole.vlsv, "proton", cells=cells)
        a, b = cells
        assert window.first_cell == a and window.index.tobytes() == everything.index[a:b].tobytes()
        assert np.array_equal(window.moment_columns, everything.moment_columns[a:b])
        assert window.first_block == everything.block_offsets[a]
        if b > a:
            assert np.array_equal(window.decoded(0, b - a).values, everything.decoded(a, b).values)
            assert np.array_equal(window.block_ids(b - a - 1), everything.block_ids(b - 1))
