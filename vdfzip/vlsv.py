"""The VLSV container: arrays, tags, attributes and the exact footer of the C++ writer.

Layer 1 of vdfzip: knows nothing of physics. A file is opened through a read-only memory map,
so opening a multi-TiB restart only parses its footer, and reading one array touches only that
array's pages. Touched pages of a map count in the process's resident set until the kernel needs
the memory, so the reader hands them back after every ``RELEASE_BYTES`` it hands out: streaming a
file of any size keeps RSS bounded (the pages stay in the page cache). The writer reproduces the
footer of ``fmihpc/vlsv`` byte for byte (see ``shared/VLSV.md``): elements sorted by tag
(stable), attributes sorted by name, 3-space indent, no escaping.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from .errors import (
    ArrayOutOfBoundsError,
    CorruptFooterError,
    MissingArrayError,
    NotVlsvError,
    TruncatedFileError,
    UnsupportedFileError,
)
from .fileio import atomic_output

HEADER_BYTES = 16
SIZE_ATTRIBUTES = ("arraysize", "vectorsize", "datasize", "datatype")
_KIND_OF_DATATYPE = {"int": "i", "uint": "u", "float": "f"}
_DATATYPE_OF_KIND = {"i": "int", "u": "uint", "f": "float", "b": "uint"}
_ELEMENT = re.compile(r'<([A-Za-z_][\w.-]*)((?:\s+[^\s=>]+="[^"]*")*)\s*>\s*(\d+)\s*</\1>')
_ATTRIBUTE = re.compile(r'([^\s=>]+)="([^"]*)"')
RELEASE_BYTES = 1 << 26  # map bytes handed out between two releases of the map's resident pages


@dataclass(frozen=True)
class Element:
    """One array of a VLSV file: its tag, all its footer attributes (as strings) and offset."""

    tag: str
    attrs: Mapping[str, str]
    offset: int

    def _int(self, key: str) -> int:
        return int(self.attrs[key])

    @property
    def arraysize(self) -> int:
        return self._int("arraysize")

    @property
    def vectorsize(self) -> int:
        return self._int("vectorsize")

    @property
    def datasize(self) -> int:
        return self._int("datasize")

    @property
    def datatype(self) -> str:
        return self.attrs["datatype"]

    @property
    def name(self) -> str | None:
        return self.attrs.get("name")

    @property
    def mesh(self) -> str | None:
        return self.attrs.get("mesh")

    @property
    def nbytes(self) -> int:
        return self.arraysize * self.vectorsize * self.datasize

    @property
    def dtype(self) -> np.dtype:
        """Little-endian numpy dtype from ``datatype`` and ``datasize``."""
        kind = _KIND_OF_DATATYPE.get(self.datatype)
        if kind is None or (kind == "f" and self.datasize not in (2, 4, 8)) or self.datasize not in (1, 2, 4, 8):
            raise UnsupportedFileError(
                f"{self.describe()}: datatype {self.datatype!r} with datasize {self.datasize} is not supported"
            )
        return np.dtype(f"<{kind}{self.datasize}")

    def matches(self, tag: str, attrs: Mapping[str, str]) -> bool:
        """True if this element has ``tag`` and every attribute in ``attrs`` (as the C++ reader)."""
        return self.tag == tag and all(self.attrs.get(k) == str(v) for k, v in attrs.items())

    def size_problem(self) -> str | None:
        """What makes the size attributes unusable (missing, not integers, negative, a dimension of
        2⁶³ bytes or more), or None. Why the last two: they passed the bounds check (``nbytes``
        negative, or 0 when the other dimension is) and then broke ``read`` with an IndexError or
        a ValueError of numpy, which cannot shape such an array even when it is empty."""
        missing = [k for k in SIZE_ATTRIBUTES if k not in self.attrs]
        if missing:
            return f"lacks {', '.join(missing)}"
        try:
            sizes = (self.arraysize, self.vectorsize, self.datasize)
        except ValueError:
            return "has a non-integer size"
        if min(sizes) < 0:
            return "has a negative size"
        return "has a dimension of 2⁶³ bytes or more" if max(sizes[:2]) * sizes[2] >= 1 << 63 else None

    def describe(self) -> str:
        """A short human name, e.g. ``BLOCKIDS name=proton``."""
        keys = [k for k in ("name", "mesh") if k in self.attrs]
        return " ".join([self.tag] + [f"{k}={self.attrs[k]}" for k in keys])


def _parse_footer(text: str, path: Path) -> list[Element]:
    body = text.strip()
    if not body.startswith("<VLSV>") or not body.endswith("</VLSV>"):
        raise CorruptFooterError(f"{path}: the footer is not a <VLSV> element")
    inner = body[len("<VLSV>") : -len("</VLSV>")]
    elements, position = [], 0
    for match in _ELEMENT.finditer(inner):
        if inner[position : match.start()].strip():
            raise CorruptFooterError(f"{path}: unparsable footer near {inner[position:match.start()][:60]!r}")
        position = match.end()
        attrs = dict(_ATTRIBUTE.findall(match.group(2)))
        element = Element(match.group(1), attrs, int(match.group(3)))
        problem = element.size_problem()
        if problem:
            raise CorruptFooterError(f"{path}: footer element {element.describe()} {problem}")
        elements.append(element)
    if inner[position:].strip():
        raise CorruptFooterError(f"{path}: unparsable footer near {inner[position:][:60]!r}")
    return elements


class MappedBytes:
    """A file's bytes through a read-only memory map: views of it, no copies."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            self.size = os.fstat(handle.fileno()).st_size
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if self.size else b""

    def view(self, start: int, stop: int) -> memoryview:
        """Bytes ``[start, stop)``."""
        return memoryview(self._map)[start:stop]

    def release(self) -> None:
        """Drop every page of the map from this process's resident set (``MADV_DONTNEED``); a
        no-op where ``madvise`` is missing (Windows)."""
        if hasattr(mmap, "MADV_DONTNEED") and isinstance(self._map, mmap.mmap) and not self._map.closed:
            self._map.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        """Release the map; arrays still referenced keep it alive until they are dropped."""
        if isinstance(self._map, mmap.mmap):
            with contextlib.suppress(BufferError):
                self._map.close()


class VlsvFile:
    """A VLSV file opened read-only, by default over a memory map. Use :func:`read` to open one.

    ``data`` is where its bytes come from instead: anything with ``size``, ``view(start, stop)``,
    ``release()`` and ``close()`` (an MPI rank's reader, :class:`vdfzip.distributed.RankBytes`)."""

    def __init__(self, path: str | os.PathLike, data=None):
        self.path = Path(path)
        self._data = MappedBytes(self.path) if data is None else data
        self.size = self._data.size
        if self.size < HEADER_BYTES:
            raise NotVlsvError(f"{self.path}: not a VLSV file ({self.size} bytes, shorter than the header)")
        self._handed_out = 0
        endianness, footer = struct.unpack_from("<QQ", self._data.view(0, HEADER_BYTES), 0)
        if endianness & 0xFF not in (0, 1) or endianness >> 8:
            raise NotVlsvError(f"{self.path}: not a VLSV file (bad endianness marker {endianness:#x})")
        if endianness == 1:
            raise UnsupportedFileError(f"{self.path}: big-endian VLSV files are not supported")
        if footer == 0:
            raise TruncatedFileError(f"{self.path}: footer offset is 0: the writer did not finish this file")
        if footer < HEADER_BYTES or footer >= self.size:
            raise TruncatedFileError(
                f"{self.path}: footer offset {footer} is beyond the end of the file ({self.size} bytes): truncated"
            )
        self.footer_offset = footer
        try:
            text = bytes(self._data.view(footer, self.size)).decode("ascii")
        except UnicodeDecodeError as exc:
            raise NotVlsvError(f"{self.path}: not a VLSV file (footer is not ASCII text)") from exc
        self.elements: tuple[Element, ...] = tuple(_parse_footer(text, self.path))
        for element in self.elements:
            if element.offset < HEADER_BYTES or element.offset + element.nbytes > footer:
                raise ArrayOutOfBoundsError(
                    f"{self.path}: array {element.describe()} ({element.nbytes} bytes at offset "
                    f"{element.offset}) runs past the data section, which ends at {footer}"
                )

    def __enter__(self) -> VlsvFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the file's bytes (a map: arrays still referenced keep it alive until dropped)."""
        self._data.close()

    def find(self, tag: str, **attrs) -> Element | None:
        """The first element with ``tag`` and all ``attrs``, or None."""
        return next((e for e in self.elements if e.matches(tag, attrs)), None)

    def find_all(self, tag: str, **attrs) -> list[Element]:
        """Every element with ``tag`` and all ``attrs``, in footer order."""
        return [e for e in self.elements if e.matches(tag, attrs)]

    def element(self, tag: str, **attrs) -> Element:
        """Like :meth:`find`, but a missing element raises :class:`MissingArrayError`."""
        found = self.find(tag, **attrs)
        if found is None:
            wanted = " ".join([tag] + [f"{k}={v}" for k, v in attrs.items()])
            raise MissingArrayError(f"{self.path}: no array {wanted}")
        return found

    def read(self, element: Element | str, **attrs) -> np.ndarray:
        """The whole array as a read-only view of the map: shape (n,) or (n, vectorsize)."""
        if isinstance(element, str):
            element = self.element(element, **attrs)
        return self.read_rows(element, 0, element.arraysize)

    def read_rows(self, element: Element, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of an array without touching the others."""
        if not 0 <= start <= stop <= element.arraysize:
            raise IndexError(f"rows [{start}, {stop}) outside {element.describe()} of {element.arraysize} rows")
        dtype, vs = element.dtype, element.vectorsize
        self._count((stop - start) * vs * dtype.itemsize)
        first = element.offset + start * vs * dtype.itemsize
        data = np.frombuffer(self._data.view(first, first + (stop - start) * vs * dtype.itemsize), dtype)
        return data if vs == 1 else data.reshape(stop - start, vs)

    def read_text(self, element: Element | str, **attrs) -> str:
        """A char array (``CONFIG``, ``VERSION``) as text, without trailing NULs."""
        return self.read(element, **attrs).tobytes().decode("utf-8", errors="replace").rstrip("\0")

    def raw(self, element: Element, start: int = 0, stop: int | None = None) -> memoryview:
        """The array's bytes (or its bytes ``[start, stop)``), unparsed."""
        stop = element.nbytes if stop is None else min(stop, element.nbytes)
        self._count(stop - start)
        return self._data.view(element.offset + start, element.offset + stop)

    def raw_footer(self) -> bytes:
        """The footer's bytes, as they are in the file."""
        return bytes(self._data.view(self.footer_offset, self.size))

    def raw_chunks(self, element: Element, size: int = RELEASE_BYTES // 4) -> Iterator[memoryview]:
        """The array's bytes in pieces of at most ``size``, each counted when handed out, so that
        copying or comparing a huge array keeps only a few of its pages resident."""
        for start in range(element.offset, element.offset + element.nbytes, size):
            stop = min(start + size, element.offset + element.nbytes)
            self._count(stop - start)
            yield self._data.view(start, stop)

    def _count(self, nbytes: int) -> None:
        """Note ``nbytes`` more handed out; past :data:`RELEASE_BYTES`, release the map's pages first."""
        self._handed_out += nbytes
        if self._handed_out > RELEASE_BYTES:
            self.release_pages()

    def release_pages(self) -> None:
        """Drop the pages of the file's map from this process's resident set.

        Why: a streamed read of a 2 GB file would otherwise leave 2 GB resident. Arrays already
        handed out stay valid: the file is read-only, and a released page is mapped back from the
        page cache when touched again."""
        self._handed_out = 0
        self._data.release()

    def write_order(self) -> list[Element]:
        """Elements in the order their bytes lie in the file (the order they were written)."""
        position = {id(e): i for i, e in enumerate(self.elements)}
        return sorted(self.elements, key=lambda e: (e.offset, e.nbytes > 0, position[id(e)]))


def read(path: str | os.PathLike) -> VlsvFile:
    """Open a VLSV file for reading (memory-mapped; only the footer is parsed)."""
    return VlsvFile(path)


def format_footer(elements: list[Element]) -> bytes:
    """The footer exactly as the C++ writer prints it, for elements given in write order."""
    lines = ["<VLSV>"]
    for e in sorted(elements, key=lambda e: e.tag.encode()):
        attrs = " ".join(f'{k}="{v}"' for k, v in sorted(e.attrs.items(), key=lambda kv: kv[0].encode()))
        lines.append(f"   <{e.tag} {attrs}>{e.offset}</{e.tag}>")
    lines.append("</VLSV>\n")
    return "\n".join(lines).encode("ascii")


def digest(pieces: Iterable[bytes | memoryview]) -> str:
    """xxh3-64 (hex) of the concatenated ``pieces``: ~18 GB/s, so hashing every array a file
    holds costs far less than reading it."""
    hasher = xxhash.xxh3_64()
    for piece in pieces:
        hasher.update(piece)
    return hasher.hexdigest()


def array_attrs(dtype, arraysize: int, vectorsize: int, **attrs) -> dict[str, str]:
    """The footer attributes :meth:`VlsvWriter.write_array` gives an array of ``arraysize`` rows."""
    return {k: str(v) for k, v in attrs.items()} | _size_attrs(np.dtype(dtype), arraysize, vectorsize)


def little_endian_bytes(data: np.ndarray) -> memoryview:
    """An array's bytes as a VLSV file stores them."""
    data = np.asarray(data)
    return np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).data


def file_header(footer_offset: int) -> bytes:
    """The 16 bytes a VLSV file starts with: the little-endian marker and the footer's offset."""
    return struct.pack("<QQ", 0, footer_offset)


def _size_attrs(dtype: np.dtype, arraysize: int, vectorsize: int) -> dict[str, str]:
    return {
        "arraysize": str(arraysize),
        "vectorsize": str(vectorsize),
        "datasize": str(dtype.itemsize),
        "datatype": _DATATYPE_OF_KIND[dtype.kind],
    }


class ArraySink:
    """An array being written piecewise: rows are appended with :meth:`write`."""

    def __init__(self, handle, dtype: np.dtype, vectorsize: int):
        self._handle, self.dtype, self.vectorsize, self.rows = handle, np.dtype(dtype), vectorsize, 0
        self.hasher = xxhash.xxh3_64()

    def write(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        if rows.dtype != self.dtype:
            raise TypeError(f"expected {self.dtype}, got {rows.dtype}")
        if rows.size % self.vectorsize:
            raise ValueError(f"{rows.size} values are not a whole number of rows of {self.vectorsize}")
        data = little_endian_bytes(rows)
        self._handle.write(data)
        self.hasher.update(data)
        self.rows += rows.size // self.vectorsize


class VlsvWriter:
    """Writes a VLSV file atomically: arrays are appended in order, the footer goes last.

    Use as a context manager; the file appears at ``path`` only if the block completes.
    ``digests[i]`` is the :func:`digest` of the bytes of ``elements[i]``, as written.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.elements: list[Element] = []
        self.digests: list[str] = []
        self._stack = contextlib.ExitStack()
        self._handle = None

    def __enter__(self) -> VlsvWriter:
        tmp = self._stack.enter_context(atomic_output(self.path))
        self._handle = self._stack.enter_context(open(tmp, "wb"))
        self._handle.write(struct.pack("<QQ", 0, 0))
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._write_footer()
            except BaseException as error:
                self._stack.__exit__(type(error), error, error.__traceback__)
                raise
        return self._stack.__exit__(exc_type, exc, tb)

    def _write_footer(self) -> None:
        footer = self._handle.tell()
        self._handle.write(format_footer(self.elements))
        self._handle.seek(8)
        self._handle.write(struct.pack("<Q", footer))

    def write_array(self, tag: str, data: np.ndarray, **attrs) -> Element:
        """Append a whole array; its size attributes come from ``data`` (1-D or 2-D)."""
        data = np.asarray(data)
        if data.ndim not in (1, 2):
            raise ValueError("VLSV arrays are 1-D or (rows, vectorsize)")
        vectorsize = 1 if data.ndim == 1 else data.shape[1]
        with self.stream_array(tag, data.dtype, vectorsize, **attrs) as sink:
            sink.write(data)
        return self.elements[-1]

    @contextlib.contextmanager
    def _stream(self, tag: str, dtype, vectorsize: int, attributes_of) -> Iterator[ArraySink]:
        offset = self._handle.tell()
        sink = ArraySink(self._handle, dtype, vectorsize)
        yield sink
        self.elements.append(Element(tag, attributes_of(sink), offset))
        self.digests.append(sink.hasher.hexdigest())

    def stream_array(self, tag: str, dtype, vectorsize: int = 1, **attrs):
        """Context manager: append an array written in pieces through the yielded :class:`ArraySink`."""

        def attributes_of(sink: ArraySink) -> dict[str, str]:
            return array_attrs(sink.dtype, sink.rows, vectorsize, **attrs)

        return self._stream(tag, dtype, vectorsize, attributes_of)

    def stream_like(self, element: Element):
        """Context manager: append, in pieces, an array with exactly the footer attributes of
        ``element`` (e.g. one being restored); the rows written must add up to its arraysize."""

        def attributes_of(sink: ArraySink) -> dict[str, str]:
            if sink.rows != element.arraysize:
                raise ValueError(f"{element.describe()}: {sink.rows} rows written, {element.arraysize} expected")
            return dict(element.attrs)

        return self._stream(element.tag, element.dtype, element.vectorsize, attributes_of)

    def copy_element(self, element: Element, data: bytes | memoryview | Iterable[bytes | memoryview]) -> Element:
        """Append an array with exactly the attributes (and bytes) of an existing element; ``data``
        is its bytes or an iterable of pieces (:meth:`VlsvFile.raw_chunks`). A wrong byte count
        raises and leaves the file as it was."""
        pieces = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
        copied = Element(element.tag, dict(element.attrs), self._handle.tell())
        hasher, written = xxhash.xxh3_64(), 0
        for piece in pieces:
            written += self._handle.write(piece)
            hasher.update(piece)
        if written != element.nbytes:
            self._handle.seek(copied.offset)
            self._handle.truncate()
            raise ValueError(f"{element.describe()}: {written} bytes given, {element.nbytes} expected")
        self.elements.append(copied)
        self.digests.append(hasher.hexdigest())
        return copied


def rewrite(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copy a VLSV file array by array through the reader and writer (byte-identical result)."""
    with read(source) as src, VlsvWriter(destination) as dst:
        for element in src.write_order():
            dst.copy_element(element, src.raw_chunks(element))
