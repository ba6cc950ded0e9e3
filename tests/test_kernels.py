"""CUDA twins of the numba kernels (on numba's CUDA simulator here) against their CPU twins."""

from __future__ import annotations

import numpy as np

from vdfzip.kernels import moments as kernel
from vdfzip.kernels.launch import launch_per_item
from vdfzip import vlasiator


def test_moment_sums_cuda_twin_matches_cpu_twin(restart_small):
    with vlasiator.open_file(restart_small) as f:
        p = f.population("proton")
        batch = p.cells(0, 3)
        # a few blocks per cell keep the (slow, Python-level) simulator quick
        rows = np.concatenate([np.arange(batch.offsets[i], batch.offsets[i] + 6) for i in range(3)])
        block_ids = batch.block_ids[rows].astype(np.int64)
        values = np.ascontiguousarray(batch.values[rows])
    offsets = np.array([0, 6, 12, 18], dtype=np.int64)
    args = (p.mesh.nblocks[0], p.mesh.nblocks[1], p.mesh.wid, np.array(p.mesh.vmin), np.array(p.mesh.dv))
    cpu = np.zeros((3, kernel.COLUMNS))
    gpu = np.zeros((3, kernel.COLUMNS))
    kernel.cell_sums_cpu(block_ids, values, offsets, *args, cpu)
    launch_per_item(kernel.cell_sums_cuda, 3, block_ids, values, offsets, *args, gpu, threads=4)
    assert np.all(cpu[:, kernel.SUM_F] > 0)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-12, atol=0)
