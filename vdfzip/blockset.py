"""Lossless coding of a cell's block ids: the sorted set as runs, plus optionally the order.

A cell's blocks form a compact blob on the 3-D block grid, so its sorted ids are long runs of
consecutive ids: stored as LEB128 varints of (gap, run length) pairs, zstd-coded when that is
smaller. Vlasiator stores blocks in an arbitrary order that no model reproduces; keeping it
costs a permutation (varints of zigzagged rank differences, zstd-coded), typically 5–7× the
bytes of the set itself (measured on ``restart_ipshock_small``: 7.0 kB set, 46.7 kB order for
48,538 blocks), so it is optional. The restart profile adds a section of its own, the coded
content-block set (:mod:`vdfzip.content`), carried here as opaque bytes.
"""

from __future__ import annotations

import numpy as np
import zstandard

from .errors import VdfzipError

_HAS_ORDER, _RUNS_ZSTD, _ORDER_ZSTD, _HAS_CONTENT = 1, 2, 4, 8
_ZSTD_LEVEL = 19
#: Bytes of the longest LEB128 varint of a uint64: bounds the varint bytes a count of values needs.
VARINT_BYTES = 10
#: Block ids are uint32: without a mesh, every id below 2³² is possible.
UINT32_IDS = 1 << 32


class BlockSetError(VdfzipError):
    """Block-structure bytes that do not decode."""


def bounded_decompress(data: bytes, limit: int, error: type[VdfzipError], what: str) -> bytes:
    """The zstd frame ``data`` decoded, or ``error`` if it is corrupt or would exceed ``limit`` bytes.

    Why: ``ZstdDecompressor.decompress`` allocates whatever content size a frame header claims,
    ``max_output_size`` notwithstanding, so 20 corrupt bytes could ask for a terabyte; every
    decoder of stored zstd frames goes through here with the most its format can hold."""
    try:
        claimed = zstandard.frame_content_size(data)
        if claimed > limit:
            raise error(f"{what} claims {claimed} bytes, at most {limit} possible")
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=max(limit, 1))  # 0: no limit
    except zstandard.ZstdError as exc:
        raise error(f"{what} does not decompress: {exc}") from exc


def varint_encode(values: np.ndarray) -> bytes:
    """LEB128 bytes of non-negative integers (7 bits a byte, high bit = more bytes follow)."""
    x = np.asarray(values, dtype=np.uint64)
    widths = np.ones(len(x), dtype=np.int64)
    for k in range(1, 10):
        widths += x >= np.uint64(1) << np.uint64(7 * k)
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    out = np.zeros(int(widths.sum()), dtype=np.uint8)
    for k in range(int(widths.max(initial=0))):
        rows = widths > k
        group = (x[rows] >> np.uint64(7 * k)) & np.uint64(0x7F)
        more = np.where(widths[rows] - 1 > k, 0x80, 0).astype(np.uint64)
        out[starts[rows] + k] = (group | more).astype(np.uint8)
    return out.tobytes()


def varint_decode(data: bytes) -> np.ndarray:
    """Inverse of :func:`varint_encode` (uint64)."""
    b = np.frombuffer(data, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.uint64)
    last = (b & 0x80) == 0
    if not last[-1]:
        raise BlockSetError("truncated varint stream")
    ends = np.flatnonzero(last)
    starts = np.concatenate([[0], ends[:-1] + 1])
    position = np.arange(b.size) - np.repeat(starts, ends - starts + 1)
    if position.max() >= 10:
        raise BlockSetError("varint longer than 64 bits")
    groups = (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(groups, starts)


def _zigzag(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.int64)
    return ((x << 1) ^ (x >> 63)).astype(np.uint64)


def _unzigzag(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.uint64)
    return ((z >> np.uint64(1)).astype(np.int64)) ^ -((z & np.uint64(1)).astype(np.int64))


def _smaller(raw: bytes, flag: int) -> tuple[bytes, int]:
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw)
    return (packed, flag) if len(packed) < len(raw) else (raw, 0)


def _unpack(data: bytes, zstd: bool, values: int) -> bytes:
    """The varint bytes of a section of at most ``values`` varints, decompressed if ``zstd``."""
    return bounded_decompress(data, VARINT_BYTES * values, BlockSetError, "block structure") if zstd else data


def decoded_order(block_ids: np.ndarray, offsets: np.ndarray, keep_order: bool) -> np.ndarray:
    """Row permutation that puts every cell's blocks (``block_ids[offsets[i]:offsets[i+1]]``) in
    the order :func:`decode` lists them: as given if ``keep_order``, else sorted by id. The one
    place that decides the decoded order: the encoder moves ids and values by it before any codec,
    content set or acceptance check sees them, so all of them work on the rows decode produces."""
    rows = np.arange(len(block_ids))
    if keep_order:
        return rows
    cell_of_row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.lexsort((np.asarray(block_ids, dtype=np.int64), cell_of_row))


def encode(block_ids: np.ndarray, keep_order: bool = True, content: bytes | None = None) -> bytes:
    """Bytes from which :func:`decode` recovers the ids (in their order if ``keep_order``, else
    sorted ascending) and the ``content`` section if one is given."""
    ids = np.asarray(block_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    if np.any(np.diff(ordered) == 0):
        raise BlockSetError("a cell lists the same block id twice")
    breaks = np.flatnonzero(np.diff(ordered) != 1)
    run_starts = np.concatenate([ordered[:1], ordered[breaks + 1]])
    run_ends = np.concatenate([ordered[breaks], ordered[-1:]])
    gaps = run_starts - np.concatenate([[0], run_ends[:-1] + 1])
    runs, flags = _smaller(varint_encode(np.stack([gaps, run_ends - run_starts + 1], axis=1).ravel()), _RUNS_ZSTD)
    parts = [varint_encode([len(runs)]), runs]
    if content is not None:
        parts += [varint_encode([len(content)]), content]
        flags |= _HAS_CONTENT
    if keep_order:
        rank = np.empty(len(ids), dtype=np.int64)
        rank[order] = np.arange(len(ids))
        permutation, order_flag = _smaller(varint_encode(_zigzag(np.diff(rank, prepend=0))), _ORDER_ZSTD)
        parts.append(permutation)
        flags |= _HAS_ORDER | order_flag
    return bytes([flags]) + b"".join(parts)


def _sized_section(data: bytes, start: int) -> tuple[bytes, int]:
    """The varint-length-prefixed section at ``start`` and the position after it."""
    head = data[start : start + 10]
    last = next((i for i, byte in enumerate(head) if byte < 0x80), None)
    if last is None:
        raise BlockSetError("block structure header is truncated")
    length = int(varint_decode(head[: last + 1])[0])
    body = start + last + 1
    if body + length > len(data):
        raise BlockSetError("block structure is truncated")
    return data[body : body + length], body + length


def _sorted_ids(pairs: np.ndarray, block_count: int) -> np.ndarray:
    """The ascending ids of (gap, run length) pairs, all below ``block_count``. Checked before
    anything is allocated: a corrupt length (2⁶⁰ ids, or negative once cast to int64) must not
    size an array."""
    if pairs.size % 2:
        raise BlockSetError("block structure is truncated")
    if pairs.size and int(pairs.max()) > block_count:
        raise BlockSetError(f"block structure names ids beyond the {block_count} blocks of the mesh")
    gaps, lengths = pairs[0::2].astype(np.int64), pairs[1::2].astype(np.int64)
    run_starts = np.cumsum(gaps + np.concatenate([[0], lengths[:-1]]))
    if len(run_starts) and run_starts[-1] + lengths[-1] > block_count:
        raise BlockSetError(f"block structure names ids beyond the {block_count} blocks of the mesh")
    first_index = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return np.repeat(run_starts - first_index, lengths) + np.arange(lengths.sum())


def decode(data: bytes, block_count: int = UINT32_IDS) -> tuple[np.ndarray, bytes | None]:
    """uint32 block ids and the content section (None if absent) coded by :func:`encode`; every
    id must be below ``block_count`` (callers that know the mesh pass its block count)."""
    if not data:
        raise BlockSetError("empty block structure")
    flags = data[0]
    runs, end = _sized_section(data, 1)
    content = None
    if flags & _HAS_CONTENT:
        content, end = _sized_section(data, end)
    ordered = _sorted_ids(varint_decode(_unpack(runs, bool(flags & _RUNS_ZSTD), 2 * block_count)), block_count)
    if not flags & _HAS_ORDER:
        return ordered.astype(np.uint32), content
    rank = np.cumsum(_unzigzag(varint_decode(_unpack(data[end:], bool(flags & _ORDER_ZSTD), len(ordered)))))
    if len(rank) != len(ordered) or (len(rank) and (rank.min() < 0 or rank.max() >= len(ordered))):
        raise BlockSetError("block order does not match the block set")
    if len(np.unique(rank)) != len(rank):  # why: a repeated rank listed one block twice
        raise BlockSetError("block order lists a block twice")
    return ordered[rank].astype(np.uint32), content
