"""``vdfzip encode`` on the ranks of an MPI job: the same file as one process, byte for byte.

Each rank encodes its block-balanced share of every population's cells into its own unnamed
spool. Rank 0 gathers the index and moment rows, builds the vdfzip arrays exactly as
:func:`vdfzip.encode.encode_file` does, and lays out the whole file; then every rank writes its
records at its offset (an exclusive scan of the record sizes) and its chunks of the copied
non-VDF arrays with collective MPI-IO writes. Rank 0 hashes what was written (the manifest of
:mod:`vdfzip.integrity`), appends the manifest and the footer, and renames the file into place.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import distributed, integrity, layout, vlsv
from .encode import encode_population, encoding_map
from .writer import EncodedPopulation, PopulationSummary


def encode_on_ranks(comm, file, selected, settings, batch_cells, output: Path, hints: dict[str, str]
                    ) -> dict[str, EncodedPopulation] | None:
    """Encode and write ``output`` with every rank of ``comm``; rank 0 returns the populations'
    encodings (for the summary), the other ranks None."""
    started = time.perf_counter()
    rank, ranks = comm.Get_rank(), comm.Get_size()
    with contextlib.ExitStack() as stack:
        mine: dict[str, EncodedPopulation] = {}

        def encode_my_cells() -> None:
            # one process per rank: the ranks are the parallelism (and forking under MPI is unsafe)
            mapped = stack.enter_context(encoding_map(1, file.vlsv, settings))
            for p in selected:
                spool = stack.enter_context(tempfile.TemporaryFile(dir=output.parent))
                window = distributed.rank_ranges(p.offsets, ranks)[rank]
                mine[p.name] = encode_population(p, settings, batch_cells, spool, tqdm(disable=True), mapped,
                                                 cells=window)

        distributed.agreed(comm, encode_my_cells)
        whole = _gather(comm, selected, mine, settings)
        tmp = stack.enter_context(distributed.root_output(comm, output))
        plan = distributed.agreed(comm, lambda: _layout(file, whole) if rank == 0 else None)
        shared = comm.bcast(None if rank else _without_data(plan), root=0)
        distributed.agreed(comm, lambda: _write_arrays(comm, tmp, file, mine, plan or shared, hints))
        distributed.agreed(comm, lambda: _seal(tmp, file, plan) if rank == 0 else None)
    distributed.log_times(comm, "encode", started)
    return whole


def _gather(comm, selected, mine, settings) -> dict[str, EncodedPopulation] | None:
    """On rank 0: each population's index, moments and summary over all ranks, in cell order."""
    parts = comm.gather({name: (e.index, e.moments, e.summary.methods, e.summary.errors) for name, e in mine.items()})
    if comm.Get_rank():
        return None
    whole = {}
    for p in selected:
        pieces = [part[p.name] for part in parts]
        summary = PopulationSummary(p.name, p.cell_count, p.block_count, p.vdf_bytes,
                                    methods=sum((piece[2] for piece in pieces), Counter()),
                                    errors=[e for piece in pieces for e in piece[3]])
        index, moments = np.concatenate([x[0] for x in pieces]), np.concatenate([x[1] for x in pieces])
        whole[p.name] = EncodedPopulation(p.species, p.vdf_elements(), settings.header(), index, moments, None,
                                          summary)
    return whole


def _layout(file, whole) -> dict:
    """Rank 0's plan of the file: every element (tag, attributes, offset, and its data for the
    small vdfzip arrays) in write order, as :class:`vlsv.VlsvWriter` would place them."""
    arrays = {name: e.arrays() for name, e in whole.items()}
    elements, offset = [], vlsv.HEADER_BYTES
    for source in file.vlsv.write_order():
        if source.tag in layout.REPLACEMENT and source.name in whole:
            tag, data, attrs = arrays[source.name][source.tag]
            if data is None:
                size = int(layout.record_sizes(whole[source.name].index).sum())
                entry = {"tag": tag, "attrs": vlsv.array_attrs(np.uint8, size, 1, **attrs), "records": source.name}
            else:
                raw = bytes(vlsv.little_endian_bytes(data))
                vectorsize = 1 if data.ndim == 1 else data.shape[1]
                entry = {"tag": tag, "attrs": vlsv.array_attrs(data.dtype, len(data), vectorsize, **attrs), "data": raw}
        else:
            entry = {"tag": source.tag, "attrs": dict(source.attrs), "copy": source.offset}
        entry["offset"] = offset
        offset += vlsv.Element(entry["tag"], entry["attrs"], offset).nbytes
        elements.append(entry)
    return {"elements": elements, "end": offset}


def _without_data(plan: dict) -> dict:
    """The plan as the other ranks need it: the small arrays' bytes stay on rank 0."""
    return plan | {"elements": [{k: v for k, v in e.items() if k != "data"} for e in plan["elements"]]}


def _write_arrays(comm, tmp: Path, file, mine, plan, hints) -> None:
    """Every rank's share of the file, written collectively: its records, its chunks of the copied
    arrays, and (rank 0) the small vdfzip arrays."""
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
        elif "records" in entry:
            spool = mine[entry["records"]].spool
            size = spool.seek(0, 2)
            before = comm.exscan(size) or 0
            if size:
                pieces.append((entry["offset"] + before, size, functools.partial(_pread, spool.fileno())))
    info = distributed.mpi_info(hints)
    handle = MPI.File.Open(comm, str(tmp), MPI.MODE_WRONLY | MPI.MODE_CREATE, info)
    try:
        distributed.write_pieces(handle, pieces, comm)
    finally:
        handle.Close()
        info.Free()


def _sliced(data: bytes, start: int, stop: int) -> bytes:
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
