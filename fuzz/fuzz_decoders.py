"""Coverage-guided fuzzing (atheris, libFuzzer) of vdfzip's readers of untrusted bytes: the VLSV
parser, the block-structure, content-set and varint decoders and every codec's payload decoder
(issue 14). ``make fuzz`` runs it::

    python fuzz/fuzz_decoders.py -max_total_time=600 -rss_limit_mb=4096 fuzz/corpus

The first input byte picks the target (modulo their number), the rest is the target's input. A
:class:`VdfzipError` is the expected refusal of bad bytes; any other exception propagates and
libFuzzer records it as a crash (``crash-*``), as it does an input that runs past ``-timeout``
(20 s unless given) or the RSS limit; the crashing inputs land in ``fuzz/`` unless
``-artifact_prefix`` says otherwise. The seeds in ``fuzz/seeds`` (one valid input or more per
target, made from ``tests/golden/v2`` by ``python fuzz/fuzz_decoders.py --write-seeds``) are
copied into the corpus folder before fuzzing starts. Results: ``fuzz/RESULTS.md``.
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
import warnings
from pathlib import Path

import atheris
import numpy as np

# numba compiles the kernels' bytecode, which must stay uninstrumented: imported before the rest of vdfzip
import vdfzip.kernels.geometry  # noqa: F401
import vdfzip.kernels.launch  # noqa: F401
import vdfzip.kernels.mlp  # noqa: F401
import vdfzip.kernels.moments  # noqa: F401
import vdfzip.kernels.projection  # noqa: F401

with atheris.instrument_imports(include=["vdfzip"]):
    from vdfzip import blockset, content, layout, vlsv
    from vdfzip.codecs import get_codec
    from vdfzip.decode import CompressedFile
    from vdfzip.errors import VdfzipError

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
GOLDEN = HERE.parent / "tests" / "golden" / "v2"
#: The golden file whose first proton cell gives the fuzzed payloads their block ids and mesh.
CELL_SOURCE = GOLDEN / "octree-core-keep.vdfz.vlsv"
CODECS = ("lossless", "octree", "mlp")
TARGETS = ("vlsv", "varint", "blockset", "content", "structure", *CODECS, "cell")
SCRATCH = Path("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp") / f"vdfzip-fuzz-{os.getpid()}.vlsv"


def _golden_cell(path: Path):
    """(block ids, mesh, structure, payload, codec id) of the first proton cell of a golden file."""
    with CompressedFile(path) as f:
        p = f.populations["proton"]
        structure, _, payload = p.record(0)
        return p.block_ids(0).copy(), p.mesh, structure, payload, p.codecs[int(p.index["codec"][0])].codec_id


BLOCK_IDS, MESH, *_ = _golden_cell(CELL_SOURCE)
DECODERS = {codec_id: get_codec(codec_id) for codec_id in CODECS}


# ---------------------------------------------------------------- targets


def fuzz_vlsv(data: bytes) -> None:
    """Parse the bytes as a VLSV file and read every array; a compressed one is opened and decoded.
    The file is removed after each input: libFuzzer ends the process without Python's atexit."""
    SCRATCH.write_bytes(data)
    try:
        with vlsv.read(SCRATCH) as f:
            for element in f.write_order():
                f.read(element).sum()
                bytes(f.raw(element))
            compressed = layout.is_compressed(f)
        if compressed:
            with CompressedFile(SCRATCH) as f:
                for name, population in f.populations.items():
                    for start, stop in population.batches():
                        f.cells(name, start, stop)
    finally:
        SCRATCH.unlink(missing_ok=True)


def fuzz_cell(data: bytes) -> None:
    """A cell as stored: codec byte, uint16 structure length, block structure, payload."""
    if len(data) < 3:
        return
    (split,) = struct.unpack_from("<H", data, 1)
    ids, _ = layout.decode_structure(data[3 : 3 + split], MESH)
    check_values(DECODERS[CODECS[data[0] % len(CODECS)]].decode_cell(data[3 + split :], ids, MESH), ids)


def check_values(values: np.ndarray, block_ids: np.ndarray) -> None:
    """A payload decoder's result must be float64 values of the cell's blocks."""
    if values.dtype != np.float64 or values.shape != (len(block_ids), MESH.cells_per_block):
        raise AssertionError(f"decoded values of dtype {values.dtype} and shape {values.shape}")


def fuzz_payload(codec_id: str):
    """The target of one codec's payload decoder, on the golden cell's block ids."""

    def target(data: bytes) -> None:
        check_values(DECODERS[codec_id].decode_cell(data, BLOCK_IDS, MESH), BLOCK_IDS)

    return target


def fuzz_structure(data: bytes) -> None:
    ids, mask = layout.decode_structure(data, MESH)
    check_ids(ids)
    if mask is not None and mask.shape != ids.shape:
        raise AssertionError(f"content mask of shape {mask.shape} for {len(ids)} blocks")


def fuzz_blockset(data: bytes) -> None:
    check_ids(blockset.decode(data, MESH.block_count)[0])


def check_ids(ids: np.ndarray) -> None:
    """Decoded block ids must be unique uint32 ids of the mesh."""
    if ids.dtype != np.uint32 or len(np.unique(ids)) != len(ids) or (len(ids) and ids.max() >= MESH.block_count):
        raise AssertionError(f"invalid block ids decoded: {ids}")


def fuzz_content(data: bytes) -> None:
    if content.decode(data, BLOCK_IDS, MESH).shape != BLOCK_IDS.shape:
        raise AssertionError("content mask of the wrong shape")


RUN = {
    "vlsv": fuzz_vlsv,
    "varint": blockset.varint_decode,
    "blockset": fuzz_blockset,
    "content": fuzz_content,
    "structure": fuzz_structure,
    **{codec_id: fuzz_payload(codec_id) for codec_id in CODECS},
    "cell": fuzz_cell,
}


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    """One input: the first byte picks the target, which gets the rest."""
    if not data:
        return
    try:
        with np.errstate(all="ignore"):
            RUN[TARGETS[data[0] % len(TARGETS)]](data[1:])
    except VdfzipError:
        pass


# ---------------------------------------------------------------- seeds


def _tiny_vlsv() -> bytes:
    """A small VLSV file with arrays of every kind: text, scalars, 2-D ints and floats, an empty one."""
    with vlsv.VlsvWriter(SCRATCH) as w:
        w.write_array("CONFIG", np.frombuffer(b"[proton_sparse]\nminValue = 1e-15\n", np.uint8), name="config_file")
        w.write_array("PARAMETER", np.array([1.5]), name="time")
        w.write_array("VARIABLE", np.arange(12, dtype=np.int32).reshape(4, 3), name="cells", mesh="SpatialGrid")
        w.write_array("VARIABLE", np.ones((2, 2), np.float32), name="fg_b", mesh="fsgrid", unit="T")
        w.write_array("MESH_GHOST_DOMAINS", np.zeros(0, np.uint64), mesh="SpatialGrid")
    data = SCRATCH.read_bytes()
    SCRATCH.unlink()
    return data


def seeds() -> dict[str, bytes]:
    """Named seed inputs, each a valid input of its target with the target's selector byte."""
    names = ("lossless-core-keep", "octree-core-keep", "octree-restart-keep", "mlp-core-keep",
             "lossless-restart-sorted")
    cells = {name: _golden_cell(GOLDEN / f"{name}.vdfz.vlsv") for name in names}
    restart = cells["octree-restart-keep"][2]
    found = {
        "vlsv-tiny": ("vlsv", _tiny_vlsv()),
        "vlsv-golden": ("vlsv", CELL_SOURCE.read_bytes()),
        "varint": ("varint", blockset.varint_encode([0, 1, 127, 128, 1 << 20, (1 << 64) - 1])),
        "content": ("content", blockset.decode(restart)[1]),
    }
    for name, (_, _, structure, payload, codec_id) in cells.items():
        found[f"structure-{name}"] = ("structure", structure)
        if name != "lossless-restart-sorted":  # there for its structure (content set, no order)
            found[f"payload-{name}"] = (codec_id, payload)
            found[f"cell-{name}"] = ("cell", bytes([CODECS.index(codec_id)]) + struct.pack("<H", len(structure))
                                     + structure + payload)
    found["blockset-restart"] = ("blockset", restart)
    found["blockset-sorted"] = ("blockset", blockset.encode(BLOCK_IDS, keep_order=False))
    return {name: bytes([TARGETS.index(target)]) + data for name, (target, data) in found.items()}


def write_seeds() -> None:
    """Write :func:`seeds` to fuzz/seeds, each checked to decode without an error first."""
    SEEDS.mkdir(exist_ok=True)
    for name, data in sorted(seeds().items()):
        RUN[TARGETS[data[0]]](data[1:])
        (SEEDS / name).write_bytes(data)
        print(f"{name}: {len(data)} bytes")


def copy_seeds(argv: list[str]) -> None:
    """Copy the seeds into the corpus folder (the first argument that is not a flag), if any."""
    folders = [a for a in argv[1:] if not a.startswith("-")]
    if not folders:
        return
    corpus = Path(folders[0])
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS.iterdir():
        if not (corpus / seed.name).exists():
            shutil.copyfile(seed, corpus / seed.name)


def main() -> None:
    warnings.simplefilter("ignore")  # numpy overflow and unchecked-format warnings of corrupt inputs
    if sys.argv[1:] == ["--write-seeds"]:
        write_seeds()
        return
    copy_seeds(sys.argv)
    for seed in sorted(SEEDS.iterdir()):  # warm up (numba loads its kernels) and check every seed decodes
        RUN[TARGETS[seed.read_bytes()[0]]](seed.read_bytes()[1:])
    atheris.Setup([sys.argv[0], "-timeout=20", f"-artifact_prefix={HERE}/", *sys.argv[1:]], TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
