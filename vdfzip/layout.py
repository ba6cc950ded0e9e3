"""The compressed VLSV layout: what replaces a population's VDF arrays, and random access to it.

A compressed file is a valid VLSV file with every non-VDF array copied byte for byte, in the
original write order. Each of a compressed population's four VDF arrays is replaced, in its own
place, by one vdfzip array (see ``docs/format.md``):

=================  ==================  =====================================================
original           replaced by         content
=================  ==================  =====================================================
CELLSWITHBLOCKS    VDFZIP_INDEX        a directory of chunks of 64 cells, then each chunk's
                                       :data:`INDEX_DTYPE` rows as one zstd frame (format ≥ 4,
                                       :mod:`vdfzip.chunks`; before: one frame of all rows)
BLOCKSPERCELL      VDFZIP_MOMENTS      float64 (cells, 10): n, V, Pxx Pyy Pzz Pxy Pxz Pyz
BLOCKIDS           VDFZIP_HEADER       JSON text: versions, options, codecs, the original
                                       arrays' footer attributes (and before format 4 the
                                       index's and moments' checksums)
BLOCKVARIABLE      VDFZIP_RECORDS      per cell: block-structure bytes (with the content-block
                                       set in the restart profile), restoration multipliers
                                       (lossy cells, format ≥ 3), then codec payload
=================  ==================  =====================================================
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from . import __version__, blockset, chunks, content, distributed, integrity, vlsv
from .chunks import checksum
from .codecs import Codec, get_codec
from .errors import CorruptFileError, VdfzipError
from .physics import PRESSURE_COMPONENTS, Moments
from .reconstruct import lossless_cells, reconstruct
from .vlasiator import CellBatch, VelocityMesh, cell_ranges, parse_config, particle_mass, read_velocity_mesh, sparsity_threshold

#: Version 2 added the whole-file checksums (:mod:`vdfzip.integrity`), version 3 each lossy cell's
#: restoration multipliers (decoding applies them instead of solving for them), version 4 the
#: index and moments in chunks (:mod:`vdfzip.chunks`). Every reader reads every older version
#: (docs/format.md).
FORMAT_VERSION = 4
READABLE_FORMATS = (1, 2, 3, 4)
#: The format of a cell's index row and record (what a :class:`vdfzip.CompressedCells` blob
#: holds): version 3's, unchanged by version 4, which chunked how a file stores the index and moments.
RECORD_FORMAT = 3
REPLACEMENT = {
    "CELLSWITHBLOCKS": "VDFZIP_INDEX",
    "BLOCKSPERCELL": "VDFZIP_MOMENTS",
    "BLOCKIDS": "VDFZIP_HEADER",
    "BLOCKVARIABLE": "VDFZIP_RECORDS",
}
ORIGINAL = {v: k for k, v in REPLACEMENT.items()}
INDEX_DTYPE = np.dtype(
    [
        ("cell_id", "<u8"),
        ("blocks", "<u4"),
        ("structure_bytes", "<u4"),
        ("restoration_bytes", "<u2"),
        ("payload_bytes", "<u4"),
        ("codec", "u1"),
        ("crc32", "<u4"),
    ]
)
#: The index rows of formats 1 and 2: no restoration bytes.
LEGACY_INDEX_DTYPE = np.dtype([(name, INDEX_DTYPE[name]) for name in INDEX_DTYPE.names if name != "restoration_bytes"])
MOMENT_COLUMNS = 10


class UnsupportedFormatError(VdfzipError):
    """A compressed file written by a format version this vdfzip cannot read."""


def moments_to_columns(m: Moments) -> np.ndarray:
    """(cells, 10) float64: density, velocity, the six pressure components."""
    pressure = np.stack([m.pressure[:, a, b] for a, b in PRESSURE_COMPONENTS], axis=1)
    return np.column_stack([m.density, m.velocity, pressure])


def columns_to_moments(columns: np.ndarray, mass: float) -> Moments:
    """Inverse of :func:`moments_to_columns` (heat flux is not stored: zeros)."""
    pressure = np.empty((len(columns), 3, 3))
    for k, (a, b) in enumerate(PRESSURE_COMPONENTS):
        pressure[:, a, b] = pressure[:, b, a] = columns[:, 4 + k]
    return Moments(columns[:, 0].copy(), columns[:, 1:4].copy(), pressure, np.zeros((len(columns), 3)), mass)


def encode_structure(block_ids: np.ndarray, keep_order: bool, content_set: np.ndarray | None, mesh: VelocityMesh) -> bytes:
    """A cell's block-structure bytes: its block ids (their order only if ``keep_order``) and, in
    the restart profile, its content-block set (one flag per block, in ``block_ids``' order,
    which must be the decoded order: :func:`blockset.decoded_order`)."""
    section = None if content_set is None else content.encode(block_ids, content_set, mesh)
    return blockset.encode(block_ids, keep_order, section)


def decode_structure(structure: bytes, mesh: VelocityMesh) -> tuple[np.ndarray, np.ndarray | None]:
    """Block ids in the decoded order and the content-block mask (None without one) of
    :func:`encode_structure`'s bytes."""
    ids, section = blockset.decode(structure, mesh.block_count)
    return ids, None if section is None else content.decode(section, ids, mesh)


def record_sizes(index: np.ndarray) -> np.ndarray:
    """Bytes of every cell's record (structure, restoration multipliers, payload), as int64."""
    sizes = index["structure_bytes"].astype(np.int64) + index["payload_bytes"]
    return sizes + index["restoration_bytes"] if "restoration_bytes" in index.dtype.names else sizes


def _is_int(value) -> bool:
    """A JSON integer (JSON's true and false are Python ints too)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_float_dtype(value) -> bool:
    """A numpy dtype string of floats, the only values a population holds."""
    try:
        return isinstance(value, str) and np.dtype(value).kind == "f"
    except (TypeError, ValueError):
        return False


def _replaced_element(tag: str, entry) -> vlsv.Element | None:
    """The footer entry of a replaced array as the header stores it, or None if it is malformed."""
    if not isinstance(entry, dict) or not _is_int(entry.get("offset")) or entry["offset"] < 0:
        return None
    attrs = entry.get("attrs")
    if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
        return None
    element = vlsv.Element(ORIGINAL[tag], attrs, entry["offset"])
    return None if element.size_problem() else element


def _header_problem(header: dict) -> str | None:
    """What makes a parsed vdfzip header unusable, or None: each field the reader uses must be
    there with its type. Why: a header whose CRC matches may still come from a buggy or foreign
    writer, and its fields reached the reader's KeyErrors and TypeErrors unchecked."""
    codecs, checksums, replaces = header.get("codecs"), header.get("checksums"), header.get("replaces")
    if not isinstance(codecs, list) or not codecs or not all(
        isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("config"), dict) for c in codecs
    ):
        return "has no valid codec list"
    if header.get("format", 0) >= 4:
        chunk = header.get("index_chunk_cells")
        if not _is_int(chunk) or chunk < 1:
            return f"has an invalid index_chunk_cells {chunk!r}"
    elif not isinstance(checksums, dict) or not all(_is_int(checksums.get(k)) for k in ("index", "moments")):
        return "has no valid checksums"
    if not _is_float_dtype(header.get("dtype")):
        return f"has an invalid dtype {header.get('dtype')!r}"
    if not isinstance(replaces, dict) or set(replaces) != set(ORIGINAL) or any(
        _replaced_element(tag, entry) is None for tag, entry in replaces.items()
    ):
        return "does not describe the four replaced arrays"
    threshold = header.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        return f"has a non-numeric threshold {threshold!r}"
    if not isinstance(header.get("profile", {}), dict):
        return "has an invalid profile"
    return None


def is_compressed(file: vlsv.VlsvFile) -> bool:
    """True if vdfzip wrote ``file``: some population is stored by vdfzip, or (a file without VDF
    data, which vdfzip copies whole) the file ends in vdfzip's whole-file manifest."""
    return file.find("VDFZIP_HEADER") is not None or file.find(integrity.TAG) is not None


def compressed_population_names(file: vlsv.VlsvFile) -> list[str]:
    return [e.name for e in file.find_all("VDFZIP_HEADER")]


@dataclass(frozen=True)
class CellRecords:
    """Consecutive cells of a compressed population, as stored."""

    first: int
    cell_ids: np.ndarray
    offsets: np.ndarray  # block offsets, relative, len = cells + 1
    block_ids: np.ndarray
    payloads: list[bytes]
    restorations: list[bytes] | None  # per cell: its restoration multipliers (format ≥ 3), else None
    codecs: np.ndarray  # index into CompressedPopulation.codecs
    moments: Moments
    content_set: np.ndarray | None  # per block: has content (restart profile), else None


class RecordTable(ABC):
    """Random access to a population's compressed cells, and their decoding, wherever the
    records' bytes are held: subclasses set the attributes below and say where the bytes of a
    cell's record are (a file's ``VDFZIP_RECORDS``, a blob in memory), so a file and the runtime
    API read and decode through the same lines."""

    name: str
    index: np.ndarray  # one INDEX_DTYPE (or LEGACY_INDEX_DTYPE) row per cell
    moment_columns: np.ndarray  # (cells, MOMENT_COLUMNS)
    codecs: list[Codec]
    mesh: VelocityMesh
    mass: float
    threshold: float
    dtype: np.dtype
    stores_restorations: bool = True  # does each lossy cell carry its restoration multipliers (format ≥ 3)?

    @cached_property
    def record_offsets(self) -> np.ndarray:
        """Where each cell's record starts in the records' bytes (and where the last one ends)."""
        return np.concatenate([[0], np.cumsum(record_sizes(self.index))])

    @cached_property
    def block_offsets(self) -> np.ndarray:
        """Where each cell's blocks start among the population's blocks (and where the last end)."""
        return np.concatenate([[0], np.cumsum(self.index["blocks"], dtype=np.int64)])

    @abstractmethod
    def _record_bytes(self, cell: int) -> bytes:
        """The bytes of one cell's record, unchecked."""

    @abstractmethod
    def _where(self) -> str:
        """Where the records are, for error messages."""

    @property
    def cell_count(self) -> int:
        return len(self.index)

    @property
    def block_count(self) -> int:
        return int(self.block_offsets[-1])

    @property
    def cell_ids(self) -> np.ndarray:
        return self.index["cell_id"]

    @property
    def blocks_per_cell(self) -> np.ndarray:
        return self.index["blocks"]

    def codec_counts(self) -> dict[str, int]:
        """Cells stored by each codec of the chain, in the chain's order (zeros too)."""
        counts = np.bincount(self.index["codec"], minlength=len(self.codecs))
        return {codec.codec_id: int(n) for codec, n in zip(self.codecs, counts)}

    def record(self, cell: int) -> tuple[bytes, bytes, bytes]:
        """(block-structure bytes, restoration bytes, payload) of one cell, checked against its CRC
        (no restoration bytes before format 3)."""
        data = self._record_bytes(cell)
        if checksum(data) != int(self.index["crc32"][cell]):
            raise CorruptFileError(f"{self._where()}: cell {int(self.cell_ids[cell])} (#{cell}) fails its checksum")
        split = int(self.index["structure_bytes"][cell])
        payload = split + (int(self.index["restoration_bytes"][cell]) if self.stores_restorations else 0)
        return data[:split], data[split:payload], data[payload:]

    def block_ids(self, cell: int) -> np.ndarray:
        """A cell's block ids in the decoded order (without decoding its content-block set)."""
        structure, _, _ = self.record(cell)
        return self._counted(cell, blockset.decode(structure, self.mesh.block_count)[0])

    def _decode_structure(self, cell: int, structure: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """Block ids and, in the restart profile, the content-block mask of a cell."""
        ids, mask = decode_structure(structure, self.mesh)
        return self._counted(cell, ids), mask

    def _counted(self, cell: int, ids: np.ndarray) -> np.ndarray:
        """``ids``, if they are as many as the index says the cell has."""
        if len(ids) != self.index["blocks"][cell]:
            raise CorruptFileError(f"{self._where()}: cell {int(self.cell_ids[cell])} decodes to a wrong block count")
        return ids

    def cells(self, start: int, stop: int) -> CellRecords:
        """The stored records of cells ``[start, stop)``: block ids, payloads, codecs, moments."""
        ids, masks, payloads, restorations = [], [], [], []
        for cell in range(start, stop):
            structure, restoration, payload = self.record(cell)
            cell_ids, mask = self._decode_structure(cell, structure)
            ids.append(cell_ids)
            masks.append(mask)
            payloads.append(payload)
            restorations.append(restoration)
        with_content = [m for m in masks if m is not None]
        if with_content and len(with_content) != len(masks):
            raise CorruptFileError(f"{self._where()}: some cells lack their content-block set")
        offsets = self.block_offsets[start : stop + 1] - self.block_offsets[start]
        return CellRecords(
            first=start,
            cell_ids=self.cell_ids[start:stop],
            offsets=offsets,
            block_ids=np.concatenate(ids) if ids else np.zeros(0, np.uint32),
            payloads=payloads,
            restorations=restorations if self.stores_restorations else None,
            codecs=self.index["codec"][start:stop],
            moments=columns_to_moments(self.moment_columns[start:stop], self.mass),
            content_set=np.concatenate(with_content) if with_content else None,
        )

    def batches(self, max_blocks: int = 1 << 20, max_cells: int | None = None) -> list[tuple[int, int]]:
        """``[start, stop)`` ranges of whole cells, bounded as in :meth:`Population.batches`."""
        return cell_ranges(self.block_offsets, max_blocks, max_cells)

    def decoded(self, start: int, stop: int) -> CellBatch:
        """Decoded cells ``[start, stop)``, as ``vdfzip decode`` writes them; raises if a cell's
        moments or content-block set do not come back as stored (a corrupted record)."""
        records = self.cells(start, stop)
        batch = CellBatch(self.name, start, records.cell_ids, records.offsets, records.block_ids, np.zeros((0, 0)))
        result = reconstruct(batch, records.payloads, records.codecs, self.codecs, records.moments, self.mesh,
                             self.dtype, records.content_set, self.threshold, records.restorations)
        for held, what in ((result.moments_restored, "moments not restored"),
                           (result.content_kept, "content-block set not restored")):
            if not held.all():
                raise VdfzipError(f"{self._where()}: {what} for cells {records.cell_ids[~held].tolist()}")
        return replace(batch, values=result.values)


class _WholeIndex:
    """The index and moments of formats 1–3: one zstd frame and one array, both read and checked
    whole (a unit of a share is one cell)."""

    unit_cells = 1

    def __init__(self, index: np.ndarray, moments: np.ndarray):
        self.units = len(index)
        self._index, self._moments = index, moments
        self._records = np.concatenate([[0], np.cumsum(record_sizes(index))])
        self._blocks = np.concatenate([[0], np.cumsum(index["blocks"], dtype=np.int64)])

    @property
    def ends(self) -> tuple[int, int]:
        """(record bytes, blocks) the whole index describes."""
        return int(self._records[-1]), int(self._blocks[-1])

    def unit_blocks(self, start: int, stop: int) -> np.ndarray:
        return self._index["blocks"][start:stop].astype(np.int64)

    def read(self, start: int, stop: int) -> chunks.Rows:
        return chunks.Rows(self._index[start:stop], self._moments[start:stop],
                           (int(self._records[start]), int(self._records[stop])),
                           (int(self._blocks[start]), int(self._blocks[stop])))


class CompressedPopulation(RecordTable):
    """Random access to the cells of one population stored in a vdfzip file: all of them, or a
    window of them (the table's cells are the window's, ``first_cell`` on)."""

    def __init__(self, file: vlsv.VlsvFile, name: str, comm=None, cells: tuple[int, int] | None = None):
        """Read the population's index and moments: of every cell; with ``comm`` (an MPI job's
        ranks, collectively) of this rank's share, balanced by blocks; with ``cells`` of the
        cells ``[start, stop)``. Format 4 reads only those cells' chunks (:mod:`vdfzip.chunks`)."""
        self.file, self.name = file, name
        self.header = self._read_header()
        self.codecs: list[Codec] = self._read_codecs()
        self._records = file.element("VDFZIP_RECORDS", name=name)
        self._check_replaced()
        source = self._index_source()
        unit = source.unit_cells
        if cells is None:
            share = distributed.share(comm, source.units, source.unit_blocks)
            start, stop = share.start, share.stop
        else:
            if not 0 <= cells[0] <= cells[1] <= self.total_cells:
                raise VdfzipError(f"{self._where()}: has {self.total_cells} cells, not the cells [{cells[0]}, {cells[1]})")
            start, stop = cells[0] // unit, -(-cells[1] // unit)
        rows = distributed.agreed(comm, lambda: self._checked_rows(source, start, stop))
        first = min(start * unit, self.total_cells)
        keep = slice(0, len(rows.index)) if cells is None else slice(cells[0] - first, cells[1] - first)
        #: the first cell of the window, and where its record and its blocks start in the population's
        self.first_cell = first + keep.start
        self._first_record = rows.records[0] + int(record_sizes(rows.index[: keep.start]).sum())
        self.first_block = rows.blocks[0] + int(rows.index["blocks"][: keep.start].sum(dtype=np.int64))
        self.index, self.moment_columns = rows.index[keep], rows.moments[keep]
        config = file.find("CONFIG")
        config = parse_config(file.read_text(config)) if config is not None else None
        self.mass = particle_mass(config, name)[0]
        # the threshold the encoder used (files written before it was stored: the file's own)
        self.threshold = self.header.get("threshold") or sparsity_threshold(file, config, name, warn=False)[0]

    def _index_source(self) -> _WholeIndex | chunks.ChunkedIndex:
        """Where the index and moment rows are read from, by format."""
        moments = self.file.element("VDFZIP_MOMENTS", name=self.name)
        if self.header["format"] >= 4:
            if moments.vectorsize != MOMENT_COLUMNS or moments.arraysize != self.total_cells or moments.datasize != 8:
                raise CorruptFileError(f"{self._where()}: VDFZIP_MOMENTS has {moments.arraysize} rows of "
                                       f"{moments.vectorsize}, not one row of {MOMENT_COLUMNS} per cell")
            return chunks.ChunkedIndex(self.file, self.file.element("VDFZIP_INDEX", name=self.name), moments,
                                       self.total_cells, self.header["index_chunk_cells"], INDEX_DTYPE,
                                       self._records.arraysize, self.total_blocks, self._where())
        index = self._read_index()
        values = self.file.read(moments)
        self._verify(values, "moments", "VDFZIP_MOMENTS")
        if values.shape != (len(index), MOMENT_COLUMNS):
            raise CorruptFileError(f"{self._where()}: VDFZIP_MOMENTS has shape {values.shape}, not one row per cell")
        if len(index) != self.total_cells:
            raise CorruptFileError(f"{self._where()}: the header gives the original CELLSWITHBLOCKS "
                                   f"{self.total_cells} rows, the index describes {len(index)}")
        whole = _WholeIndex(index, values)
        if whole.ends[0] != self._records.arraysize:
            raise CorruptFileError(f"{self._where()}: VDFZIP_RECORDS holds {self._records.arraysize} bytes, "
                                   f"the index describes {whole.ends[0]}")
        if whole.ends[1] != self.total_blocks:
            raise CorruptFileError(f"{self._where()}: the header gives the original BLOCKIDS {self.total_blocks} "
                                   f"rows, the index describes {whole.ends[1]}")
        return whole

    def _checked_rows(self, source: _WholeIndex | chunks.ChunkedIndex, start: int, stop: int) -> chunks.Rows:
        """Units ``[start, stop)`` of the index and moments: they must describe exactly the records
        and blocks between their ends."""
        rows = source.read(start, stop)
        blocks, records = int(rows.index["blocks"].sum(dtype=np.int64)), int(record_sizes(rows.index).sum())
        if blocks != rows.blocks[1] - rows.blocks[0]:
            raise CorruptFileError(f"{self._where()}: the index describes {blocks} blocks where "
                                   f"{rows.blocks[1] - rows.blocks[0]} are stored")
        if records != rows.records[1] - rows.records[0]:
            raise CorruptFileError(f"{self._where()}: VDFZIP_RECORDS holds {rows.records[1] - rows.records[0]} bytes "
                                   f"there, the index describes {records}")
        if len(rows.index) and int(rows.index["codec"].max()) >= len(self.codecs):  # why: such cells were never decoded
            raise CorruptFileError(f"{self._where()}: VDFZIP_INDEX names a codec the header does not list")
        return rows

    @property
    def lossy_blocks(self) -> int:
        """Blocks of the window's cells that a lossy codec stores: the decoding work a worker
        process can speed up (a lossless cell decodes about as fast as a worker hands it over)."""
        return int(self.index["blocks"][~lossless_cells(self.index["codec"], self.codecs)].sum(dtype=np.int64))

    @property
    def total_cells(self) -> int:
        """Cells of the population (not just of the window)."""
        return self.original["CELLSWITHBLOCKS"].arraysize

    @property
    def total_blocks(self) -> int:
        """Blocks of the population (not just of the window)."""
        return self.original["BLOCKIDS"].arraysize

    @property
    def profile(self) -> dict:
        """``{"name", "tail_tol"}`` of the profile the population was encoded with."""
        return self.header.get("profile", {"name": "core", "tail_tol": None})

    def _where(self) -> str:
        return f"{self.file.path}: population {self.name}"

    def _record_bytes(self, cell: int) -> bytes:
        start, stop = (self._first_record + int(self.record_offsets[c]) for c in (cell, cell + 1))
        return self.file.read_rows(self._records, start, stop).tobytes()

    def _read_header(self) -> dict:
        element = self.file.element("VDFZIP_HEADER", name=self.name)
        text = self.file.read(element).tobytes()
        if str(checksum(text)) != element.attrs.get("crc32"):
            raise CorruptFileError(f"{self._where()}: the vdfzip header fails its checksum")
        try:
            header = json.loads(text)
        except ValueError as exc:  # why: also UnicodeDecodeError, a ValueError
            raise CorruptFileError(f"{self._where()}: the vdfzip header is not JSON: {exc}") from exc
        if not isinstance(header, dict):
            raise CorruptFileError(f"{self._where()}: the vdfzip header is not a JSON object")
        if header.get("format") not in READABLE_FORMATS:
            raise UnsupportedFormatError(
                f"{self._where()}: vdfzip format version {header.get('format')} (written by vdfzip "
                f"{header.get('vdfzip')}); this vdfzip {__version__} reads versions {', '.join(map(str, READABLE_FORMATS))}"
            )
        if header["format"] == 1 and header.get("block_order") == "sorted":
            raise UnsupportedFormatError(
                f"{self._where()}: written by vdfzip {header.get('vdfzip')} with --block-order sorted, which stored "
                "values and content flags in the wrong block order; it cannot be decoded correctly: encode the "
                "original again"
            )
        problem = _header_problem(header)
        if problem:
            raise CorruptFileError(f"{self._where()}: the vdfzip header {problem}")
        return header

    def _read_codecs(self) -> list[Codec]:
        """The header's codec chain. Why: a config its codec rejects (unknown key, wrong type or
        value) raised the constructor's TypeError or ValueError."""
        try:
            return [get_codec(c["id"], **c["config"]) for c in self.header["codecs"]]
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{self._where()}: the vdfzip header has a codec config it rejects: {exc}") from exc

    def _verify(self, array: np.ndarray, key: str, tag: str) -> None:
        if checksum(array) != self.header["checksums"][key]:
            raise CorruptFileError(f"{self._where()}: {tag} fails its checksum")

    def _read_index(self) -> np.ndarray:
        """The index rows of formats 1–3. Their count is bounded before decompressing: every cell's
        record holds at least the two header bytes of its block structure."""
        packed = self.file.read("VDFZIP_INDEX", name=self.name)
        self._verify(packed, "index", "VDFZIP_INDEX")
        limit = self._records.arraysize // 2 * INDEX_DTYPE.itemsize
        raw = blockset.bounded_decompress(packed.tobytes(), limit, CorruptFileError, f"{self._where()}: VDFZIP_INDEX")
        dtype = self.index_dtype
        if len(raw) % dtype.itemsize:
            raise CorruptFileError(f"{self._where()}: VDFZIP_INDEX holds {len(raw)} bytes, not whole rows")
        return np.frombuffer(raw, dtype)

    def _check_replaced(self) -> None:
        """The replaced arrays must have the sizes decoding writes: one row per cell, one per block,
        one row of wid³ values per block. Why: the writer raised a ValueError on any other."""
        rows = {"CELLSWITHBLOCKS": (self.total_cells, 1), "BLOCKSPERCELL": (self.total_cells, 1),
                "BLOCKIDS": (self.total_blocks, 1), "BLOCKVARIABLE": (self.total_blocks, self.mesh.cells_per_block)}
        for tag, element in self.original.items():
            if (element.arraysize, element.vectorsize) != rows[tag]:
                raise CorruptFileError(
                    f"{self._where()}: the header gives the original {tag} {element.arraysize} rows of "
                    f"{element.vectorsize}, where CELLSWITHBLOCKS and BLOCKIDS give {rows[tag][0]} rows of {rows[tag][1]}"
                )

    @property
    def index_dtype(self) -> np.dtype:
        return LEGACY_INDEX_DTYPE if self.header["format"] < 3 else INDEX_DTYPE

    @property
    def stores_restorations(self) -> bool:
        """Does each lossy cell carry its restoration multipliers (format ≥ 3)?"""
        return self.header["format"] >= 3

    @cached_property
    def mesh(self) -> VelocityMesh:
        return read_velocity_mesh(self.file, self.name)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.header["dtype"])

    @property
    def original(self) -> dict[str, vlsv.Element]:
        """The replaced arrays' footer entries (offsets as in the original file), by original tag."""
        return {ORIGINAL[tag]: _replaced_element(tag, entry) for tag, entry in self.header["replaces"].items()}

    @property
    def compressed_bytes(self) -> int:
        """Bytes the file spends on this population's VDF: the four vdfzip arrays."""
        return sum(self.file.element(tag, name=self.name).nbytes for tag in ORIGINAL)
