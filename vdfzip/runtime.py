"""The simulation-side API: :class:`Compressor` compresses VDFs that live in memory, while the
simulation runs.

A simulation hands a batch of cells to :meth:`Compressor.submit` in the ragged layout Vlasiator
writes (cell ids, blocks per cell, block ids, block values) and gets a :class:`Handle` at once;
the batch is encoded on the compressor's worker thread by the same engine as ``vdfzip encode``
(:func:`vdfzip.engine.compress_batch`), into :class:`vdfzip.cells.CompressedCells` that the
simulation can keep, send (:meth:`~vdfzip.cells.CompressedCells.to_bytes`), decode, or write into
a file (:func:`vdfzip.write_compressed`). Batches run one after the other, in submission order,
each using every core its kernels can; with the neural codec in the chain every cell's fit starts
from its previous network (warm start).
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from . import engine
from .cells import CompressedCells
from .errors import VdfzipError
from .neural.warm import WarmStart
from .vlasiator import DEFAULT_SPARSITY_THRESHOLD, PROTON_MASS, CellBatch, Species, VelocityMesh, VlasiatorFile


class InputError(VdfzipError):
    """Arrays handed to :meth:`Compressor.submit` that do not describe cells of its mesh."""


class MeshMismatchError(InputError):
    """Cells of another velocity mesh than the compressor's."""


class Handle:
    """A submitted batch. ``done()`` and ``wait()`` never block longer than asked; ``result()``
    blocks until the batch is encoded and returns its :class:`CompressedCells`, or raises the
    :class:`~vdfzip.errors.VdfzipError` the work met. ``event``: for device arrays, the CUDA event
    recorded after the copy of the caller's arrays to host memory (complete when ``submit``
    returns); None for host arrays."""

    def __init__(self, future: Future, event=None):
        self._future = future
        self.event = event

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done); whether the batch is done."""
        try:
            self._future.exception(timeout)
        except TimeoutError:
            return False
        return True

    def result(self, timeout: float | None = None) -> CompressedCells:
        return self._future.result(timeout)


class Compressor:
    """Compresses the VDFs of one population on one velocity mesh, batch after batch.

    ``mesh``: a :class:`~vdfzip.vlasiator.VelocityMesh`, or a VLSV file whose population
    ``population`` gives the mesh, and unless they are given, the sparsity ``threshold`` and the
    particle ``mass`` (kg). ``tol``, ``profile`` (``restart`` by default: content-block set kept,
    tails within ``tail_tol`` decades), ``method``, ``block_order`` and ``device`` are the
    options of ``vdfzip encode``. With ``warm_start`` (the default) every neural fit of a cell
    starts from the cell's last network (:meth:`state_dict` keeps them across a restart of the
    simulation); the octree and lossless codecs have no state.

    Use it as a context manager, or call :meth:`close`, to stop its worker thread.
    """

    def __init__(self, mesh: VelocityMesh | str | os.PathLike, *, population: str = "proton", tol: float = 1e-2,
                 profile: str = "restart", tail_tol: float | None = None, method: str | None = None,
                 device: str = "cpu", threshold: float | None = None, mass: float | None = None,
                 block_order: str = "sorted", warm_start: bool = True):
        if not isinstance(mesh, VelocityMesh):
            with VlasiatorFile(mesh) as file:
                found = file.population(population)
                if found.mesh is None:
                    raise InputError(f"{file.path}: population {population} has no velocity mesh")
                mesh, threshold = found.mesh, found.threshold if threshold is None else threshold
                mass = found.mass if mass is None else mass
        threshold = DEFAULT_SPARSITY_THRESHOLD if threshold is None else float(threshold)
        if not threshold > 0:
            raise engine.OptionError(f"the sparsity threshold must be positive, got {threshold}")
        xp = engine.array_namespace(device)
        settings = engine.settings(tol, method, profile, tail_tol, block_order, restart=True, xp=xp)
        self._setup(Species(population, mesh, threshold, PROTON_MASS if mass is None else float(mass),
                            np.dtype(np.float32)), settings, xp)
        self.warm_start = None
        if warm_start:
            neural = [c for c in settings.chain if hasattr(c, "warm_start")]
            self.warm_start = WarmStart(neural[0].architecture) if neural else None
            for codec in neural:
                codec.warm_start = self.warm_start

    @classmethod
    def for_settings(cls, species: Species, settings: engine.Settings) -> Compressor:
        """A compressor without warm starts (each cell's bytes then depend on the cell alone), as
        ``vdfzip encode`` uses one per population."""
        compressor = cls.__new__(cls)
        compressor._setup(species, settings, np)
        compressor.warm_start = None
        return compressor

    def _setup(self, species: Species, settings: engine.Settings, xp) -> None:
        self.species, self.settings, self._xp = species, settings, xp
        self._pool: ThreadPoolExecutor | None = None
        self._submitted = 0  # cells submitted so far: the `first` of the next batch

    @property
    def mesh(self) -> VelocityMesh:
        return self.species.mesh

    def __enter__(self) -> Compressor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Finish the submitted batches and stop the worker thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ------------------------------------------------------------ compressing

    def compress_batch(self, batch: CellBatch) -> CompressedCells:
        """The compressed cells of a :class:`CellBatch` of this population (blocks here)."""
        species = replace(self.species, dtype=np.asarray(batch.values).dtype)
        return engine.compress_batch(batch, species, self.settings)

    def compress(self, cell_ids, blocks_per_cell, block_ids, values, *, mesh: VelocityMesh | None = None
                 ) -> CompressedCells:
        """:meth:`submit` and wait for the result (blocks until the batch is encoded)."""
        return self.submit(cell_ids, blocks_per_cell, block_ids, values, mesh=mesh).result()

    def submit(self, cell_ids, blocks_per_cell, block_ids, values, *, mesh: VelocityMesh | None = None,
               copy: bool = True) -> Handle:
        """Start compressing a batch of cells; returns its :class:`Handle` at once.

        ``cell_ids`` and ``blocks_per_cell`` (cells,), ``block_ids`` (blocks,) integers, the
        blocks of each cell consecutive, in cell order; ``values`` (blocks, wid³) float32 or
        float64 (or (blocks, wid, wid, wid)): numpy arrays or any array with ``__dlpack__`` or
        ``__cuda_array_interface__`` (torch, jax, cupy), read without a conversion copy where
        the device allows. ``mesh``, if given, must be the compressor's.

        When the caller may overwrite its arrays: as soon as ``submit`` returns, for it has
        copied them (device arrays: into pinned host memory, on a stream of its own, which it
        waits for); with ``copy=False`` only once ``handle.done()``, for the work then reads
        host arrays in place.

        Bad arrays (ragged counts that do not add up, block ids outside the mesh, NaN or values
        below −threshold, another mesh) raise :class:`InputError` here; what only the work finds (a block
        id twice in a cell) is raised by ``result()``.
        """
        if mesh is not None and mesh != self.mesh:
            raise MeshMismatchError(f"cells of velocity mesh {mesh}, this compressor's is {self.mesh}")
        stream, event = None, None
        if any(hasattr(a, "__cuda_array_interface__") for a in (cell_ids, blocks_per_cell, block_ids, values)):
            stream = _cuda_stream()
        host = [_to_host(a, copy, stream) for a in (cell_ids, blocks_per_cell, block_ids, values)]
        if stream is not None:
            event = stream.record()
            event.synchronize()
        ids, counts, blocks, data = _check_cells(*host, self.mesh, self.species.threshold)
        first, self._submitted = self._submitted, self._submitted + len(ids)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="vdfzip-compressor")
        return Handle(self._pool.submit(self._work, first, ids, counts, blocks, data), event)

    def _work(self, first, ids, counts, blocks, data) -> CompressedCells:
        """One batch on the worker thread; on the GPU its kernels run on a stream of their own."""
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        with contextlib.nullcontext() if self._xp is np else _cuda_stream():
            return self.compress_batch(CellBatch(self.species.name, first, ids, offsets, blocks, data))

    # ------------------------------------------------------------ warm start

    def state_dict(self) -> dict:
        """What the compressor carries from call to call (each cell's last network), as plain
        arrays that ``numpy.savez`` or ``torch.save`` keep; empty without warm starts."""
        return {} if self.warm_start is None else self.warm_start.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` (of a compressor with the same network options)."""
        if self.warm_start is not None and state:
            self.warm_start.load_state_dict(state)


def _cuda_stream():
    import cupy

    return cupy.cuda.Stream(non_blocking=True)


def _to_host(array, copy: bool, stream):
    """``array`` as a numpy array the work may keep: copied (``copy``) or a view of the caller's
    memory; device arrays go to pinned host memory on ``stream``, asynchronously."""
    if hasattr(array, "__cuda_array_interface__"):
        import cupy
        import cupyx

        on_device = cupy.asarray(array)
        host = cupyx.empty_pinned(on_device.shape, on_device.dtype)
        on_device.get(stream=stream, out=host)
        return host
    if not isinstance(array, np.ndarray) and hasattr(array, "__dlpack__"):
        try:
            array = np.from_dlpack(array)
        except (BufferError, RuntimeError, TypeError) as error:
            raise InputError(f"an array numpy cannot read through DLPack: {error}") from None
    array = np.asarray(array)
    return array.copy() if copy else array


def _check_cells(cell_ids, blocks_per_cell, block_ids, values, mesh: VelocityMesh, threshold: float):
    """The four arrays as the engine takes them, if they describe cells of ``mesh``: ragged
    counts that add up, block ids inside the mesh, values finite and not below −``threshold``
    (the cell named). Why not ≥ 0: Vlasiator's solvers leave tiny negative values (down to
    −8e-20 in the shock restart of ../shared/data, a 1e-15 threshold), which every codec keeps
    as it keeps them in files."""
    for name, array in (("cell_ids", cell_ids), ("blocks_per_cell", blocks_per_cell), ("block_ids", block_ids)):
        if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
            raise InputError(f"{name} must be a 1-D integer array, got {array.dtype} of shape {array.shape}")
    if len(cell_ids) != len(blocks_per_cell):
        raise InputError(f"{len(cell_ids)} cell ids but {len(blocks_per_cell)} block counts")
    if len(cell_ids) and int(blocks_per_cell.min()) < 0:
        raise InputError("blocks_per_cell has a negative count")
    total = int(blocks_per_cell.sum())
    if total != len(block_ids):
        raise InputError(f"blocks_per_cell sums to {total} blocks but block_ids has {len(block_ids)}")
    if values.dtype not in (np.float32, np.float64):
        raise InputError(f"values must be float32 or float64, got {values.dtype}")
    wid = mesh.wid
    if values.ndim == 4 and values.shape[1:] == (wid, wid, wid):
        values = values.reshape(len(values), wid**3)
    if values.ndim != 2 or values.shape[0] != len(block_ids):
        raise InputError(f"values must be (blocks, {wid**3}) for {len(block_ids)} blocks, got shape {values.shape}")
    if values.shape[1] != mesh.cells_per_block:
        raise MeshMismatchError(f"blocks of {values.shape[1]} values, the mesh's blocks have {wid}³ = {wid**3}")
    if len(np.unique(cell_ids)) != len(cell_ids) or (len(cell_ids) and int(cell_ids.min()) < 0):
        raise InputError("cell ids must be distinct and non-negative")
    if len(block_ids) and not 0 <= int(block_ids.min()) <= int(block_ids.max()) < mesh.block_count:
        outside = int(block_ids.min()) if int(block_ids.min()) < 0 else int(block_ids.max())
        raise InputError(f"block id {outside} outside the {mesh.block_count}-block velocity mesh")
    bad = ~np.isfinite(values).all(axis=1) | (values < -threshold).any(axis=1)
    if bad.any():
        cell = int(cell_ids[np.searchsorted(np.cumsum(blocks_per_cell), np.flatnonzero(bad)[0], side="right")])
        raise InputError(f"cell {cell} has NaN, infinite or negative values (below −{threshold:g}, the sparsity "
                         "threshold)")
    return cell_ids.astype(np.uint64, copy=False), blocks_per_cell, block_ids.astype(np.uint32, copy=False), values
