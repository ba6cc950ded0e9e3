"""``encode_file``: compress a whole restart file, streamed cell batch by cell batch.

Encoding runs each cell down the codec chain: a codec's payload is decoded, the multipliers that
restore the ten moments are solved (in the restart profile with the content-block set enforced
between rounds) and stored with the payload, and the float result is checked against the
profile's target, exactly as decoding will apply them; cells that miss are retried
with a tighter codec target, then with the next codec, and the always-available ``lossless``
codec ends every chain. Payloads go to an unnamed spool file beside the output, so memory holds
one batch plus a few bytes of index per cell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import zstandard
from tqdm import tqdm

from . import __version__, blockset, content, distributed, integrity, layout, physics, vlsv, workers
from .codecs import Codec, Target, codec_ids, get_codec
from .errors import VdfzipError
from .fileio import check_output_path
from .profiles import Profile, resolve_profile
from .reconstruct import (LOSSLESS, Reconstruction, cell_rel_l2, cell_rows, decode_payloads, restored, select_moments,
                          solve_restoration, subset_offsets)
from .vlasiator import CellBatch, Population, VlasiatorFile

log = logging.getLogger("vdfzip")

# DESIGN.md's default chain is mlp,octree. The measurements say otherwise for now
# (bench/RESULTS-rd.md: the octree–Tucker codec is smaller at equal rel L2 on every real case
# and 10–30× faster to encode on CPU), so the default starts with octree and `--method mlp,octree`
# opts into the neural codec.
DEFAULT_CHAIN = ("octree",)
# A codec's own tolerance shrinks after each miss (see RETRY_MARGIN), down to this floor: the moment restoration
# can amplify a codec's error where the tails carry much of the pressure (measured on
# restart_ipshock_small: cold cells whose far tails hold ~25% of the pressure needed a codec
# tolerance 500× below the target, 2–3 kB payloads), and that is still ~50× smaller than lossless.
MIN_CODEC_TOL = 1e-5
#: A retry aims at RETRY_MARGIN × the bound (:func:`_retry_target`), shrinking the codec's target
#: by a factor within RETRY_SHRINK: fewer retries than the log2 halvings it took before (measured
#: on the shock restart, core profile: 224 codec calls for 72 cells before).
RETRY_MARGIN = 0.95
RETRY_SHRINK = (1 / 8, 0.9)
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
AUTO = "auto"


class OptionError(VdfzipError):
    """An encode/decode option with a bad value."""


def default_chain() -> list[str]:
    return [c for c in DEFAULT_CHAIN if c in codec_ids()]


def parse_chain(method: str | None) -> list[str]:
    """Codec ids of a comma-separated chain, ``lossless`` appended if missing; ``auto``: every
    registered codec (each cell then keeps the smallest payload that meets the target)."""
    if method == AUTO:
        return [c for c in codec_ids() if c != LOSSLESS] + [LOSSLESS]
    chain = default_chain() if method is None else [m.strip() for m in method.split(",") if m.strip()]
    if not chain:
        raise OptionError(f"--method {method!r} names no codec")
    unknown = [m for m in chain if m not in codec_ids()]
    if unknown:
        raise OptionError(f"--method: unknown codec {unknown[0]!r} (known: {', '.join(codec_ids())})")
    return chain if chain[-1] == LOSSLESS else [c for c in chain if c != LOSSLESS] + [LOSSLESS]


def array_namespace(device: str):
    """The array module fitting runs on: numpy, or cupy for ``cuda`` (and for ``auto`` when
    cupy sees a GPU). Only the neural codec fits on a GPU; every other step runs on the CPU."""
    if device not in ("cpu", "cuda", "auto"):
        raise OptionError(f"--device must be cpu, cuda or auto, not {device!r}")
    if device == "cpu":
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
        problem = "cupy sees no GPU"
    except Exception as error:  # ImportError, or CUDA runtime errors without a driver
        problem = f"cupy is unusable ({type(error).__name__})"
    if device == "cuda":
        raise OptionError(f"--device cuda: {problem}; install vdfzip[gpu] on a GPU node or use --device cpu")
    return np


def default_output(path: Path, suffix: str) -> Path:
    """``restart.vlsv`` → ``restart<suffix>.vlsv`` (``.vdfz`` when encoding)."""
    stem = path.name[: -len(".vlsv")] if path.name.endswith(".vlsv") else path.name
    if suffix != ".vdfz" and stem.endswith(".vdfz"):
        stem = stem[: -len(".vdfz")]
    return path.with_name(f"{stem}{suffix}.vlsv")


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
    """A population's encoding, ready to be written: in-memory index and moments, spooled records."""

    population: Population
    chain: list[Codec]
    index: np.ndarray
    moments: np.ndarray
    spool: BinaryIO  # the population's records, in cell order
    summary: PopulationSummary

    @property
    def packed_index(self) -> bytes:
        return zstandard.ZstdCompressor(level=19).compress(self.index.tobytes())


def _attempt(codec: Codec, batch: CellBatch, cells: np.ndarray, target: Target, mesh) -> dict[int, bytes]:
    """Payloads of the cells that ``codec`` can encode within ``target`` (cells without blocks go
    straight to lossless, whose payload for them is a few bytes)."""
    if codec.codec_id != LOSSLESS:
        cells = [c for c in cells if batch.offsets[c] < batch.offsets[c + 1]]
    return codec.encode_cells(batch, cells, mesh, target)


@dataclass
class EncodedBatch:
    """A batch's cells as they go into the file, and the values that decoding them gives."""

    batch: CellBatch  # the input cells, their blocks in the decoded order
    structures: list[bytes]  # per cell: block-structure bytes
    restorations: list[bytes]  # per cell: restoration multipliers of the accepted payload (lossless: none)
    payloads: list[bytes]  # per cell: the accepted codec payload
    codec_of_cell: np.ndarray  # per cell: the codec's position in the chain
    errors: np.ndarray  # per cell: rel L2 of the decoded values
    moment_columns: np.ndarray  # (cells, 10): the moments as stored
    values: np.ndarray  # the decoded values the encoder accepted, in the stored dtype


def in_decoded_order(batch: CellBatch, keep_order: bool) -> CellBatch:
    """``batch`` with every cell's ids and values moved together into the order decoding lists
    the blocks in (:func:`blockset.decoded_order`)."""
    rows = blockset.decoded_order(batch.block_ids, batch.offsets, keep_order)
    return replace(batch, block_ids=batch.block_ids[rows], values=np.asarray(batch.values)[rows])


def encode_batch(
    batch: CellBatch,
    population: Population,
    chain: list[Codec],
    profile: Profile,
    tol: float,
    keep_order: bool = True,
    best_of: bool = False,
) -> EncodedBatch:
    """Encode a batch of cells. A cell takes the first codec of the chain whose payload meets the
    profile's target at ``tol`` or, with ``best_of``, the smallest payload among all lossy codecs
    that do (lossless only if none does).

    Acceptance runs the decoder's own code on the decoder's own inputs: the cells in the decoded
    block order, the block ids and content-block set decoded from the structure bytes, the moments
    as stored, the stored dtype; so the accepted values are the values ``vdfzip decode`` writes,
    bit for bit, and a cell whose moments or content set the decoder would not restore falls
    down the chain (to lossless at the end)."""
    mesh, threshold = population.mesh, population.threshold
    batch = in_decoded_order(batch, keep_order)
    target = profile.target(tol, threshold)
    content_set = content.content_blocks(batch.values, threshold) if profile.keeps_content else None
    structures = [_structure(batch, i, keep_order, content_set, population) for i in range(len(batch))]
    stored_content = _decoded_structures(batch, structures, content_set, population)
    columns = layout.moments_to_columns(physics.batch_moments(batch, population))
    stored_moments = layout.columns_to_moments(columns, population.mass)
    cells = len(batch)
    payloads: list[bytes | None] = [None] * cells
    accepted_restorations: list[bytes] = [b""] * cells  # per cell: those of its accepted payload
    codec_of_cell = np.full(cells, -1)
    errors = np.zeros(cells)
    values = np.empty(np.shape(batch.values), dtype=population.dtype)
    for position, codec in enumerate(chain):
        lossless = codec.codec_id == LOSSLESS
        open_cells = np.ones(cells, dtype=bool) if best_of and not lossless else codec_of_cell < 0
        codec_targets = {int(c): target for c in np.flatnonzero(open_cells)}  # per cell: what the codec is asked
        outcomes: dict[int, _Outcome] = {}  # per cell: its last attempt that missed
        for _ in range(_attempts(codec, target)):
            candidates = {}
            for codec_target, group in _grouped(codec_targets):
                candidates |= _attempt(codec, batch, group, codec_target, mesh)
            codec_targets = {c: codec_targets[c] for c in candidates}  # a codec that missed a target misses tighter ones
            tried = np.array(sorted(candidates), dtype=int)
            if not len(tried):
                break
            result, restorations = _reconstruct_subset(batch, tried, candidates, codec, stored_moments, population,
                                                       stored_content)
            rel_l2, tails = _errors(batch, tried, result.values, target)
            ok = result.restored & (((rel_l2 <= target.rel_l2) & (tails <= (target.tail_tol or np.inf))) | lossless)
            tried_offsets = subset_offsets(batch.offsets, tried)
            for i, c in enumerate(tried):
                if not ok[i]:
                    outcome = _Outcome(codec_targets[c], rel_l2[i], tails[i])
                    codec_targets[c] = _retry_target(outcome, outcomes.get(c), target, result.restored[i])
                    outcomes[c] = outcome
                    continue
                del codec_targets[c]
                size = len(candidates[c]) + len(restorations[i])
                if payloads[c] is None or size < len(payloads[c]) + len(accepted_restorations[c]):
                    payloads[c], accepted_restorations[c] = candidates[c], restorations[i]
                    codec_of_cell[c], errors[c] = position, rel_l2[i]
                    values[batch.offsets[c] : batch.offsets[c + 1]] = result.values[tried_offsets[i] : tried_offsets[i + 1]]
            codec_targets = {c: t for c, t in codec_targets.items() if t.rel_l2 >= MIN_CODEC_TOL}
    if np.any(codec_of_cell < 0):
        raise VdfzipError(f"population {population.name}: cells left without a codec (the chain must end in lossless)")
    return EncodedBatch(batch, structures, accepted_restorations, payloads, codec_of_cell, errors, columns, values)


def _structure(batch: CellBatch, i: int, keep_order: bool, content_set, population: Population) -> bytes:
    """The block-structure bytes of the batch's ``i``-th cell; a cell that cannot have any (the
    same block id twice) is named."""
    try:
        return layout.encode_structure(batch.cell(i)[0], keep_order, _cell_mask(content_set, batch.offsets, i),
                                       population.mesh)
    except blockset.BlockSetError as error:
        raise blockset.BlockSetError(f"population {population.name}: cell {int(batch.cell_ids[i])}: {error}") from None


def _cell_mask(per_block: np.ndarray | None, offsets: np.ndarray, cell: int) -> np.ndarray | None:
    return None if per_block is None else per_block[offsets[cell] : offsets[cell + 1]]


def _decoded_structures(
    batch: CellBatch, structures: list[bytes], content_set: np.ndarray | None, population: Population
) -> np.ndarray | None:
    """The content-block set as the decoder reads it from ``structures``, after checking that they
    decode to the batch's block ids and content set (a failure here is a vdfzip bug, never a file)."""
    masks = []
    for i, structure in enumerate(structures):
        ids, mask = layout.decode_structure(structure, population.mesh)
        expected = _cell_mask(content_set, batch.offsets, i)
        if not np.array_equal(ids, batch.cell(i)[0]) or (mask is None) != (expected is None) or (
            mask is not None and not np.array_equal(mask, expected)
        ):
            raise VdfzipError(f"population {population.name}: cell {int(batch.cell_ids[i])}: "
                              "its block structure does not decode to its blocks (a vdfzip bug; please report it)")
        masks.append(mask)
    return None if content_set is None else np.concatenate(masks) if masks else np.zeros(0, bool)


def _errors(batch: CellBatch, cells: np.ndarray, values: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of ``cells``: the rel L2 of its reconstructed rows of ``values`` and its tail p95
    (0 without a tail bound)."""
    offsets = subset_offsets(batch.offsets, cells)
    errors = cell_rel_l2(values, batch.values[cell_rows(batch.offsets, cells)], offsets)
    tails = np.zeros(len(cells))
    if target.tail_tol is not None:
        for i, c in enumerate(cells):
            tails[i] = target.tail_p95(values[offsets[i] : offsets[i + 1]], batch.cell(c)[1])
    return errors, tails


def _attempts(codec: Codec, target: Target) -> int:
    """How many times a cell is offered to ``codec``: once, or for codecs worth retrying (cheap,
    deterministic) as many times as halving the target takes to reach MIN_CODEC_TOL."""
    return 1 + max(0, int(np.floor(np.log2(target.rel_l2 / MIN_CODEC_TOL)))) if codec.retry_tighter else 1


def _grouped(codec_targets: dict[int, Target]) -> list[tuple[Target, np.ndarray]]:
    """The cells asked for the same codec target, together (in cell order within a group)."""
    groups: dict[Target, list[int]] = {}
    for cell, codec_target in sorted(codec_targets.items()):
        groups.setdefault(codec_target, []).append(cell)
    return [(t, np.array(cells)) for t, cells in groups.items()]


@dataclass(frozen=True)
class _Outcome:
    """What a cell's attempt asked the codec for and what decoding its payload gave."""

    asked: Target
    rel_l2: float
    tail_p95: float


def _retry_target(latest: _Outcome, previous: _Outcome | None, target: Target, restored: bool) -> Target:
    """The codec target of a cell's next attempt, after the moment restoration (and the content
    enforcement) pushed its decoded values past ``target``. Each missed bound shrinks by a secant
    step in log-log between the cell's last two attempts (proportional on the first retry): the
    restoration adds an error of its own that falls much slower than the codec's on some cells
    (a cold cell of the shock restart stayed at rel L2 0.0125 while its codec target went from
    3.6e-4 to 1.5e-4), so a flat response takes the largest step. A cell that did not restore
    halves its rel L2 target and shrinks its tail bound by 0.8."""
    if not restored:
        return latest.asked.tighter(0.5, 0.8)

    def shrink(asked: float | None, got: float, asked_before: float | None, got_before: float | None,
               bound: float | None) -> float:
        if bound is None or got <= bound:
            return 1.0
        slope = 1.0
        if asked_before is not None and asked_before > asked and got_before > 0 and got > 0:
            slope = np.log(got_before / got) / np.log(asked_before / asked)
        with np.errstate(over="ignore", divide="ignore"):
            factor = (RETRY_MARGIN * bound / got) ** (1.0 / max(slope, 1e-3))
        return float(np.clip(factor, *RETRY_SHRINK))

    before = previous or _Outcome(latest.asked, np.nan, np.nan)
    return latest.asked.tighter(
        shrink(latest.asked.rel_l2, latest.rel_l2, previous and before.asked.rel_l2, before.rel_l2, target.rel_l2),
        shrink(latest.asked.tail_tol, latest.tail_p95, previous and before.asked.tail_tol, before.tail_p95,
               target.tail_tol),
    )


def _reconstruct_subset(batch, cells, candidates, codec, moments, population: Population, content_set
                        ) -> tuple[Reconstruction, list[bytes]]:
    """What decoding ``cells``' candidate payloads gives, as :class:`CompressedFile` decodes them,
    with the restoration bytes solved for them (empty for lossless cells)."""
    rows = cell_rows(batch.offsets, cells)
    sub = CellBatch(batch.population, 0, batch.cell_ids[cells], subset_offsets(batch.offsets, cells),
                    batch.block_ids[rows], np.zeros((0, 0)))
    payloads, first = [candidates[c] for c in cells], np.zeros(len(cells), int)
    decoded = decode_payloads(sub, payloads, first, [codec], population.mesh)
    target, keep = select_moments(moments, cells), None if content_set is None else content_set[rows]
    if codec.codec_id == LOSSLESS:
        restorations, solved = [b""] * len(cells), np.ones(len(cells), dtype=bool)
    else:
        restorations, solved = solve_restoration(sub.block_ids, decoded, sub.offsets, population.mesh, target, keep,
                                                 population.threshold)
    result = restored(sub, decoded, first, [codec], target, population.mesh, population.dtype, keep,
                      population.threshold, restorations)
    return replace(result, moments_restored=result.moments_restored & solved), restorations


@dataclass(frozen=True)
class BatchRecords:
    """What the file keeps of an encoded batch (:class:`EncodedBatch` without the values): what a
    worker process sends back."""

    first: int
    cell_ids: np.ndarray
    blocks: np.ndarray
    structures: list[bytes]
    restorations: list[bytes]
    payloads: list[bytes]
    codec_of_cell: np.ndarray
    errors: np.ndarray
    moment_columns: np.ndarray


def _encoding_state(source: Path, chain: list[Codec] | list[tuple[str, dict]], options: tuple) -> dict:
    """What encoding batches needs (:mod:`vdfzip.workers`): the input, the codecs (rebuilt on
    the CPU from their ids and configs in a worker process) and the options."""
    if chain and not isinstance(chain[0], Codec):
        chain = [get_codec(codec_id, **config) for codec_id, config in chain]
        for codec in chain:
            codec.fit_on(np)
    return {"file": VlasiatorFile(source), "chain": chain, "options": options}


def _encode_range(state: dict, item: tuple[str, int, int]) -> BatchRecords:
    """Encode the cells ``[start, stop)`` of a population (``item``: name, start, stop)."""
    name, start, stop = item
    population = state["file"].population(name)
    profile, tol, keep_order, best_of = state["options"]
    encoded = encode_batch(population.cells(start, stop), population, state["chain"], profile, tol, keep_order, best_of)
    b = encoded.batch
    return BatchRecords(start, b.cell_ids, np.diff(b.offsets), encoded.structures, encoded.restorations,
                        encoded.payloads, encoded.codec_of_cell, encoded.errors, encoded.moment_columns)


def encoding_map(jobs: int, source: Path, chain: list[Codec], tol: float, profile: Profile, keep_order: bool,
                 best_of: bool, xp=np):
    """The ordered map :func:`encode_population` encodes batches with: ``jobs`` worker processes,
    or this process with the codecs as they are (for one job, and where the codecs fit on a GPU,
    which one process drives)."""
    options = (profile, tol, keep_order, best_of)
    if jobs == 1 or xp is not np:
        return workers.ordered_map(1, _encoding_state, (source, chain, options))
    return workers.ordered_map(jobs, _encoding_state, (source, [(c.codec_id, c.get_config()) for c in chain], options))


def batch_blocks(blocks: int, jobs: int) -> int:
    """Blocks per batch for ``jobs`` workers sharing ``blocks``: MAX_BATCH_BLOCKS, or small enough
    that every worker gets about four batches (cells encode alike in any batch, so this changes
    no byte), but at least MIN_BATCH_BLOCKS."""
    return MAX_BATCH_BLOCKS if jobs == 1 else int(np.clip(-(-blocks // (4 * jobs)), MIN_BATCH_BLOCKS, MAX_BATCH_BLOCKS))


def encode_population(
    population: Population, chain: list[Codec], tol: float, profile: Profile, batch_cells: int, spool: BinaryIO, bar,
    mapped, cells: tuple[int, int] | None = None, jobs: int = 1,
) -> EncodedPopulation:
    """Encode every cell of a population (or of its range ``cells``: an MPI rank's share) in
    batches, through ``mapped`` (:func:`encoding_map` with ``jobs`` workers); records are appended
    to ``spool`` in cell order, index and moments rows are those of the encoded cells."""
    first, stop = (0, population.cell_count) if cells is None else cells
    index = np.zeros(stop - first, dtype=layout.INDEX_DTYPE)
    moments = np.zeros((stop - first, layout.MOMENT_COLUMNS))
    summary = PopulationSummary(population.name, population.cell_count, population.block_count, population.vdf_bytes)
    blocks = int(population.offsets[stop] - population.offsets[first])
    ranges = population.batch_ranges(batch_blocks(blocks, jobs), batch_cells, (first, stop))
    for encoded in mapped(_encode_range, [(population.name, a, b) for a, b in ranges]):
        row = encoded.first - first
        for i, (structure, restoration, payload) in enumerate(zip(encoded.structures, encoded.restorations,
                                                                   encoded.payloads)):
            record = structure + restoration + payload
            spool.write(record)
            index[row + i] = (
                encoded.cell_ids[i], encoded.blocks[i], len(structure), len(restoration), len(payload),
                encoded.codec_of_cell[i], layout.checksum(record),
            )
        moments[row : row + len(encoded.cell_ids)] = encoded.moment_columns
        fallen = [int(encoded.cell_ids[i]) for i, k in enumerate(encoded.codec_of_cell)
                  if k > 0 and chain[k].codec_id == LOSSLESS]
        if fallen:
            log.warning("population %s: cells %s stored losslessly: no lossy codec met %s "
                        "after moment restoration", population.name, fallen, profile.target(tol, population.threshold))
        summary.methods.update(chain[k].codec_id for k in encoded.codec_of_cell)
        summary.errors.append(encoded.errors)
        bar.update(len(encoded.cell_ids))
    return EncodedPopulation(population, chain, index, moments, spool, summary)


def _header(encoded: EncodedPopulation, tol: float, profile: Profile, keep_order: bool, index_bytes: bytes) -> bytes:
    p = encoded.population
    header = {
        "format": layout.FORMAT_VERSION,
        "vdfzip": __version__,
        "population": p.name,
        "tol": tol,
        "profile": profile.as_dict(),
        "threshold": p.threshold,
        "block_order": "keep" if keep_order else "sorted",
        "dtype": p.dtype.str,
        "codecs": [{"id": c.codec_id, "config": c.get_config()} for c in encoded.chain],
        "replaces": {
            layout.REPLACEMENT[tag]: {"attrs": dict(e.attrs), "offset": e.offset} for tag, e in p.vdf_elements().items()
        },
        "checksums": {"index": layout.checksum(index_bytes), "moments": layout.checksum(encoded.moments)},
    }
    return json.dumps(header, sort_keys=True).encode()


def population_arrays(
    encoded: EncodedPopulation, index_bytes: bytes, tol: float, profile: Profile, keep_order: bool
) -> dict[str, tuple[str, np.ndarray | None, dict]]:
    """Per original tag, the vdfzip array that takes its place: (tag, data, attributes); the data
    of VDFZIP_RECORDS is None (the spooled records, written in pieces)."""
    name = encoded.population.name
    attrs = {"name": name, "mesh": "SpatialGrid"}
    text = _header(encoded, tol, profile, keep_order, index_bytes)
    header_attrs = attrs | {"format_version": layout.FORMAT_VERSION, "vdfzip_version": __version__,
                            "crc32": layout.checksum(text)}
    return {
        "CELLSWITHBLOCKS": ("VDFZIP_INDEX", np.frombuffer(index_bytes, np.uint8), attrs),
        "BLOCKSPERCELL": ("VDFZIP_MOMENTS", encoded.moments, attrs),
        "BLOCKIDS": ("VDFZIP_HEADER", np.frombuffer(text, np.uint8), header_attrs),
        "BLOCKVARIABLE": ("VDFZIP_RECORDS", None, attrs),
    }


def _write_population_array(writer: vlsv.VlsvWriter, tag: str, encoded: EncodedPopulation, arrays: dict) -> None:
    """Write the vdfzip array that takes the place of the population's array ``tag``."""
    vdfzip_tag, data, attrs = arrays[tag]
    if data is not None:
        writer.write_array(vdfzip_tag, data, **attrs)
        return
    encoded.spool.seek(0)
    with writer.stream_array(vdfzip_tag, np.uint8, **attrs) as sink:
        while chunk := encoded.spool.read(1 << 24):
            sink.write(np.frombuffer(chunk, np.uint8))


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
    if not (isinstance(tol, (int, float)) and 1e-6 <= tol < 1):
        raise OptionError(f"--tol must be in [1e-6, 1), got {tol}")
    if batch_cells < 1:
        raise OptionError(f"--batch-cells must be a positive integer, got {batch_cells}")
    if block_order not in ("keep", "sorted"):
        raise OptionError(f"--block-order must be keep or sorted, not {block_order!r}")
    jobs = workers.resolve_jobs(jobs)
    xp = array_namespace(device)
    chain_ids = parse_chain(method)
    source = Path(source)
    output = Path(output) if output is not None else default_output(source, ".vdfz")
    started = time.perf_counter()
    with VlasiatorFile(source) as file:
        if layout.is_compressed(file.vlsv):
            raise VdfzipError(f"{source} is already compressed by vdfzip; decode it first")
        selected = _select_populations(file, populations)
        chosen = resolve_profile(profile, tail_tol, file.is_restart)
        chain = [get_codec(c, **chosen.codec_config(c)) for c in chain_ids]
        for codec in chain:
            codec.fit_on(xp)
        output = check_output_path(output, inputs=[source], overwrite=force)
        keep_order = block_order == "keep"
        comm = distributed.world()
        if comm is not None:
            from .mpi_encode import encode_on_ranks

            encoded = encode_on_ranks(comm, file, selected, chain, tol, chosen, keep_order, batch_cells, output,
                                      method == AUTO, mpi_hints or {})
            return None if encoded is None else _summary(source, output, encoded, chosen, started)
        # the temporary output exists from the start: the run is visible, and what a SIGKILL leaves
        # behind the next run into the same place removes (fileio.atomic_output)
        with vlsv.VlsvWriter(output) as writer, contextlib.ExitStack() as spools:
            encoded = {}
            total = sum(p.cell_count for p in selected)
            jobs = workers.worker_count(jobs, sum(p.block_count for p in selected), ENCODE_BLOCKS_PER_WORKER)
            mapped = spools.enter_context(encoding_map(jobs, source, chain, tol, chosen, keep_order, method == AUTO, xp))
            with tqdm(total=total, unit="cell", desc="encode", disable=None if progress is None else not progress) as bar:
                for p in selected:
                    # an unnamed file beside the output: the system removes it however the run ends
                    spool = spools.enter_context(tempfile.TemporaryFile(dir=output.parent))
                    encoded[p.name] = encode_population(p, chain, tol, chosen, batch_cells, spool, bar, mapped, jobs=jobs)
            arrays = {name: population_arrays(e, e.packed_index, tol, chosen, keep_order) for name, e in encoded.items()}
            for element in file.vlsv.write_order():
                if element.tag in layout.REPLACEMENT and element.name in encoded:
                    _write_population_array(writer, element.tag, encoded[element.name], arrays[element.name])
                else:
                    writer.copy_element(element, file.vlsv.raw_chunks(element))
            integrity.write(writer, file.vlsv.write_order())
    return _summary(source, output, encoded, chosen, started)


def _select_populations(file: VlasiatorFile, names: list[str] | None) -> list[Population]:
    if names:
        chosen = [file.population(n) for n in names]
    else:
        chosen = list(file.populations.values())
    return [p for p in chosen if p.block_count]


def _summary(source: Path, output: Path, encoded: dict[str, EncodedPopulation], profile: Profile, started: float) -> dict:
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
        "profile": profile.as_dict(),
        "seconds": time.perf_counter() - started,
        "populations": pops,
    }
