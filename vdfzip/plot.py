"""``vdfzip verify --plot``: a round trip you can look at.

The top panels follow the file cell by cell: rel L2, the tail error the restart profile bounds
(p95 of |log10 g − log10 f| over voxels ≥ the sparsity threshold) and the moment errors. Below,
for the worst cells (by rel L2 and by tail error), slices through the VDF's peak in the three
velocity planes: original | decoded | log10 of their ratio, on a log colour scale floored at
the sparsity threshold, as Vlasiator users look at VDFs in analysator. matplotlib is imported
only here (``pip install vdfzip[plot]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import VdfzipError
from .fileio import atomic_output
from .mesh import to_dense
from .vlasiator import Population

#: Floor of the log axes: errors of exactly 0 (lossless cells) are drawn here.
_FLOOR = 1e-16
_PLANES = ((0, 1, 2), (0, 2, 1), (1, 2, 0))  # (horizontal, vertical, axis cut through)
_AXES = ("vx", "vy", "vz")
_RATIO_DECADES = 1.0


@dataclass(frozen=True)
class WorstCell:
    """One cell's original and decoded VDF as dense boxes, and why it was picked."""

    population: Population
    cell_id: int
    reason: str
    origin: np.ndarray  # voxel index of the boxes' first voxel
    original: np.ndarray
    decoded: np.ndarray

    def extent(self, horizontal: int, vertical: int) -> list[float]:
        """imshow extent of a slice in km/s."""
        mesh, shape = self.population.mesh, self.original.shape
        low = [(mesh.vmin[a] + self.origin[a] * mesh.dv[a]) / 1e3 for a in (horizontal, vertical)]
        return [low[0], low[0] + shape[horizontal] * mesh.dv[horizontal] / 1e3,
                low[1], low[1] + shape[vertical] * mesh.dv[vertical] / 1e3]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise VdfzipError("verify --plot needs matplotlib: pip install 'vdfzip[plot]'") from None
    return plt


def write_verify_plot(path: str | os.PathLike, compared: dict, title: str, worst: int = 2) -> None:
    """Write the PNG. ``compared``: population name → (population, cells of the other file by
    ``(start, stop)``, per-cell series of :class:`vdfzip.verify.Accumulator`)."""
    plt = _pyplot()
    cells = _worst_cells(compared, worst)
    figure = plt.figure(figsize=(13, 7 + 11 * len(cells)), layout="constrained")
    grid = figure.add_gridspec(3 + 3 * len(cells), 3, height_ratios=[1.2] * 3 + [2.2] * (3 * len(cells)))
    _plot_series(figure, grid, compared)
    for k, cell in enumerate(cells):
        _plot_slices(figure, grid, 3 + 3 * k, cell)
    figure.suptitle(title, fontsize=10)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    plt.close(figure)


def _plot_series(figure, grid, compared) -> None:
    panels = [figure.add_subplot(grid[row, :]) for row in range(3)]
    start = 0
    for name, (_, _, series) in compared.items():
        x = start + np.arange(len(series["rel_l2"]))
        panels[0].semilogy(x, np.maximum(series["rel_l2"], _FLOOR), ".", label=name)
        panels[1].plot(x, series["tail_p95"], ".", label=name)
        for key, label in (("density", "density"), ("velocity", "velocity / vth"), ("pressure_tensor", "pressure tensor")):
            panels[2].semilogy(x, np.maximum(series[key], _FLOOR), ".", label=f"{name}: {label}")
        start += len(x)
    for axis, label in zip(panels, ("rel L2", "tail |log10 g/f| p95 (decades)", "moment error")):
        axis.set_ylabel(label)
        axis.legend(fontsize=7, loc="upper right")
        axis.grid(alpha=0.3)
    panels[2].set_xlabel("cell, in file order (populations one after another)")


def _worst_cells(compared, count: int) -> list[WorstCell]:
    """The cells with the largest rel L2 and the largest tail error, without repeats."""
    ranked = []
    for key, reason in (("rel_l2", "largest rel L2"), ("tail_p95", "largest tail error")):
        candidates = [(series[key].max(), name, int(series[key].argmax()))
                      for name, (_, _, series) in compared.items() if len(series[key])]
        if candidates:
            value, name, index = max(candidates)
            ranked.append((name, index, f"{reason} ({value:.3g})"))
    chosen, seen = [], set()
    for name, index, reason in ranked[:count]:
        if (name, index) in seen:
            continue
        seen.add((name, index))
        population, other_cells, series = compared[name]
        # the same block set in either order: each box is scattered by its own ids
        boxes = [to_dense(batch.block_ids, np.asarray(batch.values, np.float64), population.mesh)
                 for batch in (population.cells(index, index + 1), other_cells(index, index + 1))]
        chosen.append(WorstCell(population, int(series["cell_id"][index]), reason, boxes[0].origin,
                                boxes[0].values, boxes[1].values))
    return chosen


def _plot_slices(figure, grid, row: int, cell: WorstCell) -> None:
    threshold = cell.population.threshold
    peak = np.unravel_index(np.argmax(cell.original), cell.original.shape)
    top = np.log10(cell.original.max())
    floor = 1e-3 * threshold
    for k, (horizontal, vertical, cut) in enumerate(_PLANES):
        f, g = (np.take(box, peak[cut], axis=cut) for box in (cell.original, cell.decoded))
        images = (
            (np.log10(np.maximum(f, floor)), "viridis", np.log10(threshold), top, "original"),
            (np.log10(np.maximum(g, floor)), "viridis", np.log10(threshold), top, "decoded"),
            (np.log10(np.maximum(g, floor) / np.maximum(f, floor)), "RdBu_r", -_RATIO_DECADES, _RATIO_DECADES,
             "log10 decoded / original"),
        )
        for column, (image, colours, low, high, label) in enumerate(images):
            axis = figure.add_subplot(grid[row + k, column])
            shown = np.ma.masked_where(np.maximum(f, g).T < threshold, image.T)
            mapped = axis.imshow(shown, origin="lower", cmap=colours, vmin=low, vmax=high, aspect="equal",
                                 extent=cell.extent(horizontal, vertical))
            axis.set_xlabel(f"{_AXES[horizontal]} (km/s)")
            axis.set_ylabel(f"{_AXES[vertical]} (km/s)")
            heading = f"{cell.population.name} cell {cell.cell_id}: {cell.reason}\n" if k == column == 0 else ""
            axis.set_title(heading + label, fontsize=8)
            figure.colorbar(mapped, ax=axis, shrink=0.8, label="log10 f" if column < 2 else "decades")
