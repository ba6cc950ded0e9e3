"""Writing a compressed file: a template's elements in their order, each compressed population's
VDF arrays replaced by vdfzip's, the whole-file manifest last.

``vdfzip encode`` writes with the input file as its template (:func:`write_populations`);
:func:`write_compressed` writes cells compressed in memory (:class:`vdfzip.Compressor`) with
the non-VDF arrays of any VLSV file, into a file ``vdfzip decode`` reads like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import __version__, chunks, integrity, layout, vlsv
from .cells import CompressedCells
from .errors import VdfzipError
from .fileio import check_output_path
from .vlasiator import VDF_TAGS, Species, VlasiatorFile, particle_mass, read_velocity_mesh

#: The dtypes of Vlasiator's VDF arrays, but for BLOCKVARIABLE (the population's own).
_VDF_DTYPES = {"CELLSWITHBLOCKS": np.uint64, "BLOCKSPERCELL": np.uint32, "BLOCKIDS": np.uint32}


class TemplateError(VdfzipError):
    """A template file or compressed cells that do not fit together."""


@dataclass
class PopulationSummary:
    """What encoding one population did."""

    name: str
    cells: int
    blocks: int
    input_bytes: int
    output_bytes: int = 0
    methods: Counter = field(default_factory=Counter)
    errors: list = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.input_bytes / self.output_bytes if self.output_bytes else float("inf")

    def as_dict(self) -> dict:
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        percentiles = np.percentile(errors, [50, 95, 100]) if errors.size else [0.0, 0.0, 0.0]
        return {
            "cells": self.cells,
            "blocks": self.blocks,
            "input_vdf_bytes": self.input_bytes,
            "output_vdf_bytes": self.output_bytes,
            "ratio": self.ratio,
            "methods": dict(self.methods),
            "rel_l2": dict(zip(("median", "p95", "max"), map(float, percentiles))),
        }


@dataclass
class EncodedPopulation:
    """A population's encoding, ready to be written: in-memory index and moments, spooled records,
    and the replaced arrays as the decoded file will hold them (by tag). Under MPI each rank holds
    the encoding of its share, cells ``first_cell`` on."""

    species: Species
    originals: dict[str, vlsv.Element]
    settings: dict  # vdfzip.engine.Settings.header()
    index: np.ndarray
    moments: np.ndarray
    spool: BinaryIO | None  # the population's records, in cell order
    summary: PopulationSummary
    first_cell: int = 0

    @cached_property
    def frames(self) -> list[bytes]:
        """The index chunks of the cells held here, as :mod:`vdfzip.chunks` stores them."""
        return chunks.frames(self.index)

    def directory(self, bases: chunks.Bases = chunks.Bases()) -> np.ndarray:
        """The directory entries of the chunks held here, which start at ``bases``."""
        return chunks.directory(self.frames, layout.record_sizes(self.index), self.index["blocks"], self.moments, bases)

    def header_text(self) -> bytes:
        header = self.settings | {
            "format": layout.FORMAT_VERSION,
            "vdfzip": __version__,
            "population": self.species.name,
            "threshold": self.species.threshold,
            "dtype": self.species.dtype.str,
            "index_chunk_cells": chunks.CHUNK_CELLS,
            "replaces": {layout.REPLACEMENT[tag]: {"attrs": dict(e.attrs), "offset": e.offset}
                         for tag, e in self.originals.items()},
        }
        return json.dumps(header, sort_keys=True).encode()

    def arrays(self) -> dict[str, tuple[str, np.ndarray | None, dict]]:
        """Per original tag, the vdfzip array that takes its place: (tag, data, attributes); the
        data of VDFZIP_RECORDS is None (the spooled records, written in pieces)."""
        attrs = self.array_attrs
        text = self.header_text()
        index = np.frombuffer(self.directory().tobytes() + b"".join(self.frames), np.uint8)
        return {
            "CELLSWITHBLOCKS": ("VDFZIP_INDEX", index, attrs),
            "BLOCKSPERCELL": ("VDFZIP_MOMENTS", self.moments, attrs),
            "BLOCKIDS": ("VDFZIP_HEADER", np.frombuffer(text, np.uint8), self.header_attrs(text)),
            "BLOCKVARIABLE": ("VDFZIP_RECORDS", None, attrs),
        }

    @property
    def array_attrs(self) -> dict:
        """The footer attributes of the vdfzip arrays but the header (its name and mesh)."""
        return {"name": self.species.name, "mesh": "SpatialGrid"}

    def header_attrs(self, text: bytes) -> dict:
        """The header array's footer attributes, for its ``text``."""
        return self.array_attrs | {"format_version": layout.FORMAT_VERSION, "vdfzip_version": __version__,
                                   "crc32": layout.checksum(text)}

    def write_array(self, writer: vlsv.VlsvWriter, vdfzip_tag: str, data: np.ndarray | None, attrs: dict) -> None:
        """Write one of :meth:`arrays` (the records from the spool)."""
        if data is not None:
            writer.write_array(vdfzip_tag, data, **attrs)
            return
        self.spool.seek(0)
        with writer.stream_array(vdfzip_tag, np.uint8, **attrs) as sink:
            while chunk := self.spool.read(1 << 24):
                sink.write(np.frombuffer(chunk, np.uint8))


def _places(template: vlsv.VlsvFile, names) -> Iterator[tuple[str | None, str | None, vlsv.Element | None]]:
    """The compressed file's elements in order, as (population, VDF tag, template element): the
    template's elements, a VDF array of a population in ``names`` as (name, tag, its element),
    any other as (None, None, element); then (name, tag, None) for the VDF arrays of those
    populations the template does not have."""
    placed = set()
    for element in template.write_order():
        if element.tag in VDF_TAGS and element.name in names:
            placed.add((element.name, element.tag))
            yield element.name, element.tag, element
        else:
            yield None, None, element
    for name in names:
        for tag in VDF_TAGS:
            if (name, tag) not in placed:
                yield name, tag, None


def write_populations(writer: vlsv.VlsvWriter, template: vlsv.VlsvFile, encoded: Mapping[str, EncodedPopulation]
                      ) -> None:
    """Write the template's elements in its write order, each VDF array of an encoded population
    replaced in its place by the vdfzip array (appended at the end for populations whose VDF
    arrays the template does not have), then the manifest of the file the decoder restores."""
    arrays = {name: e.arrays() for name, e in encoded.items()}
    restored = []
    for name, tag, element in _places(template, encoded):
        if name is None:
            writer.copy_element(element, template.raw_chunks(element))
            restored.append(element)
        else:
            encoded[name].write_array(writer, *arrays[name][tag])
            restored.append(encoded[name].originals[tag])
    integrity.write(writer, restored)


def write_compressed(path: str | os.PathLike, template: str | os.PathLike,
                     populations: Mapping[str, CompressedCells | Sequence[CompressedCells]], *,
                     force: bool = False) -> Path:
    """Write a compressed VLSV file from cells compressed in memory; returns its path.

    ``populations`` maps each population name to its :class:`CompressedCells` (one, or several
    batches in cell order). ``template`` is a VLSV file that gives every other array (fields,
    meshes, CONFIG...): a restart whose own VDF arrays of those populations are then replaced in
    their place, or one without them (they are appended). The template must hold each
    population's velocity mesh, equal to the cells'. ``vdfzip decode`` restores the file the
    template describes with the decoded cells as its VDF; the output is written atomically."""
    with VlasiatorFile(template) as file, contextlib.ExitStack() as spools:
        path = check_output_path(Path(path), inputs=[Path(template)], overwrite=force)
        if layout.is_compressed(file.vlsv):
            raise TemplateError(f"{file.path} is compressed by vdfzip; a template holds plain arrays")
        encoded = {}
        for name, parts in populations.items():
            spool = spools.enter_context(tempfile.TemporaryFile(dir=path.parent))
            encoded[name] = _population_from_cells(file, name, [parts] if isinstance(parts, CompressedCells)
                                                   else list(parts), spool)
        _lay_out_originals(file.vlsv, encoded)
        with vlsv.VlsvWriter(path) as writer:
            write_populations(writer, file.vlsv, encoded)
    return path


def _population_from_cells(file: VlasiatorFile, name: str, parts: list[CompressedCells], spool: BinaryIO
                           ) -> EncodedPopulation:
    """One population's batches of compressed cells as one encoding, checked against the template."""
    if not parts:
        raise TemplateError(f"population {name}: no compressed cells")
    species, settings = parts[0].species, parts[0].settings
    for part in parts:
        if part.species != species or part.settings != settings:
            raise TemplateError(f"population {name}: batches compressed with different meshes, dtypes or options")
        if part.name != name:
            raise TemplateError(f"compressed cells of population {part.name} given as population {name}")
        spool.write(part.records)
    if file.vlsv.find("MESH_BBOX", mesh=name) is None:
        raise TemplateError(f"{file.path}: no velocity mesh of population {name} (MESH_BBOX mesh={name})")
    if read_velocity_mesh(file.vlsv, name) != species.mesh:
        raise TemplateError(f"{file.path}: the velocity mesh of population {name} is not the cells' mesh")
    mass = particle_mass(file.config, name)[0]
    if mass != species.mass:
        raise TemplateError(f"{file.path}: population {name} has particle mass {mass:g} kg, the cells were "
                            f"compressed with {species.mass:g} kg")
    index = np.concatenate([part.index for part in parts])
    if len(np.unique(index["cell_id"])) != len(index):
        raise TemplateError(f"population {name}: a cell appears in two batches")
    if file.vlsv.find("VARIABLE", name="CellID") is not None:
        missing = np.setdiff1d(index["cell_id"], file.spatial_cell_ids)
        if len(missing):
            raise TemplateError(f"{file.path}: population {name}: cells {missing[:5].tolist()} are not in the "
                                "template's spatial grid (VARIABLE CellID)")
    summary = PopulationSummary(name, len(index), int(index["blocks"].sum()), sum(p.input_bytes for p in parts))
    for part in parts:
        summary.methods.update(part.methods)
        summary.errors.append(part.errors)
    return EncodedPopulation(species, {}, settings, index, np.concatenate([p.moment_columns for p in parts]), spool,
                             summary)


def _lay_out_originals(template: vlsv.VlsvFile, encoded: dict[str, EncodedPopulation]) -> None:
    """Set each population's ``originals``: the VDF arrays the decoded file will hold, with the
    template's attributes (but sizes and types) and the offsets the decoder's writer gives them."""
    def original(name: str, tag: str, like: vlsv.Element | None) -> vlsv.Element:
        e = encoded[name]
        blocks = int(e.index["blocks"].sum())
        rows, width = {"CELLSWITHBLOCKS": (len(e.index), 1), "BLOCKSPERCELL": (len(e.index), 1),
                       "BLOCKIDS": (blocks, 1), "BLOCKVARIABLE": (blocks, e.species.mesh.cells_per_block)}[tag]
        keep = {k: v for k, v in (like.attrs if like else {"name": name, "mesh": "SpatialGrid"}).items()
                if k not in ("arraysize", "vectorsize", "datasize", "datatype")}
        dtype = _VDF_DTYPES.get(tag, e.species.dtype)
        return vlsv.Element(tag, vlsv.array_attrs(dtype, rows, width, **keep), 0)

    places = [(name, tag, element if name is None else original(name, tag, element))
              for name, tag, element in _places(template, encoded)]
    for (name, tag, _), laid in zip(places, integrity.laid_out([element for _, _, element in places])):
        if name is not None:
            encoded[name].originals[tag] = laid
