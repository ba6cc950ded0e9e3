"""vdfzip's hot loops as numba kernels, each with a CPU (``@njit``) and a CUDA (``@cuda.jit``)
twin built from one per-item function, so the two cannot drift apart.

Imports as ``vdfzip.kernels``. The CUDA twins run without a GPU under numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``); tests compare them with the CPU twins.
"""
