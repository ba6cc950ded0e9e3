"""The worker pool stops at once when its map is interrupted, also after workers died abruptly."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: A map whose workers all die of SIGTERM (as under a SIGTERM to the whole process group) while
#: it runs, interrupted then: it must return and leave no child process behind.
_SCENARIO = textwrap.dedent("""
    import multiprocessing, os, signal, time
    from vdfzip.workers import ordered_map

    try:
        with ordered_map(2, dict, ()) as mapped:
            results = mapped(dict.get, range(10_000))
            next(results)
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGTERM)
            time.sleep(0.5)  # the pool starts replacing them
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    print(len(multiprocessing.active_children()))
""")


@pytest.mark.slow
def test_an_interrupted_map_stops_after_its_workers_died():
    done = subprocess.run([sys.executable, "-c", _SCENARIO], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", done.stdout
