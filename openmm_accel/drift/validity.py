"""Is a generated conformation a valid molecule? Every bond of the topology within a tolerance of its length
in the reference data, and no clash: no two atoms more than two bonds apart closer than a fraction of the
closest they come in the reference data. Judged per sample, so that raw samples can be reported as they are
and invalid ones counted, never silently dropped."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch
from openmm import app

from ..validation import fail
from .features import distances


def bond_graph_distances(topology: app.Topology) -> np.ndarray:
    """``(N, N)`` number of bonds between atoms (a large number where not connected)."""
    atoms = topology.getNumAtoms()
    neighbours = [[] for _ in range(atoms)]
    for bond in topology.bonds():
        neighbours[bond[0].index].append(bond[1].index)
        neighbours[bond[1].index].append(bond[0].index)
    hops = np.full((atoms, atoms), atoms + 1, dtype=int)
    for start in range(atoms):
        hops[start, start], queue = 0, deque([start])
        while queue:
            atom = queue.popleft()
            for other in neighbours[atom]:
                if hops[start, other] > hops[start, atom] + 1:
                    hops[start, other] = hops[start, atom] + 1
                    queue.append(other)
    return hops


@dataclass
class Validity:
    """Bond and clash criteria of one molecule, from its topology and reference frames (nm)."""

    bonds: np.ndarray          # (K, 2) atom indices
    lengths: np.ndarray        # (K,) mean bond length in the reference frames, nm
    pairs: np.ndarray          # (P, 2) atoms more than two bonds apart
    closest: np.ndarray        # (P,) their closest approach in the reference frames, nm
    bond_tolerance: float = 0.1   # a bond may differ from its mean length by this fraction
    clash_fraction: float = 0.8   # a clash: a pair closer than this fraction of its closest reference approach

    @classmethod
    def of(cls, topology: app.Topology, frames: np.ndarray, bond_tolerance: float = 0.1,
           clash_fraction: float = 0.8) -> "Validity":
        frames = np.asarray(frames, dtype=np.float64)
        if frames.ndim != 3 or frames.shape[1:] != (topology.getNumAtoms(), 3):
            raise fail("frames", f"reference frames (M, {topology.getNumAtoms()}, 3) nm of the topology's atoms",
                       f"shape {frames.shape}")
        bonds = np.array([[b[0].index, b[1].index] for b in topology.bonds()], dtype=int).reshape(-1, 2)
        if len(bonds) == 0:
            raise fail("topology", "a topology with bonds (to judge validity by)", "none")
        hops = bond_graph_distances(topology)
        pairs = np.argwhere(np.triu(hops > 2, k=1))
        return cls(bonds, lengths(frames, bonds).mean(0), pairs, lengths(frames, pairs).min(0), bond_tolerance,
                   clash_fraction)

    def check(self, positions: np.ndarray) -> Dict[str, np.ndarray]:
        """Per sample of ``positions`` (M, N, 3) nm: ``bonds_ok``, ``clash_free`` and ``valid`` (both), and
        the largest relative bond error."""
        error = np.abs(lengths(positions, self.bonds) / self.lengths - 1.0)
        bonds_ok = np.all(error <= self.bond_tolerance, axis=1)
        clash_free = np.all(lengths(positions, self.pairs) >= self.clash_fraction * self.closest, axis=1) \
            if len(self.pairs) else np.ones(len(positions), dtype=bool)
        return {"bonds_ok": bonds_ok, "clash_free": clash_free, "valid": bonds_ok & clash_free,
                "largest_bond_error": error.max(axis=1)}


def lengths(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(M, K)`` distances of atom pairs in frames ``(M, N, 3)`` (the representation's own distances)."""
    return distances(torch.as_tensor(np.asarray(positions, dtype=np.float64)), torch.as_tensor(pairs)).numpy()
