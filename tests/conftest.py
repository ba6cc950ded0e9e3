"""Shared fixtures: the real Vlasiator files of ../shared/data, and the CUDA simulator switch."""

from __future__ import annotations

import os
from pathlib import Path

# The CUDA twins of the numba kernels run on numba's simulator unless the caller chose
# otherwise (a GPU runner sets NUMBA_ENABLE_CUDASIM=0). Must happen before numba.cuda loads.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# one process per encode and decode: a worker pool per call would cost ~1 s each across the
# suite; tests/test_jobs.py runs the worker processes explicitly
os.environ.setdefault("VDFZIP_JOBS", "1")

import pytest  # noqa: E402

DATA_DIR = Path(os.environ.get("VDFZIP_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
UNDER_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def shared_file(name: str) -> Path:
    """Path of a fixture in ../shared/data; skips (fails under CI=true) when it is missing."""
    path = DATA_DIR / name
    if not path.is_file():
        message = f"fixture {path} is missing (the repository expects ../shared/data beside it)"
        if UNDER_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def fullf() -> Path:
    return shared_file("fullf.0000001.vlsv")


@pytest.fixture
def restart_small() -> Path:
    return shared_file("restart_ipshock_small.vlsv")


def by_block_id(batch):
    """A batch's values with every cell's rows sorted by block id: two batches of the same cells
    and block sets compare row by row whatever order each lists its blocks in."""
    import numpy as np

    rows = [batch.offsets[i] + np.argsort(batch.cell(i)[0]) for i in range(len(batch))]
    return np.asarray(batch.values)[np.concatenate(rows)] if rows else np.asarray(batch.values)
