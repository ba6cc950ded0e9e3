"""Human-readable tables for ``vdfzip encode`` and ``vdfzip verify`` (their ``--json`` is the dict)."""

from __future__ import annotations


def format_encode_summary(summary: dict) -> str:
    ratio, profile = summary["ratio"], summary["profile"]
    guarantee = f", tails within {profile['tail_tol']:g} decades (p95), content blocks kept" if profile["tail_tol"] else ""
    lines = [
        f"wrote {summary['output']} in {summary['seconds']:.1f} s; VDF ratio "
        + (f"{ratio:.1f}" if ratio else "n/a (no VDF)")
        + f"; profile {profile['name']}{guarantee}",
        f"{'population':12s} {'cells':>8s} {'ratio':>8s} {'rel L2 median':>14s} {'p95':>9s} {'max':>9s}  methods",
    ]
    for name, p in summary["populations"].items():
        e = p["rel_l2"]
        methods = ", ".join(f"{k} {v}" for k, v in p["methods"].items())
        lines.append(
            f"{name:12s} {p['cells']:8d} {p['ratio']:8.1f} {e['median']:14.2e} {e['p95']:9.2e} {e['max']:9.2e}  {methods}"
        )
    return "\n".join(lines)


_VERIFY_ROWS = [
    ("cells", "cells", "{:d}"),
    ("ratio", "ratio", "{:.1f}"),
    ("rel L2 median / p95 / max", "rel_l2", None),
    ("density rel err max", "density_rel_err_max", "{:.2e}"),
    ("velocity err / vth max", "velocity_err_over_vth_max", "{:.2e}"),
    ("pressure rel err max", "pressure_rel_err_max", "{:.2e}"),
    ("pressure tensor rel err max", "pressure_tensor_rel_err_max", "{:.2e}"),
    ("heat flux err / vth³ max", "heat_flux_err_over_vth3_max", "{:.2e}"),
    ("log10 err p50 / p95 / worst cell p95", "log10_err", None),
    ("content voxels lost", "content_lost_fraction", "{:.2%}"),
    ("content blocks lost / gained", None, None),
    ("negative values", "negative_values", "{:d}"),
    ("block set / order identical", "block_sets_identical", None),
    ("methods", "methods", None),
]


def _cell(report: dict, key: str | None, label: str, fmt: str | None) -> str:
    if key is None:
        return f"{report['content_blocks_lost_fraction']:.2%} / {report['content_blocks_gained_fraction']:.2%}"
    value = report.get(key)
    if value is None:
        return "-"
    if key == "rel_l2":
        return f"{value['median']:.2e} / {value['p95']:.2e} / {value['max']:.2e}"
    if key == "log10_err":
        return f"{value['p50']:.3f} / {value['p95']:.3f} / {value['cell_p95_max']:.3f}"
    if key == "block_sets_identical":
        return f"{value} / {report['blocks_identical']}"
    if key == "methods":
        return ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
    return fmt.format(value)


def format_verify_report(report: dict) -> str:
    names = list(report["populations"])
    columns = [report] + [report["populations"][n] for n in names]
    header = ["", "all"] + names
    rows = [[label] + [_cell(c, key, label, fmt) for c in columns] for label, key, fmt in _VERIFY_ROWS]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.append(f"non-VDF arrays identical: {report['non_vdf_identical']}")
    return "\n".join(lines)
