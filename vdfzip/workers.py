"""Every core of one node: batches of cells encoded or decoded by worker processes, in order.

The codecs are Python over small numpy arrays, so threads would serialise on the GIL: the work
is split into the same batches as in one process, handed to ``jobs`` worker processes and taken
back in batch order, so the file is the same bytes for any ``jobs``. Each worker opens the input
itself (a memory map: nothing but the batch bounds crosses the pipe on the way in) and runs its
numba kernels on one thread, since the workers already fill the cores. At most two batches per
worker are in flight, so memory stays at ``jobs`` batches' working sets.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import VdfzipError

#: How long an interrupted map waits for the worker pool to tidy up its threads (seconds).
STOP_SECONDS = 5.0

#: What the worker's initializer built (the opened input, the codecs), for its tasks.
_STATE: dict[str, Any] = {}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a batch scheduler sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_jobs(jobs: int | None) -> int:
    """The worker count for ``--jobs`` (None: ``$VDFZIP_JOBS``, else every available core)."""
    if jobs is None:
        setting = os.environ.get("VDFZIP_JOBS", "")
        if not setting:
            return available_cores()
        if not setting.isdigit():
            raise VdfzipError(f"VDFZIP_JOBS must be a positive integer, got {setting!r}")
        jobs = int(setting)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise VdfzipError(f"--jobs must be a positive integer, got {jobs!r}")
    return jobs


def worker_count(jobs: int, blocks: int, blocks_per_worker: int) -> int:
    """At most ``jobs`` workers, one per ``blocks_per_worker`` blocks of the work: a worker costs
    about 2 s to start (measured: the forkserver's imports, then numba's kernels loaded from their
    cache in each worker), which a small file does not pay back."""
    return max(1, min(jobs, blocks // blocks_per_worker))


def _start_worker(setup: Callable[..., dict], args: tuple) -> None:
    """A worker: one numba thread, quiet under signals (Ctrl-C is the parent's to handle: it
    stops the workers; SIGTERM, e.g. a scheduler's to the whole job, ends it without a word)."""
    import numba

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))
    numba.set_num_threads(1)
    _STATE.update(setup(*args))


def _run(task: Callable, item):
    return task(_STATE, item)


@contextlib.contextmanager
def ordered_map(jobs: int, setup: Callable[..., dict], args: tuple) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """A ``map(task, items)`` that runs ``task(state, item)`` for every item, in ``jobs`` worker
    processes (or in this one for ``jobs`` = 1), and yields the results in item order; ``state``
    is what ``setup(*args)`` returned in the worker. ``task`` and ``setup`` must be module-level
    functions. A task's exception is raised here, for the first failing item in order; on any
    exception the workers are stopped at once."""
    if jobs == 1:
        state = setup(*args)
        yield lambda task, items: (task(state, item) for item in items)
        return
    # forkserver: the workers fork from a fresh process that has imported vdfzip but never run a
    # numba kernel (forking a process whose OpenMP threads have started aborts the child)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["vdfzip.encode", "vdfzip.decode"])
    others = set(multiprocessing.active_children())
    pool = context.Pool(jobs, initializer=_start_worker, initargs=(setup, args))

    def mapped(task: Callable, items: Iterable) -> Iterator:
        pending: deque = deque()
        for item in items:
            pending.append(pool.apply_async(_run, (task, item)))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    try:
        yield mapped
    except BaseException:
        _stop(pool, others)
        raise
    pool.close()
    pool.join()


def _stop(pool, others: set) -> None:
    """Stop the pool's workers at once. ``Pool.terminate`` alone can wait forever once workers
    died abruptly (a SIGTERM to the whole process group) while the pool was replacing them, so
    every worker (each child process but ``others``) is killed first and the pool's own cleanup
    of its threads gets at most STOP_SECONDS."""
    for worker in set(multiprocessing.active_children()) - others:
        worker.kill()
    cleanup = threading.Thread(target=pool.terminate, daemon=True)
    cleanup.start()
    cleanup.join(STOP_SECONDS)
