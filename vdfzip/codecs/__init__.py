"""Codecs: one module per method behind one small interface, and a registry keyed by string id.

A codec turns one cell's VDF (its block ids, its ``(n, wid³)`` values and the population's
velocity mesh) into payload bytes that meet a relative L2 tolerance over the cell's stored
voxels, and turns those bytes back into values on the same block ids. Every payload starts with
the codec's format version byte; payloads never carry registry positions, only what the codec
itself needs. Codec options are constructor keyword arguments and ``get_config()`` returns
them, so a stored config recreates the codec (as in numcodecs).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..errors import VdfzipError
from ..vlasiator import CellBatch, VelocityMesh

_REGISTRY: dict[str, type[Codec]] = {}


class UnknownCodecError(VdfzipError):
    """A codec id that no registered codec has."""


class PayloadError(VdfzipError):
    """A payload that its codec cannot decode (wrong version, truncated, corrupted)."""


class ToleranceNotMetError(VdfzipError):
    """The codec cannot reach the tolerance on this cell; the caller falls back to the next codec."""


class Codec(ABC):
    """Base class: subclasses set ``codec_id`` and ``version`` and implement the two cell methods."""

    codec_id: str
    version: int
    #: Whether asking again with a tighter tolerance is worth it after the moment restoration
    #: pushed a cell over (cheap, deterministic codecs); costly fits leave the cell to the next codec.
    retry_tighter: bool = True

    def get_config(self) -> dict:
        """Constructor arguments that recreate this codec (JSON-ready)."""
        return {}

    def fit_on(self, xp) -> None:
        """Run encoding's fits on the array module ``xp`` (numpy or cupy) where the codec can;
        codecs without a GPU path stay on the CPU."""

    @abstractmethod
    def encode_cell(self, block_ids: np.ndarray, values: np.ndarray, mesh: VelocityMesh, tol: float) -> bytes:
        """Payload whose decoded values have rel L2 ≤ ``tol`` over the given blocks' voxels."""

    @abstractmethod
    def decode_cell(self, payload: bytes, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
        """float64 ``(len(block_ids), wid³)`` values on the same block ids, in the same order."""

    def encode_cells(
        self, batch: CellBatch, cells: Sequence[int], mesh: VelocityMesh, tol: float
    ) -> dict[int, bytes]:
        """Payloads of those of the batch's ``cells`` that the codec can encode within ``tol``
        (codecs that fit cells jointly override this)."""
        payloads = {}
        for c in cells:
            with contextlib.suppress(ToleranceNotMetError):  # the cell moves on to the next codec
                payloads[c] = self.encode_cell(*batch.cell(c), mesh, tol)
        return payloads

    def decode_cells(
        self, payloads: Sequence[bytes], block_ids: Sequence[np.ndarray], mesh: VelocityMesh
    ) -> np.ndarray:
        """float64 values of several cells, their rows concatenated in order (codecs that decode
        cells jointly override this)."""
        rows = [self.decode_cell(p, ids, mesh) for p, ids in zip(payloads, block_ids)]
        return np.concatenate(rows) if rows else np.zeros((0, mesh.cells_per_block))

    def check_version(self, payload: bytes) -> None:
        """Refuse a payload written by another format version of this codec."""
        if not payload:
            raise PayloadError(f"empty {self.codec_id} payload")
        if payload[0] != self.version:
            raise PayloadError(f"{self.codec_id} payload has format version {payload[0]}, this vdfzip reads {self.version}")


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: make ``cls`` available under ``cls.codec_id``."""
    if cls.codec_id in _REGISTRY and _REGISTRY[cls.codec_id] is not cls:
        raise ValueError(f"codec id {cls.codec_id!r} is already registered")
    _REGISTRY[cls.codec_id] = cls
    return cls


def get_codec(codec_id: str, **config) -> Codec:
    """A codec instance from its id and config."""
    try:
        return _REGISTRY[codec_id](**config)
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownCodecError(f"unknown codec {codec_id!r} (known: {known})") from None


def codec_ids() -> list[str]:
    """Ids of every registered codec."""
    return sorted(_REGISTRY)


def relative_l2(decoded: np.ndarray, original: np.ndarray) -> float:
    """‖decoded − original‖₂ / ‖original‖₂ over all given voxels (float64): the error of a cell."""
    original = np.asarray(original, dtype=np.float64)
    norm = np.linalg.norm(original)
    difference = np.linalg.norm(np.asarray(decoded, dtype=np.float64) - original)
    return float(difference / norm) if norm > 0 else float(difference > 0)


from . import lossless, mlp, octree  # noqa: E402,F401  (registers the built-in codecs)
