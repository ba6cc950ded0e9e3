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
    where c = v − mean; all sums in float64 and unscaled by the cell volume or mass."""
    s = out[cell]
    for k in range(COLUMNS):
        s[k] = 0.0
    for pass_number in range(2):
        for row in range(offsets[cell], offsets[cell + 1]):
            ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
            c = 0
            for k in range(wid):
                for j in range(wid):
                    for i in range(wid):
                        f = float(values[row, c])
                        c += 1
                        vx = ox + i * dv[0]
                        vy = oy + j * dv[1]
                        vz = oz + k * dv[2]
                        if pass_number == 0:
                            s[0] += f
                            s[1] += f * vx
                            s[2] += f * vy
                            s[3] += f * vz
                        else:
                            cx = vx - s[1]
                            cy = vy - s[2]
                            cz = vz - s[3]
                            s[4] += f * cx * cx
                            s[5] += f * cy * cy
                            s[6] += f * cz * cz
                            s[7] += f * cx * cy
                            s[8] += f * cx * cz
                            s[9] += f * cy * cz
                            c2 = cx * cx + cy * cy + cz * cz
                            s[10] += f * c2 * cx
                            s[11] += f * c2 * cy
                            s[12] += f * c2 * cz
        if pass_number == 0 and s[0] != 0.0:
            s[1] /= s[0]
            s[2] /= s[0]
            s[3] /= s[0]


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

