"""``vdfzip check``: is a compressed file intact? Without the original, like ``zstd -t``.

By default every checksum: the footer and the layout, every array's bytes, each population's
header, index and moments, every cell's record, and the footer decoding will restore. ``deep``
also decodes every cell (what ``vdfzip decode`` does, nothing written) and compares its moments
with the stored ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import distributed, integrity, layout, physics
from .decode import CompressedFile
from .errors import CorruptFileError

#: Moments of a decoded cell against the stored ones: the round-trip contract of DESIGN.md.
MOMENT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class CheckReport:
    path: str
    format: int | None  # None: a file without VDF data, which holds no population's header
    arrays: int
    cells: int
    deep: bool
    worst_moment_error: float | None  # deep only

    def __str__(self) -> str:
        what = f"{self.arrays} arrays and {self.cells} cell records checked"
        if self.deep:
            what += f", every cell decoded (moments within {self.worst_moment_error:.1e} of the stored ones)"
        unchecked = " (format 1: non-VDF arrays and footer carry no checksums)" if self.format == 1 else ""
        return f"{self.path}: OK, {what}{unchecked}"


def check_file(path: str | os.PathLike, deep: bool = False, comm=None) -> CheckReport:
    """Check every checksum of a compressed file (and with ``deep`` decode every cell); raise
    :class:`CorruptFileError` naming the first damaged part. With ``comm`` (an MPI job's ranks,
    collectively) each rank checks a share: every N-th array's hash and its own cells."""
    rank, ranks = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    with CompressedFile(distributed.open_input(comm, Path(path), {}), comm) as f:
        arrays = [e for e in f.vlsv.write_order() if e.tag != integrity.TAG]

        def check_my_share() -> float:
            if f.manifest is not None:
                for element in arrays[rank::ranks]:
                    f.manifest.check(element)
                if rank == 0:
                    f.manifest.check_restored_footer(integrity.restored_footer(f.restored_elements()))
            worst = 0.0
            for name, p in f.populations.items():
                for cell in range(p.cell_count):
                    p.block_ids(cell)  # the record's CRC, its block structure and content set
                if deep:
                    for batch in f.batches(name):
                        worst = max(worst, _moment_error(batch, p, f.path))
            return worst

        worst = distributed.agreed(comm, check_my_share)
        if comm is not None:
            from mpi4py import MPI

            worst = comm.allreduce(worst, op=MPI.MAX)
        cells = sum(p.total_cells for p in f.populations.values())
        file_format = max((p.header["format"] for p in f.populations.values()), default=None)
        return CheckReport(str(path), file_format, len(arrays), cells, deep, worst if deep else None)


def _moment_error(batch, population, path) -> float:
    """Largest moment error of decoded cells against the stored moments (density relative, bulk
    velocity over the thermal speed, pressure tensor relative in Frobenius norm)."""
    stored = layout.columns_to_moments(population.moment_columns[batch.first : batch.first + len(batch)], population.mass)
    decoded = physics.moments(batch.block_ids, batch.values, batch.offsets, population.mesh, population.mass)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.stack([
            np.abs(decoded.density - stored.density) / stored.density,
            np.linalg.norm(decoded.velocity - stored.velocity, axis=1) / stored.thermal_speed,
            np.linalg.norm(decoded.pressure - stored.pressure, axis=(1, 2)) / np.linalg.norm(stored.pressure, axis=(1, 2)),
        ])
    errors = errors[:, stored.density > 0]
    worst = float(errors.max(initial=0.0))
    if not worst <= MOMENT_TOLERANCE:
        column = int(np.nanargmax(errors.max(axis=0)))
        cell = int(batch.cell_ids[stored.density > 0][column])
        raise CorruptFileError(f"{path}: population {population.name}: cell {cell} decodes to moments {worst:.1e} "
                               "away from the stored ones")
    return worst
