"""The file commands on the ranks of an MPI job (``mpirun -n N vdfzip encode ...``).

A command runs distributed when an MPI launcher started it with more than one rank; without a
launcher, or with one rank, nothing here is imported and mpi4py is never needed. Each rank takes a
contiguous range of every population's cells, balanced by blocks (cell sizes vary 100×); since
a cell's bytes depend on the cell alone (:func:`vdfzip.engine.encode_batch`), the ranks' records
laid end to end are the serial file's. Errors are agreed on collectively: every rank reaches the
same decision point, so a failure on one rank ends all of them with one message, never a hang.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from . import vlsv
from .errors import VdfzipError
from .fileio import atomic_output

#: Environment variables an MPI launcher sets in the processes it starts (MPICH/Hydra and
#: Intel MPI, Open MPI, PMIx, Slurm's srun).
_LAUNCHER_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS")
#: Ranks on this node, as MPICH/Hydra, Open MPI and Slurm's srun tell each process.
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
#: Largest piece of one MPI-IO call: element counts stay far below MPI's 2³¹ int limit.
MAX_WRITE = 1 << 28
#: Copied arrays are split into pieces of this size, dealt to the ranks in turn.
COPY_CHUNK = 1 << 26

T = TypeVar("T")
log = logging.getLogger("vdfzip")
#: Seconds this process has spent in MPI-IO reads and writes, (rank 0) in sealing the output, and
#: waiting for the other ranks (:func:`agreed`), by kind (for :func:`log_times`).
io_seconds: Counter[str] = Counter()


@contextlib.contextmanager
def timed_io(kind: str):
    """Add the block's wall time to ``io_seconds[kind]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        io_seconds[kind] += time.perf_counter() - started


def log_times(comm, command: str, started: float) -> None:
    """Log (at DEBUG) this rank's wall time since ``started`` and its parts: where a job's time
    goes (compute: everything but the MPI-IO, the seal and the waiting)."""
    total = time.perf_counter() - started
    parts = [io_seconds[kind] for kind in ("read", "write", "seal", "wait")]
    log.debug("VDFZIP_TIMES %s rank %d: %.2f s, read %.2f s, write %.2f s, seal %.2f s, wait %.2f s, compute %.2f s",
              command, comm.Get_rank(), total, *parts, total - sum(parts))


class RankError(VdfzipError):
    """An error on some rank, reported by every rank of the job."""


def world():
    """``MPI.COMM_WORLD`` when launched by MPI with more than one rank, else None (and then
    numba's threads are this rank's share of the node's cores, :func:`rank_threads`)."""
    if not any(os.environ.get(name) for name in _LAUNCHER_VARIABLES):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise VdfzipError("started by an MPI launcher, but mpi4py is missing: pip install 'vdfzip[mpi]'") from None
    if MPI.COMM_WORLD.Get_size() == 1:
        return None
    import numba

    numba.set_num_threads(rank_threads(numba.config.NUMBA_NUM_THREADS))
    return MPI.COMM_WORLD


def rank_threads(most: int) -> int:
    """Threads for one rank's numba kernels, at most ``most``: the cores the launcher bound the
    rank to, or, unbound, the node's cores divided among the node's ranks (the launchers'
    local-size variables). Why: every rank started numba's default of one thread per core of the
    node, so 128 ranks on a node ran 128 threads per core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < (os.cpu_count() or cores):
        return max(1, min(most, cores))
    local = next((int(os.environ[name]) for name in _LOCAL_SIZE_VARIABLES if os.environ.get(name, "").isdigit()), 1)
    return max(1, min(most, cores // max(local, 1)))


def is_root() -> bool:
    """Whether this process speaks for the job: rank 0, or a process not started by MPI."""
    comm = world()
    return comm is None or comm.Get_rank() == 0


@dataclass(frozen=True)
class Share:
    """A rank's contiguous run ``[start, stop)`` of a population's units (cells, or chunks of
    cells), the blocks of the units before it, and the population's blocks."""

    start: int
    stop: int
    blocks_before: int
    blocks: int


def share(comm, units: int, unit_blocks: Callable[[int, int], np.ndarray]) -> Share:
    """This rank's share of ``units`` units, balanced by blocks (cell sizes vary 100×); the whole
    without ``comm``. ``unit_blocks(a, b)`` gives the blocks of units ``[a, b)``; each rank asks
    for 1/N of them, so no rank reads a population's per-cell arrays whole. Rank r's share
    starts at the first unit whose blocks begin at or past r/N of all blocks (ranks beyond the
    units get empty shares)."""
    if comm is None:
        return Share(0, units, 0, int(np.sum(unit_blocks(0, units), dtype=np.int64)))
    from mpi4py import MPI

    rank, ranks = comm.Get_rank(), comm.Get_size()
    blocks = agreed(comm, lambda: np.asarray(unit_blocks(units * rank // ranks, units * (rank + 1) // ranks), np.int64))
    mine = int(blocks.sum())
    before, total = comm.exscan(mine) or 0, comm.allreduce(mine)
    starts = before + np.concatenate([[0], np.cumsum(blocks)]).astype(np.int64)
    targets = np.array([total * r // ranks for r in range(ranks + 1)], np.int64)
    counts = np.searchsorted(starts[:-1], targets, side="left")  # my units starting before each target
    bounds = np.stack([counts, starts[counts] - before]).astype(np.int64)  # and their blocks
    comm.Allreduce(MPI.IN_PLACE, bounds, op=MPI.SUM)
    bounds[:, -1] = units, total
    return Share(int(bounds[0, rank]), int(bounds[0, rank + 1]), int(bounds[1, rank]), total)


def agreed(comm, step: Callable[[], T]) -> T:
    """Run ``step`` on every rank; if it raised on any, raise on all of them (the lowest failing
    rank's error, naming the rank), so that no rank goes on to a collective call alone. Without
    ``comm``, just run it."""
    if comm is None:
        return step()
    failure, result = None, None
    try:
        result = step()
    except Exception as error:  # noqa: BLE001 (any failure must reach the other ranks)
        failure = f"{error}" if isinstance(error, VdfzipError) else f"{type(error).__name__}: {error}"
    with timed_io("wait"):
        failures = comm.allgather(failure)
    for rank, message in enumerate(failures):
        if message is not None:
            raise RankError(f"rank {rank}: {message}")
    return result


def mpi_info(hints: dict[str, str]):
    """An ``MPI.Info`` holding ``hints`` (free it after the call that takes it)."""
    from mpi4py import MPI

    info = MPI.Info.Create()
    for key, value in hints.items():
        info.Set(key, value)
    return info


class RankBytes:
    """A file's bytes as one rank of an MPI job reads them (the byte source of a
    :class:`vdfzip.vlsv.VlsvFile`): rank 0 reads the header and the footer and broadcasts them,
    and every other read is this rank's own, with MPI-IO at the offsets the footer gives, of just
    the bytes asked for. Why not a memory map on every rank: 64,000 ranks parsing one footer
    each is a metadata storm on a parallel file system, and MPI-IO honours the job's hints.

    The reads are independent (``Read_at``), not collective: a rank that fails half-way through
    its cells must not leave the others blocked in a collective read (they meet in
    :func:`agreed`), and each rank's share of a population is one contiguous range, which a
    collective read's aggregation would not make any larger."""

    def __init__(self, comm, path: Path, hints: dict[str, str]):
        from mpi4py import MPI

        info = mpi_info(hints)
        try:
            self._file = MPI.File.Open(comm, str(path), MPI.MODE_RDONLY, info)
        except MPI.Exception as error:
            reason = MPI.Get_error_string(error.Get_error_class())  # the class's one line, not the error stack
            raise VdfzipError(f"{path}: cannot open for reading: {reason}") from None
        finally:
            info.Free()
        ends = None
        if comm.Get_rank() == 0:
            size = self._file.Get_size()
            head = self._read(0, min(size, vlsv.HEADER_BYTES))
            footer = int.from_bytes(head[8:16], "little") if len(head) == vlsv.HEADER_BYTES else size
            footer = footer if vlsv.HEADER_BYTES <= footer < size else size
            ends = (size, head, footer, self._read(footer, size))
        self.size, self._head, self._footer, self._tail = comm.bcast(ends, root=0)

    def _read(self, start: int, stop: int) -> bytearray:
        buffer = bytearray(stop - start)
        view = memoryview(buffer)
        with timed_io("read"):
            for offset in range(0, len(buffer), MAX_WRITE):
                self._file.Read_at(start + offset, view[offset : offset + MAX_WRITE])
        return buffer

    def view(self, start: int, stop: int) -> memoryview:
        """Bytes ``[start, stop)`` (read-only): from the broadcast header and footer, else read."""
        if stop <= len(self._head):
            return memoryview(self._head)[start:stop].toreadonly()
        if start >= self._footer:
            return memoryview(self._tail)[start - self._footer : stop - self._footer].toreadonly()
        return memoryview(self._read(start, min(stop, self.size))).toreadonly()

    def release(self) -> None:
        """Nothing to release: every read is a buffer of its own, freed with its array."""

    def close(self) -> None:
        """Close the MPI file (collective: every rank closes its readers in the same order)."""
        if self._file:
            self._file.Close()


def open_input(comm, path: Path, hints: dict[str, str]):
    """``path`` opened for reading: memory-mapped in one process, through :class:`RankBytes`
    on the ranks of ``comm``."""
    return vlsv.read(path) if comm is None else vlsv.VlsvFile(path, RankBytes(comm, path, hints))


def write_error(error, offset: int) -> VdfzipError:
    """An MPI-IO write's failure as one line: the innermost line of MPI's error stack (such as
    ``Other I/O error File too large``, ``No space left on device``)."""
    reason = str(error).strip().splitlines()[-1].split(":", 1)[-1].strip()
    return VdfzipError(f"writing at byte {offset} failed: {reason}")


def write_pieces(file, pieces: list[tuple[int, int, Callable[[int, int], bytes | memoryview]]], comm) -> None:
    """Collective writes (``Write_at_all``) of this rank's pieces, each ``(offset in the file,
    size, read)`` with ``read(start, stop)`` the piece's bytes ``[start, stop)``, called just
    before they are written: at most :data:`MAX_WRITE` bytes a call, so a rank holds one call's
    bytes at a time. Ranks with fewer calls join the others' with empty ones, and so does a rank
    whose write failed (a full disk), until the last round: then it raises."""
    from mpi4py import MPI

    calls = [(offset + start, functools.partial(read, start, min(start + MAX_WRITE, size)))
             for offset, size, read in pieces for start in range(0, size, MAX_WRITE)]
    rounds = comm.allreduce(len(calls), op=MPI.MAX)
    empty = np.zeros(0, np.uint8)
    failure = None
    for k in range(rounds):
        offset, data = 0, empty
        try:
            if k < len(calls) and failure is None:
                offset, data = calls[k][0], calls[k][1]()
            with timed_io("write"):
                file.Write_at_all(offset, data)
        except MPI.Exception as error:
            failure = failure or write_error(error, offset)
        except Exception as error:  # noqa: BLE001 (a piece's read; raised after the last round, see below)
            failure = failure or error
    if failure is not None:  # why: a rank that left the rounds early hung the others in their next call
        raise failure


@contextlib.contextmanager
def root_output(comm, output: Path):
    """The temporary output, created by rank 0 and renamed into place by it when the block
    succeeds on every rank (removed otherwise); every rank gets its path."""
    if comm.Get_rank():
        yield Path(comm.bcast(None, root=0))
        return
    with atomic_output(output) as tmp:
        comm.bcast(str(tmp), root=0)
        yield tmp
