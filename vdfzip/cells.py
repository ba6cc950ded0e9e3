"""Compressed cells in memory: what :class:`vdfzip.Compressor` returns, a self-contained blob.

A :class:`CompressedCells` holds a batch of one population's cells exactly as a compressed file
stores them (index rows, stored moments, one record per cell: :mod:`vdfzip.layout`) plus what a
file keeps in its header and mesh arrays (the velocity mesh, threshold, mass, dtype, codec chain
and profile), so it decodes on its own, in memory, through the file's own decoding lines
(:class:`vdfzip.layout.RecordTable`), and :func:`vdfzip.write_compressed` writes it into a file
``vdfzip decode`` reads.

Blob layout (:meth:`CompressedCells.to_bytes`, little endian): the magic ``VDFZCELL``; u2 blob
version; u4 header length; the header (JSON); the index rows; the moments (float64, cells × 10);
the per-cell rel L2 (float64); the records; u4 CRC-32 of every byte before it.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from . import __version__, layout
from .codecs import get_codec
from .errors import CorruptFileError
from .physics import Moments
from .vlasiator import CellBatch, Species, VelocityMesh

MAGIC = b"VDFZCELL"
BLOB_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_CRC = struct.Struct("<I")


class CorruptBlobError(CorruptFileError):
    """Bytes that are not an intact :class:`CompressedCells` blob."""


@dataclass(frozen=True, eq=False)
class CompressedCells(layout.RecordTable):
    """A batch of one population's cells, compressed.

    ``index``: one :data:`vdfzip.layout.INDEX_DTYPE` row per cell (cell id, block count, record
    part sizes, codec, CRC); ``moment_columns``: the stored moments (cells × 10: n, V, the six
    pressure components); ``records``: the cells' records back to back; ``errors``: each cell's
    rel L2 after decoding, as the encoder measured it; ``settings``: the codec chain, profile,
    tolerance and block order (:meth:`vdfzip.engine.Settings.header`); ``first``: the position of
    the first cell in its file or submission; ``seconds``: the encoding's wall time;
    ``fit_steps``: the neural fits' training steps, summed over cells.
    """

    species: Species
    settings: dict
    index: np.ndarray
    moment_columns: np.ndarray
    records: bytes
    errors: np.ndarray
    first: int = 0
    seconds: float = 0.0
    fit_steps: int = 0

    def __post_init__(self):
        if len(self.index) != len(self.moment_columns) or len(self.index) != len(self.errors):
            raise CorruptBlobError(f"{len(self.index)} index rows, {len(self.moment_columns)} moment rows and "
                                   f"{len(self.errors)} errors: not one of each per cell")
        if self.record_offsets[-1] != len(self.records):
            raise CorruptBlobError(f"the index describes {self.record_offsets[-1]} bytes of records, "
                                   f"there are {len(self.records)}")
        try:
            codecs = [get_codec(c["id"], **c["config"]) for c in self.settings["codecs"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptBlobError(f"the codec chain cannot be rebuilt: {exc}") from None
        if len(self.index) and int(self.index["codec"].max()) >= len(codecs):
            raise CorruptBlobError("an index row names a codec the chain does not list")
        object.__setattr__(self, "codecs", codecs)

    # what layout.RecordTable reads
    name = property(lambda self: self.species.name)
    mesh = property(lambda self: self.species.mesh)
    mass = property(lambda self: self.species.mass)
    threshold = property(lambda self: self.species.threshold)
    dtype = property(lambda self: self.species.dtype)

    def _record_bytes(self, cell: int) -> bytes:
        return self.records[self.record_offsets[cell] : self.record_offsets[cell + 1]]

    def _where(self) -> str:
        return f"compressed cells of population {self.name}"

    def __len__(self) -> int:
        return self.cell_count

    @property
    def methods(self) -> list[str]:
        """Per cell: the id of the codec that stores it."""
        ids = [c["id"] for c in self.settings["codecs"]]
        return [ids[k] for k in self.index["codec"]]

    @property
    def moments(self) -> Moments:
        """The stored moments of every cell (density, bulk velocity, pressure tensor): what the
        decoded values hold to 1e-6."""
        return layout.columns_to_moments(self.moment_columns, self.mass)

    @property
    def input_bytes(self) -> int:
        """What Vlasiator's restart spends on these cells: a uint64 cell id and a uint32 block
        count per cell, a uint32 id and wid³ values per block."""
        return self.cell_count * 12 + self.block_count * (4 + self.mesh.cells_per_block * self.dtype.itemsize)

    def summary(self) -> dict:
        """Cells, blocks, bytes in and out (the whole blob), ratio, cells per codec, rel L2
        median / p95 / max, seconds, neural fit steps."""
        output = len(self.to_bytes())
        percentiles = np.percentile(self.errors, [50, 95, 100]) if len(self.errors) else [0.0] * 3
        return {"cells": self.cell_count, "blocks": self.block_count, "input_vdf_bytes": self.input_bytes,
                "output_bytes": output, "ratio": self.input_bytes / output, "methods": dict(Counter(self.methods)),
                "rel_l2": dict(zip(("median", "p95", "max"), map(float, percentiles))), "seconds": self.seconds,
                "fit_steps": self.fit_steps}

    def decode(self, device: str = "cpu") -> CellBatch:
        """The decoded cells (``cell_ids``, block ``offsets``, ``block_ids``, ``values`` in the
        stored dtype), as ``vdfzip decode`` writes them: every cell's blocks in the stored order
        (sorted by id unless encoded with ``block_order="keep"``). ``device="cuda"`` returns the
        values as a cupy array. Blocks until done."""
        batch = self.decoded(0, self.cell_count)
        if device == "cuda":
            import cupy

            return CellBatch(batch.population, batch.first, batch.cell_ids, batch.offsets, batch.block_ids,
                             cupy.asarray(batch.values))
        if device != "cpu":
            raise ValueError(f"device must be cpu or cuda, not {device!r}")
        return batch

    # ------------------------------------------------------------ the blob

    def _header(self) -> bytes:
        species = self.species
        return json.dumps({
            "format": layout.RECORD_FORMAT, "vdfzip": __version__, "population": species.name,
            "mesh": asdict(species.mesh), "threshold": species.threshold, "mass": species.mass,
            "dtype": species.dtype.str, "settings": self.settings, "first": self.first, "seconds": self.seconds,
            "fit_steps": self.fit_steps,
            "cells": self.cell_count, "record_bytes": len(self.records),
        }, sort_keys=True).encode()

    def to_bytes(self) -> bytes:
        """The self-contained, versioned, checksummed blob of these cells (:meth:`from_bytes`)."""
        header = self._header()
        body = b"".join([_PREFIX.pack(MAGIC, BLOB_VERSION, len(header)), header, self.index.astype(layout.INDEX_DTYPE).tobytes(),
                         self.moment_columns.astype("<f8").tobytes(), self.errors.astype("<f8").tobytes(), self.records])
        return body + _CRC.pack(layout.checksum(body))

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> CompressedCells:
        """The cells of a :meth:`to_bytes` blob; :class:`CorruptBlobError` if any byte differs,
        :class:`vdfzip.layout.UnsupportedFormatError` for a blob of another version."""
        data = bytes(data)
        if len(data) < _PREFIX.size + _CRC.size or data[:8] != MAGIC:
            raise CorruptBlobError("not a vdfzip compressed-cells blob (no VDFZCELL magic)")
        _, version, header_size = _PREFIX.unpack_from(data)
        if version != BLOB_VERSION:
            raise layout.UnsupportedFormatError(f"compressed-cells blob version {version}; this vdfzip {__version__} "
                                                f"reads version {BLOB_VERSION}")
        if layout.checksum(data[: -_CRC.size]) != _CRC.unpack_from(data, len(data) - _CRC.size)[0]:
            raise CorruptBlobError("the compressed-cells blob fails its checksum")
        try:
            header = json.loads(data[_PREFIX.size : _PREFIX.size + header_size])
            cells, records = int(header["cells"]), int(header["record_bytes"])
            species = Species(header["population"], _mesh(header["mesh"]), float(header["threshold"]),
                              float(header["mass"]), np.dtype(header["dtype"]))
            sections = _split(data, _PREFIX.size + header_size,
                              [cells * layout.INDEX_DTYPE.itemsize, cells * 80, cells * 8, records])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptBlobError(f"the compressed-cells header does not parse: {exc}") from None
        if header.get("format") != layout.RECORD_FORMAT:
            raise layout.UnsupportedFormatError(f"compressed cells of record format {header.get('format')}; this "
                                                f"vdfzip reads {layout.RECORD_FORMAT}")
        index = np.frombuffer(sections[0], layout.INDEX_DTYPE)
        moments = np.frombuffer(sections[1], "<f8").reshape(cells, layout.MOMENT_COLUMNS)
        return cls(species, header["settings"], index, moments, sections[3], np.frombuffer(sections[2], "<f8"),
                   int(header["first"]), float(header["seconds"]), int(header["fit_steps"]))


def _mesh(fields: dict) -> VelocityMesh:
    mesh = VelocityMesh(tuple(map(int, fields["nblocks"])), int(fields["wid"]), tuple(map(float, fields["vmin"])),
                        tuple(map(float, fields["dv"])))
    if len(mesh.nblocks) != 3 or len(mesh.vmin) != 3 or len(mesh.dv) != 3 or min(mesh.nblocks) < 1 or mesh.wid < 1:
        raise ValueError(f"a malformed velocity mesh {fields}")
    return mesh


def _split(data: bytes, start: int, sizes: list[int]) -> list[bytes]:
    """Consecutive sections of ``data`` from ``start``, which must end just before the CRC."""
    sections = []
    for size in sizes:
        sections.append(data[start : start + size])
        start += size
    if start != len(data) - _CRC.size or min(sizes) < 0:
        raise ValueError("the sections do not add up to the blob's size")
    return sections
