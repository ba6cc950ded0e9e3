"""Velocity moments of many cells in one pass over their blocks.

Voxel velocities are computed from block ids on the fly, never stored: a cell's (n, 3) float64
velocity array would be 6× the bytes of its float32 values. Two passes per cell (mean first,
then central sums) keep the pressure accurate when the drift is many thermal speeds.
"""

from __future__ import annotations

import math

import numba
from numba import cuda

#: Columns of the output row of one cell.
SUM_F, MEAN_V, CENTRAL_VV, CENTRAL_C2C = 0, slice(1, 4), slice(4, 10), slice(10, 13)
#: Order of the six second-moment columns: xx, yy, zz, xy, xz, yz.
PAIRS = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
COLUMNS = 13


def _cell_sums(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """Fill ``out[cell]`` with Σf, the f-weighted mean velocity, Σf·cₐc_b (6) and Σf|c|²c (3),
    where c = v − mean; all sums in float64 and unscaled by the cell volume or mass."""
    wid2 = wid * wid
    s0 = 0.0
    s1x = 0.0
    s1y = 0.0
    s1z = 0.0
    for pass_number in range(2):
        mx = 0.0
        my = 0.0
        mz = 0.0
        if pass_number == 1 and s0 != 0.0:
            mx = s1x / s0
            my = s1y / s0
            mz = s1z / s0
        pxx = 0.0
        pyy = 0.0
        pzz = 0.0
        pxy = 0.0
        pxz = 0.0
        pyz = 0.0
        qx = 0.0
        qy = 0.0
        qz = 0.0
        for row in range(offsets[cell], offsets[cell + 1]):
            block = block_ids[row]
            bx = block % nbx
            by = (block // nbx) % nby
            bz = block // (nbx * nby)
            for c in range(wid2 * wid):
                f = float(values[row, c])
                vx = vmin[0] + (bx * wid + c % wid + 0.5) * dv[0]
                vy = vmin[1] + (by * wid + (c // wid) % wid + 0.5) * dv[1]
                vz = vmin[2] + (bz * wid + c // wid2 + 0.5) * dv[2]
                if pass_number == 0:
                    s0 += f
                    s1x += f * vx
                    s1y += f * vy
                    s1z += f * vz
                else:
                    cx = vx - mx
                    cy = vy - my
                    cz = vz - mz
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
        if pass_number == 1:
            out[cell, 0] = s0
            out[cell, 1] = mx
            out[cell, 2] = my
            out[cell, 3] = mz
            out[cell, 4] = pxx
            out[cell, 5] = pyy
            out[cell, 6] = pzz
            out[cell, 7] = pxy
            out[cell, 8] = pxz
            out[cell, 9] = pyz
            out[cell, 10] = qx
            out[cell, 11] = qy
            out[cell, 12] = qz


_cell_sums_cpu = numba.njit(cache=True)(_cell_sums)
_cell_sums_gpu = cuda.jit(device=True)(_cell_sums)


@numba.njit(parallel=True, cache=True)
def cell_sums_cpu(block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """CPU twin: cells in parallel over the cores."""
    for cell in numba.prange(len(offsets) - 1):
        _cell_sums_cpu(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out)


@cuda.jit
def cell_sums_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, out):
    """CUDA twin: one thread per cell."""
    cell = cuda.grid(1)
    if cell < len(offsets) - 1:
        _cell_sums_gpu(cell, block_ids, values, offsets, nbx, nby, wid, vmin, dv, out)


def launch_cuda(block_ids, values, offsets, nbx, nby, wid, vmin, dv, out, threads: int = 128) -> None:
    """Run the CUDA twin over all cells (device or host arrays)."""
    cells = len(offsets) - 1
    cell_sums_cuda[math.ceil(max(cells, 1) / threads), threads](
        block_ids, values, offsets, nbx, nby, wid, vmin, dv, out
    )
