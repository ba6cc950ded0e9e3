"""From payloads to restored block values: decode, restore the ten moments, enforce the
content-block set (restart profile), cast to the stored dtype.

The encoder runs exactly this on every candidate payload and accepts a cell only if the result
meets the tolerance, so what ``vdfzip decode`` writes is what the encoder checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import conservation, content
from .codecs import Codec
from .errors import CorruptFileError
from .physics import Moments
from .vlasiator import CellBatch, VelocityMesh

LOSSLESS = "lossless"


@dataclass(frozen=True)
class Reconstruction:
    values: np.ndarray  # (nblocks, wid³) in the stored dtype
    moments_restored: np.ndarray  # (cells,) bool: the moment restoration converged (lossless cells: True)
    content_kept: np.ndarray  # (cells,) bool: the decoded content-block set is the stored one (True without one)

    @property
    def restored(self) -> np.ndarray:
        """Per cell: does it decode to what was stored (moments and content-block set)?"""
        return self.moments_restored & self.content_kept


def lossless_cells(codec_of_cell: np.ndarray, codecs) -> np.ndarray:
    """Per cell: is it stored by the lossless codec (``codec_of_cell``: positions in ``codecs``)?"""
    return np.isin(codec_of_cell, [i for i, c in enumerate(codecs) if c.codec_id == LOSSLESS])


def select_moments(moments: Moments, cells: np.ndarray) -> Moments:
    """The moments of a subset of cells."""
    return Moments(
        moments.density[cells], moments.velocity[cells], moments.pressure[cells], moments.heat_flux[cells], moments.mass
    )


def cell_rows(offsets: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Block-row indices of the given cells, in order."""
    return np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in cells]) if len(cells) else np.zeros(0, int)


def decode_payloads(block_ids: np.ndarray, offsets: np.ndarray, payloads: Sequence[bytes], codec_of_cell: np.ndarray,
                    codecs: Sequence[Codec], mesh: VelocityMesh) -> np.ndarray:
    """float64 values of the cells with these ``block_ids`` and block ``offsets`` as their codecs
    decode their payloads."""
    values = np.empty((len(block_ids), mesh.cells_per_block))
    for index, codec in enumerate(codecs):
        cells = np.flatnonzero(codec_of_cell == index)
        if len(cells):
            values[cell_rows(offsets, cells)] = codec.decode_cells(
                [payloads[c] for c in cells], [block_ids[offsets[c] : offsets[c + 1]] for c in cells], mesh)
    return values


def reconstruct(
    batch: CellBatch,
    payloads: Sequence[bytes],
    codec_of_cell: np.ndarray,
    codecs: Sequence[Codec],
    moments: Moments,
    mesh: VelocityMesh,
    dtype: np.dtype,
    content_set: np.ndarray | None = None,
    threshold: float = 0.0,
    restorations: Sequence[bytes] | None = None,
) -> Reconstruction:
    """The final values of ``batch``'s cells (its ``values`` are ignored) from their payloads.

    Lossless cells are decoded straight into the stored dtype, exactly as stored; the others are
    decoded in float64, clipped at 0 and reweighted so their density, velocity and pressure tensor
    equal ``moments``, and given a per-block ``content_set`` (restart profile), exactly those
    blocks reach ``threshold``: by the multipliers stored per cell in ``restorations`` (format ≥ 3:
    one pass per round, no solve), or for older files by solving them here (:func:`restore`).
    Every cell's result is then checked against the content set in the stored dtype. Each cell's
    values depend on its own payload, blocks, moments and multipliers only, never on the other
    cells of the batch, so the encoder's check on a few cells sees the bytes the decoder writes in
    any batch.
    """
    values = np.empty((len(batch.block_ids), mesh.cells_per_block), dtype=dtype)
    moments_ok = np.ones(len(batch), dtype=bool)
    lossless = lossless_cells(codec_of_cell, codecs)
    for c in np.flatnonzero(lossless):
        codecs[codec_of_cell[c]].decode_into(payloads[c], values[batch.offsets[c] : batch.offsets[c + 1]])
    cells = np.flatnonzero(~lossless)
    if len(cells):
        rows, offsets = cell_rows(batch.offsets, cells), subset_offsets(batch.offsets, cells)
        decoded = decode_payloads(batch.block_ids[rows], offsets, [payloads[c] for c in cells], codec_of_cell[cells],
                                  codecs, mesh)
        target = select_moments(moments, cells)
        keep = None if content_set is None else content_set[rows]
        if restorations is None:
            lossy, moments_ok[cells] = restore(batch.block_ids[rows], decoded, offsets, mesh, target, keep, threshold)
        else:
            multipliers = [unpack_multipliers(restorations[c]) for c in cells]
            lossy = apply_restoration(batch.block_ids[rows], decoded, offsets, mesh, target, multipliers, keep,
                                      threshold)
        values[rows] = lossy
    return Reconstruction(values, moments_ok, content_kept(values, batch.offsets, content_set, threshold))


def content_kept(values: np.ndarray, offsets: np.ndarray, content_set: np.ndarray | None, threshold: float) -> np.ndarray:
    """Per cell: do exactly the blocks of ``content_set`` reach ``threshold`` in ``values``
    (True for every cell without a content set)?"""
    kept = np.ones(len(offsets) - 1, dtype=bool)
    if content_set is not None:
        wrong_rows = np.flatnonzero(content.content_blocks(values, threshold) != content_set)
        kept[np.searchsorted(offsets, wrong_rows, side="right") - 1] = False
    return kept


def subset_offsets(offsets: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Block offsets of the given cells' rows taken in order (:func:`cell_rows`)."""
    return np.concatenate([[0], np.cumsum(np.diff(offsets)[cells])])


#: Restoration–enforcement rounds of the restart profile. Each round shrinks the moment error the
#: enforcement leaves by ~25× (measured on the 72 restart cells from coarse linear decodes: max
#: residual 1.1, 6e-6, 2e-7, 1e-8, 5e-11), so a handful reaches ENFORCED_RESIDUAL.
MAX_ROUNDS = 8


def restore(block_ids, values, offsets, mesh, target: Moments, content_set, threshold) -> tuple[np.ndarray, np.ndarray]:
    """Restored values and per cell whether the moments hold, solved at decode time as files of
    formats 1 and 2 need it (later formats store the multipliers: :func:`solve_restoration`).
    With a ``content_set`` the
    restoration and the enforcement of the set alternate: the enforcement moves values of the
    threshold's size (which can carry pressure far out in a cold cell's tails), the next
    restoration corrects that with factors ever closer to 1, until the moments hold as they stand.
    A cell leaves the rounds as soon as its own moments hold, so its result does not depend on
    which other cells share the batch."""
    projection = conservation.restore_moments(block_ids, values, offsets, mesh, target)
    if content_set is None:
        return projection.values, projection.converged
    values, converged = projection.values, projection.converged.copy()
    residual = np.full(len(offsets) - 1, np.inf)
    pending = np.arange(len(offsets) - 1)
    for first_round in [True] + [False] * (MAX_ROUNDS - 1):
        rows, sub_offsets = cell_rows(offsets, pending), subset_offsets(offsets, pending)
        sub_target = select_moments(target, pending)
        if not first_round:
            projection = conservation.restore_moments(block_ids[rows], values[rows], sub_offsets, mesh, sub_target)
            values[rows] = projection.values
            converged[pending] &= projection.converged
        values[rows] = content.enforce(values[rows], content_set[rows], threshold)
        residual[pending] = conservation.moment_residual(block_ids[rows], values[rows], sub_offsets, mesh, sub_target)
        pending = pending[residual[pending] > conservation.ENFORCED_RESIDUAL]
        if not len(pending):
            break
    return values, converged & (residual <= conservation.ENFORCED_RESIDUAL)


#: Stored restoration multipliers: ten float32 per round. float32 halves their bytes, and since
#: every round after the first starts from the values the rounded multipliers gave, only the last
#: round's rounding reaches the moments (≲ 1e-8, ENFORCED_RESIDUAL, checked by the encoder).
MULTIPLIER_DTYPE = np.dtype("<f4")
MULTIPLIERS_PER_ROUND = conservation.kernel.BASIS  # one per moment of φ = (1, u, u⊗u)


def pack_multipliers(rounds: np.ndarray) -> bytes:
    """The restoration bytes of a cell: its (rounds, 10) multipliers, round by round."""
    return np.ascontiguousarray(rounds, dtype=MULTIPLIER_DTYPE).tobytes()


def unpack_multipliers(data: bytes) -> np.ndarray:
    """(rounds, 10) float64 multipliers from a cell's restoration bytes (≥ 1 round, finite)."""
    size = MULTIPLIERS_PER_ROUND * MULTIPLIER_DTYPE.itemsize
    if not data or len(data) % size or len(data) // size > MAX_ROUNDS:
        raise CorruptFileError(f"restoration of {len(data)} bytes: not 1 to {MAX_ROUNDS} rounds of {size}")
    rounds = np.frombuffer(data, MULTIPLIER_DTYPE).reshape(-1, MULTIPLIERS_PER_ROUND).astype(np.float64)
    if not np.isfinite(rounds).all():
        raise CorruptFileError("restoration multipliers that are not finite")
    return rounds


def _restoration_round(block_ids, values, offsets, mesh, target: Moments, multipliers, content_set, threshold):
    """One round: reweight by ``multipliers`` (clipping at 0), then enforce the content set."""
    values = conservation.apply_multipliers(block_ids, values, offsets, mesh, target, multipliers)
    return values if content_set is None else content.enforce(values, content_set, threshold)


def solve_restoration(block_ids, decoded, offsets, mesh, target: Moments, content_set, threshold
                      ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Per cell, the restoration bytes that make its decoded values' moments equal ``target``
    (and with a ``content_set``, keep exactly those blocks at the threshold), whether they do, and
    the float64 values they give (those of :func:`apply_restoration`, bit for bit).

    Each round solves the multipliers for the values as the previous rounds left them, rounds them
    to float32 and applies them as :func:`apply_restoration` will, content enforcement included;
    a cell leaves the rounds once its moments hold to ENFORCED_RESIDUAL, so its multipliers do not
    depend on the other cells of the batch."""
    cells = len(offsets) - 1
    values = np.array(decoded, dtype=np.float64)
    rounds: list[list[np.ndarray]] = [[] for _ in range(cells)]
    converged = np.ones(cells, dtype=bool)
    residual = np.full(cells, np.inf)
    pending, start = np.arange(cells), None
    for _ in range(MAX_ROUNDS):
        rows, sub_offsets = cell_rows(offsets, pending), subset_offsets(offsets, pending)
        sub_target = select_moments(target, pending)
        keep = None if content_set is None else content_set[rows]
        solution = conservation.solve_multipliers(block_ids[rows], values[rows], sub_offsets, mesh, sub_target, start)
        multipliers = solution.multipliers.astype(MULTIPLIER_DTYPE).astype(np.float64)
        values[rows] = _restoration_round(block_ids[rows], values[rows], sub_offsets, mesh, sub_target, multipliers,
                                          keep, threshold)
        for i, c in enumerate(pending):
            rounds[c].append(multipliers[i])
        converged[pending] &= solution.converged
        check = conservation.unweighted(block_ids[rows], values[rows], sub_offsets, mesh, sub_target)
        residual[pending] = check.residual
        going_on = converged[pending] & (check.residual > conservation.ENFORCED_RESIDUAL)
        pending, start = pending[going_on], check.of(going_on)  # the check is the next round's first step
        if not len(pending):
            break
    restorations = [pack_multipliers(np.stack(r)) for r in rounds]
    return restorations, converged & (residual <= conservation.ENFORCED_RESIDUAL), values


def apply_restoration(block_ids, decoded, offsets, mesh, target: Moments, multipliers: Sequence[np.ndarray],
                      content_set, threshold) -> np.ndarray:
    """Decoded values restored by each cell's stored ``multipliers`` ((rounds, 10) per cell):
    round by round, the cells that have that round, exactly as :func:`solve_restoration` ran them."""
    values = np.array(decoded, dtype=np.float64)
    counts = np.array([len(m) for m in multipliers], dtype=int)
    for r in range(int(counts.max(initial=0))):
        cells = np.flatnonzero(counts > r)
        rows, sub_offsets = cell_rows(offsets, cells), subset_offsets(offsets, cells)
        keep = None if content_set is None else content_set[rows]
        values[rows] = _restoration_round(block_ids[rows], values[rows], sub_offsets, mesh, select_moments(target, cells),
                                          np.stack([multipliers[c][r] for c in cells]), keep, threshold)
    return values


def cell_rel_l2(decoded: np.ndarray, original: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-cell ‖decoded − original‖₂ / ‖original‖₂ over each cell's rows (float64; 0 for a cell
    without blocks or with an all-zero original that is decoded exactly)."""
    offsets = np.asarray(offsets)
    error, norm = np.zeros(len(offsets) - 1), np.zeros(len(offsets) - 1)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if len(nonempty):
        original = np.asarray(original, dtype=np.float64).reshape(offsets[-1], -1)
        decoded = np.asarray(decoded, dtype=np.float64).reshape(original.shape)
        starts = offsets[nonempty]
        error[nonempty] = np.add.reduceat(((decoded - original) ** 2).sum(axis=1), starts)
        norm[nonempty] = np.add.reduceat((original**2).sum(axis=1), starts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, np.sqrt(error / norm), np.where(error > 0, 1.0, 0.0))
