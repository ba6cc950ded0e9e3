"""``decode_file`` and cell access: from a vdfzip file back to plain Vlasiator VDF arrays.

The decoded file has the original's elements in the original write order with the original
footer attributes, so every non-VDF byte and the whole footer come out identical; only
BLOCKVARIABLE differs from the original (lossy values).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import distributed, integrity, layout, vlsv, workers
from .encode import MAX_BATCH_BLOCKS, batch_blocks, default_output
from .errors import VdfzipError
from .fileio import check_output_path
from .vlasiator import CellBatch


#: Blocks of lossy decoding per worker process: ~2.5 s of work on one core (64 MiB of float32 VDF
#: at ~27 MB/s, bench/RESULTS-speed.md) against a worker's ~2 s start
#: (:func:`vdfzip.workers.worker_count`). Measured there: 2 workers decoded the 12.6 MB shock
#: restart 3× slower than one process, a 234 MB synthetic restart 1.9× faster. Lossless cells
#: do not count: this process writes ~175 MB/s of them decoding them itself, and 2 workers made
#: that slower at any size (0.73× on 234 MB, 0.83× on a 962 MB synthetic restart).
DECODE_BLOCKS_PER_WORKER = 1 << 18


class NotCompressedError(VdfzipError):
    """The file holds no vdfzip-compressed population."""


class UncheckedFileWarning(UserWarning):
    """A compressed file of a format version without whole-file checksums."""


class CompressedFile:
    """A vdfzip file opened for reading: its compressed populations, decoded cell by cell."""

    def __init__(self, path: str | os.PathLike | vlsv.VlsvFile, comm=None):
        """Open ``path``; with ``comm`` (an MPI job's ranks, collectively) each population holds
        the index and moments of its rank's share of cells only."""
        self.vlsv = path if isinstance(path, vlsv.VlsvFile) else vlsv.read(path)
        self.path = self.vlsv.path
        if not layout.is_compressed(self.vlsv):
            raise NotCompressedError(f"{self.path} is not a vdfzip-compressed file")
        names = layout.compressed_population_names(self.vlsv)
        self.manifest = integrity.Manifest.read(self.vlsv)  # first: nothing is parsed from unchecked bytes
        self.populations = {name: layout.CompressedPopulation(self.vlsv, name, comm) for name in names}
        if self.manifest is None:
            if max(p.header["format"] for p in self.populations.values()) >= 2:
                raise integrity.IntegrityError(f"{self.path}: {integrity.TAG} is missing (the file was changed)")
            warnings.warn(UncheckedFileWarning(
                f"{self.path}: format version 1 has no whole-file checksums; its non-VDF arrays and footer "
                "are not checked"), stacklevel=2)

    def chunks(self, element: vlsv.Element) -> Iterator[memoryview]:
        """A copied array's bytes in pieces, checked against the file's checksums (format ≥ 2)."""
        return self.vlsv.raw_chunks(element) if self.manifest is None else self.manifest.chunks(element)

    def restored_elements(self) -> list[vlsv.Element]:
        """The elements of the decoded file, in its write order (offsets as in this file)."""
        return [
            self.populations[e.name].original[layout.ORIGINAL[e.tag]] if e.tag in layout.ORIGINAL else e
            for e in self.vlsv.write_order()
            if e.tag != integrity.TAG
        ]

    def __enter__(self) -> CompressedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.vlsv.close()

    def cells(self, population: str, start: int, stop: int) -> CellBatch:
        """Decoded cells ``[start, stop)`` of a population; reads only those cells' bytes."""
        return self.populations[population].decoded(start, stop)

    def batches(self, population: str, max_blocks: int = MAX_BATCH_BLOCKS) -> Iterator[CellBatch]:
        for start, stop in self.populations[population].batches(max_blocks):
            yield self.cells(population, start, stop)


def _decoding_state(compressed: CompressedFile | Path) -> dict:
    """What decoding batches needs (:mod:`vdfzip.workers`): the compressed file, opened again in
    a worker process."""
    return {"file": compressed if isinstance(compressed, CompressedFile) else CompressedFile(compressed)}


def _decode_range(state: dict, item: tuple[str, int, int]) -> np.ndarray:
    """The decoded values of the cells ``[start, stop)`` of a population (``item``: name, start, stop)."""
    name, start, stop = item
    return state["file"].cells(name, start, stop).values


def _write_original(writer: vlsv.VlsvWriter, compressed: CompressedFile, element: vlsv.Element, bar, mapped,
                    jobs: int) -> None:
    """Write the original array that the vdfzip array ``element`` stands in for (the values
    decoded through ``mapped``, :func:`vdfzip.workers.ordered_map` with ``jobs`` workers)."""
    p = compressed.populations[element.name]
    tag = layout.ORIGINAL[element.tag]
    original = p.original[tag]
    with writer.stream_like(original) as sink:
        if tag == "CELLSWITHBLOCKS":
            sink.write(p.cell_ids.astype(original.dtype))
        elif tag == "BLOCKSPERCELL":
            sink.write(p.blocks_per_cell.astype(original.dtype))
        elif tag == "BLOCKIDS":
            for cell in range(p.cell_count):
                sink.write(p.block_ids(cell).astype(original.dtype))
        else:
            ranges = p.batches(batch_blocks(p.block_count, jobs))
            for (start, stop), values in zip(ranges, mapped(_decode_range, [(element.name, a, b) for a, b in ranges])):
                sink.write(values.astype(original.dtype))
                bar.update(stop - start)


def decode_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    jobs: int | None = None,
    mpi_hints: dict[str, str] | None = None,
) -> Path:
    """Write the plain Vlasiator file that a vdfzip file encodes; returns the output path.
    Up to ``jobs`` worker processes decode batches of cells, one per DECODE_BLOCKS_PER_WORKER
    blocks (default: ``$VDFZIP_JOBS``, else every available core; the same file for any count).
    Under an MPI launcher with more than one rank every rank takes part instead, one process
    each (:mod:`vdfzip.mpi_decode`; the same file as one process); ``mpi_hints`` are MPI-IO
    hints for reading the input and writing the output."""
    jobs = workers.resolve_jobs(jobs)
    source = Path(source)
    output = Path(output) if output is not None else default_output(source, ".decoded")
    comm = distributed.world()
    with CompressedFile(distributed.open_input(comm, source, mpi_hints or {}), comm) as compressed, \
            contextlib.ExitStack() as stack:
        output = check_output_path(output, inputs=[source], overwrite=force)
        if comm is not None:
            from .mpi_decode import decode_on_ranks

            decode_on_ranks(comm, compressed, output, mpi_hints or {})
            return output
        total = sum(p.cell_count for p in compressed.populations.values())
        jobs = workers.worker_count(jobs, sum(p.lossy_blocks for p in compressed.populations.values()),
                                    DECODE_BLOCKS_PER_WORKER)
        mapped = stack.enter_context(workers.ordered_map(jobs, _decoding_state, (compressed if jobs == 1 else source,)))
        with tqdm(total=total, unit="cell", desc="decode", disable=None if progress is None else not progress) as bar:
            with vlsv.VlsvWriter(output) as writer:
                for element in compressed.vlsv.write_order():
                    if element.tag in layout.ORIGINAL:
                        _write_original(writer, compressed, element, bar, mapped, jobs)
                    elif element.tag != integrity.TAG:
                        writer.copy_element(element, compressed.chunks(element))
                if compressed.manifest is not None:
                    compressed.manifest.check_restored_footer(vlsv.format_footer(writer.elements))
    return output
