"""Issue 16, lead 3: does the neural field pay as the predictor of the octree codec?

For every cell of a file, the octree codec (``transform="auto"``: the domains it tries for the
profile's target) fits its quantized Tucker to y(f) − y(g) instead of y(f), where y is the value
transform (sqrt, cbrt, loglin, ...) and g a predictor the decoder can rebuild:
- ``none``: g = 0, the octree codec as it is;
- ``base``: g = the mlp codec's Gaussian-mixture base alone (its 44 or 84 payload bytes);
- ``mlp``: g = the mlp codec's decoded field, fitted at ``--tol`` (its whole payload).
The rate control is the codec's own: ranks from the HOSVD under the same budget (a share of tol
times ‖y(f)‖, the norm of the signal, not of the residual), factor and core steps searched on the
decoded error, accepted when f' = y⁻¹(y(g) + Tucker) meets the profile's target on the stored
voxels. A cell's bytes are the octree payload plus the predictor's payload; the table gives the
ratio of the values' bytes to those (block ids left out: every column needs the same), the cells
where each predictor is the smallest, and the median Tucker size (factor columns, bytes without
the predictor). Moment restoration comes after any of them and is left out.

    python bench/mlp_predictor.py ../shared/data/restart_ipshock_small.vlsv --markdown bench/RESULTS-mlp-predictor.md
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from vdfzip.codecs import octree  # noqa: E402
from vdfzip.codecs.mlp import MlpCodec  # noqa: E402
from vdfzip.mesh import BoxLayout, voxel_velocities  # noqa: E402
from vdfzip.profiles import resolve_profile  # noqa: E402
from vdfzip.vlasiator import VlasiatorFile  # noqa: E402

PREDICTORS = ("none", "base", "mlp")
PROFILES = ("restart", "core")


class Predicted:
    """An octree value domain shifted by a predictor: forward(f) = y(f) − y(g)."""

    def __init__(self, domain: octree.Domain, prediction: np.ndarray):
        self.domain, self.transform = domain, domain.transform
        self.predicted = domain.forward(prediction)

    def forward(self, f: np.ndarray) -> np.ndarray:
        return self.domain.forward(f) - self.predicted

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return self.domain.inverse(np.reshape(y, self.predicted.shape) + self.predicted)


def tucker_bytes(codec, domain, layout, f, target, signal_norm) -> tuple[int, int] | None:
    """(payload bytes, factor columns) of the cheapest quantized Tucker of ``domain.forward(f)``
    that meets ``target`` after the inverse, or None: the codec's own budgets and rate control."""
    box, voxels, judge = layout.scatter(domain.forward(f)), layout.flat("zyx"), target.against(f)
    full = octree.hosvd(box)
    table = octree.RankTable(full.core, box.shape)
    budget = target.rel_l2 * octree._TRANSFORM_GAIN[domain.transform] * signal_norm

    def excess(tucker) -> float:
        return judge.excess(domain.inverse(octree.reconstruct_voxels(tucker, voxels)))

    for rank_share, factor_share in octree._BUDGETS:
        ranks = table.ranks(rank_share * budget)
        quantized = codec._quantize(box, octree.truncate(full, ranks), factor_share * budget, excess, target)
        if quantized is not None:
            plain = domain.domain if isinstance(domain, Predicted) else domain
            return len(codec._pack(plain, quantized)), sum(len(c) for c in quantized.factor_codes)
    return None


def measure(path: str, tol: float, profile_name: str) -> dict:
    """Per predictor: the bytes, the cells where it is smallest, the median Tucker size."""
    with VlasiatorFile(path) as file:
        population = file.population(next(iter(file.populations)))
        batch, mesh, threshold = population.cells(0, population.cell_count), population.mesh, population.threshold
    target = resolve_profile(profile_name, None, True).target(tol, threshold)
    codec, mlp = octree.OctreeCodec("auto"), MlpCodec()
    cells = list(range(len(batch)))
    started = time.perf_counter()
    payloads = mlp.fit_cells(batch, cells, mesh, tol)
    fit_seconds = time.perf_counter() - started
    fields = mlp.decode_cells([payloads[c] for c in cells], [batch.cell(c)[0] for c in cells], mesh)
    rows, rows_of = [], np.cumsum([0] + [len(batch.cell(c)[0]) for c in cells])
    for c in cells:
        ids, values = batch.cell(c)
        f = np.asarray(values, np.float64)
        prepared = mlp.prepare_cell(batch, c, mesh, mlp._rng(batch, c, 0))
        predictions = {"none": None, "base": prepared.mixture(voxel_velocities(ids, mesh).reshape(-1, 3)).reshape(f.shape),
                       "mlp": np.maximum(fields[rows_of[c] : rows_of[c + 1]], 0.0)}
        predictor_bytes = {"none": 0, "base": 4 + 40 * prepared.mixture.components, "mlp": len(payloads[c])}
        layout, best = BoxLayout.of(ids, mesh), {}
        for domain in codec.domains(float(f.max()), target):
            signal_norm = float(np.linalg.norm(layout.scatter(domain.forward(f))))
            for name, g in predictions.items():
                shifted = domain if g is None else Predicted(domain, g)
                if (found := tucker_bytes(codec, shifted, layout, f, target, signal_norm)) is not None:
                    best[name] = min(best.get(name, found), found)
        rows.append({"raw": f.astype(np.float32).nbytes, "field_meets": target.met(predictions["mlp"], f),
                     **{name: (b + predictor_bytes[name], columns, b) for name, (b, columns) in best.items()}})
    raw = sum(r["raw"] for r in rows)
    result = {"cells": len(rows), "fit_seconds": fit_seconds, "field_meets": sum(r["field_meets"] for r in rows)}
    for name in PREDICTORS:
        total = sum(r[name][0] if name in r else r["raw"] for r in rows)
        smallest = sum(name in r and r[name][0] == min(r[p][0] for p in PREDICTORS if p in r) for r in rows)
        result[name] = {"ratio": raw / total, "smallest": smallest,
                        "columns": float(np.median([r[name][1] for r in rows if name in r])),
                        "tucker": float(np.median([r[name][2] for r in rows if name in r]))}
    result["per_cell_best"] = raw / sum(min(r[p][0] for p in PREDICTORS if p in r) for r in rows)
    return result


def table(path: str, tol: float, results: dict) -> str:
    lines = [
        "# The neural field as the predictor of the octree codec (issue 16, lead 3)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{datetime.now(timezone.utc):%Y-%m-%d}.",
        "",
        f"Command: `python bench/mlp_predictor.py {path} --tol {tol:g}`",
        "",
        "Ratio: the cells' float32 values over octree payload + predictor payload (block ids and "
        "restoration left out). Smallest: cells where that predictor gives the fewest bytes. Tucker: "
        "median factor columns and median octree payload bytes without the predictor.",
        "",
        "| profile | predictor | ratio | smallest on | Tucker columns | Tucker bytes |",
        "|---|---|---|---|---|---|",
    ]
    for profile, r in results.items():
        for name in PREDICTORS:
            p = r[name]
            lines.append(f"| {profile} | {name} | {p['ratio']:.1f} | {p['smallest']} / {r['cells']} | "
                         f"{p['columns']:.1f} | {p['tucker']:.0f} |")
        lines.append(f"| {profile} | per-cell best of the three | {r['per_cell_best']:.1f} | | | |")
    lines += ["", "The mlp field alone meets the target on "
              + ", ".join(f"{r['field_meets']} / {r['cells']} cells ({p})" for p, r in results.items())
              + "; its fit took " + ", ".join(f"{r['fit_seconds']:.0f} s" for r in results.values()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args()
    results = {profile: measure(args.file, args.tol, profile) for profile in PROFILES}
    text = table(args.file, args.tol, results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
