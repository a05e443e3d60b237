"""Is a generated conformation a valid molecule? Every bond of the topology within a tolerance of its length
in the reference data, no clash (no two atoms more than two bonds apart closer than a fraction of the
closest they come in the reference data), and every stereocentre of the hand it has in the data. Judged
per sample, so that raw samples can be reported as they are and invalid ones counted, never silently
dropped."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch
from openmm import app

from ..validation import fail
from .features import distances, signed_volumes


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


def stiff_pairs(topology: app.Topology) -> np.ndarray:
    """``(K, 2)`` atom pairs one or two bonds apart: the bond lengths and bond angles, whose spread in MD is far
    below the kernel widths of drifting (force guidance leaves them alone: docs/drift.md)."""
    hops = bond_graph_distances(topology)
    first, second = np.nonzero(np.triu((hops == 1) | (hops == 2)))
    return np.stack([first, second], axis=1)


ARRAYS = ("bonds", "lengths", "pairs", "closest", "stereocentres", "handedness")


def chiral_centres(topology: app.Topology, frames: np.ndarray, agreement: float = 0.99):
    """The molecule's stereocentres as its reference ``frames`` (nm) hold them: ``(Q, 4)`` quadruples (a centre
    with at least three bonded neighbours, at most one of them hydrogen; the centre and three neighbours) and
    ``(Q,)`` the sign of their signed volume, kept where at least ``agreement`` of the frames agree on it (so
    that planar centres, whose sign fluctuates, drop out). Atoms with several bonded hydrogens are left out:
    mirroring their labelled hydrogens makes the same molecule."""
    neighbours: List[List[int]] = [[] for _ in range(topology.getNumAtoms())]
    elements = [atom.element for atom in topology.atoms()]
    for bond in topology.bonds():
        neighbours[bond[0].index].append(bond[1].index)
        neighbours[bond[1].index].append(bond[0].index)
    candidates = [[atom] + sorted(around)[:3] for atom, around in enumerate(neighbours)
                  if len(around) >= 3 and sum(elements[i] == app.element.hydrogen for i in around) <= 1]
    if not candidates:
        return np.zeros((0, 4), dtype=int), np.zeros(0)
    quadruples = np.array(candidates)
    signs = np.sign(signed_volumes(torch.as_tensor(np.asarray(frames, dtype=np.float64)),
                                   torch.as_tensor(quadruples)).numpy()).mean(0)
    kept = np.abs(signs) >= 2 * agreement - 1
    return quadruples[kept], np.sign(signs[kept])


def in_hand(positions: np.ndarray, quadruples: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """``(M,)`` the fraction of stereocentres of each conformation ``(M, N, 3)`` in the data's handedness
    (1 for a molecule without stereocentres)."""
    if len(quadruples) == 0:
        return np.ones(len(positions))
    volumes = signed_volumes(torch.as_tensor(np.asarray(positions, dtype=np.float64)), torch.as_tensor(quadruples))
    return (np.sign(volumes.numpy()) == signs).mean(1)


@dataclass
class Validity:
    """Bond, clash and stereo criteria of one molecule, from its topology and reference frames (nm)."""

    bonds: np.ndarray          # (K, 2) atom indices
    lengths: np.ndarray        # (K,) mean bond length in the reference frames, nm
    pairs: np.ndarray          # (P, 2) atoms more than two bonds apart
    closest: np.ndarray        # (P,) their closest approach in the reference frames, nm
    stereocentres: np.ndarray = None  # (Q, 4) centre and three neighbours (see chiral_centres)
    handedness: np.ndarray = None     # (Q,) their sign in the reference frames
    bond_tolerance: float = 0.1   # a bond may differ from its mean length by this fraction
    clash_fraction: float = 0.8   # a clash: a pair closer than this fraction of its closest reference approach

    def __post_init__(self):
        if self.stereocentres is None:
            self.stereocentres, self.handedness = np.zeros((0, 4), dtype=int), np.zeros(0)

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
        return cls(bonds, lengths(frames, bonds).mean(0), pairs, lengths(frames, pairs).min(0),
                   *chiral_centres(topology, frames), bond_tolerance, clash_fraction)

    def arrays(self) -> Dict[str, np.ndarray]:
        """The criteria as arrays (for a model file), read back by :meth:`from_arrays`."""
        return {"validity_" + name: np.asarray(getattr(self, name)) for name in ARRAYS} | {
            "validity_tolerances": np.array([self.bond_tolerance, self.clash_fraction])}

    @classmethod
    def from_arrays(cls, arrays: Dict[str, np.ndarray]) -> "Validity":
        return cls(*(np.asarray(arrays["validity_" + name]) for name in ARRAYS),
                   *map(float, arrays["validity_tolerances"]))

    def check(self, positions: np.ndarray) -> Dict[str, np.ndarray]:
        """Per sample of ``positions`` (M, N, 3) nm: ``bonds_ok``, ``clash_free``, ``chirality_ok`` (every
        stereocentre of the data's hand) and ``valid`` (all three), and the largest relative bond error."""
        error = np.abs(lengths(positions, self.bonds) / self.lengths - 1.0)
        bonds_ok = np.all(error <= self.bond_tolerance, axis=1)
        clash_free = np.all(lengths(positions, self.pairs) >= self.clash_fraction * self.closest, axis=1) \
            if len(self.pairs) else np.ones(len(positions), dtype=bool)
        chirality_ok = in_hand(positions, self.stereocentres, self.handedness) == 1.0
        return {"bonds_ok": bonds_ok, "clash_free": clash_free, "chirality_ok": chirality_ok,
                "valid": bonds_ok & clash_free & chirality_ok, "largest_bond_error": error.max(axis=1)}


def lengths(positions: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(M, K)`` distances of atom pairs in frames ``(M, N, 3)`` (the representation's own distances)."""
    return distances(torch.as_tensor(np.asarray(positions, dtype=np.float64)), torch.as_tensor(pairs)).numpy()
