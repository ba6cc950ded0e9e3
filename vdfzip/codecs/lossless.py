"""``lossless``: the exact fallback that always meets any tolerance.

Values are byte-shuffled (all first bytes, then all second bytes, ...: exponents group
together) and zstd-coded; the stored dtype (float32 or float64) is kept, so decoding is
bit-exact.
"""

from __future__ import annotations

import numpy as np
import zstandard

from ..blockset import bounded_decompress
from . import Codec, PayloadError, register_codec
from ..vlasiator import VelocityMesh

_DTYPES = {4: np.dtype("<f4"), 8: np.dtype("<f8")}


@register_codec
class Lossless(Codec):
    codec_id = "lossless"
    version = 1
    retry_tighter = False  # exact already

    def __init__(self, level: int = 9):
        self.level = level

    def get_config(self) -> dict:
        return {"level": self.level}

    def encode_cell(self, block_ids: np.ndarray, values: np.ndarray, mesh: VelocityMesh, target=None) -> bytes:
        values = np.asarray(values)
        dtype = _DTYPES[values.dtype.itemsize] if values.dtype.kind == "f" else _DTYPES[8]
        raw = np.ascontiguousarray(values, dtype=dtype).view(np.uint8).reshape(-1, dtype.itemsize)
        shuffled = np.ascontiguousarray(raw.T)
        return bytes([self.version, dtype.itemsize]) + zstandard.ZstdCompressor(level=self.level).compress(shuffled)

    def decode_cell(self, payload: bytes, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
        values = np.empty((len(block_ids), mesh.cells_per_block))
        self.decode_into(payload, values)
        return values

    def decode_into(self, payload: bytes, out: np.ndarray) -> None:
        """Write a cell's stored values into ``out`` (its ``(blocks, wid³)`` rows of any float
        dtype): bit for bit when ``out`` has the stored dtype, with no float64 pass between (the
        decoder's and the encoder's path for lossless cells)."""
        self.check_version(payload)
        if len(payload) < 2 or payload[1] not in _DTYPES:
            raise PayloadError("lossless payload has no valid dtype byte")
        dtype = _DTYPES[payload[1]]
        count = out.size
        shuffled = bounded_decompress(payload[2:], count * dtype.itemsize, PayloadError, "lossless payload")
        if len(shuffled) != count * dtype.itemsize:
            raise PayloadError(f"lossless payload holds {len(shuffled)} bytes, expected {count * dtype.itemsize}")
        planes = np.frombuffer(shuffled, np.uint8).reshape(dtype.itemsize, count)
        exact = out if out.dtype == dtype and out.flags.c_contiguous else np.empty(out.shape, dtype)
        unshuffled = exact.reshape(-1).view(np.uint8).reshape(count, dtype.itemsize)
        for byte, plane in enumerate(planes):  # one plane at a time: ~3× a strided transpose's speed
            unshuffled[:, byte] = plane
        if exact is not out:
            out[...] = exact
