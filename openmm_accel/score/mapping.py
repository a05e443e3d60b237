"""Coarse-grained mappings: which atoms of an all-atom Topology become beads.

A bead is one atom of the all-atom structure (a slice mapping, as in the paper's 5-bead alanine
dipeptide). The coarse-grained Topology keeps the beads' atom names, elements and residues, so that
``mdtraj.compute_phi``/``compute_psi`` work on coarse-grained trajectories unchanged; each bead carries its
atom's mass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Union

import numpy as np
from openmm import app, unit

from ..molecular import SOLVENT_RESIDUES
from ..systems import selected, subset_topology
from ..validation import fail

NAMED = ("backbone", "heavy", "ca")


def backbone_atoms(topology: app.Topology) -> List[int]:
    """The atoms that define every backbone phi and psi: C of the first residue, N CA C of each inner residue,
    N of the last (C of ACE, N CA C of ALA, N of NME for alanine dipeptide)."""
    residues = list(topology.residues())
    if len(residues) < 3:
        raise fail("mapping", "'backbone' for a capped peptide (at least three residues)", f"{len(residues)} residues")

    def atom(residue, name):
        for candidate in residue.atoms():
            if candidate.name == name:
                return candidate.index
        raise fail("mapping", f"'backbone' for a peptide whose residue {residue.name} has atom {name}",
                   f"residue {residue.name} {residue.index} without it")
    indices = [atom(residues[0], "C")]
    for residue in residues[1:-1]:
        indices += [atom(residue, "N"), atom(residue, "CA"), atom(residue, "C")]
    return indices + [atom(residues[-1], "N")]


@dataclass(frozen=True)
class Mapping:
    """Beads = the atoms ``atoms`` of an all-atom topology."""

    atoms: tuple
    name: str

    @classmethod
    def of(cls, topology: app.Topology, selection: Union[str, Sequence[int]] = "backbone") -> "Mapping":
        """``selection``: ``"backbone"`` (phi/psi atoms), ``"heavy"`` (non-hydrogen atoms of the solute, waters
        and ions left out), ``"ca"`` (one bead per alpha carbon, the usual protein model), any other string an
        mdtraj selection (one bead per selected atom), or a sequence of atom indices."""
        if isinstance(selection, str):
            if selection == "backbone":
                return cls(tuple(backbone_atoms(topology)), "backbone")
            if selection in ("heavy", "ca"):
                atoms = [a.index for a in topology.atoms() if a.residue.name not in SOLVENT_RESIDUES and (
                    a.name == "CA" and a.element is not None and a.element.symbol == "C" if selection == "ca"
                    else a.element is not None and a.element.symbol != "H")]
                if len(atoms) < 2:
                    raise fail("mapping", f"'{selection}' for a molecule with at least two such atoms",
                               f"{len(atoms)} in the topology")
                return cls(tuple(atoms), selection)
            return cls(tuple(selected(topology, selection, "mapping")), selection)
        atoms = [int(i) for i in selection]
        n = topology.getNumAtoms()
        if not atoms or len(set(atoms)) != len(atoms) or not all(0 <= i < n for i in atoms):
            raise fail("mapping", f"distinct atom indices in 0..{n - 1}", list(selection)[:8])
        return cls(tuple(atoms), "atoms")

    @property
    def beads(self) -> int:
        return len(self.atoms)

    def topology(self, topology: app.Topology) -> app.Topology:
        """The coarse-grained Topology (the beads' atoms with their names, elements and residues)."""
        return subset_topology(topology, list(self.atoms))

    def masses(self, system) -> np.ndarray:
        """Bead masses (amu): those of the mapped atoms in the all-atom ``system``."""
        return np.array([system.getParticleMass(i).value_in_unit(unit.amu) for i in self.atoms])

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Bead positions of all-atom ``positions`` ``(..., N, 3)``."""
        return np.asarray(positions)[..., list(self.atoms), :]

    def describe(self, topology: app.Topology) -> List[str]:
        """The beads as ``RESNAME-ATOMNAME`` (what a model file records to refuse another mapping)."""
        atoms = list(topology.atoms())
        return [f"{atoms[i].residue.name}-{atoms[i].name}" for i in self.atoms]
