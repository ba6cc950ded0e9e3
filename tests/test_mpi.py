"""``mpirun -n N vdfzip encode|decode|verify``: the same file (or report) as one process, one error.

Real MPI jobs (the MPICH wheel's ``mpiexec`` from the ``mpi`` extra) with 2 and 3 ranks, compared
byte for byte with the serial encoding and decoding, and verify's JSON with one process's."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from badfiles import copy_with_arrays
from conftest import UNDER_CI, shared_file

from vdfzip import chunks, synth, vlasiator, vlsv
from vdfzip.decode import decode_file
from vdfzip.encode import encode_file
from vdfzip.verify import verify_files

pytestmark = pytest.mark.mpi
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


@pytest.fixture(scope="module", autouse=True)
def mpi_available():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpi4py = None
    if MPIEXEC is None or mpi4py is None:
        message = "mpiexec or mpi4py is missing: pip install -e '.[mpi]'"
        pytest.fail(message) if UNDER_CI else pytest.skip(message)


def _mpi(ranks: int, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, "-m", "vdfzip", *map(str, argv)],
                          capture_output=True, text=True, timeout=600)


def _small_cells(path: Path, cells: int, seed: int, blocks: int = 24) -> Path:
    """A synthetic restart whose every VDF is cut to its ``blocks`` largest blocks (in file order):
    enough cells for three ranks' shares (whole index chunks of 64 cells) that encode in seconds."""
    full = path.with_name(f"full-{path.name}")
    synth.write_synthetic_restart(full, cells=cells, seed=seed)
    arrays = {}
    with vlasiator.open_file(full) as f:
        for name, p in f.populations.items():
            cut = [p.cell(i) for i in range(p.cell_count)]
            keep = [np.sort(np.argsort(-values.max(axis=1), kind="stable")[:blocks]) for _, values in cut]
            arrays[("BLOCKSPERCELL", name)] = np.array([len(k) for k in keep], np.uint32)
            arrays[("BLOCKIDS", name)] = np.concatenate([ids[k] for (ids, _), k in zip(cut, keep)])
            arrays[("BLOCKVARIABLE", name)] = np.concatenate([values[k] for (_, values), k in zip(cut, keep)])
    copy_with_arrays(full, path, arrays)
    full.unlink()
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """130 cells: with 3 ranks, one index chunk each (64, 64 and the last 2 cells)."""
    return _small_cells(tmp_path_factory.mktemp("mpi") / "restart.vlsv", cells=130, seed=6)


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """The one-process encoding of (source, method), made once per module."""
    made = {}

    def encoding(source: Path, method: str | None) -> bytes:
        if (source, method) not in made:
            out = tmp_path_factory.mktemp("serial") / "serial.vdfz.vlsv"
            encode_file(source, out, tol=3e-2, method=method, progress=False)
            made[source, method] = out.read_bytes()
        return made[source, method]

    return encoding


def _assert_same_as_serial(tmp_path, serial, source, ranks, method=None):
    parallel = tmp_path / f"ranks{ranks}.vdfz.vlsv"
    job = _mpi(ranks, "encode", source, "-o", parallel, "--tol", "3e-2", *(["--method", method] if method else []))
    assert job.returncode == 0, job.stderr
    assert job.stdout.count("wrote ") == 1 and job.stderr == ""  # rank 0 reports for the job
    assert parallel.read_bytes() == serial(source, method)
    assert [p.name for p in tmp_path.iterdir()] == [parallel.name]  # no temporary file or spool left


@pytest.mark.parametrize("ranks, method", [(2, "octree"), (3, "octree"), (3, "mlp,octree")])
def test_ranks_write_the_serial_file(tmp_path, serial, synthetic, ranks, method):
    _assert_same_as_serial(tmp_path, serial, synthetic, ranks, method)


@pytest.mark.slow
def test_ranks_write_the_serial_file_of_the_real_restart(tmp_path, serial):
    _assert_same_as_serial(tmp_path, serial, shared_file("restart_ipshock_small.vlsv"), 3)


def test_more_ranks_than_cells(tmp_path, serial):
    source = tmp_path / "two.vlsv"
    synth.write_synthetic_restart(source, cells=2, seed=1)
    folder = tmp_path / "out"
    folder.mkdir()
    _assert_same_as_serial(folder, serial, source, 3)


def test_a_failing_rank_ends_the_job_with_one_error_naming_it(tmp_path, synthetic):
    """The last cell lists a block twice: the last rank fails, every rank stops, nothing is left."""
    with vlasiator.open_file(synthetic) as f:
        p = f.population("proton")
        ids = np.array(p.cells(0, p.cell_count).block_ids)
        last = int(p.offsets[-2])
        ids[last + 1] = ids[last]
        cell = int(p.cell_ids[-1])
    bad = tmp_path / "bad.vlsv"
    copy_with_arrays(synthetic, bad, {("BLOCKIDS", "proton"): ids})
    out = tmp_path / "out"
    out.mkdir()
    job = _mpi(3, "encode", bad, "-o", out / "c.vdfz.vlsv")
    assert job.returncode == 2, (job.stdout, job.stderr)
    assert job.stderr.count("\n") == 1 and job.stderr.startswith("vdfzip: error: rank 2: ")
    assert f"cell {cell}" in job.stderr and "same block id twice" in job.stderr
    assert list(out.iterdir()) == []


def test_a_missing_input_is_one_error(tmp_path):
    job = _mpi(2, "encode", tmp_path / "missing.vlsv", "-o", tmp_path / "c.vdfz.vlsv")
    assert job.returncode == 2 and job.stderr == f"vdfzip: error: {tmp_path / 'missing.vlsv'}: cannot open for reading: File does not exist\n", job.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_full_disk_ends_the_job_with_one_error(tmp_path, synthetic, serial, command):
    """Writes that fail part-way (a file-size limit stands in for a full disk: the same failed
    write, EFBIG instead of ENOSPC): one error from rank 0, naming the rank, and no output."""
    source = synthetic
    if command == "decode":
        source = tmp_path / "c.vdfz.vlsv"
        source.write_bytes(serial(synthetic, None))
    limit = synthetic.stat().st_size // (3 if command == "decode" else 2)  # the spools fit, the output not
    # set once MPI has started (its transport's shared-memory files need no limit); Python ignores
    # SIGXFSZ, so a write past the limit fails with EFBIG
    limited = ("import resource, sys; from mpi4py import MPI; "
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
               "from vdfzip.cli import main; sys.exit(main(sys.argv[1:]))")
    out = tmp_path / "out"
    out.mkdir()
    job = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", limited, command, str(source), "-o",
                          str(out / "o.vlsv"), *(["--method", "lossless"] if command == "encode" else [])],
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 2 and job.stderr.count("\n") == 1, job.stderr
    assert re.fullmatch(r"vdfzip: error: rank \d: writing at byte \d+ failed: .*File too large\n", job.stderr), job.stderr
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def busy_restart(tmp_path_factory):
    """A restart whose encode keeps 2 ranks busy for ~5 s."""
    path = tmp_path_factory.mktemp("busy") / "restart.vlsv"
    synth.write_synthetic_restart(path, cells=200, seed=2)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, group", [(signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)])
def test_an_interrupted_job_leaves_nothing_behind(tmp_path, busy_restart, signum, code, group):
    """Ctrl-C (SIGINT to the launcher's process group) and a scheduler's SIGTERM to the launcher
    alone, while the ranks encode: one line from rank 0, no output, no temporary file."""
    out = tmp_path / "out"
    out.mkdir()
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "vdfzip", "encode", busy_restart,
                            "-o", out / "c.vlsv"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(2.5)  # past the start-up, inside the encoding
    os.killpg(job.pid, signum) if group else job.send_signal(signum)
    _, err = job.communicate(timeout=60)
    assert job.returncode == code and err == "vdfzip: interrupted\n", (job.returncode, err)
    assert list(out.iterdir()) == []


@pytest.fixture(scope="module")
def serial_decoding(tmp_path_factory, serial):
    """(compressed file, its one-process decoding) of a source, made once per module."""
    made = {}

    def decoding(source: Path) -> tuple[Path, bytes]:
        if source not in made:
            folder = tmp_path_factory.mktemp("decode")
            compressed = folder / "c.vdfz.vlsv"
            compressed.write_bytes(serial(source, None))
            made[source] = compressed, decode_file(compressed, folder / "d.vlsv", progress=False).read_bytes()
        return made[source]

    return decoding


def _assert_decodes_as_serial(tmp_path, serial_decoding, source, ranks):
    compressed, expected = serial_decoding(source)
    out = tmp_path / "out"
    out.mkdir()
    job = _mpi(ranks, "decode", compressed, "-o", out / "d.vlsv")
    assert job.returncode == 0, job.stderr
    assert job.stdout.count("wrote ") == 1 and job.stderr == ""
    assert (out / "d.vlsv").read_bytes() == expected
    assert [p.name for p in out.iterdir()] == ["d.vlsv"]


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_decode_to_the_serial_file(tmp_path, serial_decoding, synthetic, ranks):
    _assert_decodes_as_serial(tmp_path, serial_decoding, synthetic, ranks)


def test_verbose_ranks_say_where_their_time_went(tmp_path, serial_decoding, synthetic):
    """--verbose: one VDFZIP_TIMES line per rank whose parts add up to the rank's wall time."""
    compressed, expected = serial_decoding(synthetic)
    job = _mpi(2, "decode", compressed, "-o", tmp_path / "d.vlsv", "--verbose")
    assert job.returncode == 0, job.stderr
    lines = re.findall(r"^VDFZIP_TIMES decode rank (\d): (\S+) s, read (\S+) s, write (\S+) s, seal (\S+) s, "
                       r"wait (\S+) s, compute (\S+) s$", job.stderr, re.M)
    assert sorted(int(line[0]) for line in lines) == [0, 1], job.stderr
    for _, total, *parts in lines:
        assert all(float(p) >= 0 for p in parts) and sum(map(float, parts)) == pytest.approx(float(total), abs=0.02)
    assert (tmp_path / "d.vlsv").read_bytes() == expected


def test_ranks_decode_the_real_restart_to_the_serial_file(tmp_path, serial_decoding):
    _assert_decodes_as_serial(tmp_path, serial_decoding, shared_file("restart_ipshock_small.vlsv"), 2)


def test_ranks_round_trip_a_file_without_vdf(tmp_path, serial, serial_decoding):
    """Copied whole with its manifest by the ranks as by one process, and decoded to the original."""
    source = shared_file("init.vlsv")
    _assert_same_as_serial(tmp_path, serial, source, 2)
    _assert_decodes_as_serial(tmp_path, serial_decoding, source, 2)
    assert serial_decoding(source)[1] == source.read_bytes()


def test_a_corrupted_cell_ends_the_decoding_job_with_one_error(tmp_path, serial_decoding, synthetic):
    """The last cell's record fails its CRC: the last rank says so, every rank stops, nothing is left."""
    compressed, _ = serial_decoding(synthetic)
    data = bytearray(compressed.read_bytes())
    with vlsv.read(compressed) as f:
        records = f.element("VDFZIP_RECORDS", name="proton")
    data[records.offset + records.nbytes - 1] ^= 0xFF
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    job = _mpi(3, "decode", bad, "-o", out / "d.vlsv")
    assert job.returncode == 2, (job.stdout, job.stderr)
    assert job.stderr.count("\n") == 1 and job.stderr.startswith("vdfzip: error: rank 2: ")
    assert "fails its checksum" in job.stderr and list(out.iterdir()) == []


def test_ranks_verify_as_one_process(serial_decoding, synthetic):
    """verify's JSON on 3 ranks equals one process's, for the compressed and the decoded file."""
    compressed, _ = serial_decoding(synthetic)
    decoded = compressed.with_name("d.vlsv")
    for other in (compressed, decoded):
        job = _mpi(3, "verify", synthetic, other, "--json")
        assert job.returncode == 0 and job.stderr == "", job.stderr
        assert json.loads(job.stdout) == json.loads(json.dumps(verify_files(synthetic, other)))


def test_ranks_share_a_compressed_files_checks_and_name_the_damage(tmp_path, serial_decoding, synthetic):
    """verify of a compressed file whose copied array was changed: the rank that hashes that
    array (every third array: rank k % 3) says which array, every rank stops."""
    compressed, _ = serial_decoding(synthetic)
    data = bytearray(compressed.read_bytes())
    with vlsv.read(compressed) as f:
        arrays = [e for e in f.write_order() if e.tag != "VDFZIP_INTEGRITY"]
        k, damaged = next((k, e) for k, e in enumerate(arrays) if e.tag == "VARIABLE" and k % 3 == 2)
    data[damaged.offset] ^= 0xFF
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(bytes(data))
    job = _mpi(3, "verify", synthetic, bad)
    assert job.returncode == 2, (job.stdout, job.stderr)
    assert job.stderr.count("\n") == 1 and job.stderr.startswith(f"vdfzip: error: rank {k % 3}: ")
    assert f"array VARIABLE {damaged.name} is damaged" in job.stderr


_PAST_4_GIB = r'''
import sys
from pathlib import Path
import numpy as np
from mpi4py import MPI
from vdfzip import distributed, vlsv

distributed.MAX_WRITE = 1000  # pieces of 1000 bytes: a 10 kB array takes 11 calls each way
path, offset = Path(sys.argv[1]), 5 << 30
data = np.arange(2500, dtype="<u4")
handle = MPI.File.Open(MPI.COMM_SELF, str(path), MPI.MODE_WRONLY | MPI.MODE_CREATE)
raw = data.tobytes()
distributed.write_pieces(handle, [(offset, len(raw), lambda a, b: raw[a:b])], MPI.COMM_SELF)
handle.Close()
element = vlsv.Element("VARIABLE", vlsv.array_attrs(np.uint32, len(data), 1, name="far"), offset)
with open(path, "r+b") as f:  # a VLSV file whose one array lies past 5 GiB, a hole before it
    f.seek(offset + data.nbytes)
    f.write(vlsv.format_footer([element]))
    f.seek(0)
    f.write(vlsv.file_header(offset + data.nbytes))
with vlsv.VlsvFile(path, distributed.RankBytes(MPI.COMM_SELF, path, {})) as read:
    assert read.elements[0].offset == offset
    assert np.array_equal(read.read("VARIABLE", name="far"), data)
    assert bytes(read.raw(read.elements[0], 4 * 1000, 4 * 1003)) == data[1000:1003].tobytes()
print("ok")
'''


def test_mpi_io_reads_and_writes_past_4_gib_in_bounded_pieces(tmp_path):
    """Offsets past 4 GiB (a sparse file) and pieces split to MAX_WRITE bytes per MPI-IO call,
    written with ``write_pieces`` and read back through a rank's reader (``RankBytes``)."""
    path = tmp_path / "far.vlsv"
    job = subprocess.run([sys.executable, "-c", _PAST_4_GIB, str(path)], capture_output=True, text=True, timeout=120)
    assert job.returncode == 0 and job.stdout.strip() == "ok", (job.stdout, job.stderr)
    assert path.stat().st_size > 5 << 30


#: Run under mpiexec: open a file as ``vdfzip encode`` (ORIGINAL) or ``decode`` (COMPRESSED) does
#: on the ranks, and print per rank the window it holds and the bytes it read of each per-cell array.
_READS_SCRIPT = """
import json, sys
from collections import Counter
from pathlib import Path
from mpi4py import MPI
from vdfzip import distributed, vlasiator, decode

comm, path, kind = MPI.COMM_WORLD, Path(sys.argv[1]), sys.argv[2]
source = distributed.RankBytes(comm, path, {})
file = vlasiator.vlsv.VlsvFile(path, source)
per_cell = {e.offset: e for e in file.elements if e.tag in ("CELLSWITHBLOCKS", "BLOCKSPERCELL", "VDFZIP_INDEX", "VDFZIP_MOMENTS")}
read = Counter()
original_read = source._read
def counting(start, stop):
    for e in per_cell.values():
        read[f"{e.tag} {e.name}"] += max(0, min(stop, e.offset + e.nbytes) - max(start, e.offset))
    return original_read(start, stop)
source._read = counting
if kind == "original":
    opened = vlasiator.VlasiatorFile(file, comm)
    windows = {n: [int(c) for c in p.window] for n, p in opened.populations.items()}
else:
    opened = decode.CompressedFile(file, comm)
    windows = {n: [int(p.first_cell), int(p.first_cell + p.cell_count)] for n, p in opened.populations.items()}
ranks = comm.gather({"rank": comm.Get_rank(), "windows": windows, "read": {k: int(v) for k, v in read.items()}})
if ranks:
    print(json.dumps(ranks))
file.close()
"""


@pytest.mark.parametrize("kind", ["original", "compressed"])
def test_each_rank_reads_only_its_share_of_the_per_cell_arrays(tmp_path, serial_decoding, synthetic, kind):
    """Encoding and decoding ranks read the per-cell arrays (cell ids and block counts; the index
    and moments) of their own cells, plus 1/N of the block counts (or chunk directory) to balance
    the shares: not the whole arrays, as every rank did before format 4."""
    compressed, _ = serial_decoding(synthetic)
    path = synthetic if kind == "original" else compressed
    script = tmp_path / "reads.py"
    script.write_text(_READS_SCRIPT)
    job = subprocess.run([MPIEXEC, "-n", "3", sys.executable, script, path, kind], capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 0, job.stderr
    ranks = json.loads(job.stdout)
    cells = 130
    for name in ("proton", "helium"):
        windows = [r["windows"][name] for r in ranks]
        assert windows == [[0, 64], [64, 128], [128, 130]]  # whole chunks, balanced by blocks
        for r, (start, stop) in zip(ranks, windows):
            mine = stop - start  # cells of the window; and the 1/N slice balancing reads: one chunk of the three
            if kind == "original":
                assert r["read"][f"CELLSWITHBLOCKS {name}"] == 8 * mine
                assert r["read"][f"BLOCKSPERCELL {name}"] == 4 * mine + 4 * min(64, cells - 64 * r["rank"])
            else:
                assert r["read"][f"VDFZIP_MOMENTS {name}"] == 80 * mine
                with vlsv.read(compressed) as f:
                    element = f.element("VDFZIP_INDEX", name=name)
                    directory = np.frombuffer(f.raw(element, 0, 3 * chunks.DIRECTORY_DTYPE.itemsize), chunks.DIRECTORY_DTYPE)
                frames = np.diff([*directory["frame_offset"].astype(int), element.nbytes - directory.nbytes])
                k = r["rank"]  # its chunk; the directory entries of it and the next, twice: to balance, to read
                entries = 2 * (min(k + 2, 3) - k) * chunks.DIRECTORY_DTYPE.itemsize
                assert r["read"][f"VDFZIP_INDEX {name}"] == entries + frames[k]


_SHARE_SCRIPT = """
import json, sys
import numpy as np
from mpi4py import MPI
from vdfzip import distributed

comm = MPI.COMM_WORLD
blocks = np.array(json.loads(sys.argv[1]), np.int64)
share = distributed.share(comm, len(blocks), lambda a, b: blocks[a:b])
shares = comm.gather([comm.Get_rank(), share.start, share.stop, share.blocks_before, share.blocks])
if shares:
    print(json.dumps(shares))
"""


@pytest.mark.parametrize("blocks", [[5, 1, 1, 1, 1, 1, 50, 0, 0, 3], [0, 0, 7], [4], []])
def test_shares_split_units_as_a_searchsorted_over_all_blocks(tmp_path, blocks):
    """Each rank's share, computed from 1/N of the units' block counts, is what one process
    finds with all of them: rank r starts at the first unit whose blocks start at or past r/N
    of all blocks."""
    script = tmp_path / "share.py"
    script.write_text(_SHARE_SCRIPT)
    job = subprocess.run([MPIEXEC, "-n", "3", sys.executable, script, json.dumps(blocks)], capture_output=True,
                         text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    got = json.loads(job.stdout)
    starts = np.concatenate([[0], np.cumsum(blocks)]).astype(int)
    total = int(starts[-1])
    bounds = [int(np.searchsorted(starts[:-1], total * r // 3, side="left")) for r in range(3)] + [len(blocks)]
    assert got == [[r, bounds[r], bounds[r + 1], int(starts[bounds[r]]), total] for r in range(3)]
