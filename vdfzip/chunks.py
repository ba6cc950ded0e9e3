"""A compressed population's per-cell arrays in chunks (format ≥ 4), each read and checked alone.

Why: a 6 TiB restart has ~38 million cells; with its index one zstd frame and its moments under
one checksum, every MPI rank read and checked the whole of both (~90 B per cell: 3.4 GB per rank)
to decode its few hundred cells. In chunks of :data:`CHUNK_CELLS` cells, a rank reads the
directory entries, index frames and moment rows of its own chunks, and writes just those:
ranks' shares start at chunk boundaries (:attr:`vdfzip.vlasiator.Population.window`).

``VDFZIP_INDEX`` is the directory, one :data:`DIRECTORY_DTYPE` entry per chunk, then each chunk's
index rows as one zstd frame, in cell order. An entry locates its chunk everywhere a rank
needs it: its frame (from the end of the directory), its first cell's record in
``VDFZIP_RECORDS`` and its first block among the population's blocks; it carries the CRC-32 of
the frame and of the chunk's moment rows, and its own.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import zstandard

from .blockset import bounded_decompress
from .errors import CorruptFileError

#: Cells per chunk: measured on the 600-cell synthetic restart (octree cells of ~690 B), the
#: chunked index costs 13.8 B per cell with its directory against 12.5 B for one frame (0.2% of
#: the file), and a rank of a 64,000-rank job over 38 M cells still holds ~9 chunks, so shares
#: balance to ~10%.
CHUNK_CELLS = 64
DIRECTORY_DTYPE = np.dtype(
    [
        ("frame_offset", "<u8"),  # of the chunk's index frame, after the directory
        ("record_offset", "<u8"),  # of the chunk's first record in VDFZIP_RECORDS
        ("block_offset", "<u8"),  # of the chunk's first block among the population's blocks
        ("frame_crc32", "<u4"),
        ("moments_crc32", "<u4"),  # of the chunk's rows of VDFZIP_MOMENTS, float64 little-endian
        ("crc32", "<u4"),  # of the entry's other bytes
    ]
)
_ZSTD_LEVEL = 19


def chunk_count(cells: int) -> int:
    """Chunks of a population of ``cells`` cells (as written by this vdfzip)."""
    return -(-cells // CHUNK_CELLS)


def checksum(data) -> int:
    """CRC-32 of bytes or an array's bytes."""
    return zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else data)


def entry_checksums(directory: np.ndarray) -> np.ndarray:
    """The CRC-32 of each directory entry's bytes but its own CRC."""
    body = directory.view(np.uint8).reshape(len(directory), DIRECTORY_DTYPE.itemsize)[:, :-4]
    return np.array([zlib.crc32(row) for row in body], np.uint32)


def frames(index: np.ndarray) -> list[bytes]:
    """The index rows of whole chunks (the last may be short) as zstd frames."""
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return [compressor.compress(index[a : a + CHUNK_CELLS].tobytes()) for a in range(0, len(index), CHUNK_CELLS)]


@dataclass(frozen=True)
class Bases:
    """Where a run of whole chunks starts: its first frame after the directory, its first record,
    its first block (all zero for a whole population)."""

    frame: int = 0
    record: int = 0
    block: int = 0


def directory(frames_: list[bytes], record_sizes: np.ndarray, blocks: np.ndarray, moments: np.ndarray,
              bases: Bases = Bases()) -> np.ndarray:
    """The directory entries of a run of whole chunks: ``frames_`` of :func:`frames`, and per cell
    its record size, block count and moment row."""
    starts = np.arange(0, len(record_sizes), CHUNK_CELLS)
    entries = np.zeros(len(frames_), DIRECTORY_DTYPE)
    sizes = np.array([len(f) for f in frames_], np.int64)
    entries["frame_offset"] = bases.frame + np.cumsum(sizes) - sizes
    entries["record_offset"] = bases.record + np.concatenate([[0], np.cumsum(record_sizes, dtype=np.int64)])[starts]
    entries["block_offset"] = bases.block + np.concatenate([[0], np.cumsum(blocks, dtype=np.int64)])[starts]
    entries["frame_crc32"] = [checksum(f) for f in frames_]
    little = np.ascontiguousarray(moments, "<f8")
    entries["moments_crc32"] = [checksum(little[a : a + CHUNK_CELLS]) for a in starts]
    entries["crc32"] = entry_checksums(entries)
    return entries


@dataclass(frozen=True)
class Ends:
    """Where a population's chunks end: their frames (the index's bytes after the directory),
    records and blocks."""

    frame: int
    record: int
    block: int


@dataclass(frozen=True)
class Rows:
    """The index and moment rows of a run of cells, and the ``(start, stop)`` of its records in
    ``VDFZIP_RECORDS`` and of its blocks among the population's."""

    index: np.ndarray
    moments: np.ndarray
    records: tuple[int, int]
    blocks: tuple[int, int]


class ChunkedIndex:
    """A population's chunked index and moments in a file, read a run of chunks at a time (a unit
    of a share is a chunk)."""

    def __init__(self, file, index_element, moments_element, cells: int, chunk_cells: int, row_dtype: np.dtype,
                 records: int, blocks: int, where: str):
        """``records``, ``blocks``: the population's record bytes and blocks (where the last chunk ends)."""
        self.file, self.where, self.cells, self.unit_cells, self._dtype = file, where, cells, chunk_cells, row_dtype
        self.units = -(-cells // chunk_cells)
        self._index, self._moments = index_element, moments_element
        self._directory_bytes = self.units * DIRECTORY_DTYPE.itemsize
        if index_element.arraysize < self._directory_bytes:
            raise CorruptFileError(f"{where}: VDFZIP_INDEX holds {index_element.arraysize} bytes, too few for the "
                                   f"directory of {self.units} chunks")
        self._ends = Ends(index_element.arraysize - self._directory_bytes, records, blocks)

    def entries(self, start: int, stop: int) -> np.ndarray:
        """Directory entries ``[start, stop)``, checked, and one more row: the run's ends (the next
        entry's starts, or the population's ends)."""
        size = DIRECTORY_DTYPE.itemsize
        raw = self.file.read_rows(self._index, start * size, min(stop + 1, self.units) * size).tobytes()
        entries = np.frombuffer(raw, DIRECTORY_DTYPE)
        bad = np.flatnonzero(entries["crc32"] != entry_checksums(entries))
        if len(bad):
            raise CorruptFileError(f"{self.where}: VDFZIP_INDEX directory entry {start + int(bad[0])} fails its checksum")
        if stop == self.units:
            end = np.zeros(1, DIRECTORY_DTYPE)
            end["frame_offset"], end["record_offset"], end["block_offset"] = self._ends.frame, self._ends.record, self._ends.block
            entries = np.concatenate([entries, end])
        for field, limit in (("frame_offset", self._ends.frame), ("record_offset", self._ends.record),
                             ("block_offset", self._ends.block)):
            column = entries[field].astype(np.int64)  # why: a corrupted u64 past 2⁶³ turns negative here
            if np.any(np.diff(column) < 0) or column[-1] > limit or column[0] < 0:
                raise CorruptFileError(f"{self.where}: VDFZIP_INDEX directory entries {start} to {stop} have "
                                       f"{field.replace('_', ' ')}s out of order")
        return entries

    def unit_blocks(self, start: int, stop: int) -> np.ndarray:
        """Blocks of chunks ``[start, stop)``: what shares are balanced by."""
        return np.diff(self.entries(start, stop)["block_offset"].astype(np.int64))

    def read(self, start: int, stop: int) -> Rows:
        """The index and moment rows of chunks ``[start, stop)``, each chunk checked."""
        entries = self.entries(start, stop)
        first, last = (min(k * self.unit_cells, self.cells) for k in (start, stop))
        offsets = entries["frame_offset"].astype(np.int64)
        packed = self.file.read_rows(self._index, self._directory_bytes + offsets[0],
                                     self._directory_bytes + offsets[-1]).tobytes()
        moments = np.ascontiguousarray(self.file.read_rows(self._moments, first, last), "<f8")
        rows = []
        for k in range(stop - start):
            frame = packed[offsets[k] - offsets[0] : offsets[k + 1] - offsets[0]]
            a = k * self.unit_cells
            cells = min(self.unit_cells, last - first - a)
            chunk = f"chunk {start + k}"
            if checksum(frame) != entries["frame_crc32"][k]:
                raise CorruptFileError(f"{self.where}: VDFZIP_INDEX {chunk} fails its checksum")
            if checksum(moments[a : a + cells]) != entries["moments_crc32"][k]:
                raise CorruptFileError(f"{self.where}: VDFZIP_MOMENTS {chunk} fails its checksum")
            raw = bounded_decompress(frame, cells * self._dtype.itemsize, CorruptFileError,
                                     f"{self.where}: VDFZIP_INDEX {chunk}")
            if len(raw) != cells * self._dtype.itemsize:
                raise CorruptFileError(f"{self.where}: VDFZIP_INDEX {chunk} holds {len(raw)} bytes, not {cells} rows")
            rows.append(np.frombuffer(raw, self._dtype))
        index = np.concatenate(rows) if rows else np.zeros(0, self._dtype)
        return Rows(index, moments,
                    (int(entries["record_offset"][0]), int(entries["record_offset"][-1])),
                    (int(entries["block_offset"][0]), int(entries["block_offset"][-1])))
