"""Kernels of the neural-field codec: full-mesh inference of many per-cell networks, and Adam.

Inference evaluates ``f(v) = base(v) · exp(min(s(u), S_MAX))`` at every stored voxel of many
cells at once, each voxel with its own cell's network: ``u`` is v whitened by the cell's
mixture, ``s`` a small MLP of u (optionally on fixed random Fourier features of u), ``base`` a
Gaussian mixture. Ragged cells need no padding: every block row knows its cell.

A cell's network parameters are one flat row of ``theta``: per layer, the weights (d_in × d_out,
row-major) and then the biases. ``dims`` lists the layer widths from input to the single output.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda
from numba.extending import register_jitable

from .geometry import block_origin

#: Widest layer (Fourier features included) the kernels' scratch buffers hold.
MAX_WIDTH = 64
#: Ceiling on the network's log-scale output: exp(S_MAX) keeps decoded values finite.
S_MAX = 30.0
ACTIVATIONS = {"sin": 0, "tanh": 1}


@register_jitable
def _activate(z, activation):
    return math.sin(z) if activation == 0 else math.tanh(z)


@register_jitable
def _network_output(c, u0, u1, u2, freq, theta, dims, activation, a, b):
    """s(u) of cell ``c``'s network; ``a`` and ``b`` are scratch rows of MAX_WIDTH."""
    m = freq.shape[0]
    if m > 0:
        for j in range(m):
            z = freq[j, 0] * u0 + freq[j, 1] * u1 + freq[j, 2] * u2
            a[j] = math.sin(z)
            a[m + j] = math.cos(z)
    else:
        a[0] = u0
        a[1] = u1
        a[2] = u2
    layers = len(dims) - 1
    p = 0
    for layer in range(layers):
        d_in = dims[layer]
        d_out = dims[layer + 1]
        for o in range(d_out):
            b[o] = theta[c, p + d_in * d_out + o]
        for i in range(d_in):  # row by row: contiguous weights in the inner loop
            ai = a[i]
            row = p + i * d_out
            for o in range(d_out):
                b[o] += ai * theta[c, row + o]
        for o in range(d_out):
            a[o] = b[o] if layer == layers - 1 else _activate(b[o], activation)
        p += d_in * d_out + d_out
    return min(a[0], S_MAX)


@register_jitable
def _voxel_value(c, vx, vy, vz, mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, a, b):
    """Decoded f at velocity v in cell ``c``."""
    dx = vx - mean[c, 0]
    dy = vy - mean[c, 1]
    dz = vz - mean[c, 2]
    u0 = whiten[c, 0, 0] * dx + whiten[c, 0, 1] * dy + whiten[c, 0, 2] * dz
    u1 = whiten[c, 1, 0] * dx + whiten[c, 1, 1] * dy + whiten[c, 1, 2] * dz
    u2 = whiten[c, 2, 0] * dx + whiten[c, 2, 1] * dy + whiten[c, 2, 2] * dz
    base = 0.0
    for k in range(amplitude.shape[1]):
        if amplitude[c, k] != 0.0:
            ex = vx - centre[c, k, 0]
            ey = vy - centre[c, k, 1]
            ez = vz - centre[c, k, 2]
            q = 0.0
            for r in range(3):
                w = precision[c, k, r, 0] * ex + precision[c, k, r, 1] * ey + precision[c, k, r, 2] * ez
                q += w * w
            base += amplitude[c, k] * math.exp(-0.5 * q)
    if base == 0.0:
        return 0.0
    return base * math.exp(_network_output(c, u0, u1, u2, freq, theta, dims, activation, a, b))


@numba.njit(parallel=True, cache=True)
def infer_cpu(block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
              mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out):
    """CPU twin: block rows in parallel; ``out`` is (rows, wid³)."""
    for row in numba.prange(len(block_ids)):
        a = np.empty(MAX_WIDTH)
        b = np.empty(MAX_WIDTH)
        c = cell_of_row[row]
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        n = 0
        for k in range(wid):
            for j in range(wid):
                for i in range(wid):
                    out[row, n] = _voxel_value(
                        c, ox + i * dv[0], oy + j * dv[1], oz + k * dv[2],
                        mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, a, b,
                    )
                    n += 1


@cuda.jit
def infer_cuda(block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
               mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out):
    """CUDA twin: one thread per voxel."""
    index = cuda.grid(1)
    per_block = wid * wid * wid
    if index < len(block_ids) * per_block:
        row = index // per_block
        n = index % per_block
        a = cuda.local.array(MAX_WIDTH, numba.float64)
        b = cuda.local.array(MAX_WIDTH, numba.float64)
        ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
        i = n % wid
        j = (n // wid) % wid
        k = n // (wid * wid)
        out[row, n] = _voxel_value(
            cell_of_row[row], ox + i * dv[0], oy + j * dv[1], oz + k * dv[2],
            mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, a, b,
        )


@register_jitable
def _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, step):
    g = grad[index]
    m1[index] = beta1 * m1[index] + (1.0 - beta1) * g
    m2[index] = beta2 * m2[index] + (1.0 - beta2) * g * g
    corrected1 = m1[index] / (1.0 - beta1**step)
    corrected2 = m2[index] / (1.0 - beta2**step)
    theta[index] -= rate * corrected1 / (math.sqrt(corrected2) + eps)


@numba.njit(parallel=True, cache=True)
def adam_cpu(theta, grad, m1, m2, rate, beta1, beta2, eps, step):
    """CPU twin: one Adam step in place on flat arrays."""
    for index in numba.prange(theta.size):
        _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, step)


@cuda.jit
def adam_cuda(theta, grad, m1, m2, rate, beta1, beta2, eps, step):
    """CUDA twin: one thread per parameter."""
    index = cuda.grid(1)
    if index < theta.size:
        _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, step)
