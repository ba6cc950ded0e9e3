"""The Vlasiator view of a VLSV file: populations, velocity meshes, cells and their blocks.

Layer 2 of vdfzip. Built on :mod:`vdfzip.vlsv`; reads only the small per-cell arrays when a
file is opened and the block arrays of the cells that are asked for.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import chunks, distributed, vlsv
from .errors import AlreadyCompressedError, InconsistentPopulationError, MissingArrayError

PROTON_MASS = 1.67262158e-27  # kg, Vlasiator's physicalconstants::MASS_PROTON
ELECTRON_MASS = 9.10938188e-31  # kg, Vlasiator's physicalconstants::MASS_ELECTRON
DEFAULT_SPARSITY_THRESHOLD = 1e-15  # Vlasiator's default [<pop>_sparse] minValue
_MASS_UNITS = {"PROTON": PROTON_MASS, "ELECTRON": ELECTRON_MASS}
VDF_TAGS = ("CELLSWITHBLOCKS", "BLOCKSPERCELL", "BLOCKIDS", "BLOCKVARIABLE")
_BULK_THRESHOLD_VARIABLES = ("{pop}/vg_effectivesparsitythreshold", "{pop}/EffectiveSparsityThreshold")


class SparsityThresholdWarning(UserWarning):
    """The file does not say its sparsity threshold; Vlasiator's default is assumed."""


def parse_config(text: str) -> dict[str, dict[str, list[str]]]:
    """A Vlasiator .cfg text as ``{section: {key: [values...]}}`` (keys may repeat).

    Keys before the first ``[section]`` are in section ``""``; ``#`` starts a comment.
    """
    config: dict[str, dict[str, list[str]]] = {"": {}}
    section = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        header = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", line)
        if header:
            section = header.group(1)
            config.setdefault(section, {})
        elif "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            config[section].setdefault(key, []).append(value)
    return config


@dataclass(frozen=True)
class VelocityMesh:
    """A population's uniform velocity mesh: ``nblocks`` blocks of ``wid``³ cells of size ``dv``."""

    nblocks: tuple[int, int, int]
    wid: int
    vmin: tuple[float, float, float]
    dv: tuple[float, float, float]

    @property
    def block_count(self) -> int:
        return self.nblocks[0] * self.nblocks[1] * self.nblocks[2]

    @property
    def cells_per_block(self) -> int:
        return self.wid**3

    @property
    def vmax(self) -> tuple[float, float, float]:
        return tuple(lo + n * self.wid * d for lo, n, d in zip(self.vmin, self.nblocks, self.dv))

    @property
    def cell_volume(self) -> float:
        """dvx·dvy·dvz in (m/s)³: the weight of one value in a velocity integral."""
        return self.dv[0] * self.dv[1] * self.dv[2]


@dataclass(frozen=True)
class Species:
    """What encoding and decoding know of a population besides its cells: its name, velocity
    mesh, sparsity threshold, particle mass (kg) and the dtype its values are stored in."""

    name: str
    mesh: VelocityMesh
    threshold: float
    mass: float
    dtype: np.dtype


@dataclass(frozen=True)
class CellBatch:
    """Consecutive stored cells of one population with their blocks.

    ``block_ids[offsets[i]:offsets[i+1]]`` and the same rows of ``values`` belong to cell
    ``cell_ids[i]``; ``first`` is the index of the first cell in storage order.
    """

    population: str
    first: int
    cell_ids: np.ndarray
    offsets: np.ndarray
    block_ids: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.cell_ids)

    def cell(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ids and values of the batch's ``i``-th cell."""
        rows = slice(self.offsets[i], self.offsets[i + 1])
        return self.block_ids[rows], self.values[rows]


def particle_mass(config: dict | None, name: str) -> tuple[float, str]:
    """(mass in kg, source) of population ``name``: ``[<pop>_properties]`` of the config, else a proton."""
    properties = (config or {}).get(f"{name}_properties", {})
    try:
        return float(properties["mass"][-1]) * _MASS_UNITS[properties.get("mass_units", ["PROTON"])[-1]], "config"
    except (KeyError, ValueError):
        return PROTON_MASS, "default"


def sparsity_threshold(file: vlsv.VlsvFile, config: dict | None, name: str, warn: bool = True) -> tuple[float, str]:
    """(threshold, source) of population ``name``: the config's ``[<pop>_sparse] minValue``, else
    the smallest positive per-cell effective threshold of a bulk file, else Vlasiator's default
    (with a :class:`SparsityThresholdWarning` if ``warn``)."""
    sparse = (config or {}).get(f"{name}_sparse", {})
    if "minValue" in sparse:
        return float(sparse["minValue"][-1]), "config"
    for pattern in _BULK_THRESHOLD_VARIABLES:
        element = file.find("VARIABLE", name=pattern.format(pop=name))
        if element is not None:
            values = np.asarray(file.read(element), dtype=np.float64).ravel()
            values = values[values > 0]
            if values.size:
                return float(values.min()), "bulk variable"
    if warn:
        warnings.warn(
            f"{file.path}: no sparsity threshold for {name} in the file; "
            f"assuming Vlasiator's default {DEFAULT_SPARSITY_THRESHOLD:g}",
            SparsityThresholdWarning,
            stacklevel=4,
        )
    return DEFAULT_SPARSITY_THRESHOLD, "default"


def read_velocity_mesh(file: vlsv.VlsvFile, name: str) -> VelocityMesh:
    """The velocity mesh of population ``name`` from its ``MESH_BBOX`` and ``MESH_NODE_CRDS_*``."""
    bbox = [int(x) for x in file.read("MESH_BBOX", mesh=name)]
    if len(bbox) != 6 or not bbox[3] == bbox[4] == bbox[5] or min(bbox) < 1:
        raise InconsistentPopulationError(f"{file.path}: MESH_BBOX of {name} is {bbox}")
    nblocks, wid = tuple(bbox[:3]), bbox[3]
    vmin, dv = [], []
    for axis, n in zip("XYZ", nblocks):
        nodes = file.read(f"MESH_NODE_CRDS_{axis}", mesh=name)
        if len(nodes) != n * wid + 1:
            raise InconsistentPopulationError(
                f"{file.path}: MESH_NODE_CRDS_{axis} of {name} has {len(nodes)} nodes, "
                f"expected {n * wid + 1} for {n} blocks of width {wid}"
            )
        vmin.append(float(nodes[0]))
        dv.append(float(nodes[-1] - nodes[0]) / (n * wid))
    return VelocityMesh(nblocks, wid, tuple(vmin), tuple(dv))


class Population:
    """One particle population's VDF arrays: per stored cell, its block ids and block values."""

    def __init__(self, file: vlsv.VlsvFile, name: str, config: dict | None, comm=None):
        self.name = name
        self._file = file
        self._check_not_compressed()
        self._ids = file.element("BLOCKIDS", name=name)
        self._values = file.element("BLOCKVARIABLE", name=name)
        self._cell_ids = file.element("CELLSWITHBLOCKS", name=name)
        self._blocks_per_cell = file.element("BLOCKSPERCELL", name=name)
        self._check_cell_counts()
        share = distributed.share(comm, chunks.chunk_count(self.cell_count), self._chunk_blocks)
        #: ``[start, stop)``: the cells this process reads and encodes: all of them, or under MPI
        #: this rank's share (whole chunks of the compressed file's index, balanced by blocks)
        self.window = tuple(min(k * chunks.CHUNK_CELLS, self.cell_count) for k in (share.start, share.stop))
        self.cell_ids, self.blocks_per_cell = distributed.agreed(
            comm, lambda: (file.read_rows(self._cell_ids, *self.window), file.read_rows(self._blocks_per_cell, *self.window)))
        #: where each cell of the window starts among the population's blocks (and the last ends)
        self.offsets = share.blocks_before + np.concatenate([[0], np.cumsum(self.blocks_per_cell, dtype=np.int64)])
        self.mesh = self._read_mesh()
        self._check_consistent(share.blocks)
        self.mass, self.mass_source = particle_mass(config, name)
        self.threshold, self.threshold_source = sparsity_threshold(file, config, name, warn=self.block_count > 0)

    def _chunk_blocks(self, start: int, stop: int) -> np.ndarray:
        """Blocks of the cell chunks ``[start, stop)``: what the ranks' shares balance."""
        first, last = (min(k * chunks.CHUNK_CELLS, self.cell_count) for k in (start, stop))
        blocks = self._file.read_rows(self._blocks_per_cell, first, last).astype(np.int64)
        return np.add.reduceat(blocks, np.arange(0, len(blocks), chunks.CHUNK_CELLS)) if len(blocks) else blocks

    def __repr__(self) -> str:
        return f"Population({self.name!r}, cells={self.cell_count}, blocks={self.block_count})"

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the block values (float32 by default, float64 in -DDPF builds)."""
        return self._values.dtype

    @property
    def cell_count(self) -> int:
        """Cells of the population (not just of the window)."""
        return self._cell_ids.arraysize

    @property
    def block_count(self) -> int:
        return self._ids.arraysize

    @property
    def species(self) -> Species:
        return Species(self.name, self.mesh, self.threshold, self.mass, self.dtype)

    def vdf_elements(self) -> dict[str, vlsv.Element]:
        """This population's four VDF arrays, by tag."""
        return {tag: self._file.element(tag, name=self.name) for tag in VDF_TAGS}

    @property
    def vdf_bytes(self) -> int:
        """Bytes of this population's four VDF arrays in the file."""
        return sum(e.nbytes for e in self.vdf_elements().values())

    def _check_not_compressed(self) -> None:
        values = self._file.find("BLOCKVARIABLE", name=self.name)
        if values is not None and "compression" in values.attrs:
            raise AlreadyCompressedError(
                f"{self._file.path}: population {self.name} is already compressed "
                f"(compression={values.attrs['compression']!r}); vdfzip needs plain block values"
            )
        if values is not None and self._file.find("BLOCKIDS", name=self.name) is None:
            raise AlreadyCompressedError(
                f"{self._file.path}: population {self.name} has BLOCKVARIABLE but no BLOCKIDS: "
                "not plain VDF data (compressed by another tool?)"
            )

    def _read_mesh(self) -> VelocityMesh | None:
        if self._file.find("MESH_BBOX", mesh=self.name) is None:
            if self.block_count:
                raise InconsistentPopulationError(f"{self._file.path}: population {self.name} has no MESH_BBOX")
            return None
        return read_velocity_mesh(self._file, self.name)

    def _check_cell_counts(self) -> None:
        if self._cell_ids.arraysize != self._blocks_per_cell.arraysize:
            raise InconsistentPopulationError(
                f"{self._file.path}: population {self.name}: {self._cell_ids.arraysize} CELLSWITHBLOCKS but "
                f"{self._blocks_per_cell.arraysize} BLOCKSPERCELL"
            )

    def _check_consistent(self, total: int) -> None:
        where = f"{self._file.path}: population {self.name}"
        if total != self._ids.arraysize or total != self._values.arraysize:
            raise InconsistentPopulationError(
                f"{where}: BLOCKSPERCELL sums to {total} blocks but BLOCKIDS has {self._ids.arraysize} "
                f"and BLOCKVARIABLE {self._values.arraysize}"
            )
        if self.mesh is not None and self._values.vectorsize != self.mesh.cells_per_block:
            raise InconsistentPopulationError(
                f"{where}: BLOCKVARIABLE has vectorsize {self._values.vectorsize}, "
                f"but the mesh has {self.mesh.cells_per_block} cells per block"
            )
        if self._ids.datatype != "uint" or self._values.datatype != "float":
            raise InconsistentPopulationError(f"{where}: BLOCKIDS must be uint and BLOCKVARIABLE float")

    def cells(self, start: int, stop: int) -> CellBatch:
        """Cells ``[start, stop)`` (of the window) in storage order, their blocks read from the file on demand."""
        first, last = self.window
        if not first <= start <= stop <= last:
            raise IndexError(f"cells [{start}, {stop}) outside the cells [{first}, {last}) of {self.name} read here")
        offsets = self.offsets[start - first : stop - first + 1]
        first_row, last_row = int(offsets[0]), int(offsets[-1])
        block_ids = self._file.read_rows(self._ids, first_row, last_row)
        if block_ids.size and self.mesh is not None and int(block_ids.max()) >= self.mesh.block_count:
            raise InconsistentPopulationError(
                f"{self._file.path}: population {self.name} has block id {int(block_ids.max())} "
                f"outside its {self.mesh.block_count}-block velocity mesh"
            )
        return CellBatch(
            population=self.name,
            first=start,
            cell_ids=self.cell_ids[start - first : stop - first],
            offsets=offsets - first_row,
            block_ids=block_ids,
            values=self._file.read_rows(self._values, first_row, last_row),
        )

    def cell(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ids and block values (rows of ``wid``³) of the stored cell at ``index``."""
        return self.cells(index, index + 1).cell(0)

    def batches(self, max_blocks: int = 1 << 20, max_cells: int | None = None) -> Iterator[CellBatch]:
        """Consecutive batches of the window's whole cells, each at most ``max_blocks`` blocks
        (unless one cell alone is larger) and ``max_cells`` cells, so memory stays bounded for
        any file size."""
        for start, end in self.batch_ranges(max_blocks, max_cells):
            yield self.cells(start, end)

    def batch_ranges(self, max_blocks: int = 1 << 20, max_cells: int | None = None) -> list[tuple[int, int]]:
        """The ``[start, stop)`` cell ranges of :meth:`batches`."""
        first = self.window[0]
        return [(first + a, first + b) for a, b in cell_ranges(self.offsets, max_blocks, max_cells)]


def cell_ranges(offsets: np.ndarray, max_blocks: int, max_cells: int | None = None) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive cells (block offsets ``offsets``, length cells + 1)
    of at most ``max_blocks`` blocks (or one cell) and ``max_cells`` cells."""
    cells, ranges, start = len(offsets) - 1, [], 0
    while start < cells:
        stop = int(np.searchsorted(offsets, offsets[start] + max_blocks, side="right")) - 1
        stop = max(stop, start + 1)
        if max_cells is not None:
            stop = min(stop, start + max_cells)
        stop = min(stop, cells)
        ranges.append((start, stop))
        start = stop
    return ranges


class VlasiatorFile:
    """A Vlasiator output or restart file: its populations and what kind of file it is."""

    def __init__(self, path: str | os.PathLike | vlsv.VlsvFile, comm=None):
        """Open ``path``; with ``comm`` (an MPI job's ranks, collectively) each population reads
        only its rank's share of its cells (:attr:`Population.window`)."""
        self.vlsv = path if isinstance(path, vlsv.VlsvFile) else vlsv.read(path)
        self.path = self.vlsv.path
        config = self.vlsv.find("CONFIG")
        self.config = parse_config(self.vlsv.read_text(config)) if config is not None else None
        names = [e.name for e in self.vlsv.elements if e.tag in ("BLOCKIDS", "BLOCKVARIABLE") and e.name]
        self.populations = {name: Population(self.vlsv, name, self.config, comm) for name in dict.fromkeys(names)}

    def __enter__(self) -> VlasiatorFile:
        return self

    def __exit__(self, *exc) -> None:
        self.vlsv.close()

    @property
    def is_restart(self) -> bool:
        """Restart files store the ``moments`` variable; bulk files do not."""
        return self.vlsv.find("VARIABLE", name="moments") is not None

    @cached_property
    def spatial_cell_ids(self) -> np.ndarray:
        """``VARIABLE CellID``: every spatial cell of the file, in storage order."""
        return self.vlsv.read("VARIABLE", name="CellID")

    @property
    def has_vdf(self) -> bool:
        return any(p.block_count for p in self.populations.values())

    def population(self, name: str) -> Population:
        try:
            return self.populations[name]
        except KeyError:
            known = ", ".join(self.populations) or "none"
            raise MissingArrayError(f"{self.path}: no population {name!r} (populations: {known})") from None


def open_file(path: str | os.PathLike) -> VlasiatorFile:
    """Open a Vlasiator VLSV file (bulk or restart) for reading."""
    return VlasiatorFile(path)
