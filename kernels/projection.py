"""Sums for the ten-moment projection: reweighting a VDF by exp(λ·φ(u)).

φ(u) = (1, ux, uy, uz, ux², uy², uz², ux·uy, ux·uz, uy·uz) with u = (v − centre)/scale. For each
cell, given λ, one pass gives Σ g·w·φ (the moments of the reweighted VDF, w = exp(λ·φ)) and the
upper triangle of Σ g·w·φφᵀ (their Jacobian), which is all a Newton step needs; a second kernel
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
HESSIAN = BASIS * (BASIS + 1) // 2
COLUMNS = BASIS + HESSIAN


#: Voxels a pass handles at once (one block of Vlasiator's WID=4); the scratch holds their φ and g·w.
TILE = 64
#: Reassociation (so the sums over a tile vectorise) without giving up IEEE infinities and NaNs,
#: which the Newton iteration's line search relies on.
_FAST = {"reassoc", "contract"}


@register_jitable(fastmath=_FAST)
def _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out, apply):
    """One pass over a cell's voxels with w = exp(λ·φ(u)): if ``apply``, write g·w into the
    cell's rows of ``out``; else ``out[cell]`` = Σ g·w·φ (10) then the upper triangle of
    Σ g·w·φφᵀ (55), row-major. ``tile`` (BASIS + 1, ≥ TILE) is scratch: rows 0–9 the φ of a
    tile's voxels, row 10 their g·w."""
    center, scale, lam = centers[cell], scales[cell], lams[cell]
    per_block = wid * wid * wid
    if not apply:
        for k in range(COLUMNS):
            out[cell, k] = 0.0
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        for start in range(0, per_block, TILE):
            count = min(TILE, per_block - start)
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
                tile[BASIS, t] = 0.0
            for k in range(BASIS):  # λ·φ
                for t in range(count):
                    tile[BASIS, t] += lam[k] * tile[k, t]
            for t in range(count):  # libm's exp is a scalar call: kept out of the loops that vectorise
                g = values[row, start + t]
                tile[BASIS, t] = g * math.exp(tile[BASIS, t]) if g != 0.0 else 0.0
            if apply:
                for t in range(count):
                    out[row, start + t] = tile[BASIS, t]
                continue
            position = BASIS
            for a in range(BASIS):
                total = 0.0
                for t in range(count):
                    total += tile[BASIS, t] * tile[a, t]
                out[cell, a] += total
                for b in range(a, BASIS):
                    total = 0.0
                    for t in range(count):
                        total += tile[BASIS, t] * tile[a, t] * tile[b, t]
                    out[cell, position] += total
                    position += 1


@register_jitable(fastmath=_FAST)
def _cell_pass_cpu(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, apply):
    """:func:`_cell_pass` with its scratch allocated here, not in the CPU twins' parallel loops:
    numba hoists an allocation out of a prange loop and reuses it across iterations (numba#9529),
    which made the mlp training kernel's results depend on the threads."""
    tile = np.empty((BASIS + 1, TILE))
    _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out, apply)


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def newton_sums_cpu(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CPU twin of the Newton sums over the cells listed in ``cells``, in parallel."""
    for i in numba.prange(len(cells)):
        _cell_pass_cpu(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, False)


@numba.njit(parallel=True, fastmath=_FAST, cache=True, nogil=True)
def apply_cpu(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CPU twin of the reweighting: cells in parallel."""
    for cell in numba.prange(len(offsets) - 1):
        _cell_pass_cpu(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out, True)


@cuda.jit(fastmath=_FAST)
def newton_sums_cuda(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CUDA twin of the Newton sums over the cells listed in ``cells``: one thread per cell."""
    i = cuda.grid(1)
    if i < len(cells):
        tile = cuda.local.array((BASIS + 1, TILE), numba.float64)
        _cell_pass(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out,
                   False)


@cuda.jit(fastmath=_FAST)
def apply_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, out):
    """CUDA twin of the reweighting: one thread per cell."""
    cell = cuda.grid(1)
    if cell < len(offsets) - 1:
        tile = cuda.local.array((BASIS + 1, TILE), numba.float64)
        _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, tile, out, True)
