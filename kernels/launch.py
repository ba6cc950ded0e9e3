"""Launching the CUDA twins, each of which runs one thread per item (a cell, a voxel, a parameter)."""

from __future__ import annotations

import math


def launch_per_item(kernel, items: int, *args, threads: int = 128) -> None:
    """Run a one-thread-per-item CUDA kernel over ``items`` items (device or host arrays)."""
    kernel[math.ceil(max(items, 1) / threads), threads](*args)
