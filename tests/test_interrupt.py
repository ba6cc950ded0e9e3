"""Interrupted jobs leave nothing behind: SIGINT and SIGTERM sent to a real ``vdfzip encode``
process, and a SIGKILL whose leftovers the next run into the same place removes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vdfzip import synth
from vdfzip.encode import encode_file


@pytest.fixture(scope="module")
def restart(tmp_path_factory):
    """Enough cells that an encode still runs when the signal comes, 2 s after its temporary
    output appears (200 cells: ~6 s on 2 workers; 40 cells had ended by then)."""
    path = tmp_path_factory.mktemp("interrupt") / "restart.vlsv"
    synth.write_synthetic_restart(path, cells=200, seed=2)
    return path


def _start_encode(restart, output, jobs: int = 1):
    return subprocess.Popen([sys.executable, "-m", "vdfzip", "encode", str(restart), "-o", str(output),
                             "--jobs", str(jobs)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _wait_for_partial_output(folder, process, timeout=120.0):
    """Wait until the encoder has started writing (its temporary output exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"encode ended before it was interrupted: {process.communicate()}")
        if any(p.name.endswith(".part") for p in folder.iterdir()):
            time.sleep(0.5)  # well inside the encoding
            return
        time.sleep(0.05)
    pytest.fail("encode wrote no temporary output")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, jobs, group", [
    (signal.SIGINT, 130, 1, False), (signal.SIGTERM, 143, 1, False),
    (signal.SIGTERM, 143, 2, False), (signal.SIGINT, 130, 2, True), (signal.SIGTERM, 143, 2, True),
])
def test_a_signal_leaves_nothing_behind(tmp_path, restart, signum, code, jobs, group):
    """To the process alone (a scheduler's SIGTERM) or to its whole process group, workers
    included (Ctrl-C in a terminal)."""
    before = restart.read_bytes()
    process = _start_encode(restart, tmp_path / "out.vlsv", jobs)
    _wait_for_partial_output(tmp_path, process)
    time.sleep(1.5 if jobs > 1 else 0)  # the workers at work, past their start-up
    if group:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    # with workers, Python's resource tracker may add a warning about the pool's semaphores
    assert process.returncode == code and err.startswith("vdfzip: interrupted\n") and out == "", (process.returncode, err)
    assert jobs > 1 or err == "vdfzip: interrupted\n", err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary output, no spool
    assert restart.read_bytes() == before


@pytest.mark.slow
def test_the_next_run_removes_what_a_sigkill_left(tmp_path, restart):
    process = _start_encode(restart, tmp_path / "out.vlsv")
    _wait_for_partial_output(tmp_path, process)
    process.kill()
    process.wait(timeout=60)
    left = [p.name for p in tmp_path.iterdir()]
    assert left and all(name.startswith(".out.vlsv.vdfzip-") and name.endswith(".part") for name in left), left
    encode_file(restart, tmp_path / "out.vlsv", tol=3e-2, method="lossless", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["out.vlsv"]
