"""Property tests of every reader of untrusted bytes (issue 14): the VLSV parser, the block-structure
and content-set decoders, every codec's payload decoder and the header/index parser. Random and
mutated inputs decode to a valid result or raise a :class:`VdfzipError`: never another exception,
a hang or an allocation sized by a corrupt length field. Encoders and decoders round-trip exactly.

The inputs are real: cells, payloads and files of ``tests/golden/v3``. Every test runs a fixed,
derandomized set of examples without a database, so a run is the same on every machine.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import zstandard
from badfiles import reseal_with_header, reseal_with_index, reseal_with_integrity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdfzip import blockset, chunks, content, integrity, layout, vlsv
from vdfzip.codecs import PayloadError, codec_ids, get_codec
from vdfzip.codecs.octree import block_corners
from vdfzip.decode import CompressedFile, decode_file
from vdfzip.errors import VdfzipError
from vdfzip.vlasiator import VelocityMesh

GOLDEN = Path(__file__).resolve().parent / "golden" / "v3"
#: the golden file whose first proton cell gives each kind of payload
PAYLOAD_SOURCES = {
    "lossless": "lossless-core-keep",
    "octree": "octree-core-keep",
    "octree auto": "octree-restart-keep",
    "mlp": "mlp-core-keep",
}
POPULATION = "proton"
#: A zstd frame whose header claims 2⁴⁰ bytes of content: a decoder that trusts it allocates 1 TiB.
ZSTD_BOMB = struct.pack("<IBQ", 0xFD2FB528, 0xE0, 1 << 40) + bytes([1, 0, 0])
SMALL_MESH = VelocityMesh((6, 5, 4), 4, (-1.0, -1.0, -1.0), (0.1, 0.1, 0.1))


#: ``VDFZIP_FUZZ_SCALE=20 pytest tests/test_fuzz.py``: 20× the examples, for a longer run by hand.
SCALE = int(os.environ.get("VDFZIP_FUZZ_SCALE", "1"))


def fuzz_settings(examples: int):
    """Deterministic settings: ``examples`` (× SCALE) derandomized examples, no database, no deadline."""
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- real inputs


def _golden_cell(name: str):
    """(codec, block ids, structure, payload, mesh) of the first proton cell of a golden file."""
    with CompressedFile(GOLDEN / f"{name}.vdfz.vlsv") as f:
        p = f.populations[POPULATION]
        structure, _, payload = p.record(0)
        codec = p.codecs[int(p.index["codec"][0])]
        return codec, p.block_ids(0).copy(), structure, payload, p.mesh


CELLS = {kind: _golden_cell(name) for kind, name in PAYLOAD_SOURCES.items()}
MESH = CELLS["lossless"][4]
STRUCTURES = [CELLS["octree auto"][2], CELLS["octree"][2], blockset.encode(CELLS["octree"][1], keep_order=False)]


# ---------------------------------------------------------------- mutations


@st.composite
def mutated(draw, data: bytes, max_edits: int = 4) -> bytes:
    """``data`` after a few bit flips, byte changes, insertions, deletions and a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        kind = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate")))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(st.sampled_from((0, 0x7F, 0x80, 0xFF))) if draw(st.booleans()) else draw(st.integers(0, 255))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


def inputs_like(*valid: bytes):
    """Random bytes, or a mutation of one of the ``valid`` encodings."""
    return st.one_of(st.binary(max_size=300), st.sampled_from(valid).flatmap(mutated))


def refused_or(decode, *args):
    """``decode(*args)``, or None when it raises a :class:`VdfzipError` (any other exception fails)."""
    try:
        with np.errstate(all="ignore"):
            return decode(*args)
    except VdfzipError:
        return None


def assert_valid_ids(ids: np.ndarray, block_count: int) -> None:
    """Decoded block ids: unique uint32 ids of a mesh of ``block_count`` blocks."""
    assert ids.dtype == np.uint32 and ids.ndim == 1
    assert len(np.unique(ids)) == len(ids) and (not len(ids) or int(ids.max()) < block_count)


# ---------------------------------------------------------------- round trips


@fuzz_settings(300)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=50))
def test_varint_round_trip(values):
    x = np.array(values, dtype=np.uint64)
    np.testing.assert_array_equal(blockset.varint_decode(blockset.varint_encode(x)), x)


block_lists = st.lists(st.integers(0, 2**32 - 1), unique=True, max_size=200) | st.lists(
    st.integers(0, 400), unique=True, max_size=300
)


@fuzz_settings(200)
@given(block_lists, st.booleans(), st.none() | st.binary(max_size=40))
def test_blockset_round_trip(ids, keep_order, section):
    ids = np.array(ids, dtype=np.uint32)
    decoded, carried = blockset.decode(blockset.encode(ids, keep_order, section))
    np.testing.assert_array_equal(decoded, ids if keep_order else np.sort(ids))
    assert decoded.dtype == np.uint32 and carried == section


@fuzz_settings(150)
@given(st.lists(st.integers(0, SMALL_MESH.block_count - 1), unique=True, max_size=SMALL_MESH.block_count)
       .flatmap(lambda ids: st.tuples(st.just(ids), st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)))))
def test_content_round_trip(ids_and_mask):
    ids, mask = (np.array(a) for a in ids_and_mask)
    ids = ids.astype(np.uint32)
    np.testing.assert_array_equal(content.decode(content.encode(ids, mask, SMALL_MESH), ids, SMALL_MESH), mask)
    structure = layout.encode_structure(ids, True, mask, SMALL_MESH)
    decoded, decoded_mask = layout.decode_structure(structure, SMALL_MESH)
    np.testing.assert_array_equal(decoded, ids)
    np.testing.assert_array_equal(decoded_mask, mask)


# ---------------------------------------------------------------- block structure and content set


@fuzz_settings(1000)
@given(inputs_like(*(blockset.encode(np.arange(b, b + n), k, c) for b, n, k, c in
                     ((0, 5, True, None), (1000, 40, False, b"\x00"), (7, 1, True, b"abc"))), STRUCTURES[0]))
def test_blockset_decode_gives_valid_ids_or_refuses(data):
    decoded = refused_or(blockset.decode, data, MESH.block_count)
    if decoded is not None:
        assert_valid_ids(decoded[0], MESH.block_count)
        assert decoded[1] is None or isinstance(decoded[1], bytes)


@fuzz_settings(300)
@given(inputs_like(*(STRUCTURES + [b"\x00"])))
def test_varint_decode_gives_uint64_or_refuses(data):
    decoded = refused_or(blockset.varint_decode, data)
    assert decoded is None or decoded.dtype == np.uint64


def _content_section(structure: bytes) -> bytes:
    return blockset.decode(structure)[1]


@fuzz_settings(600)
@given(inputs_like(_content_section(STRUCTURES[0]), b"\x00\x00\x05"))
def test_content_decode_gives_a_mask_or_refuses(data):
    ids = CELLS["octree auto"][1]
    mask = refused_or(content.decode, data, ids, MESH)
    assert mask is None or (mask.dtype == bool and mask.shape == ids.shape)


@fuzz_settings(1000)
@given(inputs_like(*STRUCTURES))
def test_decode_structure_gives_ids_and_mask_or_refuses(data):
    decoded = refused_or(layout.decode_structure, data, MESH)
    if decoded is not None:
        ids, mask = decoded
        assert_valid_ids(ids, MESH.block_count)
        assert mask is None or (mask.dtype == bool and mask.shape == ids.shape)


def _structure(flags: int, runs: bytes, tail: bytes = b"") -> bytes:
    """Block-structure bytes with the given flags, runs section and what follows it."""
    return bytes([flags]) + blockset.varint_encode([len(runs)]) + runs + tail


def test_huge_lengths_and_zstd_bombs_are_refused_without_allocating():
    """A varint that claims 2⁶⁰ blocks and zstd frames that claim 1 TiB are refused at once."""
    varints, count = blockset.varint_encode, MESH.block_count
    cases = [
        (blockset.decode, _structure(0, varints([0, 1 << 60]))),
        (blockset.decode, _structure(0, varints([1 << 63, 1 << 63, 0, 5]))),  # negative once cast to int64
        (blockset.decode, _structure(0, varints([0, 10, 1 << 62, 3]))),
        (blockset.decode, _structure(2, ZSTD_BOMB), count),
        (blockset.decode, _structure(5, varints([0, 3]), ZSTD_BOMB), count),
        (blockset.decode, _structure(1, varints([0, 3]), varints([0, 2, 0]))),  # ranks 0, 1, 1: a block twice
        (blockset.decode, STRUCTURES[0], 10),
        (content.decode, b"\x01" + ZSTD_BOMB, CELLS["octree"][1], MESH),
        (content.decode, b"\x00" + varints([1 << 63]), CELLS["octree"][1], MESH),
    ]
    for decode, *args in cases:
        with pytest.raises(VdfzipError):
            decode(*args)
    mlp, block_ids, _, real, _ = CELLS["mlp"]
    numbers = 2 + 40 * (real[1] & 0x0F) + 8 * len(mlp.architecture.layers)  # header, mixture, steps
    octree = struct.pack("<BBd3HhB", 1, 0, 1.0, 1, 1, 1, 0, 1) + b"\0\0\0"  # linear, ranks 1, codes
    bombs = [(get_codec("lossless"), b"\x01\x04" + ZSTD_BOMB), (get_codec("octree"), octree + ZSTD_BOMB),
             (mlp, bytes([1, real[1] | 0x10]) + real[2:numbers] + ZSTD_BOMB)]
    for codec, payload in bombs:
        with pytest.raises(PayloadError):
            codec.decode_cell(payload, block_ids, MESH)


# ---------------------------------------------------------------- payload decoders


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SOURCES))
@fuzz_settings(300)
@given(data=st.data())
def test_payload_decoder_gives_values_or_refuses(kind, data):
    codec, block_ids, _, payload, mesh = CELLS[kind]
    version = bytes([codec.version])
    bad = data.draw(st.one_of(mutated(payload), st.binary(max_size=200).map(lambda b: version + b)), label="payload")
    values = refused_or(codec.decode_cell, bad, block_ids, mesh)
    assert values is None or (values.dtype == np.float64 and values.shape == (len(block_ids), mesh.cells_per_block))


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SOURCES))
@fuzz_settings(120)
@given(data=st.data())
def test_payload_decoder_on_other_blocks_gives_values_or_refuses(kind, data):
    """A payload decoded on block ids it was not made for (none, fewer, others): values or a refusal."""
    codec, block_ids, _, payload, mesh = CELLS[kind]
    ids = data.draw(st.lists(st.integers(0, mesh.block_count - 1), unique=True, max_size=80)
                    | st.lists(st.sampled_from(list(block_ids)), unique=True), label="block ids")
    ids = np.array(ids, dtype=np.uint32)
    values = refused_or(codec.decode_cell, data.draw(mutated(payload) | st.just(payload), label="payload"), ids, mesh)
    assert values is None or (values.dtype == np.float64 and values.shape == (len(ids), mesh.cells_per_block))


@pytest.mark.parametrize("kind", sorted(PAYLOAD_SOURCES))
def test_real_payload_decodes(kind):
    codec, block_ids, _, payload, mesh = CELLS[kind]
    assert codec.decode_cell(payload, block_ids, mesh).shape == (len(block_ids), mesh.cells_per_block)


def test_every_builtin_codec_is_fuzzed():
    """Codecs that other tests register (test_roundtrip's) do not count."""
    builtin = {i for i in codec_ids() if type(get_codec(i)).__module__.startswith("vdfzip.")}
    assert {CELLS[kind][0].codec_id for kind in PAYLOAD_SOURCES} == builtin


def test_octree_domain_parameters_are_checked():
    """A log floor or loglin knee of 0 divided by zero in Python floats (ZeroDivisionError)."""
    codec, block_ids, _, _, mesh = CELLS["octree"]
    ranks = struct.pack("<3HhB", 1, 1, 1, 0, 1) + b"\0\0\0"
    planes = zstandard.compress(b"\0" * (sum(block_corners(block_ids, mesh)[1]) + 1))  # rank-1 factors and core
    bad = [(2, 1.0, struct.pack("<d", 0.0)), (4, 1.0, struct.pack("<dd", 1e-3, 0.0)),  # log floor 0, loglin knee 0
           (0, float("inf"), b""), (4, 1.0, struct.pack("<dd", float("nan"), 1e-3))]  # linear scale ∞, floor NaN
    for transform, scale, parameters in bad:
        payload = struct.pack("<BBd", 1, transform, scale) + parameters + ranks + planes
        with pytest.raises(PayloadError):
            codec.decode_cell(payload, block_ids, mesh)


#: Inputs atheris found (fuzz/RESULTS.md) for its ``cell`` target: target byte, codec byte, uint16
#: structure length, block structure, payload.
ATHERIS_CELLS = {
    "octree payload on a cell without blocks: ValueError in block_corners": (
        "CAGPAAAAAO8DAjADMAGtEgIvBC0FLgMwAvkRAy4FLQUtBS4D+RECMAQtBS4ELwGtEgEwAzABHAEotS/9IDiVAADCAQKCEyDt7/P+EQIAbiFO"
        "wBhCAiohAggaAhcGXwQGWlcCXAJDFQICFFJrCgodGAJWBE0ICgxHVgQKDlsaChUdPhgNLTAhMkUcHBkOMEkICigWAQQAAACgTsoxPvvVzCDv"
        "vCQ++n5qvHSTaD8OABAADwACAAIuohwcGRcVEhEQEA4ODS4iHBsaFhUTEA8PDg4NDQwuIhsbGRgTEhAQDw4ODQ0otS/9YEgglTEAN2dYmhyD"
        "NieyHJJKMBqgBg=="
    ),
}


@pytest.mark.parametrize("name", sorted(ATHERIS_CELLS))
def test_inputs_atheris_found_are_refused(name):
    data = base64.b64decode(ATHERIS_CELLS[name])[1:]
    split = struct.unpack_from("<H", data, 1)[0]
    ids, _ = layout.decode_structure(data[3 : 3 + split], MESH)
    with pytest.raises(PayloadError):
        get_codec(("lossless", "octree", "mlp")[data[0] % 3]).decode_cell(data[3 + split :], ids, MESH)


def test_octree_refuses_a_cell_without_blocks():
    codec, _, _, payload, mesh = CELLS["octree"]
    with pytest.raises(PayloadError, match="without blocks"):
        codec.decode_cell(payload, np.zeros(0, np.uint32), mesh)


def test_singular_mlp_mixture_is_refused():
    """A mixture with a zero Cholesky factor made ``np.linalg.inv`` raise LinAlgError."""
    codec, block_ids, _, payload, mesh = CELLS["mlp"]
    singular = payload[:2] + np.zeros(10, "<f4").tobytes() + payload[42:]
    with pytest.raises(PayloadError):
        codec.decode_cell(singular, block_ids, mesh)


# ---------------------------------------------------------------- the VLSV parser

VLSV_SOURCE = GOLDEN / "octree-core-keep.vdfz.vlsv"
VLSV_BYTES = VLSV_SOURCE.read_bytes()
FOOTER_AT = struct.unpack_from("<Q", VLSV_BYTES, 8)[0]
FOOTER = VLSV_BYTES[FOOTER_AT:].decode("ascii")
#: the footer's attribute values and element offsets, the targets of text mutations
FIELD = re.compile(r'"([^"]*)"|>(\d+)<')
ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8)
numbers = st.integers(-(2**70), 2**70).map(str)
sizes = st.sampled_from(("0", "1", "-1", str(1 << 63), "9" * 40)) | numbers


@st.composite
def resized_footer(draw) -> bytes:
    """The file with one element's array and vector sizes set to zero, small, negative or huge values."""
    lines = FOOTER.splitlines(keepends=True)
    at = draw(st.sampled_from([i for i, line in enumerate(lines) if "arraysize=" in line]))
    for key in ("arraysize", "vectorsize"):
        lines[at] = re.sub(f'{key}="[^"]*"', f'{key}="{draw(sizes)}"', lines[at])
    return VLSV_BYTES[:FOOTER_AT] + "".join(lines).encode("ascii")


@st.composite
def mutated_footer(draw) -> bytes:
    """The file with its footer text edited: fields replaced, lines dropped or doubled, text inserted."""
    text = FOOTER
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("field", "line", "insert")))
        if kind == "field":
            fields = [m.span(1) if m.group(1) is not None else m.span(2) for m in FIELD.finditer(text)]
            if fields:
                start, stop = draw(st.sampled_from(fields))
                text = text[:start] + draw(numbers | ascii_text) + text[stop:]
            continue
        lines = text.splitlines(keepends=True)
        at = draw(st.integers(0, len(lines) - 1))
        if kind == "line":
            lines[at : at + 1] = [] if draw(st.booleans()) else [lines[at]] * 2
        else:
            lines.insert(at, draw(ascii_text))
        text = "".join(lines)
    return VLSV_BYTES[:FOOTER_AT] + text.encode("ascii")


@st.composite
def mutated_vlsv(draw) -> bytes:
    """A real VLSV file with bytes flipped (mostly in the header and footer), truncated, its footer
    offset moved, its footer text edited or an element's sizes changed."""
    kind = draw(st.sampled_from(("bytes", "footer", "sizes", "truncate", "offset")))
    if kind == "footer":
        return draw(mutated_footer())
    if kind == "sizes":
        return draw(resized_footer())
    data = bytearray(VLSV_BYTES)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "offset":
        data[8:16] = struct.pack("<Q", draw(st.integers(0, len(data) + 8) | st.integers(0, 2**64 - 1)))
        return bytes(data)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, 15) | st.integers(FOOTER_AT, len(data) - 1) | st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


def read_everything(path: Path) -> None:
    """Parse a VLSV file and read every array in every way a caller can."""
    with vlsv.read(path) as f:
        for element in f.write_order():
            f.read(element).sum()
            bytes(f.raw(element))
        f.raw_footer()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder whose files the properties rewrite, one example after another."""
    return tmp_path_factory.mktemp("fuzz")


@fuzz_settings(1000)
@given(data=mutated_vlsv())
def test_vlsv_parser_refuses_only_with_vdfzip_errors(scratch, data):
    path = scratch / "mutated.vlsv"
    path.write_bytes(data)
    refused_or(read_everything, path)


#: Inputs atheris found (fuzz/RESULTS.md) for its ``vlsv`` target: target byte, then the file.
ATHERIS_FILES = {
    "empty array with a 77-digit vectorsize: ValueError in numpy's reshape": (
        "AAAAAAAAAAAAeQAAAAAAAABbcHJvdG9uX3NwYXJzZV0KbWluVmFsdWUgPSAxZS0xNQoAAAAAAAD4PwAAAAABAAAAAgAAAAMAAAAEAAAABQAA"
        "AAYAAAAHAAAACAAAAAkAAAAKAAAACwAAAAAAgD8AAIA/AACAPwAAgD88VkxTVj4KICAgPENPTkZJRyBhcnJheXNpemU9IjMzIiBkYXRhc2l6"
        "ZT0iMSIgZGF0YXR5cGU9InVpbnQiIG5hbWU9ImNvbmZpZ19maWxlIiB2ZWN0b3JzaXplPSIxIj4xNjwvQ09ORklHPgogICA8TUVTSF9HSE9T"
        "VF9ET01BSU5TIGFycmF5c2l6ZT0iMCIgZGF0YXNpemU9IjgiIGRhdGF0eXBlPSJ1aW50IiBtZXNoPSJTcGF0aWFsR3JpZCIgdmVjdG9yc2l6"
        "ZT0iMTY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjYi"
        "PjEyMTwvTUVTSF9HSE9TVF9ET01BSU5TPgogICA8UEFSQU1FVEVSIGFycmF5c2l6ZT0iMSIgZGF0YXNpemU9IjgiIGRhdGF0eXBlPSJmbG9h"
        "dCIgbmFtZT0idGltZSIgdmVjdG9yc2l6ZT0iMiI+NDk8L1BBUkFNRVRFUj4KICAgPFZBUklBQkxFIGFycmF5c2l6ZT0iNCIgZGF0YXNpemU9"
        "IjQiIGRhdGF0eXBlPSJpbnQiIG1lc2g9IlNwYXRpYWxHcmlkIiBuYW1lPSJjZWxscyIgdmVjdG9yc2l6ZT0iMyI+NTc8L1ZBUklBQkxFPgog"
        "ICA8VkFSSUFCTEUgYXJyYXlzaXplPSIyIiBkYXRhc2l6ZT0iNCIgZGF0YXR5cGU9ImZsb2F0IiBtZXNoPSJmc2dyaWQiIG5hbWU9ImZnX2Ii"
        "IHVuaXQ9IlQiIHZlY3RvcnNpemU9IjIiPjEwNTwvVkFSSUFCTEU+CjwvVkxTVj4K"
    ),
}


@pytest.mark.parametrize("name", sorted(ATHERIS_FILES))
def test_files_atheris_found_are_refused(scratch, name):
    path = scratch / "atheris.vlsv"
    path.write_bytes(base64.b64decode(ATHERIS_FILES[name])[1:])
    with pytest.raises(VdfzipError):
        read_everything(path)


@pytest.mark.parametrize("sizes", [("0", str(1 << 63)), (str(1 << 63), "0"), ("0", "1" * 77)])
def test_empty_arrays_of_impossible_shapes_are_refused(scratch, sizes):
    """arraysize · vectorsize = 0 passed the bounds check, and numpy refused to shape the array."""
    path = scratch / "impossible.vlsv"
    footer = re.sub(r'arraysize="\d+"', f'arraysize="{sizes[0]}"', FOOTER, count=1)
    footer = re.sub(r'vectorsize="\d+"', f'vectorsize="{sizes[1]}"', footer, count=1)
    path.write_bytes(VLSV_BYTES[:FOOTER_AT] + footer.encode())
    with pytest.raises(VdfzipError, match="2⁶³ bytes"):
        read_everything(path)


@pytest.mark.parametrize("field", ["arraysize", "vectorsize"])
def test_negative_sizes_are_refused(scratch, field):
    """arraysize="-1" passed the bounds check and ``read`` raised IndexError."""
    path = scratch / "negative.vlsv"
    footer = FOOTER.replace(f'{field}="', f'{field}="-', 1)
    path.write_bytes(VLSV_BYTES[:FOOTER_AT] + footer.encode())
    with pytest.raises(VdfzipError, match="negative"):
        read_everything(path)


# ---------------------------------------------------------------- header and index

HEADER_SOURCES = [GOLDEN / f"{n}.vdfz.vlsv" for n in ("octree-restart-keep", "mlp-core-keep", "lossless-core-sorted")]
HEADERS = {}
for _source in HEADER_SOURCES:
    with CompressedFile(_source) as _f:
        HEADERS[_source] = _f.populations[POPULATION].header
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _near(value):
    """Values an edit of ``value`` may write: of any JSON type, or close to its own kind."""
    if isinstance(value, str):
        return st.sampled_from(sorted(codec_ids()) + ["nope", "<f2", "|u1", "linear", "auto", ""]) | json_values
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return st.sampled_from((0, -1, 1, 2**31, 2**64, 0.5, float("nan"), float("inf"), True)) | json_values
    return json_values


@st.composite
def edited_header(draw, header: dict, fields: tuple[str, ...] | None = None) -> dict:
    """``header`` with one to three values deleted, replaced or added, anywhere in its tree or
    in the given top-level ``fields``."""
    header = json.loads(json.dumps(header))
    for _ in range(draw(st.integers(1, 3))):
        if not set(fields or header) & set(header):
            break
        top = draw(st.sampled_from(sorted(set(fields or header) & set(header))))  # each field as likely
        inner = [p for p in _paths(header) if p[0] == top and len(p) > 1]
        path = draw(st.sampled_from(inner)) if inner and draw(st.booleans()) else (top,)
        parent = header
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(("delete", "replace", "add")))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(_near(parent[path[-1]]))
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values)
    return header


def decode_everything(path: Path, out: Path) -> None:
    """Open a compressed file, decode every cell of every population, then decode the whole file."""
    with CompressedFile(path) as f:
        for name, population in f.populations.items():
            for start, stop in population.batches():
                f.cells(name, start, stop)
            for cell in range(population.cell_count):
                population.block_ids(cell)
    decode_file(path, out, force=True, progress=False)


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(200)
@given(data=st.data())
def test_edited_headers_decode_or_refuse(scratch, data):
    source = data.draw(st.sampled_from(HEADER_SOURCES), label="source")
    header = data.draw(edited_header(HEADERS[source]), label="header")
    path = scratch / "header.vdfz.vlsv"
    reseal_with_header(source, path, POPULATION, json.dumps(header).encode())
    refused_or(decode_everything, path, scratch / "header.out.vlsv")


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(150)
@given(data=st.data())
def test_edited_codec_configs_decode_or_refuse(scratch, data):
    source = data.draw(st.sampled_from(HEADER_SOURCES), label="source")
    header = data.draw(edited_header(HEADERS[source], fields=("codecs",)), label="header")
    path = scratch / "codecs.vdfz.vlsv"
    reseal_with_header(source, path, POPULATION, json.dumps(header).encode())
    refused_or(decode_everything, path, scratch / "codecs.out.vlsv")


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(40)
@given(text=mutated(json.dumps(HEADERS[HEADER_SOURCES[0]]).encode()))
def test_mutated_header_text_decodes_or_refuses(scratch, text):
    path = scratch / "text.vdfz.vlsv"
    reseal_with_header(HEADER_SOURCES[0], path, POPULATION, text)
    refused_or(decode_everything, path, scratch / "text.out.vlsv")


INDEX_SOURCE = HEADER_SOURCES[0]
with CompressedFile(INDEX_SOURCE) as _f:
    INDEX = _f.populations[POPULATION].index.copy()


@st.composite
def edited_index(draw) -> bytes:
    """The zstd-coded index with fields changed or rows added, its raw bytes mutated, or a bomb."""
    kind = draw(st.sampled_from(("fields", "raw", "packed", "bomb")))
    rows = np.concatenate([INDEX[:0]] + [INDEX] * draw(st.integers(0, 3)))
    if kind == "fields":
        for _ in range(draw(st.integers(1, 3))):
            field = draw(st.sampled_from(INDEX.dtype.names))
            limit = 2 ** (8 * INDEX.dtype[field].itemsize) - 1
            if len(rows):
                rows[field][draw(st.integers(0, len(rows) - 1))] = draw(st.integers(0, limit) | st.integers(0, 3))
    if kind == "bomb":
        return ZSTD_BOMB
    raw = rows.tobytes()
    if kind == "raw":
        raw = draw(mutated(raw))
    packed = zstandard.compress(raw)
    return draw(mutated(packed)) if kind == "packed" else packed


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(200)
@given(packed=edited_index())
def test_edited_index_decodes_or_refuses(scratch, packed):
    path = scratch / "index.vdfz.vlsv"
    reseal_with_index(INDEX_SOURCE, path, POPULATION, packed)
    refused_or(decode_everything, path, scratch / "index.out.vlsv")


CHUNKED_SOURCE = GOLDEN.parent / "v4" / "octree-core-keep.vdfz.vlsv"
with vlsv.read(CHUNKED_SOURCE) as _f:
    CHUNKED_INDEX = bytes(_f.raw(_f.element("VDFZIP_INDEX", name=POPULATION)))


@st.composite
def edited_directory(draw) -> bytes:
    """Format 4's chunked index (one chunk here) with a directory field changed and the entry's
    checksum made anew, or any of its bytes changed."""
    size = chunks.DIRECTORY_DTYPE.itemsize
    if draw(st.booleans()):
        directory = np.frombuffer(CHUNKED_INDEX[:size], chunks.DIRECTORY_DTYPE).copy()
        field = draw(st.sampled_from(chunks.DIRECTORY_DTYPE.names[:-1]))
        limit = 2 ** (8 * chunks.DIRECTORY_DTYPE[field].itemsize) - 1
        directory[field][0] = draw(st.integers(0, limit) | st.integers(0, 3))
        directory["crc32"] = chunks.entry_checksums(directory)
        return directory.tobytes() + CHUNKED_INDEX[size:]
    data = bytearray(CHUNKED_INDEX)
    data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


@fuzz_settings(100)
@given(packed=edited_directory())
def test_edited_chunk_directory_decodes_or_refuses(scratch, packed):
    path = scratch / "directory.vdfz.vlsv"
    reseal_with_index(CHUNKED_SOURCE, path, POPULATION, packed)
    refused_or(decode_everything, path, scratch / "directory.out.vlsv")


with vlsv.read(INDEX_SOURCE) as _f:
    MANIFEST = json.loads(_f.raw(_f.element(integrity.TAG)).tobytes())


@pytest.fixture(scope="module")
def unedited_decode(scratch) -> bytes:
    """The bytes ``INDEX_SOURCE`` decodes to."""
    out = scratch / "unedited.out.vlsv"
    decode_file(INDEX_SOURCE, out, force=True, progress=False)
    return out.read_bytes()


@pytest.mark.filterwarnings("ignore::UserWarning")
@fuzz_settings(100)
@given(manifest=edited_header(MANIFEST))
def test_edited_integrity_manifest_is_refused(scratch, unedited_decode, manifest):
    """Any change to a field the manifest has is refused; added fields are ignored, and then the
    file decodes to the very bytes it decodes to unedited."""
    path, out = scratch / "manifest.vdfz.vlsv", scratch / "manifest.out.vlsv"
    reseal_with_integrity(INDEX_SOURCE, path, json.dumps(manifest).encode())
    if any(json.dumps(manifest.get(key)) != json.dumps(value) for key, value in MANIFEST.items()):
        with pytest.raises(integrity.IntegrityError):
            decode_everything(path, out)
    else:
        decode_everything(path, out)
        assert out.read_bytes() == unedited_decode


def test_resealed_files_decode(scratch):
    """The re-seal helpers themselves write files that decode: what the properties refuse is the edit."""
    for source, header in HEADERS.items():
        reseal_with_header(source, scratch / "same.vdfz.vlsv", POPULATION, json.dumps(header).encode())
        decode_everything(scratch / "same.vdfz.vlsv", scratch / "same.out.vlsv")
    reseal_with_index(INDEX_SOURCE, scratch / "same.vdfz.vlsv", POPULATION, zstandard.compress(INDEX.tobytes()))
    decode_everything(scratch / "same.vdfz.vlsv", scratch / "same.out.vlsv")
    reseal_with_integrity(INDEX_SOURCE, scratch / "same.vdfz.vlsv", json.dumps(MANIFEST).encode())
    decode_everything(scratch / "same.vdfz.vlsv", scratch / "same.out.vlsv")
    reseal_with_index(CHUNKED_SOURCE, scratch / "same.vdfz.vlsv", POPULATION, CHUNKED_INDEX)
    decode_everything(scratch / "same.vdfz.vlsv", scratch / "same.out.vlsv")
