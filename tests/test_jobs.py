"""Every core of one node (``--jobs``): worker processes give the same bytes as one process,
errors in a worker reach the caller as one-line errors, and bad job counts are refused; under
MPI each rank's numba threads are its share of the node's cores."""

from __future__ import annotations

import os

import pytest
from conftest import shared_file

from vdfzip import decode, distributed, encode, vlsv, workers
from vdfzip.cli import main
from vdfzip.decode import decode_file
from vdfzip.encode import MIN_BATCH_BLOCKS, encode_file
from vdfzip.errors import CorruptFileError, VdfzipError
from vdfzip.vlasiator import VlasiatorFile

RESTART = shared_file("restart_ipshock_small.vlsv")


@pytest.fixture(scope="module")
def encoded_alone(tmp_path_factory):
    """The real restart encoded and decoded by one process, in both profiles."""
    folder = tmp_path_factory.mktemp("jobs")
    files = {}
    for profile in ("restart", "core"):
        compressed = encode_file(RESTART, folder / f"{profile}.vdfz.vlsv", profile=profile, jobs=1, progress=False)
        files[profile] = compressed["output"], decode_file(compressed["output"], folder / f"{profile}.vlsv", jobs=1,
                                                         progress=False)
    return files


@pytest.fixture
def small_work_per_worker(monkeypatch):
    """Workers for this small file: a real restart needs no fewer blocks per worker than it."""
    monkeypatch.setattr(encode, "ENCODE_BLOCKS_PER_WORKER", MIN_BATCH_BLOCKS)
    monkeypatch.setattr(decode, "DECODE_BLOCKS_PER_WORKER", MIN_BATCH_BLOCKS)


@pytest.fixture
def worker_counts(monkeypatch) -> list[int]:
    """The worker counts the maps of encodes and decodes start with, in call order."""
    counts, real = [], workers.ordered_map
    monkeypatch.setattr(workers, "ordered_map", lambda jobs, *args: counts.append(jobs) or real(jobs, *args))
    return counts


@pytest.mark.parametrize("profile", ["restart", "core"])
def test_two_workers_write_the_bytes_of_one_process(tmp_path, encoded_alone, small_work_per_worker, worker_counts,
                                                    profile):
    with VlasiatorFile(RESTART) as f:
        assert f.population("proton").block_count >= 2 * MIN_BATCH_BLOCKS  # both workers get batches
    compressed, decoded = encoded_alone[profile]
    mine = encode_file(RESTART, tmp_path / "c.vlsv", profile=profile, jobs=2, progress=False)["output"]
    assert open(mine, "rb").read() == open(compressed, "rb").read()
    assert decode_file(mine, tmp_path / "d.vlsv", jobs=2, progress=False).read_bytes() == decoded.read_bytes()
    assert worker_counts == [2, 2]


def test_lossless_cells_decode_in_this_process(tmp_path, small_work_per_worker, worker_counts):
    """Workers would only slow them down (bench/RESULTS-speed.md): this process decodes them."""
    lossless = encode_file(RESTART, tmp_path / "l.vdfz.vlsv", method="lossless", block_order="keep", jobs=1,
                           progress=False)["output"]
    decoded = decode_file(lossless, tmp_path / "l.vlsv", jobs=2, progress=False)
    assert worker_counts == [1, 1]
    assert decoded.read_bytes() == RESTART.read_bytes()


def test_a_worker_error_is_the_callers_error(tmp_path, encoded_alone, small_work_per_worker):
    compressed, _ = encoded_alone["core"]
    data = bytearray(open(compressed, "rb").read())
    with vlsv.read(compressed) as f:
        records = f.element("VDFZIP_RECORDS", name="proton")
        middle = records.offset + records.nbytes * 3 // 4  # a cell in a late batch: a worker's
    data[middle] ^= 0xFF
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="fails its checksum"):
        decode_file(bad, tmp_path / "out.vlsv", jobs=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vdfz.vlsv"]  # no output, no temporary output


def test_workers_only_for_enough_work():
    assert workers.worker_count(8, 10 * 1000, 1000) == 8
    assert workers.worker_count(8, 3 * 1000 + 999, 1000) == 3
    assert workers.worker_count(8, 10, 1000) == workers.worker_count(1, 10**9, 1000) == 1


def test_job_counts(monkeypatch, capsys):
    monkeypatch.delenv("VDFZIP_JOBS")
    assert workers.resolve_jobs(None) == workers.available_cores() >= 1
    monkeypatch.setenv("VDFZIP_JOBS", "3")
    assert workers.resolve_jobs(None) == 3 and workers.resolve_jobs(2) == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(VdfzipError, match="--jobs must be a positive integer"):
            workers.resolve_jobs(bad)
    monkeypatch.setenv("VDFZIP_JOBS", "many")
    with pytest.raises(VdfzipError, match="VDFZIP_JOBS must be a positive integer"):
        workers.resolve_jobs(None)
    assert main(["decode", str(RESTART), "--jobs", "0"]) == 2
    assert "--jobs" in capsys.readouterr().err


@pytest.mark.parametrize("cpus, bound, local, most, expected", [
    (128, 128, "128", 128, 1),  # 128 ranks on a 128-core node, unbound: a thread each
    (128, 128, "4", 128, 32),  # 4 ranks share the node
    (128, 128, "4", 8, 8),  # never more than NUMBA_NUM_THREADS
    (128, 4, "32", 128, 4),  # the launcher bound the rank to 4 cores: those
    (2, 2, None, 2, 2),  # no local-size variable: one rank on the node
    (2, 2, "3", 2, 1),  # more ranks than cores: still one thread
])
def test_each_rank_threads_on_its_share_of_the_node(monkeypatch, cpus, bound, local, most, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(bound)), raising=False)
    for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    if local is not None:
        monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_SIZE", local)
    assert distributed.rank_threads(most) == expected
