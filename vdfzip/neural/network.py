"""A stack of small per-cell networks: architecture, initialisation, loss and gradients, quantization.

Every array has the cells as its leading axis and every product is a batched matmul over it,
so one call trains all cells of a batch; the code takes an array namespace ``xp`` (numpy on CPU,
cupy on GPU) and nothing else differs between the two. :func:`loss_and_gradient` is the GEMM
statement of a training step (cuBLAS on GPU) and, in float64, the reference the fused kernel of
``kernels/mlp.py`` is tested against. A cell's parameters are one row of
``theta`` (layout of ``kernels/mlp.py``: per layer the weights, then the biases).

The model is ``g(v) = base(v) · exp(s(u))`` with the squared error taken in linear space, the
parametrisation the issue's leads found best: the mixture base carries the bulk shape, the
network a smooth log-ratio, and the scored norm is the one minimised.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..kernels.mlp import ACTIVATIONS, MAX_LAYERS, MAX_PARAMETERS, MAX_WIDTH, S_MAX


@dataclass(frozen=True)
class Architecture:
    """Network shape and the fixed Fourier features (regenerated from ``seed``, never stored).

    ``fourier`` random frequencies with standard deviation ``scale`` (in whitened units) give
    2·fourier sin/cos inputs; ``fourier=0`` feeds u itself to sine layers (SIREN-style), where
    the first layer's weights play the frequencies' role.
    """

    fourier: int = 8
    width: int = 12
    hidden_layers: int = 2
    activation: str = "sin"
    scale: float = 1.5
    seed: int = 0

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {self.activation!r}")
        if self.width < 1 or self.hidden_layers < 1 or self.fourier < 0:
            raise ValueError("width and hidden_layers must be ≥ 1 and fourier ≥ 0")
        if max(self.dims) > MAX_WIDTH:
            raise ValueError(f"layers wider than {MAX_WIDTH} (Fourier features count twice) are not supported")
        if len(self.dims) - 1 > MAX_LAYERS or self.parameter_count > MAX_PARAMETERS:
            raise ValueError(f"networks of more than {MAX_LAYERS - 1} hidden layers or {MAX_PARAMETERS} parameters "
                             "are not supported")

    @cached_property
    def dims(self) -> tuple[int, ...]:
        inputs = 2 * self.fourier if self.fourier else 3
        return (inputs,) + (self.width,) * self.hidden_layers + (1,)

    @cached_property
    def layers(self) -> tuple[tuple[slice, slice, int, int], ...]:
        """Per layer: the weight and bias slices of a theta row, d_in and d_out."""
        out, p = [], 0
        for d_in, d_out in zip(self.dims[:-1], self.dims[1:]):
            out.append((slice(p, p + d_in * d_out), slice(p + d_in * d_out, p + d_in * d_out + d_out), d_in, d_out))
            p += d_in * d_out + d_out
        return tuple(out)

    @property
    def parameter_count(self) -> int:
        return self.layers[-1][1].stop

    def frequencies(self) -> np.ndarray:
        """(fourier, 3) float64 angular frequencies of the input features."""
        return np.random.default_rng(self.seed).normal(0.0, self.scale, (self.fourier, 3))

    def features(self, u, xp=np):
        """Network inputs (..., d_in) float32 of whitened velocities u (..., 3)."""
        if not self.fourier:
            return u.astype(xp.float32)
        z = u @ xp.asarray(self.frequencies().T)
        return xp.concatenate([xp.sin(z), xp.cos(z)], axis=-1).astype(xp.float32)

    def initial(self, cells: int, rng: np.random.Generator, xp=np):
        """(cells, P) float32 initial parameters: sine-network initialisation, small output layer."""
        theta = np.zeros((cells, self.parameter_count), dtype=np.float32)
        for index, (w, b, d_in, d_out) in enumerate(self.layers):
            if index == 0 and not self.fourier:
                bound = self.scale * np.sqrt(3.0)  # uniform with the Fourier scale's spread
            elif index == len(self.layers) - 1:
                bound = 1e-2 / np.sqrt(d_in)
            else:
                bound = np.sqrt(6.0 / d_in)
            theta[:, w] = rng.uniform(-bound, bound, (cells, d_in * d_out))
            if index < len(self.layers) - 1:
                theta[:, b] = rng.uniform(-np.pi, np.pi, (cells, d_out)) if index == 0 else 0.0
        return xp.asarray(theta)


def _activate(z, activation, xp):
    return xp.sin(z) if activation == "sin" else xp.tanh(z)


def _activation_slope(z, a, activation, xp):
    return xp.cos(z) if activation == "sin" else 1.0 - a * a


def log_ratio(arch: Architecture, theta, inputs, xp=np):
    """s(u) (cells, M) of every cell's network at its inputs (cells, M, d_in), and the
    pre-activations and activations the gradient needs."""
    cells = theta.shape[0]
    activations, pre = [inputs], []
    for index, (w, b, d_in, d_out) in enumerate(arch.layers):
        z = activations[-1] @ theta[:, w].reshape(cells, d_in, d_out) + theta[:, None, b]
        if index == len(arch.layers) - 1:
            return z[..., 0], pre, activations
        pre.append(z)
        activations.append(_activate(z, arch.activation, xp))


def loss_and_gradient(arch: Architecture, theta, inputs, base, target, weight, xp=np):
    """Per cell the weighted squared error estimate of rel L2², Σw(g − f)² / Σw f², and the
    gradient of their sum with respect to ``theta`` (cells, P).

    ``base``, ``target`` and ``weight`` are (cells, M): the base and f at the training voxels,
    and the importance weights that keep the estimate unbiased.
    """
    cells = theta.shape[0]
    s, pre, activations = log_ratio(arch, theta, inputs, xp)
    clipped = s > S_MAX
    g = base * xp.exp(xp.minimum(s, S_MAX))
    residual = g - target
    norm = (weight * target * target).sum(axis=1)
    loss = (weight * residual * residual).sum(axis=1) / norm
    delta = (2.0 * weight * residual * g / norm[:, None]) * ~clipped
    delta = delta[..., None].astype(theta.dtype)
    grad = xp.empty_like(theta)
    for index in range(len(arch.layers) - 1, -1, -1):
        w, b, d_in, d_out = arch.layers[index]
        grad[:, w] = (activations[index].transpose(0, 2, 1) @ delta).reshape(cells, d_in * d_out)
        grad[:, b] = delta.sum(axis=1)
        if index:
            back = delta @ theta[:, w].reshape(cells, d_in, d_out).transpose(0, 2, 1)
            delta = back * _activation_slope(pre[index - 1], activations[index], arch.activation, xp)
    return loss, grad


# ---------------------------------------------------------------- quantization


def quantize(arch: Architecture, theta, bits: int, xp=np):
    """Symmetric per-tensor quantization of every cell's weights and biases: integer codes
    (cells, P) int32 and float32 steps (cells, 2·layers), one per weight and per bias tensor."""
    theta = xp.asarray(theta, dtype=xp.float32)
    top = 2 ** (bits - 1) - 1
    codes = xp.empty(theta.shape, dtype=xp.int32)
    steps = xp.empty((theta.shape[0], 2 * len(arch.layers)), dtype=xp.float32)
    for t, part in enumerate(_tensors(arch)):
        largest = xp.abs(theta[:, part]).max(axis=1)
        steps[:, t] = xp.where(largest > 0, largest / top, 1.0)
        codes[:, part] = xp.clip(xp.rint(theta[:, part] / steps[:, t, None]), -top, top)
    return codes, steps


def dequantize(arch: Architecture, codes, steps, xp=np):
    """float32 parameters (cells, P) from :func:`quantize`'s codes and steps."""
    theta = xp.empty(codes.shape, dtype=xp.float32)
    for t, part in enumerate(_tensors(arch)):
        theta[:, part] = codes[:, part] * steps[:, t, None]
    return theta


def _tensors(arch: Architecture) -> list[slice]:
    return [part for w, b, _, _ in arch.layers for part in (w, b)]
