"""Broken copies of a real VLSV file: one per kind of bad input the reader must refuse."""

from __future__ import annotations

import struct

import numpy as np

from vdfzip import vlsv
from vdfzip.errors import (
    ArrayOutOfBoundsError,
    CorruptFooterError,
    NotVlsvError,
    TruncatedFileError,
    UnsupportedFileError,
)


def corrupt_copy(tmp_path, source, edit):
    """A copy of ``source`` in ``tmp_path`` with ``edit`` applied to its bytes."""
    data = bytearray(source.read_bytes())
    data = edit(data) or data
    path = tmp_path / "bad.vlsv"
    path.write_bytes(bytes(data))
    return path


def _set_footer_offset(data, offset):
    data[8:16] = struct.pack("<Q", offset)


def _footer(data) -> tuple[int, str]:
    offset = struct.unpack_from("<Q", data, 8)[0]
    return offset, bytes(data[offset:]).decode()


BAD_INPUTS = {
    "text file": (lambda d: b"# just some text, not a VLSV file at all\n" * 3, NotVlsvError, "not a VLSV file"),
    "too short": (lambda d: d[:10], NotVlsvError, "shorter than the header"),
    "footer offset 0": (lambda d: _set_footer_offset(d, 0), TruncatedFileError, "did not finish"),
    "truncated": (lambda d: d[: len(d) // 2], TruncatedFileError, "truncated"),
    "big endian": (lambda d: d.__setitem__(0, 1), UnsupportedFileError, "big-endian"),
    "unparsable footer": (
        lambda d: d[: _footer(d)[0]] + _footer(d)[1].replace("<BLOCKIDS", "<BLOCKIDS <<").encode(),
        CorruptFooterError,
        "unparsable footer",
    ),
    "missing size attribute": (
        lambda d: d[: _footer(d)[0]] + _footer(d)[1].replace('datasize="4" ', "", 1).encode(),
        CorruptFooterError,
        "lacks datasize",
    ),
    "array past the end": (
        lambda d: d[: _footer(d)[0]]
        + _footer(d)[1].replace('arraysize="1390"', 'arraysize="999999"', 1).encode(),
        ArrayOutOfBoundsError,
        "runs past",
    ),
}


def copy_with_arrays(source, path, replace: dict):
    """Rewrite ``source`` with some arrays' contents replaced (same sizes unless given)."""
    with vlsv.read(source) as src, vlsv.VlsvWriter(path) as dst:
        for element in src.write_order():
            key = (element.tag, element.name)
            if key in replace:
                attrs = {k: v for k, v in element.attrs.items() if k not in vlsv.SIZE_ATTRIBUTES}
                dst.write_array(element.tag, replace[key], **attrs)
            else:
                dst.copy_element(element, src.raw(element))


def reseal_with_header(compressed, path, population, text: bytes):
    """A copy of a compressed file whose ``population`` header is ``text``, with its checksums
    made anew: what a vdfzip that wrote ``text`` would have written."""
    from vdfzip import integrity, layout
    from vdfzip.decode import CompressedFile

    with CompressedFile(compressed) as f:
        restored = f.restored_elements()
    with vlsv.read(compressed) as f, vlsv.VlsvWriter(path) as w:
        for e in f.write_order():
            if e.tag == "VDFZIP_HEADER" and e.name == population:
                attrs = {k: v for k, v in e.attrs.items() if k not in vlsv.SIZE_ATTRIBUTES}
                attrs["crc32"] = layout.checksum(text)
                w.write_array(e.tag, np.frombuffer(text, np.uint8), **attrs)
            elif e.tag != integrity.TAG:
                w.copy_element(e, f.raw(e))
        integrity.write(w, restored)


def reseal_with_index(compressed, path, population, packed: bytes):
    """A copy of a compressed file whose ``population`` VDFZIP_INDEX holds the bytes ``packed``, with
    the header's index checksum (formats 1-3), the header's own and the whole-file checksums made anew."""
    import json

    from vdfzip import integrity, layout
    from vdfzip.decode import CompressedFile

    with CompressedFile(compressed) as f:
        restored = f.restored_elements()
        header = json.loads(json.dumps(f.populations[population].header))
    if "checksums" in header:  # formats 1-3: the whole index's CRC (format 4 checks each chunk)
        header["checksums"]["index"] = layout.checksum(packed)
    replaced = {"VDFZIP_INDEX": packed, "VDFZIP_HEADER": json.dumps(header, sort_keys=True).encode()}
    with vlsv.read(compressed) as f, vlsv.VlsvWriter(path) as w:
        for e in f.write_order():
            if e.tag in replaced and e.name == population:
                attrs = {k: v for k, v in e.attrs.items() if k not in vlsv.SIZE_ATTRIBUTES}
                if e.tag == "VDFZIP_HEADER":
                    attrs["crc32"] = layout.checksum(replaced[e.tag])
                w.write_array(e.tag, np.frombuffer(replaced[e.tag], np.uint8), **attrs)
            elif e.tag != integrity.TAG:
                w.copy_element(e, f.raw(e))
        integrity.write(w, restored)


def reseal_with_integrity(compressed, path, text: bytes):
    """A copy of a compressed file whose ``VDFZIP_INTEGRITY`` holds ``text``, with its own checksum
    made anew (what a vdfzip that wrote ``text`` would have written)."""
    from vdfzip import integrity

    with vlsv.read(compressed) as f, vlsv.VlsvWriter(path) as w:
        for e in f.write_order():
            if e.tag != integrity.TAG:
                w.copy_element(e, f.raw(e))
        w.write_array(integrity.TAG, np.frombuffer(text, np.uint8), xxh3=vlsv.digest([text]))
