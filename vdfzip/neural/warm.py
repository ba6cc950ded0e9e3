"""Warm starts: each cell's last network, by cell id, where its next fit starts.

A simulation compresses the same cells again and again while their VDFs evolve slowly; a fit
that starts from the cell's previous network needs a fraction of the steps of one from random
weights (``bench/RESULTS-runtime.md``). The networks kept are the stored (dequantized) weights,
so the state is what the blobs hold and survives as :meth:`WarmStart.state_dict`.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ..errors import VdfzipError
from .network import Architecture

STATE_VERSION = 1


class WarmStartStateError(VdfzipError):
    """A warm-start state of another version or another network architecture."""


class WarmStart:
    """The last network of every cell fitted with ``architecture``."""

    def __init__(self, architecture: Architecture):
        self.architecture = architecture
        self.networks: dict[int, np.ndarray] = {}

    def initial(self, cell_id: int) -> np.ndarray | None:
        """The network cell ``cell_id`` starts from, (1, parameters) float32; None: no network yet."""
        network = self.networks.get(int(cell_id))
        return None if network is None else network[None]

    def record(self, cell_ids, networks: np.ndarray) -> None:
        """Keep the networks just fitted, (cells, parameters)."""
        for cell_id, network in zip(cell_ids, networks):
            self.networks[int(cell_id)] = np.array(network, dtype=np.float32)

    def state_dict(self) -> dict:
        """The networks as plain arrays (``cell_ids``, ``networks``), with the architecture."""
        ids = np.array(sorted(self.networks), dtype=np.uint64)
        networks = np.stack([self.networks[int(c)] for c in ids]) if len(ids) else np.zeros(
            (0, self.architecture.parameter_count), np.float32)
        return {"version": STATE_VERSION, "architecture": asdict(self.architecture), "cell_ids": ids,
                "networks": networks}

    def load_state_dict(self, state: dict) -> None:
        """Replace the networks with those of :meth:`state_dict` (of the same architecture)."""
        if state.get("version") != STATE_VERSION:
            raise WarmStartStateError(f"warm-start state version {state.get('version')!r}; this vdfzip reads "
                                      f"{STATE_VERSION}")
        if state.get("architecture") != asdict(self.architecture):
            raise WarmStartStateError("the warm-start state is of another network architecture: "
                                      f"{state.get('architecture')} (this compressor: {asdict(self.architecture)})")
        ids, networks = np.asarray(state["cell_ids"]), np.asarray(state["networks"], dtype=np.float32)
        if networks.shape != (len(ids), self.architecture.parameter_count):
            raise WarmStartStateError(f"warm-start networks of shape {networks.shape} for {len(ids)} cells of "
                                      f"{self.architecture.parameter_count} parameters")
        self.networks = {int(c): n for c, n in zip(ids, networks)}
