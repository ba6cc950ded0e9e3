"""Launching the CUDA twins: every kernel here runs one thread per cell."""

from __future__ import annotations

import math


def launch_per_cell(kernel, cells: int, *args, threads: int = 128) -> None:
    """Run a one-thread-per-cell CUDA kernel over ``cells`` cells (device or host arrays)."""
    kernel[math.ceil(max(cells, 1) / threads), threads](*args)
