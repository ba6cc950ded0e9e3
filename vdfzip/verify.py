"""``vdfzip verify``: how far a decoded (or compressed) file is from its original.

Streams both files cell batch by cell batch and reports the keys of DESIGN.md: per-cell rel L2
percentiles, moment errors (density, velocity over the thermal speed, scalar and full pressure,
heat flux), tail metrics (log10 error over voxels above the sparsity threshold, content lost,
content blocks lost or gained), whether block ids (in order, and as sets) and every non-VDF
array are identical, the codecs used and the honest compression ratio when OTHER is compressed.
Under MPI every rank compares a share of the cells and rank 0 merges them.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import distributed, integrity, layout, metrics, physics, vlsv
from .check import check_file
from .encode import MAX_BATCH_BLOCKS
from .errors import VdfzipError
from .reconstruct import cell_rel_l2
from .vlasiator import VDF_TAGS, CellBatch, Population, VlasiatorFile

_LOG_BINS = np.linspace(0.0, 12.0, 12001)  # |log10 g − log10 f| histogram, 1e-3-decade bins
SERIES = ("cell_id", "rel_l2", "tail_p95", "density", "velocity", "pressure_tensor")


class MismatchError(VdfzipError):
    """The two files do not hold the same cells or block sets: they cannot be compared."""


@dataclass
class Accumulator:
    """Running totals of one population's comparison."""

    rel_l2: list = field(default_factory=list)
    maxima: Counter = field(default_factory=Counter)
    log_histogram: np.ndarray = field(default_factory=lambda: np.zeros(len(_LOG_BINS) - 1, dtype=np.int64))
    counts: Counter = field(default_factory=Counter)
    blocks_identical: bool = True
    negative_values: int = 0
    #: per-cell series along the file (cell id, rel L2, tail p95, moment errors): the plot's data
    series: dict = field(default_factory=lambda: {key: [] for key in SERIES})

    def add_errors(self, key: str, values: np.ndarray) -> None:
        if values.size:
            self.maxima[key] = max(self.maxima[key], float(np.nanmax(values)))

    def merge(self, other: Accumulator) -> None:
        self.rel_l2 += other.rel_l2
        for key, value in other.maxima.items():
            self.maxima[key] = max(self.maxima[key], value)
        self.log_histogram += other.log_histogram
        self.counts.update(other.counts)
        self.blocks_identical &= other.blocks_identical
        self.negative_values += other.negative_values
        for key in SERIES:
            self.series[key] += other.series[key]

    def cell_series(self) -> dict[str, np.ndarray]:
        """Each per-cell series as one array, in file order."""
        return {key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in self.series.items()}

    def report(self, cells: int) -> dict:
        rel = np.concatenate(self.rel_l2) if self.rel_l2 else np.zeros(0)
        quantiles = np.percentile(rel, [50, 95, 100]) if rel.size else [0.0] * 3
        return {
            "cells": cells,
            "rel_l2": dict(zip(("median", "p95", "max"), map(float, quantiles))),
            "density_rel_err_max": self.maxima["density"],
            "velocity_err_over_vth_max": self.maxima["velocity"],
            "pressure_rel_err_max": self.maxima["pressure"],
            "pressure_tensor_rel_err_max": self.maxima["pressure_tensor"],
            "heat_flux_err_over_vth3_max": self.maxima["heat_flux"],
            "log10_err": {
                "p50": _histogram_quantile(self.log_histogram, 0.5),
                "p95": _histogram_quantile(self.log_histogram, 0.95),
                "cell_p95_max": self.maxima["tail_cell_p95"],  # what the restart profile bounds
            },
            "negative_values": self.negative_values,
            "blocks_identical": self.blocks_identical,
            # a comparison needs the same block set in every cell: files without one are refused
            # (MismatchError naming the cell), so a report always says True
            "block_sets_identical": True,
        } | metrics.content_fractions(self.counts)


def _histogram_quantile(histogram: np.ndarray, q: float) -> float:
    """Upper edge of the bin holding quantile ``q`` (exact to the 1e-3-decade bin width)."""
    total = histogram.sum()
    if not total:
        return 0.0
    return float(_LOG_BINS[1:][np.searchsorted(np.cumsum(histogram), q * total)])


def _moment_errors(original: physics.Moments, other: physics.Moments) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        n, vth, p = original.density, original.thermal_speed, original.scalar_pressure
        return {
            "density": np.abs(other.density - n) / n,
            "velocity": np.linalg.norm(other.velocity - original.velocity, axis=1) / vth,
            "pressure": np.abs(other.scalar_pressure - p) / p,
            "pressure_tensor": np.linalg.norm(other.pressure - original.pressure, axis=(1, 2))
            / np.linalg.norm(original.pressure, axis=(1, 2)),
            "heat_flux": np.linalg.norm(other.heat_flux - original.heat_flux, axis=1) / (n * original.mass * vth**3),
        }


def _aligned(original: CellBatch, other: CellBatch, population: str) -> tuple[np.ndarray, bool]:
    """``other``'s values in ``original``'s block order, and whether the ids were already in it."""
    if not np.array_equal(original.cell_ids, other.cell_ids) or not np.array_equal(original.offsets, other.offsets):
        raise MismatchError(f"population {population}: the files store different cells or block counts")
    if np.array_equal(original.block_ids, other.block_ids):
        return np.asarray(other.values), True
    rows = np.empty(len(original.block_ids), dtype=np.int64)
    for i in range(len(original)):
        lo, hi = original.offsets[i], original.offsets[i + 1]
        mine, theirs = original.block_ids[lo:hi], other.block_ids[lo:hi]
        order_mine, order_theirs = np.argsort(mine), np.argsort(theirs)
        if not np.array_equal(mine[order_mine], theirs[order_theirs]):
            raise MismatchError(f"population {population}: cell {int(original.cell_ids[i])} has a different block set")
        rows[lo + order_mine] = lo + order_theirs
    return np.asarray(other.values)[rows], False


def compare_batch(original: CellBatch, other: CellBatch, population: Population) -> Accumulator:
    """All metrics of one batch of cells."""
    acc = Accumulator()
    g, acc.blocks_identical = _aligned(original, other, population.name)
    f = np.asarray(original.values)
    rel_l2 = cell_rel_l2(g, f, original.offsets)
    acc.rel_l2.append(rel_l2)
    mesh, mass, threshold = population.mesh, population.mass, population.threshold
    mine = physics.moments(original.block_ids, f, original.offsets, mesh, mass)
    theirs = physics.moments(original.block_ids, g, original.offsets, mesh, mass)
    moment_errors = _moment_errors(mine, theirs)
    for key, values in moment_errors.items():
        acc.add_errors(key, values[mine.density > 0])
    acc.log_histogram += np.histogram(np.clip(metrics.log10_errors(g, f, threshold), 0, 12), _LOG_BINS)[0]
    tail_p95 = metrics.cell_log10_p95(g, f, original.offsets, threshold)
    acc.add_errors("tail_cell_p95", tail_p95)
    per_cell = {"cell_id": original.cell_ids, "rel_l2": rel_l2, "tail_p95": tail_p95} | {
        key: np.where(mine.density > 0, moment_errors[key], 0.0) for key in ("density", "velocity", "pressure_tensor")
    }
    for key in SERIES:
        acc.series[key].append(np.asarray(per_cell[key], dtype=np.float64))
    acc.counts.update(metrics.tail_counts(g, f, threshold))
    acc.negative_values = int((g < 0).sum())
    return acc


def _non_vdf(file: vlsv.VlsvFile) -> list[vlsv.Element]:
    skip = set(VDF_TAGS) | set(layout.ORIGINAL) | {integrity.TAG}
    return [e for e in file.write_order() if e.tag not in skip]


def non_vdf_identical(a: vlsv.VlsvFile, b: vlsv.VlsvFile) -> bool:
    """Every non-VDF array present in both, in the same order, with equal attributes and bytes
    (compared piece by piece, so that huge arrays do not stay resident)."""
    mine, theirs = _non_vdf(a), _non_vdf(b)
    return len(mine) == len(theirs) and all(
        x.tag == y.tag
        and dict(x.attrs) == dict(y.attrs)
        and all(p == q for p, q in zip(a.raw_chunks(x), b.raw_chunks(y), strict=True))
        for x, y in zip(mine, theirs)
    )


def verify_files(original: str | os.PathLike, other: str | os.PathLike, *, plot: str | os.PathLike | None = None
                 ) -> dict | None:
    """Compare ``other`` (a decoded or a vdfzip-compressed file) with ``original``; a compressed
    ``other`` passes every check of ``vdfzip check`` first. With ``plot``, also write a PNG of the
    per-cell errors along the file and VDF slices of the worst cells (:mod:`vdfzip.plot`).

    Under an MPI launcher with more than one rank every rank compares a block-balanced share of
    each population's cells and checks a share of a compressed file's checksums
    (:func:`check_file`); rank 0 merges the shares in cell order and returns the report (the same
    as one process's), the other ranks None."""
    comm = distributed.world()
    rank = 0 if comm is None else comm.Get_rank()
    agreed = functools.partial(distributed.agreed, comm)
    with distributed.open_input(comm, Path(other), {}) as other_vlsv:
        compressed_other = layout.is_compressed(other_vlsv)
    if compressed_other:
        check_file(other, comm=comm)  # collective: each rank checks a share
    with VlasiatorFile(distributed.open_input(comm, Path(original), {}), comm) as source, \
            distributed.open_input(comm, Path(other), {}) as other_vlsv:
        populations = {name: p for name, p in source.populations.items() if p.block_count}
        compressed = agreed(lambda: _compressed_windows(other_vlsv, populations)) if layout.is_compressed(other_vlsv) else None
        plain = VlasiatorFile(other_vlsv, comm)  # the populations stored as plain blocks: the same shares

        def compare_share() -> dict[str, tuple[Accumulator, Counter]]:
            shares = {}
            for name, population in populations.items():
                acc, cells = Accumulator(), _other_cells(compressed, plain, population)
                for start, end in population.batch_ranges(MAX_BATCH_BLOCKS):
                    acc.merge(compare_batch(population.cells(start, end), cells(start, end), population))
                shares[name] = acc, _methods(compressed, name)
            return shares

        shares = [agreed(compare_share)] if comm is None else comm.gather(agreed(compare_share))
        if rank:
            return None
        report = {"populations": {}}
        series = {}
        total, cells, methods, input_bytes, output_bytes = Accumulator(), 0, Counter(), 0, 0
        for name, population in populations.items():
            acc, pop_methods = Accumulator(), Counter()
            for share in shares:
                acc.merge(share[name][0])
                pop_methods.update(share[name][1])
            series[name] = acc.cell_series()
            pop_methods = Counter({codec: n for codec, n in pop_methods.items() if n})  # in the chain's order
            entry = acc.report(population.cell_count) | {"methods": dict(pop_methods)}
            if compressed is not None and name in compressed:
                entry["profile"] = compressed[name].profile
                entry["ratio"] = population.vdf_bytes / compressed[name].compressed_bytes
                input_bytes += population.vdf_bytes
                output_bytes += compressed[name].compressed_bytes
            report["populations"][name] = entry
            total.merge(acc)
            cells += population.cell_count
            methods.update(pop_methods)
        summary = total.report(cells)
        if compressed and other_vlsv.find(integrity.TAG) is not None:
            output_bytes += other_vlsv.element(integrity.TAG).nbytes
        summary["ratio"] = input_bytes / output_bytes if compressed and output_bytes else None
        summary["methods"] = dict(methods)
        summary["non_vdf_identical"] = non_vdf_identical(source.vlsv, other_vlsv)
    if plot is not None:
        _plot(plot, original, other, series)
    return summary | report


def _compressed_windows(file: vlsv.VlsvFile, populations: dict[str, Population]
                        ) -> dict[str, layout.CompressedPopulation]:
    """The compressed populations of ``file`` that ``populations`` has, each read for the cells
    of its window there (all of them, or an MPI rank's share)."""
    return {name: layout.CompressedPopulation(file, name, cells=populations[name].window)
            for name in layout.compressed_population_names(file) if name in populations}


def _other_cells(compressed: dict[str, layout.CompressedPopulation] | None, plain: VlasiatorFile,
                 population: Population):
    """The other file's cells of ``population``'s window, by ``(start, stop)`` as the original numbers them."""
    name = population.name
    if compressed is not None and name in compressed:
        table = compressed[name]
        return lambda start, stop: table.decoded(start - table.first_cell, stop - table.first_cell)
    theirs = plain.population(name)
    if theirs.window != population.window:
        raise MismatchError(f"population {name}: the files store different cells or block counts")
    return theirs.cells


def _plot(plot, original, other, series: dict[str, dict]) -> None:
    """The verify plot, drawn by one process from files opened whole (the worst cells may be on any rank)."""
    from .plot import write_verify_plot

    with VlasiatorFile(original) as source, vlsv.read(other) as other_vlsv:
        compressed = _compressed_windows(other_vlsv, source.populations)
        plain = VlasiatorFile(other_vlsv)
        compared = {name: (source.populations[name], _other_cells(compressed, plain, source.populations[name]), s)
                    for name, s in series.items()}
        write_verify_plot(plot, compared, title=f"{os.fspath(other)} against {os.fspath(original)}")


def _methods(compressed: dict[str, layout.CompressedPopulation] | None, name: str) -> Counter:
    """Cells of the window by the codec that stored them, every codec of the chain in its order
    (zeros too: merged over ranks, the order stays the chain's)."""
    if not compressed or name not in compressed:
        return Counter()
    return Counter(compressed[name].codec_counts())
