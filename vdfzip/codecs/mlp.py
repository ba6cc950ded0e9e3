"""Neural-field codec (id ``mlp``): each cell's VDF as a Gaussian-mixture base times exp(a small
network), fitted jointly for all cells of a batch; only the mixture and the 8-bit weights are
stored.

Encoding prepares each cell (mixture fit, whitening, importance-weighted training sample), hands
the whole batch to the batched engine (:mod:`vdfzip.neural.fit`), then decodes every candidate
payload over the cell's stored voxels and keeps those within ``tol``; the others are left to the
next codec of the chain. Decoding is one ``kernels/mlp.py`` inference launch over all rows of
all cells. The architecture (and the Fourier seed) lives in the codec config stored in the file
header, so a payload holds only per-cell numbers.

Payload (little endian): version byte; flags byte (bits 0–3: mixture components, bit 4: the
codes are zstd-compressed); float32 mixture (components × 10); float32 quantization steps
(2 per layer); the int8 weight codes, raw or as one zstd frame, whichever is smaller.
"""

from __future__ import annotations

import numbers
import struct
from dataclasses import asdict, dataclass

import numpy as np
import zstandard

from ..blockset import bounded_decompress
from ..kernels import mlp as kernel
from ..kernels.launch import launch_per_item
from ..mesh import voxel_velocities
from ..neural.base import Mixture, fit_mixture
from ..neural.fit import Schedule, fit, training_sample
from ..neural.network import Architecture, dequantize
from ..neural.warm import WarmStart
from ..vlasiator import CellBatch, VelocityMesh
from . import Codec, PayloadError, Target, ToleranceNotMetError, register_codec

_HEADER = struct.Struct("<BB")
_ZSTD_FLAG = 0x10
_MAX_COMPONENTS = 2
#: The engine stops a cell once its sample estimate is below this share of ``tol``: the estimate
#: is noisy and the moment restoration after decoding adds a little error.
GOAL_SHARE = 0.7
#: Voxels (importance-sampled) the mixture base is fitted on: its cost no longer grows with the cell.
BASE_SAMPLES = 8192


@dataclass
class _Prepared:
    """One cell ready for the engine: its stored mixture and training sample."""

    cell: int
    mixture: Mixture
    inputs: np.ndarray
    base: np.ndarray
    target: np.ndarray
    weight: np.ndarray


def _check_network_options(scale, **counts) -> None:
    """Refuse what :class:`Architecture` lets through but decoding trips on: counts that are not
    integers, a negative seed or scale. Why: a stored config must fail when the header is read,
    not with a TypeError or ValueError in the first decode."""
    for name, value in counts.items():
        if not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if counts["seed"] < 0 or not scale >= 0:
        raise ValueError(f"seed and scale must be non-negative, got {counts['seed']} and {scale}")


@register_codec
class MlpCodec(Codec):
    """Per-cell neural fields; architecture and training options are the constructor's keywords.
    The fit and inference run on numpy unless :meth:`fit_on` gives cupy. Encoding is
    deterministic for a given batch of cells and seed."""

    codec_id = "mlp"
    version = 1
    retry_tighter = False

    def __init__(self, *, fourier=8, width=12, hidden_layers=2, activation="sin", scale=1.5, seed=0,
                 samples=2048, max_steps=2000, quantized_steps=50, rate=1e-2, bits=8):
        _check_network_options(scale, fourier=fourier, width=width, hidden_layers=hidden_layers, seed=seed)
        self.architecture = Architecture(fourier, width, hidden_layers, activation, scale, seed)
        if not 2 <= bits <= 8:
            raise ValueError(f"bits must be in [2, 8], got {bits}")
        self.schedule = Schedule(samples=samples, max_steps=max_steps, quantized_steps=quantized_steps,
                                 rate=rate, bits=bits, seed=seed)
        self.xp = np
        #: Each cell's last network, where its next fit starts (:class:`vdfzip.Compressor`); None:
        #: every fit starts from random weights, as files are encoded (a cell's bytes then depend
        #: on the cell alone).
        self.warm_start: WarmStart | None = None
        self.steps_trained = 0  # float training steps of every fit so far, summed over cells

    def fit_on(self, xp) -> None:
        self.xp = xp

    def get_config(self) -> dict:
        s = self.schedule
        return asdict(self.architecture) | {"samples": s.samples, "max_steps": s.max_steps,
                                            "quantized_steps": s.quantized_steps, "rate": s.rate, "bits": s.bits}

    # ------------------------------------------------------------ encoding

    def encode_cell(self, block_ids, values, mesh, target):
        batch = CellBatch("", 0, np.zeros(1), np.array([0, len(block_ids)]), block_ids, values)
        payloads = self.encode_cells(batch, [0], mesh, target)
        if 0 not in payloads:
            raise ToleranceNotMetError(f"the network did not reach {Target.of(target)}")
        return payloads[0]

    def encode_cells(self, batch, cells, mesh, target):
        target = Target.of(target)
        payloads = self.fit_cells(batch, cells, mesh, target.rel_l2)
        decoded = self.decode_cells(list(payloads.values()), [batch.cell(c)[0] for c in payloads], mesh)
        accepted, row = {}, 0
        for cell, payload in payloads.items():
            values = batch.cell(cell)[1]
            if target.met(decoded[row : row + len(values)], values):
                accepted[cell] = payload
            row += len(values)
        return accepted

    def fit_cells(self, batch: CellBatch, cells, mesh: VelocityMesh, tol: float) -> dict[int, bytes]:
        """The payload of every cell with positive values, its network trained jointly with the
        others' towards rel L2 ``tol`` whether it got there or not (a predictor for a residual
        coder, or candidates for :meth:`encode_cells` to check). Cells with a network in
        :attr:`warm_start` train together from it, on :meth:`Schedule.warm_started`."""
        prepared = [p for c in cells if (p := self.prepare_cell(batch, c, mesh, self._rng(batch, c, 0))) is not None]
        networks = [None if self.warm_start is None else self.warm_start.initial(batch.cell_ids[p.cell])
                    for p in prepared]
        cold = [(p, self.architecture.initial(1, self._rng(batch, p.cell, 1))) for p, n in zip(prepared, networks)
                if n is None]
        warm = [(p, n) for p, n in zip(prepared, networks) if n is not None]
        payloads = {}
        for group, schedule in ((cold, self.schedule), (warm, self.schedule.warm_started())):
            if group:
                payloads |= self._fit_group(batch, group, tol, schedule)
        return {p.cell: payloads[p.cell] for p in prepared}

    def _fit_group(self, batch: CellBatch, group: list[tuple[_Prepared, np.ndarray]], tol: float, schedule: Schedule
                   ) -> dict[int, bytes]:
        """Train the cells of ``group`` (each with its initial network) jointly; their payloads."""
        xp = self.xp
        stacked = [xp.asarray(np.stack([getattr(p, name) for p, _ in group]))
                   for name in ("inputs", "base", "target", "weight")]
        initial = np.concatenate([network for _, network in group])
        result = fit(self.architecture, *stacked, np.full(len(group), GOAL_SHARE * tol), schedule, xp, initial=initial)
        self.steps_trained += int(result.trained_steps.sum())
        if self.warm_start is not None:
            self.warm_start.record(batch.cell_ids[[p.cell for p, _ in group]],
                                   dequantize(self.architecture, result.codes, result.steps))
        return {p.cell: self.payload(p.mixture, result.codes[i], result.steps[i]) for i, (p, _) in enumerate(group)}

    def _rng(self, batch: CellBatch, cell: int, stream: int) -> np.random.Generator:
        """The random numbers of one cell, from the seed and its cell id only: a cell's payload
        does not depend on the batch, the rank or the retry it is fitted in."""
        return np.random.default_rng([self.schedule.seed, int(batch.cell_ids[cell]), stream])

    def prepare_cell(self, batch: CellBatch, cell: int, mesh: VelocityMesh, rng) -> _Prepared | None:
        """Mixture and training sample of one cell; None for a cell without positive values."""
        block_ids, values = batch.cell(cell)
        velocities = voxel_velocities(block_ids, mesh).reshape(-1, 3)
        f = np.asarray(values, dtype=np.float64).ravel()
        try:
            index, weight = training_sample(f, BASE_SAMPLES, self.schedule.importance, rng)
            mixture = fit_mixture(velocities[index], f[index], weight, _MAX_COMPONENTS)
        except ValueError:
            return None
        _, mean, whiten = mixture.derived()
        index, weight = training_sample(f, self.schedule.samples, self.schedule.importance, rng)
        scale = f.max()
        u = (velocities[index] - mean) @ whiten.T
        return _Prepared(
            cell, mixture, self.architecture.features(u), (mixture(velocities[index]) / scale).astype(np.float32),
            (f[index] / scale).astype(np.float32), weight.astype(np.float32),
        )

    def payload(self, mixture: Mixture, codes: np.ndarray, steps: np.ndarray) -> bytes:
        raw = codes.astype(np.int8).tobytes()
        packed = zstandard.ZstdCompressor(level=19).compress(raw)
        flags = mixture.components | (_ZSTD_FLAG if len(packed) < len(raw) else 0)
        body = packed if flags & _ZSTD_FLAG else raw
        return _HEADER.pack(self.version, flags) + mixture.packed().tobytes() + steps.astype("<f4").tobytes() + body

    # ------------------------------------------------------------ decoding

    def decode_cell(self, payload, block_ids, mesh):
        return self.decode_cells([payload], [block_ids], mesh)

    def decode_cells(self, payloads, block_ids, mesh):
        arch = self.architecture
        cells = len(payloads)
        theta = np.zeros((cells, arch.parameter_count), dtype=np.float32)
        mean, whiten = np.zeros((cells, 3)), np.zeros((cells, 3, 3))
        amplitude = np.zeros((cells, _MAX_COMPONENTS))
        centre = np.zeros((cells, _MAX_COMPONENTS, 3))
        precision = np.zeros((cells, _MAX_COMPONENTS, 3, 3))
        for c, payload in enumerate(payloads):
            mixture, derived, theta[c] = self._parse(payload)
            k = mixture.components
            precision[c, :k], mean[c], whiten[c] = derived
            amplitude[c, :k], centre[c, :k] = mixture.amplitude, mixture.centre
        sizes = np.array([len(ids) for ids in block_ids], dtype=np.int64)
        ids = np.concatenate(block_ids).astype(np.int64) if cells else np.zeros(0, np.int64)
        args = (ids, np.repeat(np.arange(cells), sizes), *mesh.nblocks[:2], mesh.wid, np.asarray(mesh.vmin, float),
                np.asarray(mesh.dv, float), mean, whiten, amplitude, centre, precision, arch.frequencies(), theta,
                np.asarray(arch.dims, np.int64), kernel.ACTIVATIONS[arch.activation])
        xp = self.xp
        out = xp.empty((len(ids), mesh.cells_per_block))
        if xp is np:
            kernel.infer_cpu(*args, out)
            return out
        on_device = [xp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        launch_per_item(kernel.infer_cuda, out.size, *on_device, out)
        return out.get()

    def _parse(self, payload: bytes) -> tuple[Mixture, tuple, np.ndarray]:
        """The mixture, its :meth:`Mixture.derived` arrays and the float32 parameters of one payload."""
        self.check_version(payload)
        arch = self.architecture
        try:
            _, flags = _HEADER.unpack_from(payload)
            components = flags & 0x0F
            if not 1 <= components <= _MAX_COMPONENTS:
                raise ValueError(f"{components} mixture components")
            start = _HEADER.size + 40 * components
            mixture = Mixture.unpacked(np.frombuffer(payload, "<f4", 10 * components, _HEADER.size))
            steps = np.frombuffer(payload, "<f4", 2 * len(arch.layers), start)
            body = payload[start + steps.nbytes :]
            if flags & _ZSTD_FLAG:
                body = bounded_decompress(body, arch.parameter_count, PayloadError, "mlp weight codes")
            codes = np.frombuffer(body, np.int8)
            if codes.size != arch.parameter_count:
                raise ValueError(f"{codes.size} weights where the network has {arch.parameter_count}")
            derived = mixture.derived()  # why here: a singular or indefinite mixture raised LinAlgError
        except (ValueError, struct.error, np.linalg.LinAlgError) as error:
            raise PayloadError(f"corrupted mlp payload: {error}") from None
        return mixture, derived, dequantize(arch, codes[None], steps[None])[0]
