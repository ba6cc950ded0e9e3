"""``vdfzip decode`` on the ranks of an MPI job: the same file as one process.

Every rank opens the compressed file (rank 0 reads the footer and broadcasts it) with the index
and moment rows of just its share of each population's cells (whole chunks, balanced by blocks:
:mod:`vdfzip.chunks`), and lays the decoded file out exactly as one process writes it: the
restored elements in the file's order, back to back after the header
(:func:`vdfzip.integrity.restored_footer`). Each rank then writes its share: the cell ids, block
counts, block ids and decoded values of its cells (decoded in bounded batches) and its chunks of
the copied arrays. Rank 0 also checks every copied array and the footer against the manifest, and
ends the file. The writes are independent (``Write_at``), so a rank that fails half-way leaves no
other rank waiting in a collective call: all of them meet in :func:`vdfzip.distributed.agreed`,
and the output appears under its name only if every rank succeeded.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from . import distributed, integrity, layout, vlsv
from .decode import CompressedFile
from .encode import MAX_BATCH_BLOCKS


def decode_on_ranks(comm, compressed: CompressedFile, output: Path, hints: dict[str, str]) -> None:
    """Write ``output``, the decoded file, with every rank of ``comm``."""
    started = time.perf_counter()
    laid = _laid_out(compressed.restored_elements())
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(distributed.root_output(comm, output))
        distributed.agreed(comm, lambda: _write_share(comm, tmp, compressed, laid, hints))
        distributed.agreed(comm, lambda: _seal(tmp, compressed, laid) if comm.Get_rank() == 0 else None)
    distributed.log_times(comm, "decode", started)


def _laid_out(elements: list[vlsv.Element]) -> list[tuple[vlsv.Element, vlsv.Element]]:
    """(element as the compressed file holds it or describes it, the same at its offset in the
    decoded file), in the decoded file's order."""
    return list(zip(elements, integrity.laid_out(elements)))


def _write_share(comm, tmp: Path, compressed: CompressedFile, laid, hints: dict[str, str]) -> None:
    from mpi4py import MPI

    rank, ranks = comm.Get_rank(), comm.Get_size()
    info = distributed.mpi_info(hints)
    handle = MPI.File.Open(comm, str(tmp), MPI.MODE_WRONLY | MPI.MODE_CREATE, info)
    try:
        chunk = 0
        for source, target in laid:
            if source.tag in layout.REPLACEMENT and source.name in compressed.populations:
                _write_population_array(handle, compressed, source, target)
                continue
            for start in range(0, source.nbytes, distributed.COPY_CHUNK):
                if chunk % ranks == rank:
                    _write_at(handle, target.offset + start,
                              compressed.vlsv.raw(source, start, start + distributed.COPY_CHUNK))
                chunk += 1
    finally:
        handle.Close()
        info.Free()


def _write_population_array(handle, compressed: CompressedFile, original: vlsv.Element, target: vlsv.Element
                            ) -> None:
    """This rank's share of one restored VDF array: the rows of its cells (the window each
    population was opened with)."""
    p = compressed.populations[original.name]
    if original.tag in ("CELLSWITHBLOCKS", "BLOCKSPERCELL"):
        data = p.cell_ids if original.tag == "CELLSWITHBLOCKS" else p.blocks_per_cell
        _write_at(handle, target.offset + p.first_cell * original.datasize,
                  vlsv.little_endian_bytes(data.astype(original.dtype)))
        return
    row_bytes = original.vectorsize * original.datasize
    for start, end in p.batches(MAX_BATCH_BLOCKS):
        if original.tag == "BLOCKIDS":
            rows = np.concatenate([p.block_ids(cell) for cell in range(start, end)])
        else:
            rows = p.decoded(start, end).values
        _write_at(handle, target.offset + (p.first_block + int(p.block_offsets[start])) * row_bytes,
                  vlsv.little_endian_bytes(rows.astype(original.dtype)))


def _write_at(handle, offset: int, data) -> None:
    """An independent write, in pieces of at most :data:`distributed.MAX_WRITE` bytes."""
    view = memoryview(data).cast("B")
    from mpi4py import MPI

    with distributed.timed_io("write"):
        for start in range(0, len(view), distributed.MAX_WRITE):
            try:
                handle.Write_at(offset + start, view[start : start + distributed.MAX_WRITE])
            except MPI.Exception as error:
                raise distributed.write_error(error, offset + start) from None


def _seal(tmp: Path, compressed: CompressedFile, laid) -> None:
    """Rank 0: check every copied array and the restored footer against the manifest, then end
    the file with its footer and header, as :class:`vlsv.VlsvWriter` does."""
    with distributed.timed_io("seal"):
        if compressed.manifest is not None:
            for source, _ in laid:
                if not (source.tag in layout.REPLACEMENT and source.name in compressed.populations):
                    compressed.manifest.check(source)
        elements = [target for _, target in laid]
        footer = vlsv.format_footer(elements)
        if compressed.manifest is not None:
            compressed.manifest.check_restored_footer(footer)
        end = elements[-1].offset + elements[-1].nbytes if elements else vlsv.HEADER_BYTES
        with open(tmp, "r+b") as out:
            out.truncate(end)
            out.seek(end)
            out.write(footer)
            out.seek(0)
            out.write(vlsv.file_header(end))
