"""Coarse-grained OpenMM Systems driven by a score model: one particle per bead (the mapped atom's mass)
and the model's potential of mean force as the only Force, through the package's Force bridge; optionally
``replicas`` non-interacting copies of the molecule in one System, evaluated by one batched network call."""
from __future__ import annotations

import numpy as np
from openmm import app, unit

from ..forces import create_ml_system
from ..systems import MolecularSystem
from ..validation import count, fail
from .mapping import Mapping
from .model import ScoreModel
from .training import check_mapping

SPACING_NM = 3.0  # copies are placed this far apart (they do not interact; it only keeps pictures readable)


def replicated(topology: app.Topology, positions: np.ndarray, replicas: int):
    """``replicas`` copies of a molecule, one chain each, side by side along x: (Topology, positions nm)."""
    modeller = app.Modeller(topology, positions * unit.nanometer)
    for copy in range(1, replicas):
        modeller.add(topology, (positions + np.array([SPACING_NM * copy, 0.0, 0.0])) * unit.nanometer)
    return modeller.topology, np.asarray(modeller.positions.value_in_unit(unit.nanometer))


def coarse_grained(model: ScoreModel, molecular: MolecularSystem, backend: str = "torchforce",
                   path: str = "score model", replicas: int = 1) -> MolecularSystem:
    """The beads of ``molecular`` (mapped as the model was trained) with the model's forces, ``replicas``
    copies; refused if the model was made for other beads."""
    count(replicas, "replicas")
    mapping = Mapping(tuple(model.metadata["atoms"]), model.metadata.get("mapping", "atoms"))
    if max(mapping.atoms) >= molecular.topology.getNumAtoms():
        raise fail("score_model", f"a model of atoms of the system ({molecular.topology.getNumAtoms()} atoms)",
                   f"{path}, made for atoms {list(mapping.atoms)}")
    check_mapping(model, mapping.describe(molecular.topology), path)
    system = create_ml_system(model.energy_model(replicas), np.tile(mapping.masses(molecular.system), replicas),
                              backend)
    positions = mapping(molecular.positions.value_in_unit(unit.nanometer))
    topology, positions = replicated(mapping.topology(molecular.topology), positions, replicas)
    name = f"{molecular.name}:cg-{mapping.name}" + (f"x{replicas}" if replicas > 1 else "")
    return MolecularSystem(name, topology, system, positions * unit.nanometer)
