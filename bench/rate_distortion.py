"""Rate–distortion of vdfzip's codecs (octree–Tucker, the neural ``mlp``) against ZFP (zfpy) and
SZ3 (pysz), side by side.

For every case (``fullf`` proton and antiproton, the 72 proton cells of ``restart_ipshock_small``,
the 2 VDF cells of ``bulk.1d``, ``--synthetic-per-kind`` cells of each synthetic kind) and every
target rel L2 (3e-2, 1e-2, 3e-3) each method compresses every cell so that the cell's rel L2
over its stored voxels is at most the target:

- ``octree``: ``encode_cell(tol=target)`` (the codec verifies and refines on its own);
- ``octree-sqrt`` / ``octree-log``: the same codec with its sqrt / floored-log value transform
  (the tolerance still holds on linear f), for the tail metrics;
- ``mlp``: the neural codec's ``encode_cells`` on all cells of the case at once (its batched
  engine, as the pipeline runs it); cells whose fit misses the target are counted as misses
  (``k/n met``) and its ratio is over the cells it met; encode time is the batch's time shared
  by all cells, misses included;
- ``mlp→octree``: what ``--method mlp,octree`` stores: mlp where it met the target, octree
  elsewhere, over all cells;
- ``zfp`` / ``sz3``: the cell's dense bounding box (float32, zeros outside the stored blocks,
  :func:`vdfzip.mesh.to_dense`), ZFP fixed-accuracy ``tolerance`` / SZ3 absolute error bound
  (SZ3 with its ``INTERP`` predictor, smaller than its default here) bisected per cell in log
  space (32 steps), then 16 bounds scanned around the bisection's result; the smallest stream
  that met the target is kept (SZ3's size and error are not monotone in its bound).

Honest bytes per cell = codec stream + zstd (level 19) of the cell's sorted block ids,
delta-coded as uint32 (the block structure every method needs to decode; delta coding is what
reproduces the anchors of DESIGN.md). Ratio = original VDF bytes of the cells (4 B id + 256 B
values per block, 4 B BLOCKSPERCELL + 8 B CELLSWITHBLOCKS per cell) / honest bytes.
Encode and decode times are per cell on one core (BLAS, OpenMP and numba limited to one thread),
including the dense-box scatter/gather for ZFP and SZ3, and for them only the final call at
the chosen bound (not the bisection), after one untimed warm-up round trip. Tail metrics
(:mod:`vdfzip.metrics`) pool all voxels and blocks of a case.

Usage: ``python bench/rate_distortion.py [--out bench/RESULTS-rd.md] [--data ../shared/data]
[--synthetic-per-kind 50] [--plot bench/rd.png]``
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import zfpy  # noqa: E402
import zstandard  # noqa: E402
from pysz import sz, szAlgorithm, szConfig, szErrorBoundMode  # noqa: E402

from vdfzip import metrics, synth, vlasiator  # noqa: E402
from vdfzip.codecs import get_codec, relative_l2  # noqa: E402
from vdfzip.mesh import DenseBox, from_dense, to_dense  # noqa: E402

TARGETS = (3e-2, 1e-2, 3e-3)
METHODS = ("octree", "octree-sqrt", "octree-log", "mlp", "mlp→octree", "zfp", "sz3")
OCTREE_TRANSFORMS = {"octree": "linear", "octree-sqrt": "sqrt", "octree-log": "log"}
SCAN_STEPS = 16
BISECTION_STEPS = 32
CELL_OVERHEAD = 4 + 8  # BLOCKSPERCELL + CELLSWITHBLOCKS entry
BLOCK_BYTES = 4 + 256  # block id + 64 float32 values
ANCHORS = {  # DESIGN.md: ratio at rel L2 per cell, (fullf both populations, restart 72 cells)
    ("zfp", 3e-2): (206, 190),
    ("zfp", 1e-2): (142, 123),
    ("zfp", 3e-3): (94, 78),
    ("sz3", 3e-2): (299, 208),
    ("sz3", 1e-2): (177, 140),
    ("sz3", 3e-3): (106, 75),
}
_ZSTD = zstandard.ZstdCompressor(level=19)


@dataclass
class Cell:
    block_ids: np.ndarray
    values: np.ndarray
    mesh: vlasiator.VelocityMesh


@dataclass
class Point:
    """One method on one case at one target: a record per cell it encoded within the target,
    and the indices of the cells it missed (only the neural codec misses)."""

    cells: list = field(default_factory=list)
    streams: list = field(default_factory=list)
    decoded: list = field(default_factory=list)
    encode: list = field(default_factory=list)
    decode: list = field(default_factory=list)
    misses: list = field(default_factory=list)
    missed_encode_s: float = 0.0

    def add(self, cell: Cell, stream_bytes: int, decoded: np.ndarray, encode_s: float, decode_s: float) -> None:
        self.cells.append(cell)
        self.streams.append(stream_bytes)
        self.decoded.append(decoded)
        self.encode.append(encode_s)
        self.decode.append(decode_s)

    @property
    def stream_bytes(self) -> int:
        return sum(self.streams)

    @property
    def id_bytes(self) -> int:
        return sum(id_bytes(c.block_ids) for c in self.cells)

    @property
    def original_bytes(self) -> int:
        return sum(CELL_OVERHEAD + BLOCK_BYTES * len(c.block_ids) for c in self.cells)

    @property
    def blocks(self) -> int:
        return sum(len(c.block_ids) for c in self.cells)

    @property
    def encode_s(self) -> float:
        return sum(self.encode) + self.missed_encode_s

    @property
    def decode_s(self) -> float:
        return sum(self.decode)

    @property
    def worst_rel_l2(self) -> float:
        return max(relative_l2(d, c.values) for d, c in zip(self.decoded, self.cells))


def id_bytes(block_ids: np.ndarray) -> int:
    """Bytes of the cell's block structure: zstd of its sorted ids, delta-coded as uint32."""
    ids = np.sort(block_ids.astype(np.int64))
    return len(_ZSTD.compress(np.diff(ids, prepend=0).astype("<u4").tobytes()))


def zfp_encode(box: np.ndarray, bound: float) -> bytes:
    return zfpy.compress_numpy(box, tolerance=bound)


def zfp_decode(stream: bytes, shape) -> np.ndarray:
    return zfpy.decompress_numpy(stream)


def sz3_encode(box: np.ndarray, bound: float) -> bytes:
    config = szConfig()
    config.errorBoundMode = szErrorBoundMode.ABS
    config.absErrorBound = bound
    config.cmprAlgo = szAlgorithm.INTERP
    return sz.compress(box, config)[0].tobytes()


def sz3_decode(stream: bytes, shape) -> np.ndarray:
    return sz.decompress(np.frombuffer(stream, dtype=np.uint8), np.float32, shape)[0]


PEERS = {"zfp": (zfp_encode, zfp_decode), "sz3": (sz3_encode, sz3_decode)}


def peer_round_trip(name: str, cell: Cell, bound: float) -> tuple[bytes, np.ndarray, float, float]:
    """Stream, decoded block values, encode and decode seconds of one peer at one bound."""
    encode, decode = PEERS[name]
    start = time.perf_counter()
    box = to_dense(cell.block_ids, cell.values, cell.mesh)
    stream = encode(box.values, bound)
    middle = time.perf_counter()
    dense = decode(stream, box.values.shape)
    decoded = from_dense(DenseBox(box.origin, dense, box.mask), cell.block_ids, cell.mesh)
    return stream, decoded, middle - start, time.perf_counter() - middle


def peer_at_target(name: str, cell: Cell, target: float) -> tuple[bytes, np.ndarray, float, float]:
    """The smallest stream meeting ``target`` among the bounds of a bisection over the peer's
    absolute bound and of a scan around its result."""
    top = float(np.abs(cell.values).max())
    low, high = np.log(top * 1e-12), np.log(top)
    best: tuple[int, float] | None = None

    def consider(bound: float) -> bool:
        nonlocal best
        stream, decoded, _, _ = peer_round_trip(name, cell, bound)
        meets = relative_l2(decoded, cell.values) <= target
        if meets and (best is None or len(stream) < best[0]):
            best = (len(stream), bound)
        return meets

    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        low, high = (middle, high) if consider(float(np.exp(middle))) else (low, middle)
    for bound in np.exp(low + np.linspace(np.log(0.5), np.log(8.0), SCAN_STEPS)):
        consider(float(bound))
    if best is None:
        raise RuntimeError(f"{name} never met rel L2 {target:g}")
    return peer_round_trip(name, cell, best[1])


def octree_at_target(method: str, cell: Cell, target: float) -> tuple[bytes, np.ndarray, float, float]:
    """Payload, decoded values, encode and decode seconds of the octree codec."""
    codec = get_codec("octree", transform=OCTREE_TRANSFORMS[method])
    start = time.perf_counter()
    payload = codec.encode_cell(cell.block_ids, cell.values, cell.mesh, target)
    middle = time.perf_counter()
    decoded = codec.decode_cell(payload, cell.block_ids, cell.mesh)
    return payload, decoded, middle - start, time.perf_counter() - middle


def measure(method: str, cells: list[Cell], target: float, done: dict[str, Point]) -> Point:
    """One method over all cells of a case at one target (``done``: the methods measured
    before it on the same case and target, which ``mlp→octree`` combines)."""
    if method == "mlp":
        return mlp_point(cells, target)
    if method == "mlp→octree":
        return chain_point(done["mlp"], done["octree"])
    point = Point()
    for cell in cells:
        if method in OCTREE_TRANSFORMS:
            stream, decoded, encode_s, decode_s = octree_at_target(method, cell, target)
        else:
            stream, decoded, encode_s, decode_s = peer_at_target(method, cell, target)
        point.add(cell, len(stream), decoded, encode_s, decode_s)
    return point


def mlp_point(cells: list[Cell], target: float) -> Point:
    """The neural codec on all cells of a case at once (its batched engine), as the pipeline
    runs it; the batch's encode time is shared equally by its cells."""
    codec = get_codec("mlp")
    mesh = cells[0].mesh
    sizes = [len(c.block_ids) for c in cells]
    batch = vlasiator.CellBatch("bench", 0, np.arange(len(cells)), np.concatenate([[0], np.cumsum(sizes)]),
                                np.concatenate([c.block_ids for c in cells]), np.concatenate([c.values for c in cells]))
    start = time.perf_counter()
    payloads = codec.encode_cells(batch, range(len(cells)), mesh, target)
    encode_s = (time.perf_counter() - start) / len(cells)
    start = time.perf_counter()
    decoded = codec.decode_cells(list(payloads.values()), [cells[i].block_ids for i in payloads], mesh)
    decode_s = (time.perf_counter() - start) / max(len(payloads), 1)
    point, row = Point(), 0
    for i, cell in enumerate(cells):
        if i in payloads:
            point.add(cell, len(payloads[i]), decoded[row : row + sizes[i]], encode_s, decode_s)
            row += sizes[i]
        else:
            point.misses.append(i)
            point.missed_encode_s += encode_s
    return point


def chain_point(mlp: Point, octree: Point) -> Point:
    """mlp where it met the target, octree elsewhere: what ``--method mlp,octree`` stores."""
    point, met = Point(), iter(range(len(mlp.cells)))
    per_cell_fit = mlp.encode_s / len(octree.cells)
    for i, cell in enumerate(octree.cells):
        if i in mlp.misses:
            point.add(cell, octree.streams[i], octree.decoded[i], per_cell_fit + octree.encode[i], octree.decode[i])
        else:
            k = next(met)
            point.add(cell, mlp.streams[k], mlp.decoded[k], per_cell_fit, mlp.decode[k])
    return point


def warm_up(cell: Cell) -> None:
    """One untimed round trip of every method, so first-call costs stay out of the table."""
    done = {}
    for method in METHODS:
        done[method] = measure(method, [cell], TARGETS[0], done)


def load_cases(data: Path, synthetic_per_kind: int) -> list[tuple[str, list[Cell], float]]:
    """(name, cells, sparsity threshold) of every case."""
    cases = []
    with vlasiator.open_file(data / "fullf.0000001.vlsv") as f:
        for name in ("proton", "antiproton"):
            p = f.population(name)
            cases.append((f"fullf {name}", [Cell(*p.cell(0), p.mesh)], p.threshold))
    for file, label in (("restart_ipshock_small.vlsv", "restart_ipshock_small"), ("bulk.1d.vlsv", "bulk.1d")):
        with vlasiator.open_file(data / file) as f:
            p = f.population("proton")
            cells = [Cell(*p.cell(i), p.mesh) for i in range(p.cell_count)]
            cases.append((f"{label} proton ({len(cells)} cells)", cells, p.threshold))
    if synthetic_per_kind:
        species, rng = synth.SPECIES[0], np.random.default_rng(2026)
        for kind in synth.KINDS:
            made = [synth.make_cell(kind, species.mesh, 1e-15, rng, species.mass) for _ in range(synthetic_per_kind)]
            cases.append((f"synthetic {kind} ({synthetic_per_kind} cells)",
                          [Cell(c.block_ids, c.values, species.mesh) for c in made], 1e-15))
    return cases


def row(case: str, method: str, target: float, point: Point, threshold: float) -> str:
    """One markdown table row with ratio, bytes, speed and tail metrics (over the cells the
    method met the target on; the time per cell counts the misses too)."""
    n = len(point.cells) + len(point.misses)
    label = f"{method} ({len(point.cells)}/{n} met)" if point.misses else method
    if not point.cells:
        return f"| {case} | {target:g} | {label} | – | – | – | – | {point.encode_s * 1e3 / n:.1f} |" + " – |" * 8
    decoded = np.concatenate(point.decoded)
    original = np.concatenate([c.values for c in point.cells]).astype(np.float64)
    tail = metrics.tail_metrics(decoded, original, threshold)
    honest = point.stream_bytes + point.id_bytes
    met = len(point.cells)
    blocks = point.blocks * n / met
    return (
        f"| {case} | {target:g} | {label} | **{point.original_bytes / honest:.0f}** | {honest / met:.0f} "
        f"| {point.stream_bytes / met:.0f} | {point.worst_rel_l2:.2e} "
        f"| {point.encode_s * 1e3 / n:.1f} | {point.decode_s * 1e3 / met:.2f} "
        f"| {point.encode_s * 1e6 / blocks:.1f} | {point.decode_s * 1e6 / point.blocks:.2f} "
        f"| {tail['log10_err']['p50']:.2f} | {tail['log10_err']['p95']:.2f} | {tail['content_lost_fraction']:.2f} "
        f"| {tail['content_blocks_lost_fraction']:.2f} | {tail['content_blocks_gained_fraction']:.2f} |"
    )


HEADER = (
    "| case | target rel L2 | method | ratio | honest B/cell | stream B/cell | max rel L2 "
    "| enc ms/cell | dec ms/cell | enc ms/1000 blocks | dec ms/1000 blocks "
    "| log10 err p50 | p95 | content lost | content blocks lost | gained |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def anchor_rows(totals: dict) -> list[str]:
    """Our ZFP/SZ3 ratios next to DESIGN.md's anchors (fullf = both populations together)."""
    lines = ["| method | target | fullf: ours | fullf: anchor | restart: ours | restart: anchor |", "|---|---|---|---|---|---|"]
    for (method, target), (fullf_anchor, restart_anchor) in ANCHORS.items():
        fullf = [totals[(case, method, target)] for case in totals_cases(totals) if case.startswith("fullf")]
        restart = [totals[(case, method, target)] for case in totals_cases(totals) if case.startswith("restart")]
        lines.append(
            f"| {method} | {target:g} | {combined_ratio(fullf):.0f} | {fullf_anchor} "
            f"| {combined_ratio(restart):.0f} | {restart_anchor} |"
        )
    return lines


def totals_cases(totals: dict) -> list[str]:
    return list(dict.fromkeys(case for case, _, _ in totals))


def combined_ratio(points: list[Point]) -> float:
    original = sum(p.original_bytes for p in points)
    return original / sum(p.stream_bytes + p.id_bytes for p in points)


def plot(totals: dict, path: Path) -> None:
    """Ratio against target rel L2, one panel per case, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = totals_cases(totals)
    columns = 3
    figure, axes = plt.subplots(-(-len(cases) // columns), columns, figsize=(15, 4 * -(-len(cases) // columns)),
                                squeeze=False)
    for axis, case in zip(axes.flat, cases):
        for method in METHODS:
            points = [(t, totals[(case, method, t)]) for t in TARGETS if totals[(case, method, t)].cells]
            x = [t for t, p in points]
            y = [combined_ratio([p]) for t, p in points]
            axis.plot(x, y, "o-" if "mlp" in method else ".--", label=method)
        axis.set(xscale="log", yscale="log", xlabel="target rel L2 per cell", ylabel="honest ratio", title=case)
        axis.grid(True, which="both", alpha=0.3)
    for axis in list(axes.flat)[len(cases):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS-rd.md")
    parser.add_argument("--synthetic-per-kind", type=int, default=50, help="synthetic cells of each kind (0: none)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "rd.png")
    args = parser.parse_args(argv)

    cases = load_cases(args.data, args.synthetic_per_kind)
    warm_up(cases[0][1][0])
    rows, totals = [], {}
    for case, cells, threshold in cases:
        for target in TARGETS:
            done = {}
            for method in METHODS:
                point = done[method] = measure(method, cells, target, done)
                totals[(case, method, target)] = point
                rows.append(row(case, method, target, point, threshold))
                print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# Rate–distortion: octree–Tucker and mlp vs ZFP vs SZ3",
            "",
            f"Machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, numpy {np.__version__}, zfpy {zfpy.__version__ if hasattr(zfpy, '__version__') else '?'}; "
            "one thread (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1).",
            "",
            "![ratio against target rel L2](rd.png)",
            "",
            f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
            "",
            (__doc__ or "").split("\n\n", 1)[1].split("Usage:")[0].strip(),
            "",
            HEADER,
            *rows,
            "",
            "## ZFP / SZ3 harness against the anchors of DESIGN.md",
            "",
            *anchor_rows(totals),
            "",
        ]
    )
    args.out.write_text(text)
    plot(totals, args.plot)
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
