"""The encoding engine: a batch of one population's cells in, its compressed cells out.

Every interface encodes through :func:`compress_batch`: ``vdfzip encode`` (in one process, in
worker processes, on MPI ranks) and :class:`vdfzip.Compressor` for cells in memory. Encoding runs
each cell down the codec chain: a codec's payload is decoded, the multipliers that restore the
ten moments are solved (in the restart profile with the content-block set enforced between
rounds) and stored with the payload, and the float result is checked against the profile's
target, exactly as decoding will apply them; cells that miss are retried with a tighter codec
target, then with the next codec, and the always-available ``lossless`` codec ends every chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from . import blockset, content, layout, physics
from .cells import CompressedCells
from .codecs import Codec, Target, codec_ids, get_codec
from .errors import VdfzipError
from .profiles import Profile, resolve_profile
from .reconstruct import (LOSSLESS, Reconstruction, cell_rel_l2, cell_rows, content_kept, decode_payloads, reconstruct,
                          select_moments, solve_restoration, subset_offsets)
from .vlasiator import CellBatch, Species

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
    population: Species,
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
            rel_l2, tails = _errors(batch, tried, result.values, target, lossless)
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


def _structure(batch: CellBatch, i: int, keep_order: bool, content_set, population: Species) -> bytes:
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
    batch: CellBatch, structures: list[bytes], content_set: np.ndarray | None, population: Species
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


def _errors(batch: CellBatch, cells: np.ndarray, values: np.ndarray, target: Target, exact: bool
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of ``cells``: the rel L2 of its reconstructed rows of ``values`` and its tail p95
    (0 without a tail bound). With ``exact`` (a lossless codec's values), the cells whose values
    are the original bits are 0 for both without a float64 pass; any other is measured."""
    offsets = subset_offsets(batch.offsets, cells)
    measured = np.arange(len(cells))
    if exact:
        measured = np.array([i for i, c in enumerate(cells) if not _same_bits(
            values[offsets[i] : offsets[i + 1]], batch.values[batch.offsets[c] : batch.offsets[c + 1]])], dtype=int)
    errors, tails = np.zeros(len(cells)), np.zeros(len(cells))
    if len(measured):
        errors[measured] = cell_rel_l2(values[cell_rows(offsets, measured)],
                                       batch.values[cell_rows(batch.offsets, cells[measured])],
                                       subset_offsets(offsets, measured))
    if target.tail_tol is not None:
        for i in measured:
            tails[i] = target.tail_p95(values[offsets[i] : offsets[i + 1]], batch.cell(cells[i])[1])
    return errors, tails


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Are two float arrays the same dtype, shape and bits (NaNs included)?"""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    bits = np.dtype(f"u{a.dtype.itemsize}")
    return np.array_equal(np.ascontiguousarray(a).view(bits), np.ascontiguousarray(b).view(bits))


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


def _reconstruct_subset(batch, cells, candidates, codec, moments, population: Species, content_set
                        ) -> tuple[Reconstruction, list[bytes]]:
    """What decoding ``cells``' candidate payloads gives, as :class:`CompressedFile` decodes them,
    with the restoration bytes solved for them (empty for lossless cells): the solve's values are
    those that applying its stored multipliers gives the decoder, bit for bit."""
    rows = cell_rows(batch.offsets, cells)
    sub = CellBatch(batch.population, 0, batch.cell_ids[cells], subset_offsets(batch.offsets, cells),
                    batch.block_ids[rows], np.zeros((0, 0)))
    payloads, first = [candidates[c] for c in cells], np.zeros(len(cells), int)
    target, keep = select_moments(moments, cells), None if content_set is None else content_set[rows]
    if codec.codec_id == LOSSLESS:
        result = reconstruct(sub, payloads, first, [codec], target, population.mesh, population.dtype, keep,
                             population.threshold)
        return result, [b""] * len(cells)
    decoded = decode_payloads(sub.block_ids, sub.offsets, payloads, first, [codec], population.mesh)
    restorations, solved, values = solve_restoration(sub.block_ids, decoded, sub.offsets, population.mesh, target, keep,
                                                     population.threshold)
    values = values.astype(population.dtype)
    return Reconstruction(values, solved, content_kept(values, sub.offsets, keep, population.threshold)), restorations


@dataclass(frozen=True)
class Settings:
    """How cells are encoded, one value for a whole file or :class:`vdfzip.Compressor`: the codec
    chain, the profile, the tolerance, the block order, and (``auto``) whether each cell keeps
    the smallest payload of all lossy codecs."""

    chain: tuple[Codec, ...]
    profile: Profile
    tol: float
    keep_order: bool
    best_of: bool

    def __reduce__(self):
        """Pickled for a worker process as ids and configs: the codecs are rebuilt there, on the CPU."""
        return _rebuilt, ([(c.codec_id, c.get_config()) for c in self.chain], self.profile, self.tol, self.keep_order,
                          self.best_of)

    def header(self) -> dict:
        """The settings as a compressed file's header and a blob store them (JSON-ready)."""
        return {"tol": self.tol, "profile": self.profile.as_dict(),
                "block_order": "keep" if self.keep_order else "sorted",
                "codecs": [{"id": c.codec_id, "config": c.get_config()} for c in self.chain]}


def _rebuilt(chain: list[tuple[str, dict]], *options) -> Settings:
    return Settings(tuple(get_codec(codec_id, **config) for codec_id, config in chain), *options)


def check_options(tol: float, method: str | None, block_order: str) -> list[str]:
    """Refuse a bad tolerance, chain or block order (what can be checked before reading a
    file); the chain's codec ids."""
    if isinstance(tol, bool) or not (isinstance(tol, (int, float)) and 1e-6 <= tol < 1):
        raise OptionError(f"--tol must be in [1e-6, 1), got {tol}")
    if block_order not in ("keep", "sorted"):
        raise OptionError(f"--block-order must be keep or sorted, not {block_order!r}")
    return parse_chain(method)


def settings(tol: float = 1e-2, method: str | None = None, profile: str | None = None, tail_tol: float | None = None,
             block_order: str = "sorted", restart: bool = True, xp=np) -> Settings:
    """The checked :class:`Settings` of the CLI's options (``profile`` None: ``restart`` for
    restart files, ``core`` otherwise); the codecs fit on the array module ``xp``."""
    chain_ids = check_options(tol, method, block_order)
    chosen = resolve_profile(profile, tail_tol, restart)
    chain = tuple(get_codec(c, **chosen.codec_config(c)) for c in chain_ids)
    for codec in chain:
        codec.fit_on(xp)
    return Settings(chain, chosen, float(tol), block_order == "keep", method == AUTO)


def compress_batch(batch: CellBatch, species: Species, settings: Settings) -> CompressedCells:
    """The compressed cells of ``batch`` (:func:`encode_batch` under ``settings``), their records
    and index rows as a file stores them, with the time and the neural fit steps they took."""
    started = time.perf_counter()
    s = settings
    steps_before = _steps_trained(s.chain)
    encoded = encode_batch(batch, species, list(s.chain), s.profile, s.tol, s.keep_order, s.best_of)
    index = np.zeros(len(batch), dtype=layout.INDEX_DTYPE)
    records = []
    for i, (structure, restoration, payload) in enumerate(zip(encoded.structures, encoded.restorations,
                                                               encoded.payloads)):
        records.append(structure + restoration + payload)
        index[i] = (encoded.batch.cell_ids[i], encoded.batch.offsets[i + 1] - encoded.batch.offsets[i], len(structure),
                    len(restoration), len(payload), encoded.codec_of_cell[i], layout.checksum(records[-1]))
    return CompressedCells(species, s.header(), index, encoded.moment_columns, b"".join(records), encoded.errors,
                           batch.first, time.perf_counter() - started, _steps_trained(s.chain) - steps_before)


def _steps_trained(chain) -> int:
    """The neural codecs' training steps so far, summed (codecs without fits have none)."""
    return sum(getattr(codec, "steps_trained", 0) for codec in chain)
