"""vdfzip's hot loops as numba kernels, each with a CPU (``@njit``) and a CUDA (``@cuda.jit``)
twin that call one per-item function (``numba.extending.register_jitable``), so they cannot drift apart.

Imports as ``vdfzip.kernels``. The CUDA twins run without a GPU under numba's simulator
(``NUMBA_ENABLE_CUDASIM=1``); tests compare them with the CPU twins.
"""
