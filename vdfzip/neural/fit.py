"""The batched fitting engine: all cells of a batch train at once, each on its own voxel sample.

Each cell gets a fixed training sample of ``samples`` voxels drawn with replacement, a share
``importance`` of them with probability ∝ f (the voxels that carry the L2 norm) and the rest
uniformly, with weights 1/p so the loss stays an unbiased estimate of the cell's rel L2². Equal
sample counts make the batch rectangular whatever the cells' sizes, so a step is one launch over
``(cells, samples)`` arrays, never a loop over cells.

A step's loss and gradient come from the fused training kernel of ``kernels/mlp.py`` (on CPU:
cells in parallel, samples in tiles that stay in cache; 5× faster than numpy's batched GEMMs on
the 2-core dev machine, ``bench/RESULTS-mlp-fit.md``) or from the batched-GEMM statement of
:func:`~vdfzip.neural.network.loss_and_gradient` (cuBLAS on GPU, the default there until a
bench on a GPU has measured the fused CUDA twin against it).

Adam with a cosine-decayed rate runs full-batch on the samples; every ``check_every`` steps the
cells whose estimate is below their goal leave the active set (early stop), so late steps cost
only what the hard cells need. A last phase of quantization-aware steps (forward pass on the
quantized weights, update of the float weights: the straight-through estimator) makes the
stored 8-bit weights about as good as the float ones.

On a GPU (``xp`` = cupy) all of it runs on the current stream; :func:`fit` records a CUDA event
after the last update so a caller can overlap the next batch's preparation with this one.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from ..kernels import mlp as kernel
from ..kernels.launch import launch_per_item
from .network import Architecture, dequantize, loss_and_gradient, quantize

#: In the GEMM path on CPU numpy's elementwise work (the sines dominate a step) runs on one core,
#: so the cells are split into one slice per thread, each with one BLAS thread; as many threads
#: as the numba kernels use (``NUMBA_NUM_THREADS``, by default the core count).
_WORKERS = numba.config.NUMBA_NUM_THREADS
_POOL = ThreadPoolExecutor(_WORKERS) if _WORKERS > 1 else None
_BLAS = ThreadpoolController()
#: :meth:`Schedule.warm_started`'s rate and check interval.
WARM_RATE, WARM_CHECK_EVERY = 2e-3, 10


@dataclass(frozen=True)
class Schedule:
    """Training options. Defaults were chosen on the 72 cells of ``restart_ipshock_small`` at
    3e-2: 50 quantization-aware steps met the tolerance on 58 cells, 150 on 57, none on 54."""

    samples: int = 2048
    importance: float = 0.7
    max_steps: int = 2000
    quantized_steps: int = 50
    rate: float = 1e-2
    final_rate: float = 5e-4
    check_every: int = 50
    patience: int = 4
    min_progress: float = 0.1
    bits: int = 8
    seed: int = 0

    def warm_started(self) -> Schedule:
        """The schedule of fits that start from the cell's previous network, which sits near a
        minimum already: a smaller rate (a large first step kicked it away) and a check every
        WARM_CHECK_EVERY steps, so a cell that is done, or stuck, stops within tens of steps.
        Measured on the 72 cells of the shock restart after 10 steps of the toy loop
        (``bench/RESULTS-runtime.md``): 5.8 k steps instead of 29 k on this schedule, 39 k cold."""
        return replace(self, rate=WARM_RATE, check_every=WARM_CHECK_EVERY)


@dataclass
class FitResult:
    """Per cell: quantization codes and steps, the estimated rel L2 of the quantized network on
    its sample, the steps it trained; ``ready`` is the CUDA event after the last update (GPU)."""

    codes: np.ndarray
    steps: np.ndarray
    estimate: np.ndarray
    trained_steps: np.ndarray
    ready: object = None


def training_sample(values: np.ndarray, samples: int, importance: float, rng: np.random.Generator):
    """Indices (samples,) into one cell's flattened values and their weights 1/(N·p)."""
    f = np.clip(np.asarray(values, dtype=np.float64).ravel(), 0.0, None)
    n = f.size
    share = f / f.sum() if f.sum() > 0 else np.full(n, 1.0 / n)
    p = (1.0 - importance) / n + importance * share
    index = np.minimum(np.searchsorted(np.cumsum(p), rng.random(samples) * p.sum()), n - 1)
    return index, 1.0 / (n * p[index])


def fit(arch: Architecture, inputs, base, target, weight, goal, schedule: Schedule, xp=np, initial=None,
        fused: bool | None = None) -> FitResult:
    """Train one network per cell until its estimated rel L2 ≤ ``goal`` (cells,) or the steps run
    out, then fine-tune every cell on its quantized weights.

    ``inputs`` (cells, M, d_in) are the float32 features of the training voxels, ``base``,
    ``target`` and ``weight`` (cells, M) the base, f and the importance weights there.
    ``initial`` (cells, P) warm-starts from earlier networks (the previous restart's, a
    neighbour's). ``fused`` picks the fused kernel or the GEMM path (None: fused on CPU only).
    """
    fused = xp is np if fused is None else fused
    cells = inputs.shape[0]
    data = (inputs, base, target, weight)
    rng = np.random.default_rng(schedule.seed)
    theta = xp.array(initial, dtype=xp.float32) if initial is not None else arch.initial(cells, rng, xp)
    goal = np.asarray(goal, dtype=np.float64)
    trained = np.zeros(cells, dtype=np.int64)
    active, batch, state, history = np.arange(cells), data, _Adam(theta, xp), []
    for step in range(1, schedule.max_steps + 1):
        loss, grad = step_gradient(arch, state.theta, batch, xp, fused)
        state.update(grad, cosine_rate(step, schedule))
        trained[active] = step
        if step % schedule.check_every and step < schedule.max_steps:
            continue
        theta[xp.asarray(active)] = state.theta
        estimate = np.sqrt(_host(loss))
        history.append(estimate)
        done = estimate <= goal[active]
        if len(history) > schedule.patience:  # give up on cells that stopped improving
            done |= estimate > (1.0 - schedule.min_progress) * history[-1 - schedule.patience]
        if done.all():
            break
        if done.any():
            keep = np.flatnonzero(~done)
            active, state = active[keep], state.subset(xp.asarray(keep))
            history = [h[keep] for h in history]
            batch = tuple(array[xp.asarray(keep)] for array in batch)
    state = _Adam(theta, xp)
    for _ in range(schedule.quantized_steps):
        rounded = dequantize(arch, *quantize(arch, state.theta, schedule.bits, xp), xp)
        _, grad = step_gradient(arch, rounded, data, xp, fused)
        state.update(grad, schedule.final_rate)
    codes, steps = quantize(arch, state.theta, schedule.bits, xp)
    loss, _ = step_gradient(arch, dequantize(arch, codes, steps, xp), data, xp, fused)
    ready = xp.cuda.get_current_stream().record() if xp is not np else None
    return FitResult(_host(codes), _host(steps), np.sqrt(_host(loss)), trained, ready)


def step_gradient(arch: Architecture, theta, data, xp=np, fused: bool = True):
    """Per cell the loss Σ w (g − f)² / Σ w f² and its gradient (cells, P), from the fused
    kernel or from :func:`loss_and_gradient` (on CPU, slices of cells on all cores at once)."""
    if fused:
        return _fused_step(arch, theta, data, xp)
    cells = theta.shape[0]
    if xp is not np or _POOL is None or cells < 2 * _WORKERS:
        return loss_and_gradient(arch, theta, *data, xp)
    bounds = np.linspace(0, cells, _WORKERS + 1).astype(int)
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    with _BLAS.limit(limits=1, user_api="blas"):
        parts = list(_POOL.map(lambda part: loss_and_gradient(arch, theta[part], *(a[part] for a in data)), slices))
    return np.concatenate([loss for loss, _ in parts]), np.concatenate([grad for _, grad in parts])


def _fused_step(arch: Architecture, theta, data, xp):
    inputs, base, target, weight = data
    grad = xp.zeros(theta.shape, dtype=xp.float32)
    loss = xp.zeros(theta.shape[0], dtype=xp.float32)
    args = (xp.ascontiguousarray(theta, dtype=xp.float32), inputs, base, target, weight,
            (weight * target * target).sum(axis=1), xp.asarray(arch.dims, dtype=xp.int64),
            kernel.ACTIVATIONS[arch.activation], grad, loss)
    if xp is np:
        kernel.train_step_cpu(*args)
    else:
        launch_per_item(kernel.train_step_cuda, base.size, *args)
    return loss, grad


def cosine_rate(step: int, schedule: Schedule) -> float:
    progress = min(step / schedule.max_steps, 1.0)
    return schedule.final_rate + 0.5 * (schedule.rate - schedule.final_rate) * (1.0 + np.cos(np.pi * progress))


def _host(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


class _Adam:
    """Adam state of the active cells; updates run in the ``kernels/mlp.py`` twins."""

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self, theta, xp, m1=None, m2=None, step=0):
        self.xp = xp
        self.theta = xp.ascontiguousarray(theta)
        self.m1 = xp.zeros_like(self.theta) if m1 is None else m1
        self.m2 = xp.zeros_like(self.theta) if m2 is None else m2
        self.step = step

    def update(self, grad, rate: float) -> None:
        self.step += 1
        args = (self.theta.ravel(), self.xp.ascontiguousarray(grad).ravel(), self.m1.ravel(), self.m2.ravel(),
                rate, self.beta1, self.beta2, self.eps, self.step)
        if self.xp is np:
            kernel.adam_cpu(*args)
        else:
            launch_per_item(kernel.adam_cuda, self.theta.size, *args, threads=256)

    def subset(self, keep) -> _Adam:
        return _Adam(self.theta[keep], self.xp, self.m1[keep], self.m2[keep], self.step)
