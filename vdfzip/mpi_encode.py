"""``vdfzip encode`` on the ranks of an MPI job: the same file as one process, byte for byte.

Each rank reads and encodes its block-balanced share of every population's cells (whole chunks
of the index, :mod:`vdfzip.chunks`) into its own unnamed spool. Exclusive scans of the ranks'
index and record sizes place every rank's bytes; rank 0 lays out the whole file (it needs only
the totals) and every rank writes its directory entries, index frames, moment rows and records,
and its chunks of the copied non-VDF arrays, with collective MPI-IO writes, so that no rank
holds more than its own cells' rows. Rank 0 gathers the per-cell errors for the report, hashes what was written (the manifest of
:mod:`vdfzip.integrity`), appends the manifest and the footer, and renames the file into place.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import chunks, distributed, integrity, layout, vlsv
from .encode import encode_population, encoding_map
from .writer import EncodedPopulation, PopulationSummary


def encode_on_ranks(comm, file, selected, settings, batch_cells, output: Path, hints: dict[str, str]
                    ) -> dict[str, EncodedPopulation] | None:
    """Encode and write ``output`` with every rank of ``comm``; rank 0 returns the populations'
    encodings (for the summary), the other ranks None."""
    started = time.perf_counter()
    rank = comm.Get_rank()
    with contextlib.ExitStack() as stack:
        mine: dict[str, EncodedPopulation] = {}

        def encode_my_cells() -> None:
            # one process per rank: the ranks are the parallelism (and forking under MPI is unsafe)
            mapped = stack.enter_context(encoding_map(1, file, settings))
            for p in selected:
                spool = stack.enter_context(tempfile.TemporaryFile(dir=output.parent))
                mine[p.name] = encode_population(p, settings, batch_cells, spool, tqdm(disable=True), mapped)

        distributed.agreed(comm, encode_my_cells)
        runs = {p.name: _Run.of(comm, mine[p.name], int(p.offsets[0])) for p in selected}
        whole = _summaries(comm, selected, mine)
        tmp = stack.enter_context(distributed.root_output(comm, output))
        plan = distributed.agreed(comm, lambda: _layout(file, mine, runs) if rank == 0 else None)
        shared = comm.bcast(None if rank else _without_data(plan), root=0)
        distributed.agreed(comm, lambda: _write_arrays(comm, tmp, file, mine, runs, plan or shared, hints))
        distributed.agreed(comm, lambda: _seal(tmp, file, plan) if rank == 0 else None)
    distributed.log_times(comm, "encode", started)
    return whole


@dataclass(frozen=True)
class _Run:
    """Where this rank's share of a population goes in the file (its whole chunks: the bases of
    its first one), and the population's totals."""

    bases: chunks.Bases
    frame_bytes: int  # of all ranks' index frames
    record_bytes: int  # of all ranks' records

    @classmethod
    def of(cls, comm, encoded: EncodedPopulation, first_block: int) -> _Run:
        """Collective: each rank's sizes laid end to end by an exclusive scan."""
        def sizes() -> np.ndarray:
            if len(encoded.index) and encoded.first_cell % chunks.CHUNK_CELLS:
                raise ValueError(f"a rank's share starts at cell {encoded.first_cell}, not at a chunk boundary")
            return np.array([sum(len(f) for f in encoded.frames), encoded.spool.seek(0, 2)], np.int64)

        sizes = distributed.agreed(comm, sizes)
        before = comm.exscan(sizes)
        before = np.zeros(2, np.int64) if before is None else before
        totals = comm.allreduce(sizes)
        return cls(chunks.Bases(int(before[0]), int(before[1]), first_block), int(totals[0]), int(totals[1]))


def _summaries(comm, selected, mine) -> dict[str, EncodedPopulation] | None:
    """On rank 0: each population's encoding with the summary of all ranks (methods, and the
    per-cell errors in cell order, 8 bytes a cell: the report's percentiles are exact)."""
    parts = comm.gather({name: (e.summary.methods, e.summary.errors) for name, e in mine.items()})
    if comm.Get_rank():
        return None
    whole = {}
    for p in selected:
        pieces = [part[p.name] for part in parts]
        summary = PopulationSummary(p.name, p.cell_count, p.block_count, p.vdf_bytes,
                                    methods=sum((piece[0] for piece in pieces), Counter()),
                                    errors=[e for piece in pieces for e in piece[1]])
        whole[p.name] = replace(mine[p.name], summary=summary)
    return whole


def _layout(file, mine, runs) -> dict:
    """Rank 0's plan of the file: every element (tag, attributes, offset, and its data for the
    vdfzip header) in write order, as :class:`vlsv.VlsvWriter` would place them."""
    elements, offset = [], vlsv.HEADER_BYTES
    for source in file.vlsv.write_order():
        name = source.name
        if source.tag in layout.REPLACEMENT and name in mine:
            e, run = mine[name], runs[name]
            attrs = e.array_attrs
            if source.tag == "CELLSWITHBLOCKS":
                size = chunks.chunk_count(source.arraysize) * chunks.DIRECTORY_DTYPE.itemsize + run.frame_bytes
                entry = {"tag": "VDFZIP_INDEX", "attrs": vlsv.array_attrs(np.uint8, size, 1, **attrs), "index": name}
            elif source.tag == "BLOCKSPERCELL":
                entry = {"tag": "VDFZIP_MOMENTS", "moments": name,
                         "attrs": vlsv.array_attrs(np.float64, source.arraysize, layout.MOMENT_COLUMNS, **attrs)}
            elif source.tag == "BLOCKIDS":
                text = e.header_text()
                entry = {"tag": "VDFZIP_HEADER", "attrs": vlsv.array_attrs(np.uint8, len(text), 1, **e.header_attrs(text)),
                         "data": text}
            else:
                entry = {"tag": "VDFZIP_RECORDS", "attrs": vlsv.array_attrs(np.uint8, run.record_bytes, 1, **attrs),
                         "records": name}
        else:
            entry = {"tag": source.tag, "attrs": dict(source.attrs), "copy": source.offset}
        entry["offset"] = offset
        offset += vlsv.Element(entry["tag"], entry["attrs"], offset).nbytes
        elements.append(entry)
    return {"elements": elements, "end": offset}


def _without_data(plan: dict) -> dict:
    """The plan as the other ranks need it: the header's bytes stay on rank 0."""
    return plan | {"elements": [{k: v for k, v in e.items() if k != "data"} for e in plan["elements"]]}


def _write_arrays(comm, tmp: Path, file, mine, runs, plan, hints) -> None:
    """Every rank's share of the file, written collectively: its index chunks, moment rows and
    records, its chunks of the copied arrays, and (rank 0) the vdfzip headers."""
    from mpi4py import MPI

    rank, ranks = comm.Get_rank(), comm.Get_size()
    pieces = []
    chunk = 0
    for entry in plan["elements"]:
        if "data" in entry and rank == 0:
            pieces.append((entry["offset"], len(entry["data"]), functools.partial(_sliced, entry["data"])))
        elif "copy" in entry:
            source = vlsv.Element(entry["tag"], entry["attrs"], entry["copy"])
            for start in range(0, source.nbytes, distributed.COPY_CHUNK):
                if chunk % ranks == rank:
                    size = min(distributed.COPY_CHUNK, source.nbytes - start)
                    pieces.append((entry["offset"] + start, size, functools.partial(_raw, file.vlsv, source, start)))
                chunk += 1
        elif "index" in entry:
            e, run = mine[entry["index"]], runs[entry["index"]]
            directory = e.directory(run.bases).tobytes()
            frames = b"".join(e.frames)
            first = entry["offset"] + e.first_cell // chunks.CHUNK_CELLS * chunks.DIRECTORY_DTYPE.itemsize
            after = vlsv.Element(entry["tag"], entry["attrs"], entry["offset"]).arraysize - run.frame_bytes
            pieces += [(first, len(directory), functools.partial(_sliced, directory)),
                       (entry["offset"] + after + run.bases.frame, len(frames), functools.partial(_sliced, frames))]
        elif "moments" in entry:
            e = mine[entry["moments"]]
            rows = bytes(vlsv.little_endian_bytes(e.moments))
            pieces.append((entry["offset"] + e.first_cell * layout.MOMENT_COLUMNS * 8, len(rows),
                           functools.partial(_sliced, rows)))
        elif "records" in entry:
            e, run = mine[entry["records"]], runs[entry["records"]]
            size = e.spool.seek(0, 2)
            pieces.append((entry["offset"] + run.bases.record, size, functools.partial(_pread, e.spool.fileno())))
    pieces = [piece for piece in pieces if piece[1]]
    info = distributed.mpi_info(hints)
    handle = MPI.File.Open(comm, str(tmp), MPI.MODE_WRONLY | MPI.MODE_CREATE, info)
    try:
        distributed.write_pieces(handle, pieces, comm)
    finally:
        handle.Close()
        info.Free()


def _sliced(data: bytes, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of ``data``."""
    return data[start:stop]


def _raw(file: vlsv.VlsvFile, element: vlsv.Element, chunk: int, start: int, stop: int) -> memoryview:
    """Bytes ``[start, stop)`` of the chunk of ``element`` that starts at ``chunk``."""
    return file.raw(element, chunk + start, chunk + stop)


def _pread(fd: int, start: int, stop: int) -> bytes:
    """Bytes ``[start, stop)`` of a spool or the output (read, not mapped: mapped pages would
    count in the rank's RSS)."""
    data = os.pread(fd, stop - start, start)
    if len(data) != stop - start:
        raise OSError(f"read {len(data)} of {stop - start} bytes at offset {start}: the file is shorter")
    return data


def _seal(tmp: Path, file, plan) -> None:
    """Rank 0: hash every array as written, then append the manifest and the footer and set the
    footer offset, exactly as :class:`vlsv.VlsvWriter` ends a file."""
    with distributed.timed_io("seal"):
        elements = [vlsv.Element(e["tag"], e["attrs"], e["offset"]) for e in plan["elements"]]
        with open(tmp, "r+b") as handle:
            handle.truncate(plan["end"])
            digests = [vlsv.digest(_pieces(handle.fileno(), e)) for e in elements]
            text = integrity.manifest(elements, digests, file.vlsv.write_order())
            manifest = vlsv.Element(integrity.TAG, vlsv.array_attrs(np.uint8, len(text), 1, **integrity.attrs(text)),
                                    plan["end"])
            handle.seek(plan["end"])
            handle.write(text)
            footer = handle.tell()
            handle.write(vlsv.format_footer(elements + [manifest]))
            handle.seek(0)
            handle.write(vlsv.file_header(footer))


def _pieces(fd: int, element: vlsv.Element):
    """The element's bytes as written, read in copy chunks (not mapped, so that hashing a large
    output does not fill rank 0's RSS)."""
    end = element.offset + element.nbytes
    for start in range(element.offset, end, distributed.COPY_CHUNK):
        yield _pread(fd, start, min(start + distributed.COPY_CHUNK, end))
