"""The neural codec's GPU path against its CPU path, on a real CUDA device.

Runs only where cupy sees a GPU and numba's CUDA simulator is off (``make test-gpu`` sets
``NUMBA_ENABLE_CUDASIM=0``); everywhere else it skips with the reason. The CUDA twins' code is
also checked without a GPU, on the simulator, in ``test_mlp.py``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_mlp import (FAST, clip_only_the_first_sample, inference_inputs, prepared_batch, synthetic_batch,
                      training_data)
from vdfzip.kernels import mlp as kernel
from vdfzip.kernels.launch import launch_per_item

from vdfzip import synth
from vdfzip.codecs import get_codec, relative_l2
from vdfzip.neural import fit as engine
from vdfzip.neural.network import Architecture

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cupy():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("numba's CUDA simulator is on (run `make test-gpu` on a GPU node)")
    cupy = pytest.importorskip("cupy", reason="needs cupy (pip install vdfzip[gpu])")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("needs a CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as error:
        pytest.skip(f"needs a CUDA device ({error})")
    return cupy


@pytest.mark.parametrize("fused", [False, True], ids=["cublas", "fused-kernel"])
def test_a_training_step_on_the_gpu_matches_the_cpu(cupy, fused):
    arch = Architecture()
    theta, data = training_data(arch, cells=4, samples=600)
    clip_only_the_first_sample(arch, theta, data)
    cpu_loss, cpu_grad = engine.step_gradient(arch, theta, data, fused=True)
    loss, grad = engine.step_gradient(arch, cupy.asarray(theta), tuple(cupy.asarray(a) for a in data), cupy, fused)
    np.testing.assert_allclose(loss.get(), cpu_loss, rtol=1e-4)
    np.testing.assert_allclose(grad.get(), cpu_grad, rtol=0, atol=1e-4 * np.abs(cpu_grad).max())


def test_inference_on_the_gpu_matches_the_cpu(cupy):
    _, _, args = inference_inputs()
    cpu = np.empty((len(args[0]), 64))
    kernel.infer_cpu(*args, cpu)
    gpu = cupy.zeros(cpu.shape)
    on_device = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    launch_per_item(kernel.infer_cuda, cpu.size, *on_device, gpu)
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-5)


@pytest.mark.parametrize("fused", [False, True], ids=["cublas", "fused-kernel"])
def test_the_engine_on_the_gpu_reaches_the_goals_and_signals_readiness(cupy, fused):
    codec, data = prepared_batch()
    goals = np.array([0.1, 0.05, 0.05])
    schedule = engine.Schedule(samples=512, max_steps=400, quantized_steps=20, check_every=25)
    result = engine.fit(codec.architecture, *(cupy.asarray(a) for a in data), goals, schedule, cupy, fused=fused)
    result.ready.synchronize()
    on_cpu = engine.fit(codec.architecture, *data, goals, schedule)
    assert np.all(result.estimate <= 1.2 * goals)
    np.testing.assert_allclose(result.estimate, on_cpu.estimate, rtol=0.3)


def test_cells_fitted_on_the_gpu_decode_within_tol_on_either_device(cupy):
    codec, batch = get_codec("mlp", **FAST), synthetic_batch(3)
    codec.fit_on(cupy)
    payloads = codec.encode_cells(batch, [0, 1, 2], synth.SPECIES[0].mesh, 3e-2)
    assert payloads
    cpu_codec = get_codec("mlp", **FAST)
    for cell, payload in payloads.items():
        block_ids, values = batch.cell(cell)
        on_cpu = cpu_codec.decode_cell(payload, block_ids, synth.SPECIES[0].mesh)
        assert relative_l2(on_cpu, values) <= 3e-2
        np.testing.assert_allclose(codec.decode_cell(payload, block_ids, synth.SPECIES[0].mesh), on_cpu, rtol=1e-5)


def test_the_runtime_compressor_on_the_gpu_takes_device_arrays(cupy, tmp_path):
    """Compressor(device="cuda") with cupy arrays: the batch is copied to the host on a stream of
    its own (the handle's event), fitted on the GPU, and decodes within tol with the moments kept."""
    from vdfzip import Compressor
    from vdfzip.vlasiator import VlasiatorFile

    restart = tmp_path / "restart.vlsv"
    synth.write_synthetic_restart(restart, cells=3, seed=2)
    b = VlasiatorFile(restart).population("proton").cells(0, 3)
    arrays = (b.cell_ids, np.diff(b.offsets), b.block_ids, np.asarray(b.values))
    with Compressor(restart, method="mlp,octree", tol=3e-2, device="cuda") as gpu:
        handle = gpu.submit(*(cupy.asarray(a) for a in arrays))
        assert handle.event is not None and handle.event.done
        cells = handle.result()
    decoded = cells.decode(device="cuda")
    assert isinstance(decoded.values, cupy.ndarray) and cells.summary()["rel_l2"]["max"] <= 3e-2
    with Compressor(restart, method="mlp,octree", tol=3e-2) as cpu:
        assert len(cpu.compress(*arrays)) == len(cells)
