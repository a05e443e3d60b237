"""One value for a system to simulate: :class:`MolecularSystem`, and how to rebuild it, :class:`Recipe`.

A ``MolecularSystem`` is what every method runs, every data set samples and every model file was made for:
the topology, the ``openmm.System`` with its potential, positions, masses and box, and its ``recipe``. The
recipe is the system's provenance in JSON (no pickle): its source (a standard system's name, an openmmtools
test system, ...), the build options (constraints, hydrogen mass) and the potential on it (``"mm"``, the
source's own force field, or a registered model with its options, on the ML region). Model files store the
recipe and refuse a system whose recipe differs (:meth:`Recipe.differences`); :func:`openmm_accel.systems.build`
turns a recipe back into a ``MolecularSystem``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import openmm
from openmm import app, unit

from .validation import fail

#: The potential that keeps a system's own force field.
MM_MODEL = "mm"
#: ``constraints`` of a recipe: none, or X-H bonds at the force field's lengths with rigid water.
CONSTRAINT_CHOICES = ("none", "hbonds")
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """How a :class:`MolecularSystem` is built (plain numbers in OpenMM's units).

    ``source``: a standard system's name (``openmm-accel systems``) or ``"openmmtools:ClassName"``, with
    ``source_options`` for its builder (e.g. ``n_particles`` of the oscillators);
    ``constraints``: ``"none"`` or ``"hbonds"``; ``hydrogen_mass_amu``: hydrogen mass repartitioning;
    ``potential``: ``"mm"`` or a registered model's name, with ``potential_options`` (e.g. ``member``);
    ``ml_atoms``: the atoms the model covers (None: the solute, i.e. every atom not in water or ions; an
    mdtraj selection string is resolved to indices when the system is built);
    ``backend``: how an ML model enters OpenMM (it does not change the physics: :meth:`differences`
    ignores it).
    """

    source: str
    source_options: Tuple[Tuple[str, Any], ...] = ()
    constraints: str = "none"
    hydrogen_mass_amu: Optional[float] = None
    potential: str = MM_MODEL
    potential_options: Tuple[Tuple[str, Any], ...] = ()
    ml_atoms: Optional[Tuple[int, ...]] = None
    backend: str = "torchforce"

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source:
            raise fail("source", "a system's source (e.g. a standard system's name)", self.source)
        if self.constraints not in CONSTRAINT_CHOICES:
            raise fail("constraints", f"one of {', '.join(CONSTRAINT_CHOICES)}", self.constraints)
        for name in ("source_options", "potential_options"):
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, tuple(sorted(getattr(self, name).items())))
        if self.ml_atoms is not None and not isinstance(self.ml_atoms, str):  # a str: an mdtraj selection
            object.__setattr__(self, "ml_atoms", tuple(int(i) for i in self.ml_atoms))

    @classmethod
    def of(cls, source: str, potential: str = MM_MODEL, member: Optional[int] = None, **settings) -> "Recipe":
        """A recipe with ``member`` (one network of an ensemble) as the potential's option."""
        options = {} if member is None else {"member": int(member)}
        return cls(source, potential=potential, potential_options=options, **settings)

    @property
    def options(self) -> Dict[str, Any]:
        """The potential's options as keywords."""
        return dict(self.potential_options)

    @property
    def name(self) -> str:
        """A short name: the source (a file by its name), with the potential unless it is the source's own
        force field."""
        source = os.path.basename(self.source) if self.source.startswith("file:") else self.source
        return source if self.potential == MM_MODEL else f"{source}:{self.potential}"

    def to_json(self) -> dict:
        """The recipe as JSON (what model files and data record)."""
        data = asdict(self)
        data["source_options"] = dict(self.source_options)
        data["potential_options"] = dict(self.potential_options)
        data["ml_atoms"] = None if self.ml_atoms is None else list(self.ml_atoms)
        return {"recipe_version": RECIPE_VERSION, **data}

    @classmethod
    def from_json(cls, data: dict, argument: str = "recipe") -> "Recipe":
        """A recipe from :meth:`to_json` (a newer or malformed one is refused naming ``argument``)."""
        if not isinstance(data, dict) or data.get("recipe_version", 0) > RECIPE_VERSION:
            raise fail(argument, f"a system recipe of version <= {RECIPE_VERSION} (update openmm_accel)", data)
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known - {"recipe_version"})
        if unknown or "source" not in data:
            raise fail(argument, f"a system recipe with the fields {', '.join(sorted(known))}",
                       f"unknown {', '.join(unknown)}" if unknown else "no source")
        return cls(**{key: value for key, value in data.items() if key in known})

    def physics(self) -> dict:
        """What makes the system what it is (everything but the backend), as JSON holds it (a tuple of
        force fields and the list a recorded recipe reads back are the same)."""
        data = json.loads(json.dumps(self.to_json()))
        data.pop("backend")
        return data

    def differences(self, other: "Recipe") -> List[str]:
        """The settings (source, constraints, ..., potential) in which ``other`` builds another system."""
        mine, theirs = self.physics(), other.physics()
        return sorted(key for key in mine if mine[key] != theirs.get(key))

    def with_potential(self, potential: str, **options) -> "Recipe":
        """The same system with another potential."""
        return replace(self, potential=potential, potential_options=options)


@dataclass
class MolecularSystem:
    """A ready-to-simulate system: ``topology``, OpenMM ``system`` (with its potential), ``positions``
    (Quantity, nm) and the ``recipe`` that rebuilds it. With an ML potential: ``model`` (the batched energy
    model), ``region`` (its atoms; None when it covers every atom) and ``mm_system`` (the force field's
    System it was put on); for a pure MM system ``mm_system`` is ``system``."""

    topology: app.Topology
    system: openmm.System
    positions: unit.Quantity
    recipe: Recipe
    model: Any = None
    region: Optional[List[int]] = None
    mm_system: Optional[openmm.System] = field(default=None, repr=False)

    def __post_init__(self):
        if self.mm_system is None:
            self.mm_system = self.system

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def masses(self) -> np.ndarray:
        """Particle masses in amu."""
        return np.array([self.system.getParticleMass(i).value_in_unit(unit.amu)
                         for i in range(self.system.getNumParticles())])

    @property
    def box(self) -> Optional[np.ndarray]:
        """The periodic box vectors ``(3, 3)`` nm, or None without periodic boundary conditions."""
        if not self.system.usesPeriodicBoundaryConditions():
            return None
        return np.array([v.value_in_unit(unit.nanometer) for v in self.system.getDefaultPeriodicBoxVectors()])

    @property
    def solute_atoms(self) -> list:
        """Indices of atoms not in water or ions (the natural ML region)."""
        return solute_atoms(self.topology)


#: Residue names of water and monatomic ions (PDB, Amber, CHARMM and GROMACS spellings): the solvent.
SOLVENT_RESIDUES = frozenset({"HOH", "WAT", "TIP3", "TIP3P", "SOL", "T3P", "SPC", "NA", "CL", "K", "Na+", "Cl-", "K+",
                              "NA+", "CL-", "SOD", "CLA", "POT", "MG", "CA2", "LI", "CS", "RB", "BR", "ZN"})


def solute_atoms(topology: app.Topology) -> list:
    """Indices of the atoms of ``topology`` not in water or ions (:data:`SOLVENT_RESIDUES`)."""
    return [a.index for a in topology.atoms() if a.residue.name not in SOLVENT_RESIDUES]


__all__ = ["CONSTRAINT_CHOICES", "MM_MODEL", "MolecularSystem", "Recipe", "SOLVENT_RESIDUES", "solute_atoms"]
