"""Classical force fields behind the batched energy-model contract.

:class:`OpenMMEnergyModel` evaluates any ``openmm.System`` in a private Context, one configuration at a
time, and returns float64 energies with OpenMM's own forces as the autograd gradient. That lets an MM
System stand wherever an energy model is expected (a speculative draft, a FlashMD reference potential,
a training label source) without re-implementing the force field in torch.
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import numpy as np
import openmm
import torch
from openmm import app, unit
from torch import Tensor

from ..devices import AUTO, Placement, check_device
from ..validation import choice, fail
from .base import ComputedEnergies, EnergyModel

#: Force fields that ship with OpenMM; CHARMM36 includes CGenFF small molecules such as ethanol (ETOH).
FORCE_FIELDS = {"amber14": "amber14-all.xml", "amber99sbildn": "amber99sbildn.xml", "charmm36": "charmm36.xml"}
WATER_MODELS = {"amber14": {"tip3p": "amber14/tip3p.xml", "tip3pfb": "amber14/tip3pfb.xml",
                            "spce": "amber14/spce.xml", "opc": "amber14/opc.xml"},
                "amber99sbildn": {"tip3p": "tip3p.xml", "spce": "spce.xml"},
                "charmm36": {"tip3p": "charmm36/water.xml"}}
IMPLICIT_MODELS = {"obc2": "implicit/obc2.xml", "gbn2": "implicit/gbn2.xml"}


class OpenMMEnergyModel(EnergyModel):
    """A batched energy model that evaluates an ``openmm.System``.

    Parameters
    ----------
    system : openmm.System
        The potential. Its constraints are irrelevant here (only energies and forces are computed).
    topology : openmm.app.Topology, optional
        Supplies atomic numbers for checks against other models.
    device : str
        Where the private Context runs (:mod:`openmm_accel.devices`: cpu, cuda[:N] or auto, the default).
    threads : int, optional
        Threads of the CPU platform (default: OpenMM's choice).
    float64 : bool
        Double-precision forces (the Reference platform), e.g. for exactness checks.
    force_groups : set of int, optional
        Evaluate only these force groups (default: all).
    """

    def __init__(self, system: openmm.System, topology: Optional[app.Topology] = None, device: str = AUTO,
                 threads: Optional[int] = None, float64: bool = False, force_groups=None):
        if not isinstance(system, openmm.System):
            raise fail("system", "an openmm.System", type(system).__name__)
        check_device(device)
        numbers = None if topology is None else [a.element.atomic_number if a.element else 0
                                                 for a in topology.atoms()]
        super().__init__(system.getNumParticles(), numbers, system.usesPeriodicBoundaryConditions())
        if topology is not None and topology.getNumAtoms() != system.getNumParticles():
            raise fail("topology", f"{system.getNumParticles()} atoms (as in the System)", topology.getNumAtoms())
        self.system = system
        self.where = Placement(device, threads, float64)
        self.groups = -1 if force_groups is None else sum(1 << int(g) for g in force_groups)
        self._context = None

    def _get_context(self) -> openmm.Context:
        if self._context is None:
            self._context = self.where.context(self.system, openmm.VerletIntegrator(0.001))
        return self._context

    def compute(self, positions: np.ndarray, box: Optional[np.ndarray] = None):
        """Energies ``(B,)`` kJ/mol and forces ``(B, N, 3)`` kJ/mol/nm for float64 arrays in nm."""
        context = self._get_context()
        energies = np.empty(len(positions))
        forces = np.empty_like(positions)
        for i, x in enumerate(positions):
            if box is not None:
                context.setPeriodicBoxVectors(*box[i])
            context.setPositions(x)
            state = context.getState(getEnergy=True, getForces=True, groups=self.groups)
            energies[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            forces[i] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return energies, forces

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        if self.periodic and box is None:
            raise fail("box", "periodic box vectors (the System is periodic)", None)
        return ComputedEnergies.apply(positions, box, self)

    def energies_and_forces(self, positions: Tensor, box: Optional[Tensor] = None):
        energies, forces = self.compute(positions.detach().cpu().double().numpy(),
                                        None if box is None else box.detach().cpu().double().numpy())
        return torch.as_tensor(energies), torch.as_tensor(forces, dtype=positions.dtype)

    def __getstate__(self):  # a Context cannot be pickled; it is rebuilt on first use
        state = self.__dict__.copy()
        state["_context"] = None
        return state


def create_force_field_system(topology: app.Topology, force_field: str = "amber14", water: str = "tip3p",
                              implicit_solvent: Optional[str] = None, nonbonded_cutoff=1.0 * unit.nanometer,
                              hydrogen_mass=None, rigid_water: bool = False, constraints=None) -> openmm.System:
    """An OpenMM System for ``topology`` from a standard force field, without constraints by default.

    Periodic topologies get PME, others no cutoff. Water is flexible by default (FlashMD cannot keep
    constraints); ``rigid_water=True`` and ``constraints=app.HBonds`` fix water geometry and X-H bonds.
    ``hydrogen_mass`` (e.g. ``1.5*amu`` ... ``4*amu``)
    repartitions mass from heavy atoms to hydrogens.
    """
    choice(force_field, FORCE_FIELDS, "force_field")
    files = [FORCE_FIELDS[force_field]]
    periodic = topology.getPeriodicBoxVectors() is not None
    if implicit_solvent is not None:
        if periodic:
            raise fail("implicit_solvent", "None for a periodic (explicitly solvated) topology", implicit_solvent)
        files.append(IMPLICIT_MODELS[choice(implicit_solvent, IMPLICIT_MODELS, "implicit_solvent")])
    if any(residue.name == "HOH" for residue in topology.residues()):
        files.append(WATER_MODELS[force_field][choice(water, WATER_MODELS[force_field], "water")])
    forcefield = app.ForceField(*files)
    options = dict(constraints=constraints, rigidWater=rigid_water, removeCMMotion=False)
    if hydrogen_mass is not None:
        options["hydrogenMass"] = hydrogen_mass
    if periodic:
        return forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=nonbonded_cutoff, **options)
    return forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, **options)


def create_force_field_model(topology, force_field: str = "amber14", water: str = "tip3p",
                             implicit_solvent: Optional[str] = None, device: str = AUTO, float64: bool = False,
                             hydrogen_mass=None) -> OpenMMEnergyModel:
    """Registered factories ``"amber14"`` (ff14SB) and ``"amber99sbildn"``: a force field as an energy model
    (``device``, ``float64``: see :class:`OpenMMEnergyModel`)."""
    system = create_force_field_system(topology, force_field, water, implicit_solvent, hydrogen_mass=hydrogen_mass)
    return OpenMMEnergyModel(system, topology, device, float64=float64)


create_amber14 = partial(create_force_field_model, force_field="amber14")
create_amber99sbildn = partial(create_force_field_model, force_field="amber99sbildn")
