"""Encoding profiles: what a decoded cell must satisfy besides exact moments.

- ``core``: rel L2 ≤ ``--tol`` per cell (analysis data).
- ``restart`` (the default for restart files): also the content-block set kept exactly (stored
  losslessly and enforced after the moment restoration) and the tails bounded: over each cell's
  voxels with f ≥ the sparsity threshold, ``|log10 g − log10 f| ≤ --tail-tol`` decades at the
  95th percentile. A Vlasiator run restarted from the file then starts from the same sparse
  velocity mesh with tails of the right shape (issue 6 and ``shared/DESIGN.md``).

Why the default tail tolerance is 0.3 decades and not 0.1 (``bench/RESULTS-restart-profile.md``):
the shock restart's own log f is rough at the voxel scale. Its deviation from the 3×3×3 mean has
a per-cell 95th percentile of 0.44 decades in the median cell (above 0.1 in 63 of 72 cells), so a
bound of 0.1 makes the codec store that roughness voxel by voxel: the file ratio drops from 54 to
32 (ZFP and SZ3 in the asinh domain, held to the same target: 13 and 15). 0.3 decades (a factor
of 2 at the 95th percentile, the median error ~0.04) stays inside the data's own voxel noise.
"""

from __future__ import annotations

from dataclasses import dataclass

from .codecs import Target
from .errors import VdfzipError

DEFAULT_TAIL_TOL = 0.3
PROFILES = ("restart", "core")


class ProfileError(VdfzipError):
    """A profile option with a bad value."""


@dataclass(frozen=True)
class Profile:
    """A profile with its tail tolerance (None for ``core``)."""

    name: str
    tail_tol: float | None = None

    @property
    def keeps_content(self) -> bool:
        """Whether the content-block set is stored and enforced."""
        return self.name == "restart"

    def target(self, tol: float, threshold: float) -> Target:
        """The per-cell target of a population with sparsity ``threshold``."""
        return Target(tol, self.tail_tol, threshold) if self.keeps_content else Target(tol)

    def codec_config(self, codec_id: str) -> dict:
        """Codec options this profile needs: the octree codec picks its value transform per
        cell, since the linear one never keeps the tails."""
        return {"transform": "auto"} if self.keeps_content and codec_id == "octree" else {}

    def as_dict(self) -> dict:
        return {"name": self.name, "tail_tol": self.tail_tol}


def resolve_profile(name: str | None, tail_tol: float | None, is_restart: bool) -> Profile:
    """The profile asked for (default: ``restart`` for restart files, else ``core``)."""
    name = name or ("restart" if is_restart else "core")
    if name not in PROFILES:
        raise ProfileError(f"--profile must be restart or core, not {name!r}")
    if name == "core":
        if tail_tol is not None:
            raise ProfileError("--tail-tol applies to --profile restart only")
        return Profile("core")
    tail_tol = DEFAULT_TAIL_TOL if tail_tol is None else tail_tol
    if not (isinstance(tail_tol, (int, float)) and 0 < tail_tol <= 10):
        raise ProfileError(f"--tail-tol must be in (0, 10] decades, got {tail_tol}")
    return Profile("restart", float(tail_tol))
