"""Whole-file integrity of a compressed file: no changed byte goes unnoticed.

The per-cell CRCs of :mod:`vdfzip.layout` protect the VDF records; a restart is more than that:
fields, mesh, CONFIG and the footer are copied as they are, and one changed byte there restarts
a run from a different state. So the encoder writes, as the last array, ``VDFZIP_INTEGRITY``: the
xxh3-64 of every other array's bytes (in write order), of the file's own footer without this
array's entry, and of the footer the decoded file must end with. Its own bytes are checked by its
``xxh3`` footer attribute. Since the arrays must also tile the data section with no gap, every
byte of the file is covered: the 16-byte header by the reader's own checks, each array by its
hash, the footer by being reproduced exactly and hashed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import xxhash

from . import vlsv
from .errors import CorruptFileError

TAG = "VDFZIP_INTEGRITY"
VERSION = 1
HASH = "xxh3-64"
_FIXED_ATTRS = {"datasize": "1", "datatype": "uint", "vectorsize": "1"}


class IntegrityError(CorruptFileError):
    """A byte of a compressed file differs from what was written."""


def laid_out(elements: Sequence[vlsv.Element]) -> list[vlsv.Element]:
    """The elements at the offsets :class:`vlsv.VlsvWriter` gives them when it writes them in
    this order: from the end of the header, array after array."""
    laid, offset = [], vlsv.HEADER_BYTES
    for e in elements:
        laid.append(vlsv.Element(e.tag, e.attrs, offset))
        offset += e.nbytes
    return laid


def restored_footer(elements: Sequence[vlsv.Element]) -> bytes:
    """The footer :class:`vlsv.VlsvWriter` writes for these elements written in this order."""
    return vlsv.format_footer(laid_out(elements))


def manifest(elements: Sequence[vlsv.Element], digests: Sequence[str], restored: Sequence[vlsv.Element]) -> bytes:
    """The ``VDFZIP_INTEGRITY`` text for a file of ``elements`` (in write order) whose bytes
    hash to ``digests``; ``restored``: the elements the decoded file will hold, in its order."""
    return json.dumps({
        "version": VERSION,
        "hash": HASH,
        "arrays": list(digests),
        "footer": vlsv.digest([vlsv.format_footer(list(elements))]),
        "restored_footer": vlsv.digest([restored_footer(restored)]),
    }).encode()


def attrs(text: bytes) -> dict[str, str]:
    """The footer attributes of ``VDFZIP_INTEGRITY`` besides its size."""
    return {"xxh3": vlsv.digest([text])}


def write(writer: vlsv.VlsvWriter, restored: Sequence[vlsv.Element]) -> None:
    """Append ``VDFZIP_INTEGRITY`` for everything ``writer`` has written so far."""
    text = manifest(writer.elements, writer.digests, restored)
    writer.write_array(TAG, np.frombuffer(text, np.uint8), **attrs(text))


@dataclass(frozen=True)
class Manifest:
    """The checked ``VDFZIP_INTEGRITY`` of an open file: what every array and footer must hash to."""

    file: vlsv.VlsvFile
    digests: dict[int, str]  # id() of each other element → the xxh3 of its bytes
    restored_footer_digest: str

    @classmethod
    def read(cls, file: vlsv.VlsvFile) -> Manifest | None:
        """The file's manifest after checking it, the footer and the layout; None without one."""
        found = file.find_all(TAG)
        if not found:
            return None
        where = f"{file.path}: {TAG}"
        if len(found) > 1:
            raise IntegrityError(f"{where} appears {len(found)} times")
        element = found[0]
        if set(element.attrs) != set(_FIXED_ATTRS) | {"arraysize", "xxh3"} or any(
            element.attrs[k] != v for k, v in _FIXED_ATTRS.items()
        ):
            raise IntegrityError(f"{where} has changed footer attributes")
        text = file.raw(element).tobytes()
        if vlsv.digest([text]) != element.attrs["xxh3"]:
            raise IntegrityError(f"{where} fails its checksum")
        try:
            entry = json.loads(text)
            arrays, footer, restored = entry["arrays"], entry["footer"], entry["restored_footer"]
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"{where} does not parse") from exc
        if not isinstance(arrays, list):  # why: len() of anything else raised TypeError
            raise IntegrityError(f"{where} does not list the arrays' digests")
        version, algorithm = entry.get("version"), entry.get("hash")
        if type(version) is not int or version != VERSION or algorithm != HASH:  # why: True == 1.0 == 1
            raise IntegrityError(f"{where} is version {version!r} with hash {algorithm!r}; "
                                 f"this vdfzip checks version {VERSION} with {HASH}")
        order = file.write_order()
        if file.raw_footer() != vlsv.format_footer(order):
            raise IntegrityError(f"{file.path}: the footer has been changed (it is not as vdfzip wrote it)")
        others = [e for e in order if e is not element]
        if order[-1] is not element or len(arrays) != len(others) or vlsv.digest([vlsv.format_footer(others)]) != footer:
            raise IntegrityError(f"{file.path}: the footer has been changed (its arrays or their attributes differ)")
        _check_tiling(file, order)
        return cls(file, {id(e): d for e, d in zip(others, arrays)}, restored)

    def chunks(self, element: vlsv.Element) -> Iterator[memoryview]:
        """``element``'s bytes in pieces; after the last one, raise if they are not as written."""
        hasher = xxhash.xxh3_64()
        for piece in self.file.raw_chunks(element):
            hasher.update(piece)
            yield piece
        if hasher.hexdigest() != self.digests[id(element)]:
            name = f" {element.name}" if element.name else ""
            raise IntegrityError(f"{self.file.path}: array {element.tag}{name} is damaged (fails its checksum)")

    def check(self, element: vlsv.Element) -> None:
        """Raise :class:`IntegrityError` unless ``element``'s bytes are as written."""
        for _ in self.chunks(element):
            pass

    def check_restored_footer(self, footer: bytes) -> None:
        """Raise unless ``footer`` is the footer of the file that was encoded."""
        if vlsv.digest([footer]) != self.restored_footer_digest:
            raise IntegrityError(f"{self.file.path}: the restored footer differs from the original's")


def _check_tiling(file: vlsv.VlsvFile, order: list[vlsv.Element]) -> None:
    """The arrays must cover the data section byte for byte: no gap holds unchecked bytes."""
    position = vlsv.HEADER_BYTES
    for e in order:
        if e.nbytes and e.offset != position:
            raise IntegrityError(f"{file.path}: bytes {position}–{e.offset} belong to no array (the file was changed)")
        position = max(position, e.offset + e.nbytes)
    if position != file.footer_offset:
        raise IntegrityError(f"{file.path}: bytes {position}–{file.footer_offset} belong to no array (the file was changed)")
