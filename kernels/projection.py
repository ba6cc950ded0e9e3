"""Sums for the ten-moment projection: reweighting a VDF by exp(λ·φ(u)).

φ(u) = (1, ux, uy, uz, ux², uy², uz², ux·uy, ux·uz, uy·uz) with u = (v − centre)/scale. For each
cell, given λ, one pass gives Σ g·w·m over the 35 monomials m of u of degree ≤ 4 (w = exp(λ·φ)):
the first ten are Σ g·w·φ, the moments of the reweighted VDF, and every entry of their Jacobian
Σ g·w·φφᵀ is one of them (:data:`PAIR`), which is all a Newton step needs; a second kernel
applies the final weights.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda
from numba.extending import register_jitable

from .geometry import block_origin

BASIS = 10


def _exponents() -> list[tuple[int, int, int]]:
    """(p, q, r) of the monomials ux^p·uy^q·uz^r of degree ≤ 4: φ's ten in φ's order, then by degree."""
    phi = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]
    higher = [(p, q, d - p - q) for d in (3, 4) for p in range(d, -1, -1) for q in range(d - p, -1, -1)]
    return phi + higher


EXPONENTS = np.array(_exponents(), dtype=np.int64)
MONOMIALS = len(EXPONENTS)  # 35: what a Newton-sums pass writes per cell
_INDEX = {tuple(e): m for m, e in enumerate(EXPONENTS.tolist())}
#: Each monomial past φ is an earlier one (PARENT) times u along AXIS.
AXIS = np.array([0] * BASIS + [int(np.flatnonzero(e)[0]) for e in EXPONENTS[BASIS:]], dtype=np.int64)
PARENT = np.array([0] * BASIS + [_INDEX[tuple(e - np.eye(3, dtype=np.int64)[a])]
                                 for e, a in zip(EXPONENTS[BASIS:], AXIS[BASIS:])], dtype=np.int64)
#: PAIR[a, b]: the monomial φ_a·φ_b.
PAIR = np.array([[_INDEX[tuple(EXPONENTS[a] + EXPONENTS[b])] for b in range(BASIS)] for a in range(BASIS)])

#: Voxels a pass handles at once (one block of Vlasiator's WID=4); the scratch holds their
#: monomials and g·w.
TILE = 64
#: Reassociation (so the sums over a tile vectorise) without giving up IEEE infinities and NaNs,
#: which the Newton iteration's line search relies on.
_FAST = {"reassoc", "contract"}


@register_jitable(fastmath=_FAST)
def _weighted_basis(values, row, start, count, wid, ox, oy, oz, dv, center, scale, lam, tile, weight):
    """Rows 0–9 of ``tile``: φ of the ``count`` voxels of block ``row`` from value index
    ``start``; row ``weight``: their g·exp(λ·φ), g = max(value, 0)."""
    i, j, k = start % wid, (start // wid) % wid, start // (wid * wid)  # value index = i + j·wid + k·wid²
    for t in range(count):  # i, j, k counted, not divided out of the index: a fifth of the pass
        ux = (ox + i * dv[0] - center[0]) / scale
        uy = (oy + j * dv[1] - center[1]) / scale
        uz = (oz + k * dv[2] - center[2]) / scale
        i += 1
        if i == wid:
            i, j = 0, j + 1
            if j == wid:
                j, k = 0, k + 1
        tile[0, t] = 1.0
        tile[1, t] = ux
        tile[2, t] = uy
        tile[3, t] = uz
        tile[4, t] = ux * ux
        tile[5, t] = uy * uy
        tile[6, t] = uz * uz
        tile[7, t] = ux * uy
        tile[8, t] = ux * uz
        tile[9, t] = uy * uz
        tile[weight, t] = 0.0
    for m in range(BASIS):  # λ·φ
        for t in range(count):
            tile[weight, t] += lam[m] * tile[m, t]
    for t in range(count):  # libm's exp is a scalar call: kept out of the loops that vectorise
        g = values[row, start + t]  # clipped at 0 here (a NaN stays NaN, as np.maximum keeps it)
        tile[weight, t] = 0.0 if g <= 0.0 else g * math.exp(tile[weight, t])


@register_jitable(fastmath=_FAST)
def _sums_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out):
    """``out[cell]`` = Σ g·w·m over the cell's voxels for the MONOMIALS m, w = exp(λ·φ(u)).
    ``tile`` (MONOMIALS + 1, ≥ TILE) is scratch: the monomials of a tile's voxels, then g·w."""
    center, scale, lam = centers[cell], scales[cell], lams[cell]
    per_block = wid * wid * wid
    for m in range(MONOMIALS):
        out[cell, m] = 0.0
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        for start in range(0, per_block, TILE):
            count = min(TILE, per_block - start)
            _weighted_basis(values, row, start, count, wid, ox, oy, oz, dv, center, scale, lam, tile, MONOMIALS)
            for m in range(BASIS, MONOMIALS):
                parent, axis = PARENT[m], 1 + AXIS[m]
                for t in range(count):
                    tile[m, t] = tile[parent, t] * tile[axis, t]
            for m in range(MONOMIALS):
                total = 0.0
                for t in range(count):
                    total += tile[MONOMIALS, t] * tile[m, t]
                out[cell, m] += total


@register_jitable(fastmath=_FAST)
def _apply_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out):
    """g·w into the cell's rows of ``out``, w = exp(λ·φ(u)); ``tile`` (BASIS + 1, ≥ TILE) is
    scratch: rows 0–9 the φ of a tile's voxels, row 10 their g·w."""
    center, scale, lam = centers[cell], scales[cell], lams[cell]
    per_block = wid * wid * wid
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        for start in range(0, per_block, TILE):
            count = min(TILE, per_block - start)
            _weighted_basis(values, row, start, count, wid, ox, oy, oz, dv, center, scale, lam, tile, BASIS)
            for t in range(count):
                out[row, start + t] = tile[BASIS, t]


@register_jitable(fastmath=_FAST)
def _with_scratch(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, apply):
    """A CPU pass with its scratch allocated here, not in the CPU twins' parallel loops: numba
    hoists an allocation out of a prange loop and reuses it across iterations (numba#9529),
    which made the mlp training kernel's results depend on the threads."""
    if apply:
        tile = np.empty((BASIS + 1, TILE))
        _apply_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out)
    else:
        tile = np.empty((MONOMIALS + 1, TILE))
        _sums_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out)


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def newton_sums_cpu(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CPU twin of the Newton sums over the cells listed in ``cells``, in parallel."""
    for i in numba.prange(len(cells)):
        _with_scratch(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, False)


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def apply_cpu(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CPU twin of the reweighting: cells in parallel."""
    for cell in numba.prange(len(offsets) - 1):
        _with_scratch(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, True)


@cuda.jit(fastmath=_FAST)
def newton_sums_cuda(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CUDA twin of the Newton sums over the cells listed in ``cells``: one thread per cell."""
    i = cuda.grid(1)
    if i < len(cells):
        tile = cuda.local.array((MONOMIALS + 1, TILE), numba.float64)
        _sums_pass(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out)


@cuda.jit(fastmath=_FAST)
def apply_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CUDA twin of the reweighting: one thread per cell."""
    cell = cuda.grid(1)
    if cell < len(offsets) - 1:
        tile = cuda.local.array((BASIS + 1, TILE), numba.float64)
        _apply_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out)
