"""``encode_file``: compress a whole restart file, streamed cell batch by cell batch.

Batches of cells are read from the input and encoded by a :class:`vdfzip.Compressor` per
population (in this process or in worker processes), the engine every interface shares
(:mod:`vdfzip.engine`); their records go to an unnamed spool file beside the output, so memory
holds one batch plus a few bytes of index per cell, and the output is written in the input's
own element order with every non-VDF array copied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from . import distributed, engine, integrity, layout, vlsv, workers
from .cells import CompressedCells
from .engine import Settings, array_namespace
from .errors import VdfzipError
from .fileio import check_output_path
from .reconstruct import LOSSLESS
from .runtime import Compressor
from .vlasiator import Population, VlasiatorFile
from .writer import EncodedPopulation, PopulationSummary, write_populations

log = logging.getLogger("vdfzip")

DEFAULT_BATCH_CELLS = 256
# Blocks per batch: 128 Ki blocks are 32 MiB of float32 values and a batch's working set is a few
# float64 copies of them (decoded, restored, compared: ~300 MiB), so encode and decode peak at
# ~0.6 GB of RSS whatever the file size (bench/RESULTS-e2e.md); 512 Ki blocks peaked at 1.2 GB
# for no measurable gain in speed.
MAX_BATCH_BLOCKS = 1 << 17
#: The smallest batch worth a worker process's round trip (a few hundred ms of work).
MIN_BATCH_BLOCKS = 1 << 12
#: Blocks of encoding per worker process: ~5 s of work on one core (16 MiB of float32 VDF at the
#: default profile's ~3 MB/s, bench/RESULTS-speed.md) against a worker's ~2 s start
#: (:func:`vdfzip.workers.worker_count`). Measured there: 2 workers on the 12.6 MB shock restart
#: (48,538 blocks) took longer than one process; on a 234 MB synthetic restart, 2.1× faster.
ENCODE_BLOCKS_PER_WORKER = 1 << 16


def default_output(path: Path, suffix: str) -> Path:
    """``restart.vlsv`` → ``restart<suffix>.vlsv`` (``.vdfz`` when encoding)."""
    stem = path.name[: -len(".vlsv")] if path.name.endswith(".vlsv") else path.name
    if suffix != ".vdfz" and stem.endswith(".vdfz"):
        stem = stem[: -len(".vdfz")]
    return path.with_name(f"{stem}{suffix}.vlsv")


def _encoding_state(source: Path | VlasiatorFile, settings: Settings) -> dict:
    """What encoding batches needs (:mod:`vdfzip.workers`): the input (the file this process has
    open, or in a worker process its path), the settings (their codecs rebuilt on the CPU in a
    worker process) and a compressor per population, made on first use."""
    return {"file": source if isinstance(source, VlasiatorFile) else VlasiatorFile(source), "settings": settings,
            "compressors": {}}


def _encode_range(state: dict, item: tuple[str, int, int]) -> CompressedCells:
    """Encode the cells ``[start, stop)`` of a population (``item``: name, start, stop)."""
    name, start, stop = item
    population = state["file"].population(name)
    if name not in state["compressors"]:
        state["compressors"][name] = Compressor.for_settings(population.species, state["settings"])
    return state["compressors"][name].compress_batch(population.cells(start, stop))


def encoding_map(jobs: int, file: VlasiatorFile, settings: Settings, xp=np):
    """The ordered map :func:`encode_population` encodes batches with: ``jobs`` worker processes
    (each opening ``file`` again), or this process reading ``file`` as it is open, with the codecs
    as they are (for one job, and where the codecs fit on a GPU, which one process drives)."""
    jobs = 1 if xp is not np else jobs
    return workers.ordered_map(jobs, _encoding_state, (file if jobs == 1 else file.path, settings))


def batch_blocks(blocks: int, jobs: int) -> int:
    """Blocks per batch for ``jobs`` workers sharing ``blocks``: MAX_BATCH_BLOCKS, or small enough
    that every worker gets about four batches (cells encode alike in any batch, so this changes
    no byte), but at least MIN_BATCH_BLOCKS."""
    return MAX_BATCH_BLOCKS if jobs == 1 else int(np.clip(-(-blocks // (4 * jobs)), MIN_BATCH_BLOCKS, MAX_BATCH_BLOCKS))


def encode_population(
    population: Population, settings: Settings, batch_cells: int, spool: BinaryIO, bar, mapped, jobs: int = 1,
) -> EncodedPopulation:
    """Encode the cells of a population's window (all of them, or an MPI rank's share) in
    batches, through ``mapped`` (:func:`encoding_map` with ``jobs`` workers); records are appended
    to ``spool`` in cell order, index and moments rows are those of the encoded cells."""
    first, stop = population.window
    index = np.zeros(stop - first, dtype=layout.INDEX_DTYPE)
    moments = np.zeros((stop - first, layout.MOMENT_COLUMNS))
    summary = PopulationSummary(population.name, population.cell_count, population.block_count, population.vdf_bytes)
    blocks = int(population.offsets[-1] - population.offsets[0])
    ranges = population.batch_ranges(batch_blocks(blocks, jobs), batch_cells)
    for encoded in mapped(_encode_range, [(population.name, a, b) for a, b in ranges]):
        rows = slice(encoded.first - first, encoded.first - first + len(encoded))
        spool.write(encoded.records)
        index[rows], moments[rows] = encoded.index, encoded.moment_columns
        fallen = [int(c) for c, m, k in zip(encoded.cell_ids, encoded.methods, encoded.index["codec"])
                  if k > 0 and m == LOSSLESS]
        if fallen:
            log.warning("population %s: cells %s stored losslessly: no lossy codec met %s after moment restoration",
                        population.name, fallen, settings.profile.target(settings.tol, population.threshold))
        summary.methods.update(encoded.methods)
        summary.errors.append(encoded.errors)
        bar.update(len(encoded))
    return EncodedPopulation(population.species, population.vdf_elements(), settings.header(), index, moments, spool,
                             summary, first)


def encode_file(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    tol: float = 1e-2,
    method: str | None = None,
    profile: str | None = None,
    tail_tol: float | None = None,
    device: str = "auto",
    populations: list[str] | None = None,
    batch_cells: int = DEFAULT_BATCH_CELLS,
    block_order: str = "sorted",
    force: bool = False,
    progress: bool | None = None,
    mpi_hints: dict[str, str] | None = None,
    jobs: int | None = None,
) -> dict | None:
    """Compress the VDFs of a VLSV file into a vdfzip VLSV file; returns the summary dict.

    ``profile`` is ``restart`` (the default for restart files: content-block set kept, tails
    within ``tail_tol`` decades) or ``core`` (rel L2 only; the default for other files). Up to
    ``jobs`` worker processes encode batches of cells, one per ENCODE_BLOCKS_PER_WORKER blocks
    (default: ``$VDFZIP_JOBS``, else every available core; the same file for any count). Under an MPI launcher with more than one rank every rank
    takes part instead, one process each (:mod:`vdfzip.mpi_encode`; the same file as one process)
    and only rank 0 returns the summary; ``mpi_hints`` are MPI-IO hints (e.g. ``striping_factor``
    on Lustre)."""
    if batch_cells < 1:
        raise engine.OptionError(f"--batch-cells must be a positive integer, got {batch_cells}")
    engine.check_options(tol, method, block_order)
    jobs = workers.resolve_jobs(jobs)
    xp = array_namespace(device)
    source = Path(source)
    output = Path(output) if output is not None else default_output(source, ".vdfz")
    started = time.perf_counter()
    comm = distributed.world()
    with VlasiatorFile(distributed.open_input(comm, source, mpi_hints or {}), comm) as file:
        if layout.is_compressed(file.vlsv):
            raise VdfzipError(f"{source} is already compressed by vdfzip; decode it first")
        selected = _select_populations(file, populations)
        settings = engine.settings(tol, method, profile, tail_tol, block_order, file.is_restart, xp)
        output = check_output_path(output, inputs=[source], overwrite=force)
        if comm is not None:
            from .mpi_encode import encode_on_ranks

            encoded = encode_on_ranks(comm, file, selected, settings, batch_cells, output, mpi_hints or {})
            return None if encoded is None else _summary(source, output, encoded, settings, started)
        # the temporary output exists from the start: the run is visible, and what a SIGKILL leaves
        # behind the next run into the same place removes (fileio.atomic_output)
        with vlsv.VlsvWriter(output) as writer, contextlib.ExitStack() as spools:
            encoded = {}
            total = sum(p.cell_count for p in selected)
            jobs = workers.worker_count(jobs, sum(p.block_count for p in selected), ENCODE_BLOCKS_PER_WORKER)
            mapped = spools.enter_context(encoding_map(jobs, file, settings, xp))
            with tqdm(total=total, unit="cell", desc="encode", disable=None if progress is None else not progress) as bar:
                for p in selected:
                    # an unnamed file beside the output: the system removes it however the run ends
                    spool = spools.enter_context(tempfile.TemporaryFile(dir=output.parent))
                    encoded[p.name] = encode_population(p, settings, batch_cells, spool, bar, mapped, jobs=jobs)
            write_populations(writer, file.vlsv, encoded)
    return _summary(source, output, encoded, settings, started)


def _select_populations(file: VlasiatorFile, names: list[str] | None) -> list[Population]:
    if names:
        chosen = [file.population(n) for n in names]
    else:
        chosen = list(file.populations.values())
    return [p for p in chosen if p.block_count]


def _summary(source: Path, output: Path, encoded: dict[str, EncodedPopulation], settings: Settings,
             started: float) -> dict:
    with vlsv.read(output) as f:
        for name, e in encoded.items():
            e.summary.output_bytes = sum(f.element(tag, name=name).nbytes for tag in layout.ORIGINAL)
        manifest_bytes = f.element(integrity.TAG).nbytes
    pops = {name: e.summary.as_dict() for name, e in encoded.items()}
    input_bytes = sum(p["input_vdf_bytes"] for p in pops.values())
    output_bytes = sum(p["output_vdf_bytes"] for p in pops.values()) + manifest_bytes
    return {
        "input": str(source),
        "output": str(output),
        "ratio": input_bytes / output_bytes if output_bytes else None,
        "profile": settings.profile.as_dict(),
        "seconds": time.perf_counter() - started,
        "populations": pops,
    }
