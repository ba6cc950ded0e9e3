"""Velocity moments of many cells in one pass over their blocks.

Voxel velocities are computed from block ids on the fly, never stored: a cell's (n, 3) float64
velocity array would be 6× the bytes of its float32 values. Two passes per cell (mean first,
then central sums) keep the pressure accurate when the drift is many thermal speeds.
"""

from __future__ import annotations

import numba
from numba import cuda
from numba.extending import register_jitable

from .geometry import block_origin

#: Columns of the output row of one cell.
SUM_F, MEAN_V, CENTRAL_VV, CENTRAL_C2C = 0, slice(1, 4), slice(4, 10), slice(10, 13)
#: Order of the six second-moment columns: xx, yy, zz, xy, xz, yz.
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
COLUMNS = 13


@register_jitable
def _cell_sums(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """Fill ``out[cell]`` with Σf, the f-weighted mean velocity, Σf·cₐc_b (6) and Σf|c|²c (3),
    where c = v − mean; all sums in float64 and unscaled by the cell volume or mass. The sums
    run in local variables (registers: ~2× faster than in ``out``, which could alias ``values``),
    each in the same order as a plain loop would add them."""
    n = mx = my = mz = 0.0
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        c = 0
        for k in range(wid):
            vz = oz + k * dv[2]
            for j in range(wid):
                vy = oy + j * dv[1]
                for i in range(wid):
                    f = float(values[row, c])
                    c += 1
                    n += f
                    mx += f * (ox + i * dv[0])
                    my += f * vy
                    mz += f * vz
    if n != 0.0:
        mx /= n
        my /= n
        mz /= n
    pxx = pyy = pzz = pxy = pxz = pyz = qx = qy = qz = 0.0
    for row in range(offsets[cell], offsets[cell + 1]):
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        c = 0
        for k in range(wid):
            cz = oz + k * dv[2] - mz
            for j in range(wid):
                cy = oy + j * dv[1] - my
                for i in range(wid):
                    f = float(values[row, c])
                    c += 1
                    cx = ox + i * dv[0] - mx
                    pxx += f * cx * cx
                    pyy += f * cy * cy
                    pzz += f * cz * cz
                    pxy += f * cx * cy
                    pxz += f * cx * cz
                    pyz += f * cy * cz
                    c2 = cx * cx + cy * cy + cz * cz
                    qx += f * c2 * cx
                    qy += f * c2 * cy
                    qz += f * c2 * cz
    s = out[cell]
    s[0], s[1], s[2], s[3] = n, mx, my, mz
    s[4], s[5], s[6], s[7], s[8], s[9] = pxx, pyy, pzz, pxy, pxz, pyz
    s[10], s[11], s[12] = qx, qy, qz


@numba.njit(parallel=True, cache=True, nogil=True)
def cell_sums_cpu(block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """CPU twin: cells in parallel over the cores."""
    for cell in numba.prange(len(offsets) - 1):
        _cell_sums(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out)


@cuda.jit
def cell_sums_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """CUDA twin: one thread per cell."""
    cell = cuda.grid(1)
    if cell < len(offsets) - 1:
        _cell_sums(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out)

