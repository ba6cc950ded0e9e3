"""Voxel geometry usable from any numba target (CPU, CUDA).

Follows ``shared/VLSV.md``: block coordinates from the id, value index ``c = i + j·WID + k·WID²``
(x fastest). Kernels compute a block's first voxel centre once and step by ``dv`` inside it.
"""

from numba.extending import register_jitable


@register_jitable
def block_origin(block, nbx, nby, wid, vmin, dv):
    """Velocity (vx, vy, vz) of the centre of value 0 of block ``block``."""
    bx = block % nbx
    by = (block // nbx) % nby
    bz = block // (nbx * nby)
    return (
        vmin[0] + (bx * wid + 0.5) * dv[0],
        vmin[1] + (by * wid + 0.5) * dv[1],
        vmin[2] + (bz * wid + 0.5) * dv[2],
    )


@register_jitable
def voxel_velocity(n, ox, oy, oz, wid, dv):
    """Velocity of value ``n`` of the block whose value 0 is at (ox, oy, oz)."""
    return ox + (n % wid) * dv[0], oy + ((n // wid) % wid) * dv[1], oz + (n // (wid * wid)) * dv[2]
