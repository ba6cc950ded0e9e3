"""Kernels of the neural-field codec: the training step (loss and gradient) and full-mesh inference
of many per-cell networks, and Adam.

Inference evaluates ``f(v) = base(v) · exp(min(s(u), S_MAX))`` at every stored voxel of many
cells at once, each voxel with its own cell's network: ``u`` is v whitened by the cell's
mixture, ``s`` a small MLP of u (optionally on fixed random Fourier features of u), ``base`` a
Gaussian mixture. Ragged cells need no padding: every block row knows its cell.

Training and inference share one forward pass over a tile of samples (voxels) in float32: on
CPU every inner loop runs over the tile so that it vectorises, and the sines come from a
polynomial (:func:`_sincos`) rather than libm; the CUDA twins run the same code on tiles of one.

A cell's network parameters are one flat row of ``theta``: per layer, the weights (d_in × d_out,
row-major) and then the biases. ``dims`` lists the layer widths from input to the single output.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda
from numba.extending import register_jitable

from .geometry import block_origin, voxel_velocity

#: Widest layer (Fourier features included) the kernels' scratch buffers hold.
MAX_WIDTH = 64
#: Most layers and parameters per network the training kernels' scratch buffers hold.
MAX_LAYERS = 8
MAX_PARAMETERS = 4096
#: Training samples one CPU thread carries through the whole network at once: long enough for
#: the sample loops to vectorise, short enough for a tile's activations to stay in L1/L2.
TILE = 256
#: Ceiling on the network's log-scale output: exp(S_MAX) keeps decoded values finite.
S_MAX = 30.0
ACTIVATIONS = {"sin": 0, "tanh": 1}


# ---------------------------------------------------------------- the network


@register_jitable(fastmath=True)
def _sincos(z):
    """sin z and cos z in float32 to ~3e-7, as plain arithmetic the compiler vectorises (libm's
    scalar calls would dominate a step): reduction to [−π, π], then half-angle Taylor series."""
    k = np.floor(z * np.float32(0.15915494309189535) + np.float32(0.5))
    r = (z - k * np.float32(6.28125)) - k * np.float32(0.0019353071795864769)  # 2π in two parts
    x = r * np.float32(0.5)
    x2 = x * x
    s = x * (np.float32(1.0) + x2 * (np.float32(-1 / 6) + x2 * (np.float32(1 / 120) + x2 * (
        np.float32(-1 / 5040) + x2 * (np.float32(1 / 362880) + x2 * np.float32(-1 / 39916800))))))
    c = np.float32(1.0) + x2 * (np.float32(-0.5) + x2 * (np.float32(1 / 24) + x2 * (np.float32(-1 / 720) + x2 * (
        np.float32(1 / 40320) + x2 * (np.float32(-1 / 3628800) + x2 * np.float32(1 / 479001600))))))
    return np.float32(2.0) * s * c, c * c - s * s


@register_jitable(fastmath=True)
def _forward_tile(c, count, theta, dims, activation, act, slope, z):
    """s(u) of cell ``c``'s network for ``count`` samples whose inputs are in ``act[0]``: leaves
    each layer's input in ``act``, the activations' slopes in ``slope`` (both (≥ layers, ≥ the
    widest layer, ≥ count)) and s in ``z[0]`` (``z`` (≥ the widest layer, ≥ count) holds
    pre-activations)."""
    layers = len(dims) - 1
    p = 0
    for layer in range(layers):
        d_in = dims[layer]
        d_out = dims[layer + 1]
        for o in range(d_out):
            bias = theta[c, p + d_in * d_out + o]
            for t in range(count):
                z[o, t] = bias
            i = 0
            while i + 4 <= d_in:  # four inputs per pass: one load and store of z per four products
                w0 = theta[c, p + i * d_out + o]
                w1 = theta[c, p + (i + 1) * d_out + o]
                w2 = theta[c, p + (i + 2) * d_out + o]
                w3 = theta[c, p + (i + 3) * d_out + o]
                for t in range(count):
                    z[o, t] += (w0 * act[layer, i, t] + w1 * act[layer, i + 1, t]
                                + w2 * act[layer, i + 2, t] + w3 * act[layer, i + 3, t])
                i += 4
            for i in range(i, d_in):
                w = theta[c, p + i * d_out + o]
                for t in range(count):
                    z[o, t] += w * act[layer, i, t]
            if layer < layers - 1 and activation == 0:
                for t in range(count):
                    act[layer + 1, o, t], slope[layer + 1, o, t] = _sincos(z[o, t])
            elif layer < layers - 1:
                for t in range(count):
                    a = math.tanh(z[o, t])
                    act[layer + 1, o, t] = a
                    slope[layer + 1, o, t] = np.float32(1.0) - a * a
        p += d_in * d_out + d_out


# ---------------------------------------------------------------- training step


@register_jitable(fastmath=True)
def _train_tile(c, start, count, theta, inputs, base, target, weight, norm, dims, activation,
                act, slope, delta, back, gradient):
    """Forward and backward pass of cell ``c``'s network over its samples ``start`` to
    ``start + count``: adds their gradient to ``gradient`` (P,) and returns their share of the
    loss numerator Σ w (g − f)². ``act``, ``slope`` and ``delta`` are :func:`_forward_tile`'s
    scratch (``delta`` as its ``z``), ``back`` another (≥ the widest layer, ≥ count); every inner
    loop runs over the samples.

    The tile's samples are read through views that begin at ``start``, indexed by the loop counter
    alone. Why: a loop that stores while it reads other arrays is compiled twice, vectorised and
    scalar, behind a runtime check that the arrays do not overlap, and under fastmath the two
    copies round differently (the sum's order, contractions, a hoisted reciprocal). Indexed
    ``[c, start + t]``, an index numba must wrap if negative, the check also covered the next row,
    past the end of the array for the batch's last cell, and failed when ``delta`` had been
    allocated there: that cell's loss and gradient then depended on the heap, and so did its
    trained weights (measured: 5–14% of the single-thread steps of an encode). A counter from 0
    needs no wrap, so the check covers the arrays themselves and two distinct arrays pass it."""
    inputs_tile = inputs[c, start : start + count]
    for t in range(count):
        for i in range(dims[0]):
            act[0, i, t] = inputs_tile[t, i]
    _forward_tile(c, count, theta, dims, activation, act, slope, delta)
    base_tile, target_tile = base[c, start : start + count], target[c, start : start + count]
    weight_tile = weight[c, start : start + count]
    partial = np.float32(0.0)
    for t in range(count):  # the output s(u): g = base·exp(s), squared error in linear space
        s = delta[0, t]
        g = base_tile[t] * math.exp(min(s, np.float32(S_MAX)))
        wr = weight_tile[t] * (g - target_tile[t])
        partial += wr * (g - target_tile[t])
        delta[0, t] = np.float32(2.0) * wr * g / norm[c] if s <= S_MAX else np.float32(0.0)
    p = theta.shape[1]
    for layer in range(len(dims) - 2, -1, -1):
        d_in = dims[layer]
        d_out = dims[layer + 1]
        p -= d_in * d_out + d_out
        for i in range(d_in):
            o = 0
            while o + 4 <= d_out:  # four outputs per pass: one load of the activation per four products
                t0 = t1 = t2 = t3 = np.float32(0.0)
                for t in range(count):
                    a = act[layer, i, t]
                    t0 += a * delta[o, t]
                    t1 += a * delta[o + 1, t]
                    t2 += a * delta[o + 2, t]
                    t3 += a * delta[o + 3, t]
                row = p + i * d_out + o
                gradient[row] += t0
                gradient[row + 1] += t1
                gradient[row + 2] += t2
                gradient[row + 3] += t3
                o += 4
            for o in range(o, d_out):
                total = np.float32(0.0)
                for t in range(count):
                    total += act[layer, i, t] * delta[o, t]
                gradient[p + i * d_out + o] += total
        for o in range(d_out):
            total = np.float32(0.0)
            for t in range(count):
                total += delta[o, t]
            gradient[p + d_in * d_out + o] += total
        if layer:
            for i in range(d_in):
                for t in range(count):
                    back[i, t] = 0.0
                o = 0
                while o + 4 <= d_out:
                    w0 = theta[c, p + i * d_out + o]
                    w1 = theta[c, p + i * d_out + o + 1]
                    w2 = theta[c, p + i * d_out + o + 2]
                    w3 = theta[c, p + i * d_out + o + 3]
                    for t in range(count):
                        back[i, t] += (w0 * delta[o, t] + w1 * delta[o + 1, t]
                                       + w2 * delta[o + 2, t] + w3 * delta[o + 3, t])
                    o += 4
                for o in range(o, d_out):
                    w = theta[c, p + i * d_out + o]
                    for t in range(count):
                        back[i, t] += w * delta[o, t]
            for i in range(d_in):
                for t in range(count):
                    delta[i, t] = back[i, t] * slope[layer, i, t]
    return partial


@register_jitable(fastmath=True)
def _train_cell(c, theta, inputs, base, target, weight, norm, dims, activation, gradient, loss):
    """One cell's loss and gradient. Its scratch is allocated here, not in the parallel loop's
    body: numba hoists an allocation out of a prange loop (numba#9529), and shared scratch made
    payloads depend on thread timing (measured: one cell of eight changed between two fits)."""
    samples = base.shape[1]
    layers, width = len(dims) - 1, max(dims)
    act = np.empty((layers, width, TILE), np.float32)  # every element is written before it is read
    slope = np.empty((layers, width, TILE), np.float32)
    delta = np.empty((width, TILE), np.float32)
    back = np.empty((width, TILE), np.float32)
    row = np.zeros(gradient.shape[1], np.float32)
    partial = np.float32(0.0)
    for start in range(0, samples, TILE):
        partial += _train_tile(c, start, min(TILE, samples - start), theta, inputs, base, target, weight, norm,
                               dims, activation, act, slope, delta, back, row)
    gradient[c] = row
    loss[c] = partial / norm[c]


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def train_step_cpu(theta, inputs, base, target, weight, norm, dims, activation, gradient, loss):
    """CPU twin: cells in parallel, each in tiles of TILE samples. ``theta`` (cells, P) and the
    float32 data as in :func:`_train_tile` with ``inputs`` (cells, M, d_in) and ``base``,
    ``target``, ``weight`` (cells, M); ``norm`` (cells,) is Σ w f². Writes ``gradient`` (cells, P)
    and ``loss`` (cells,): Σ w (g − f)² / Σ w f²."""
    for c in numba.prange(base.shape[0]):
        _train_cell(c, theta, inputs, base, target, weight, norm, dims, activation, gradient, loss)


@cuda.jit(fastmath=True)
def train_step_cuda(theta, inputs, base, target, weight, norm, dims, activation, gradient, loss):
    """CUDA twin: one thread per (cell, sample), adding its share atomically; ``gradient`` and
    ``loss`` must start at zero."""
    index = cuda.grid(1)
    cells, samples = base.shape
    if index < cells * samples:
        c = index // samples
        act = cuda.local.array((MAX_LAYERS, MAX_WIDTH, 1), numba.float32)
        slope = cuda.local.array((MAX_LAYERS, MAX_WIDTH, 1), numba.float32)
        delta = cuda.local.array((MAX_WIDTH, 1), numba.float32)
        back = cuda.local.array((MAX_WIDTH, 1), numba.float32)
        row = cuda.local.array(MAX_PARAMETERS, numba.float32)
        for q in range(gradient.shape[1]):
            row[q] = 0.0
        partial = _train_tile(c, index % samples, 1, theta, inputs, base, target, weight, norm, dims, activation,
                              act, slope, delta, back, row)
        cuda.atomic.add(loss, c, partial / norm[c])
        for q in range(gradient.shape[1]):
            cuda.atomic.add(gradient, (c, q), row[q])


# ---------------------------------------------------------------- inference


@register_jitable(fastmath=True)
def _infer_voxels(row, start, count, block_ids, cell_of_row, nbx, nby, wid, vmin, dv, mean, whiten, amplitude,
                  centre, precision, freq, theta, dims, activation, act, slope, z, out):
    """Decoded f at voxels ``start`` to ``start + count`` of block row ``row`` into ``out[row]``;
    ``act``, ``slope`` and ``z`` are :func:`_forward_tile`'s scratch."""
    c = cell_of_row[row]
    ox, oy, oz = block_origin(block_ids[row], nbx, nby, wid, vmin, dv)
    for t in range(count):  # whitened velocities u, in z[0:3] until the network runs
        vx, vy, vz = voxel_velocity(start + t, ox, oy, oz, wid, dv)
        dx, dy, dz = vx - mean[c, 0], vy - mean[c, 1], vz - mean[c, 2]
        for r in range(3):
            z[r, t] = whiten[c, r, 0] * dx + whiten[c, r, 1] * dy + whiten[c, r, 2] * dz
    m = freq.shape[0]
    for j in range(m):
        for t in range(count):
            phase = freq[j, 0] * z[0, t] + freq[j, 1] * z[1, t] + freq[j, 2] * z[2, t]
            act[0, j, t], act[0, m + j, t] = _sincos(np.float32(phase))
    if m == 0:
        for r in range(3):
            for t in range(count):
                act[0, r, t] = z[r, t]
    _forward_tile(c, count, theta, dims, activation, act, slope, z)
    for t in range(count):
        vx, vy, vz = voxel_velocity(start + t, ox, oy, oz, wid, dv)
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
        out[row, start + t] = base * math.exp(min(z[0, t], S_MAX)) if base != 0.0 else 0.0


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def infer_cpu(block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
              mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out):
    """CPU twin: block rows in parallel, each in tiles of at most TILE voxels; ``out`` is
    (rows, wid³) float64, ``theta`` (cells, P) float32 and the mixture's arrays per cell as in
    :meth:`vdfzip.neural.base.Mixture.derived`."""
    for chunk in numba.prange((len(block_ids) + 63) // 64):
        _infer_rows(chunk * 64, min(len(block_ids), chunk * 64 + 64), block_ids, cell_of_row, nbx, nby, wid, vmin,
                    dv, mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out)


@register_jitable(fastmath=True)
def _infer_rows(first, stop, block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
                mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out):
    """Rows ``[first, stop)`` of :func:`infer_cpu`. The scratch is allocated here, once per call,
    and not in the parallel loop, which numba would hoist it out of (see :func:`_train_cell`)."""
    per_block = wid * wid * wid
    layers, width = len(dims) - 1, max(3, max(dims))  # z holds u (3 rows) before the network runs
    act = np.empty((layers, width, TILE), np.float32)
    slope = np.empty((layers, width, TILE), np.float32)
    z = np.empty((width, TILE), np.float32)
    for row in range(first, stop):
        for start in range(0, per_block, TILE):
            _infer_voxels(row, start, min(TILE, per_block - start), block_ids, cell_of_row, nbx, nby, wid, vmin,
                          dv, mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, act,
                          slope, z, out)


@cuda.jit(fastmath=True)
def infer_cuda(block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
               mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, out):
    """CUDA twin: one thread per voxel."""
    index = cuda.grid(1)
    per_block = wid * wid * wid
    if index < len(block_ids) * per_block:
        act = cuda.local.array((MAX_LAYERS, MAX_WIDTH, 1), numba.float32)
        slope = cuda.local.array((MAX_LAYERS, MAX_WIDTH, 1), numba.float32)
        z = cuda.local.array((MAX_WIDTH, 1), numba.float32)
        _infer_voxels(index // per_block, index % per_block, 1, block_ids, cell_of_row, nbx, nby, wid, vmin, dv,
                      mean, whiten, amplitude, centre, precision, freq, theta, dims, activation, act, slope, z, out)


# ---------------------------------------------------------------- Adam


@register_jitable
def _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, correction1, correction2):
    """One parameter's Adam step; ``correction1``, ``correction2`` are 1 − β1ᵗ and 1 − β2ᵗ."""
    g = grad[index]
    m1[index] = beta1 * m1[index] + (1.0 - beta1) * g
    m2[index] = beta2 * m2[index] + (1.0 - beta2) * g * g
    theta[index] -= rate * (m1[index] / correction1) / (math.sqrt(m2[index] / correction2) + eps)


@numba.njit(parallel=True, cache=True, nogil=True)
def adam_cpu(theta, grad, m1, m2, rate, beta1, beta2, eps, step):
    """CPU twin: one Adam step in place on flat arrays."""
    correction1, correction2 = 1.0 - beta1**step, 1.0 - beta2**step
    for index in numba.prange(theta.size):
        _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, correction1, correction2)


@cuda.jit
def adam_cuda(theta, grad, m1, m2, rate, beta1, beta2, eps, step):
    """CUDA twin: one thread per parameter."""
    index = cuda.grid(1)
    if index < theta.size:
        _adam(index, theta, grad, m1, m2, rate, beta1, beta2, eps, 1.0 - beta1**step, 1.0 - beta2**step)
