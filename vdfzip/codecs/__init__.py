"""Codecs: one module per method behind one small interface, and a registry keyed by string id.

A codec turns one cell's VDF (its block ids, its ``(n, wid³)`` values and the population's
velocity mesh) into payload bytes that meet a :class:`Target` (a relative L2 tolerance over the
cell's stored voxels, and for the restart profile a bound on the tails), and turns those bytes
back into values on the same block ids. Every payload starts with
the codec's format version byte; payloads never carry registry positions, only what the codec
itself needs. Codec options are constructor keyword arguments and ``get_config()`` returns
them, so a stored config recreates the codec (as in numcodecs).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import VdfzipError
from ..metrics import Log10Reference, relative_l2
from ..vlasiator import CellBatch, VelocityMesh

_REGISTRY: dict[str, type[Codec]] = {}


class UnknownCodecError(VdfzipError):
    """A codec id that no registered codec has."""


class PayloadError(VdfzipError):
    """A payload that its codec cannot decode (wrong version, truncated, corrupted)."""


class ToleranceNotMetError(VdfzipError):
    """The codec cannot reach the tolerance on this cell; the caller falls back to the next codec."""


@dataclass(frozen=True)
class Target:
    """What a cell's decoded values must meet: rel L2 ≤ ``rel_l2`` over its stored voxels and,
    when ``tail_tol`` is set (the restart profile), ``|log10 g − log10 f| ≤ tail_tol`` decades
    at the 95th percentile of its voxels with ``f ≥ threshold``."""

    rel_l2: float
    tail_tol: float | None = None
    threshold: float = 0.0

    @classmethod
    def of(cls, target: Target | float) -> Target:
        """A target from a plain rel L2 tolerance (library callers) or a target."""
        return target if isinstance(target, Target) else cls(float(target))

    def met(self, decoded: np.ndarray, original: np.ndarray) -> bool:
        """Do a cell's decoded values meet the target against its original values?"""
        return self.excess(decoded, original) <= 1.0

    def excess(self, decoded: np.ndarray, original: np.ndarray) -> float:
        """How far a cell's decoded values are from the target: the largest of rel L2 / ``rel_l2``
        and tail p95 / ``tail_tol`` (≤ 1: met). Rate control steers by it; the tails are measured
        only when rel L2 is met, since a miss there already decides."""
        return self.against(original).excess(decoded)

    def against(self, original: np.ndarray) -> Judge:
        """The target for one cell's ``original`` values, prepared to measure many decodings."""
        return Judge(self, original)

    def tail_p95(self, decoded: np.ndarray, original: np.ndarray) -> float:
        """95th percentile of the log10 error over the voxels with content (0 if none)."""
        return Log10Reference(original, self.threshold).p95(decoded)

    def tighter(self, rel_l2_factor: float, tail_factor: float = 1.0) -> Target:
        """This target with its rel L2 and tail bounds multiplied by the given factors."""
        tail = None if self.tail_tol is None else self.tail_tol * tail_factor
        return replace(self, rel_l2=self.rel_l2 * rel_l2_factor, tail_tol=tail)

    def __str__(self) -> str:
        tails = "" if self.tail_tol is None else f" with tails within {self.tail_tol:g} decades (p95)"
        return f"rel L2 {self.rel_l2:g}{tails}"


class Judge:
    """:meth:`Target.excess` against one cell's original values, whose content voxels and their
    log10 are found once."""

    def __init__(self, target: Target, original: np.ndarray):
        self.target = target
        self.original = np.asarray(original, dtype=np.float64)
        self.tails = None if target.tail_tol is None else Log10Reference(self.original, target.threshold)

    def excess(self, decoded: np.ndarray) -> float:
        """:meth:`Target.excess` of ``decoded`` (the original's voxels in order, in any shape)."""
        excess = relative_l2(np.reshape(decoded, self.original.shape), self.original) / self.target.rel_l2
        if self.tails is None or excess > 1.0:
            return excess
        return max(excess, self.tails.p95(decoded) / self.target.tail_tol)


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
    def encode_cell(self, block_ids: np.ndarray, values: np.ndarray, mesh: VelocityMesh, target: Target | float) -> bytes:
        """Payload whose decoded values meet ``target`` (a float: rel L2 ≤ it) over the given blocks' voxels."""

    @abstractmethod
    def decode_cell(self, payload: bytes, block_ids: np.ndarray, mesh: VelocityMesh) -> np.ndarray:
        """float64 ``(len(block_ids), wid³)`` values on the same block ids, in the same order."""

    def encode_cells(
        self, batch: CellBatch, cells: Sequence[int], mesh: VelocityMesh, target: Target | float
    ) -> dict[int, bytes]:
        """Payloads of those of the batch's ``cells`` that the codec can encode within ``target``
        (codecs that fit cells jointly override this)."""
        payloads = {}
        for c in cells:
            with contextlib.suppress(ToleranceNotMetError):  # the cell moves on to the next codec
                payloads[c] = self.encode_cell(*batch.cell(c), mesh, target)
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


from . import lossless, mlp, octree  # noqa: E402,F401  (registers the built-in codecs)
