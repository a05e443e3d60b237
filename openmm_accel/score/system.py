"""Coarse-grained OpenMM Systems driven by a score model: one particle per bead (the mapped atom's mass)
and the model's potential of mean force as the only Force, through the package's Force bridge."""
from __future__ import annotations

from openmm import unit

from ..forces import create_ml_system
from ..systems import MolecularSystem
from ..validation import fail
from .mapping import Mapping
from .model import ScoreModel
from .training import check_mapping


def coarse_grained(model: ScoreModel, molecular: MolecularSystem, backend: str = "torchforce",
                   path: str = "score model") -> MolecularSystem:
    """The beads of ``molecular`` (mapped as the model was trained) with the model's forces; refused if the
    model was made for other beads."""
    mapping = Mapping(tuple(model.metadata["atoms"]), model.metadata.get("mapping", "atoms"))
    if max(mapping.atoms) >= molecular.topology.getNumAtoms():
        raise fail("score_model", f"a model of atoms of the system ({molecular.topology.getNumAtoms()} atoms)",
                   f"{path}, made for atoms {list(mapping.atoms)}")
    check_mapping(model, mapping.describe(molecular.topology), path)
    system = create_ml_system(model.energy_model(), mapping.masses(molecular.system), backend)
    positions = mapping(molecular.positions.value_in_unit(unit.nanometer)) * unit.nanometer
    return MolecularSystem(f"{molecular.name}:cg-{mapping.name}", mapping.topology(molecular.topology), system,
                           positions)
