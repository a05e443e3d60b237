"""Coarse-grained OpenMM Systems driven by a score model: one particle per bead (the mapped atom's mass)
and the model's potential of mean force as the only Force, through the package's Force bridge; optionally
``replicas`` non-interacting copies of the molecule in one System, evaluated by one batched network call."""
from __future__ import annotations

import numpy as np
from openmm import app, unit

from ..forces import create_ml_system
from ..molecular import MolecularSystem
from ..validation import count, fail
from .mapping import Mapping
from .model import ScoreModel, check_mapping

SPACING_NM = 3.0  # copies are placed this far apart (they do not interact; it only keeps pictures readable)


def side_by_side(copies: np.ndarray) -> np.ndarray:
    """Configurations ``(K, n, 3)`` nm of one molecule as the ``(K n, 3)`` positions of one System, copy k
    moved k x SPACING_NM along x."""
    return (copies + SPACING_NM * np.arange(len(copies))[:, None, None] * np.array([1.0, 0.0, 0.0])).reshape(-1, 3)


def replicated(topology: app.Topology, positions: np.ndarray, replicas: int):
    """``replicas`` copies of a molecule, one chain each, side by side along x: (Topology, positions nm).
    Built copy by copy in time linear in ``replicas`` (``Modeller.add`` copies everything so far each time:
    2,000 replicas took 159 s that way)."""
    copies = app.Topology()
    for _ in range(replicas):
        for chain in topology.chains():
            atoms = {}
            new_chain = copies.addChain(chain.id)
            for residue in chain.residues():
                new_residue = copies.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
                for atom in residue.atoms():
                    atoms[atom] = copies.addAtom(atom.name, atom.element, new_residue, atom.id)
            for first, second in topology.bonds():
                if first in atoms and second in atoms:
                    copies.addBond(atoms[first], atoms[second])
    return copies, side_by_side(np.repeat(positions[None], replicas, axis=0))


def replica_system(model: ScoreModel, masses, replicas: int, backend: str):
    """An OpenMM System of ``replicas`` copies of the model's beads (``masses`` amu) with the model's forces."""
    return create_ml_system(model.energy_model(replicas), np.tile(masses, replicas), backend)


def model_mapping(model: ScoreModel, topology: app.Topology, path: str, argument: str = "score_model") -> Mapping:
    """The beads of ``topology`` the model was trained on, refused (naming ``argument``) if the model was made
    for other atoms or beads."""
    mapping = Mapping(tuple(model.metadata["atoms"]), model.metadata.get("mapping", "atoms"))
    if max(mapping.atoms) >= topology.getNumAtoms():
        raise fail(argument, f"a model of atoms of this molecule ({topology.getNumAtoms()} atoms; --system: the "
                   "molecule its data came from)",
                   f"{path}, made for atoms {list(mapping.atoms)}")
    check_mapping(model, mapping.describe(topology), path, argument)
    return mapping


def coarse_grained(model: ScoreModel, molecular: MolecularSystem, backend: str = "torchforce",
                   path: str = "score model", replicas: int = 1) -> MolecularSystem:
    """The beads of ``molecular`` (mapped as the model was trained) with the model's forces, ``replicas``
    copies; refused if the model was made for other beads."""
    count(replicas, "replicas")
    mapping = model_mapping(model, molecular.topology, path)
    system = replica_system(model, mapping.masses(molecular.system), replicas, backend)
    positions = mapping(molecular.positions.value_in_unit(unit.nanometer))
    topology, positions = replicated(mapping.topology(molecular.topology), positions, replicas)
    # the all-atom system's recipe with the score model as its potential on the mapped beads
    recipe = molecular.recipe.with_potential("score", model=path, mapping=mapping.name, replicas=replicas)
    return MolecularSystem(topology, system, positions * unit.nanometer, recipe)
