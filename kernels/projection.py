"""Sums for the ten-moment projection: reweighting a VDF by exp(λ·φ(u)).

φ(u) = (1, ux, uy, uz, ux², uy², uz², ux·uy, ux·uz, uy·uz) with u = (v − centre)/scale. For each
cell, given λ, one pass gives Σ g·w·φ (the moments of the reweighted VDF, w = exp(λ·φ)) and the
upper triangle of Σ g·w·φφᵀ (their Jacobian), which is all a Newton step needs; a second kernel
applies the final weights.
"""

from __future__ import annotations

import math

import numba
from numba import cuda
from numba.extending import register_jitable

from .geometry import block_origin

BASIS = 10
HESSIAN = BASIS * (BASIS + 1) // 2
COLUMNS = BASIS + HESSIAN


@register_jitable
def _exponent_and_basis(vx, vy, vz, center, scale, lam, phi):
    """Fill ``phi`` with φ(u) of the voxel at velocity v and return λ·φ(u)."""
    ux = (vx - center[0]) / scale
    uy = (vy - center[1]) / scale
    uz = (vz - center[2]) / scale
    phi[0] = 1.0
    phi[1] = ux
    phi[2] = uy
    phi[3] = uz
    phi[4] = ux * ux
    phi[5] = uy * uy
    phi[6] = uz * uz
    phi[7] = ux * uy
    phi[8] = ux * uz
    phi[9] = uy * uz
    exponent = 0.0
    for k in range(BASIS):
        exponent += lam[k] * phi[k]
    return exponent


@register_jitable
def _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out, apply):
    """One pass over a cell's voxels with w = exp(λ·φ(u)): if ``apply``, write g·w into the
    cell's rows of ``out``; else ``out[cell]`` = Σ g·w·φ (10) then the upper triangle of
    Σ g·w·φφᵀ (55), row-major."""
    phi = phis[cell]
    center, scale, lam = centers[cell], scales[cell], lams[cell]
    if not apply:
        acc = out[cell]
        for k in range(COLUMNS):
            acc[k] = 0.0
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        c = 0
        for k in range(wid):
            for j in range(wid):
                for i in range(wid):
                    g = values[row, c]
                    c += 1
                    if g == 0.0:
                        if apply:
                            out[row, c - 1] = 0.0
                        continue
                    exponent = _exponent_and_basis(ox + i * dv[0], oy + j * dv[1], oz + k * dv[2], center, scale, lam, phi)
                    gw = g * math.exp(exponent)
                    if apply:
                        out[row, c - 1] = gw
                        continue
                    position = BASIS
                    for a in range(BASIS):
                        gwa = gw * phi[a]
                        acc[a] += gwa
                        for b in range(a, BASIS):
                            acc[position] += gwa * phi[b]
                            position += 1


@numba.njit(parallel=True, cache=True)
def newton_sums_cpu(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out):
    """CPU twin of the Newton sums over the cells listed in ``cells``, in parallel."""
    for i in numba.prange(len(cells)):
        _cell_pass(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out, False)


@numba.njit(parallel=True, cache=True)
def apply_cpu(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out):
    """CPU twin of the reweighting: cells in parallel."""
    for cell in numba.prange(len(offsets) - 1):
        _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out, True)


@cuda.jit
def newton_sums_cuda(cells, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out):
    """CUDA twin of the Newton sums over the cells listed in ``cells``: one thread per cell."""
    i = cuda.grid(1)
    if i < len(cells):
        _cell_pass(cells[i], block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out, False)


@cuda.jit
def apply_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out):
    """CUDA twin of the reweighting: one thread per cell."""
    cell = cuda.grid(1)
    if cell < len(offsets) - 1:
        _cell_pass(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, centers, scales, lams, phis, out, True)

