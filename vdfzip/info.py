"""``vdfzip info``: what a VLSV file holds, as a dict (for ``--json``) or a short report."""

from __future__ import annotations

import os

import numpy as np

from . import layout
from .vlasiator import Population, VlasiatorFile

PERCENTILES = (0, 5, 50, 95, 100)


def _population_summary(population: Population) -> dict:
    summary = {
        "cells": population.cell_count,
        "blocks": population.block_count,
        "vdf_bytes": population.vdf_bytes,
        "dtype": population.dtype.name,
        "threshold": population.threshold,
        "threshold_source": population.threshold_source,
        "mass": population.mass,
    }
    mesh = population.mesh
    if mesh is not None:
        summary["mesh"] = {
            "blocks_per_axis": list(mesh.nblocks),
            "block_width": mesh.wid,
            "vmin": list(mesh.vmin),
            "vmax": list(mesh.vmax),
            "dv": list(mesh.dv),
        }
    if population.cell_count:
        values = np.percentile(population.blocks_per_cell, PERCENTILES)
        summary["blocks_per_cell"] = {
            ("min" if p == 0 else "max" if p == 100 else f"p{p}"): float(v) for p, v in zip(PERCENTILES, values)
        }
    return summary


def _compressed_summary(population: layout.CompressedPopulation) -> dict:
    original = sum(e.nbytes for e in population.original.values())
    return {
        "cells": population.total_cells,
        "blocks": population.total_blocks,
        "format": population.header["format"],
        "profile": population.profile.get("name"),
        "tol": population.header.get("tol"),
        "original_vdf_bytes": original,
        "compressed_bytes": population.compressed_bytes,
        "ratio": original / population.compressed_bytes,
        "methods": {codec: n for codec, n in population.codec_counts().items() if n},
    }


def describe(file: VlasiatorFile) -> dict:
    """Everything ``vdfzip info`` reports about ``file``, JSON-ready."""
    spatial = file.vlsv.find("VARIABLE", name="CellID")
    return {
        "file": str(file.path),
        "size_bytes": os.path.getsize(file.path),
        "is_restart": file.is_restart,
        "has_vdf": file.has_vdf,
        "spatial_cells": spatial.arraysize if spatial is not None else None,
        "arrays": len(file.vlsv.elements),
        "populations": {name: _population_summary(p) for name, p in file.populations.items()},
        "compressed_populations": {name: _compressed_summary(layout.CompressedPopulation(file.vlsv, name))
                                   for name in layout.compressed_population_names(file.vlsv)},
    }


def format_report(info: dict) -> str:
    """A human-readable version of :func:`describe`'s dict."""
    kind = "restart" if info["is_restart"] else "bulk/other"
    lines = [
        f"{info['file']}: {kind} file, {info['size_bytes']:,} bytes, {info['arrays']} arrays, "
        f"{info['spatial_cells'] if info['spatial_cells'] is not None else 'no'} spatial cells"
    ]
    if not info["has_vdf"] and not info["compressed_populations"]:
        lines.append("  no velocity distribution data")
    for name, p in info["compressed_populations"].items():
        methods = ", ".join(f"{k} {v}" for k, v in p["methods"].items())
        lines.append(
            f"  {name}: compressed by vdfzip (format {p['format']}, {p['profile']} profile, tol {p['tol']}): "
            f"{p['cells']:,} cells, {p['blocks']:,} blocks, {p['original_vdf_bytes']:,} VDF bytes in "
            f"{p['compressed_bytes']:,} (ratio {p['ratio']:.1f}); {methods}"
        )
    for name, p in info["populations"].items():
        if not p["blocks"]:
            continue
        lines.append(
            f"  {name}: {p['cells']:,} cells, {p['blocks']:,} blocks, {p['vdf_bytes']:,} VDF bytes, "
            f"{p['dtype']}, minValue {p['threshold']:g} ({p['threshold_source']})"
        )
        if "mesh" in p:
            m = p["mesh"]
            lines.append(
                "    mesh {} blocks of {}³, v in [{:.4g}, {:.4g}] m/s, dv {:.4g} m/s".format(
                    "×".join(map(str, m["blocks_per_axis"])), m["block_width"], m["vmin"][0], m["vmax"][0], m["dv"][0]
                )
            )
        b = p["blocks_per_cell"]
        lines.append(
            f"    blocks per cell: min {b['min']:.0f}, p5 {b['p5']:.0f}, median {b['p50']:.0f}, "
            f"p95 {b['p95']:.0f}, max {b['max']:.0f}"
        )
    return "\n".join(lines)
