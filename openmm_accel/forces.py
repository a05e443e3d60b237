"""Turn a batched energy model into an OpenMM Force, and build ML/MM Systems (mechanical embedding).

Two routes, identical in energies and forces:

* ``"torchforce"`` (default): the model is compiled with TorchScript and run by ``openmmtorch.TorchForce``
  inside OpenMM (no Python in the force loop; also usable from C++ and on GPUs).
* ``"pythonforce"``: ``openmm.PythonForce`` calls the model from Python; needs no TorchScript, so any
  model works, including :class:`~openmm_accel.models.classical.OpenMMEnergyModel`.
"""
from __future__ import annotations

import copy
from typing import List, Optional, Sequence

import numpy as np
import openmm
import torch
from openmm import unit
from torch import Tensor

from ._plugins import ensure_torch_plugins
from .models.base import EnergyModel
from .validation import as_array, choice, fail

BACKENDS = ("torchforce", "pythonforce")


def _check_atoms(model: EnergyModel, atoms: Optional[Sequence[int]]) -> Optional[List[int]]:
    """The particle indices ``model`` acts on (None: all, in order), checked against the model: its atom
    count and, for a model made by ``models.create`` with ``atoms=``, that region (the default here, and
    the only indices accepted). Indices beyond the System are refused by :func:`add_to_system`, or with a
    clear error at the first evaluation for a Force added by hand."""
    if not isinstance(model, EnergyModel):
        raise fail("model", "an openmm_accel.models.EnergyModel", type(model).__name__)
    if atoms is None:
        return None if model.region is None else list(model.region)
    atoms = [int(i) for i in atoms]
    if len(atoms) != model.n_atoms:
        raise fail("atoms", f"{model.n_atoms} atom indices (the model's atom count)", f"{len(atoms)} indices")
    if len(set(atoms)) != len(atoms) or min(atoms) < 0:
        raise fail("atoms", "distinct non-negative atom indices", atoms[:10])
    if model.region is not None and atoms != list(model.region):
        raise fail("atoms", f"the atoms the model was created for ({_shown(model.region)})", _shown(atoms))
    return atoms


def _shown(indices: Sequence[int]) -> str:
    return str(list(indices)) if len(indices) <= 12 else f"[{', '.join(map(str, indices[:10]))}, ...] ({len(indices)})"


class _TorchForceModule(torch.nn.Module):
    """What TorchForce runs: ``(N_system, 3)`` positions [+ box] -> the model's energy of its atoms."""

    def __init__(self, model: EnergyModel, atoms: Optional[List[int]]):
        super().__init__()
        self.model = model
        self.use_subset = atoms is not None
        self.register_buffer("atoms", torch.tensor(atoms if atoms is not None else [], dtype=torch.long))
        self.n_atoms = model.n_atoms
        self.message = (f"openmm_accel: the model describes {model.n_atoms} atoms but the System passed "
                        "a different number; give atoms=[...] to to_openmm_force for an ML region")
        self.highest = max(atoms) if atoms else -1
        self.range_message = (f"openmm_accel: atoms=[...] names particle {self.highest}, beyond the System's "
                              "particles; give the indices of the ML region in this System")

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        if self.use_subset:
            if self.highest >= positions.shape[0]:
                raise RuntimeError(self.range_message)
            positions = positions.index_select(0, self.atoms.to(positions.device))
        if positions.shape[0] != self.n_atoms:
            raise RuntimeError(self.message)
        batch_box: Optional[Tensor] = None
        if box is not None:
            batch_box = box.unsqueeze(0)
        return self.model(positions.unsqueeze(0), batch_box)[0]


class ModelComputation:
    """Picklable ``PythonForce`` callback: State -> (energy kJ/mol, forces kJ/mol/nm as a NumPy array).

    It receives every particle and selects the ML region itself (OpenMM's ``PythonForce.setParticles``
    accepts indices beyond the System and then passes undefined coordinates)."""

    def __init__(self, model: EnergyModel, atoms: Optional[List[int]]):
        self.model = model
        self.atoms = atoms

    def __call__(self, state: openmm.State):
        everything = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        positions = everything
        if self.atoms is not None:
            if max(self.atoms) >= len(everything):
                raise ValueError(f"openmm_accel: atoms=[...] names particle {max(self.atoms)}, beyond the System's "
                                 f"{len(everything)} particles; give the indices of the ML region in this System")
            positions = everything[self.atoms]
        if positions.shape[0] != self.model.n_atoms:
            raise ValueError(f"openmm_accel: the model describes {self.model.n_atoms} atoms but the System "
                             f"passed {positions.shape[0]}; give atoms=[...] for an ML region")
        box = None
        if self.model.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        energy, forces = self.model.evaluate(positions, box)
        if self.atoms is None:
            return float(energy), forces
        every_force = np.zeros_like(everything)
        every_force[self.atoms] = forces
        return float(energy), every_force


def to_openmm_force(model: EnergyModel, backend: str = "torchforce", atoms: Optional[Sequence[int]] = None,
                    force_group: Optional[int] = None) -> openmm.Force:
    """Wrap ``model`` as an OpenMM Force.

    Parameters
    ----------
    model : EnergyModel
        A batched energy model (positions in nm, energies in kJ/mol).
    backend : {"torchforce", "pythonforce"}
        ``openmmtorch.TorchForce`` (TorchScript) or ``openmm.PythonForce``.
    atoms : sequence of int, optional
        System particle indices the model acts on (an ML region). Default: all particles, in order.
    force_group : int, optional
        Put the force in this group (0-31) so its energy can be read separately.
    """
    choice(backend, BACKENDS, "backend")
    atoms = _check_atoms(model, atoms)
    if backend == "torchforce":
        try:
            ensure_torch_plugins()
            from openmmtorch import TorchForce
        except ImportError:  # pragma: no cover
            raise fail("backend", "openmmtorch installed for 'torchforce' (pip install openmmtorch==1.5), "
                       "or backend='pythonforce'", backend) from None
        try:
            module = torch.jit.script(_TorchForceModule(model, atoms))
        except Exception as error:
            raise fail("model", "a TorchScript-compatible model for backend='torchforce' "
                       "(use backend='pythonforce' otherwise)", f"{type(model).__name__}: {error}") from error
        force = TorchForce(module)
        force.setUsesPeriodicBoundaryConditions(model.periodic)
    else:
        force = openmm.PythonForce(ModelComputation(model, atoms))
        force.setUsesPeriodicBoundaryConditions(model.periodic)
    force.setName(f"openmm_accel:{type(model).__name__}")
    if force_group is not None:
        if not 0 <= int(force_group) <= 31:
            raise fail("force_group", "an integer 0-31", force_group)
        force.setForceGroup(int(force_group))
    return force


def _check_system_size(system: openmm.System, model: EnergyModel, atoms) -> None:
    n = system.getNumParticles()
    if atoms is None and model.n_atoms != n:
        raise fail("model", f"a model of {n} atoms (the System's particle count), or atoms=[...]",
                   f"a model of {model.n_atoms} atoms")
    if atoms is not None and max(atoms) >= n:
        raise fail("atoms", f"indices below {n} (the System's particle count)", max(atoms))


def add_to_system(system: openmm.System, model: EnergyModel, backend: str = "torchforce",
                  atoms: Optional[Sequence[int]] = None, force_group: Optional[int] = None) -> int:
    """Add ``model`` to ``system`` (checking atom counts); returns the new force's index."""
    atoms = _check_atoms(model, atoms)
    _check_system_size(system, model, atoms)
    return system.addForce(to_openmm_force(model, backend, atoms, force_group))


def create_ml_system(model: EnergyModel, masses: Sequence[float], backend: str = "torchforce",
                     box_vectors=None) -> openmm.System:
    """A System whose only potential is ``model`` (masses in amu; box in nm when the model is periodic)."""
    values = as_array(masses, unit.amu, "masses")
    if values.shape != (model.n_atoms,):
        raise fail("masses", f"{model.n_atoms} masses (the model's atoms)", f"shape {values.shape}")
    if not np.all(np.isfinite(values) & (values > 0)):
        bad = int(np.flatnonzero(~(np.isfinite(values) & (values > 0)))[0])
        raise fail("masses", "positive, finite masses in amu", f"{values[bad]} at particle {bad}")
    system = openmm.System()
    for mass in values:
        system.addParticle(float(mass))
    if box_vectors is not None:
        system.setDefaultPeriodicBoxVectors(*box_vectors)
    system.addForce(to_openmm_force(model, backend))
    return system


def create_mixed_system(system: openmm.System, model: EnergyModel, atoms: Sequence[int],
                        backend: str = "torchforce", force_group: Optional[int] = None) -> openmm.System:
    """ML/MM with mechanical embedding: ``model`` on ``atoms``, the MM ``system`` everywhere else.

    Returns :func:`embedding_mm_system` of ``system`` with the model's force added. Interactions between
    the region and the rest (electrostatics with the MM charges, Lennard-Jones) stay classical.
    """
    atoms = _check_atoms(model, atoms)
    _check_system_size(system, model, atoms)
    mixed = embedding_mm_system(system, atoms)
    mixed.addForce(to_openmm_force(model, backend, atoms, force_group))
    return mixed


def embedding_mm_system(system: openmm.System, atoms: Sequence[int]) -> openmm.System:
    """A copy of ``system`` without the interactions *inside* the region ``atoms`` (the MM part of ML/MM).

    Every bonded term whose atoms all lie in the region is switched off, and nonbonded pairs inside the
    region are excluded (exceptions with zero charge product and epsilon). Implicit-solvent forces are
    kept as they are.
    """
    atoms = [int(i) for i in atoms]
    region = set(atoms)
    mixed = copy.deepcopy(system)
    for force in mixed.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for i in range(force.getNumBonds()):
                p1, p2, r0, k = force.getBondParameters(i)
                if {p1, p2} <= region:
                    force.setBondParameters(i, p1, p2, r0, 0.0)
        elif isinstance(force, openmm.HarmonicAngleForce):
            for i in range(force.getNumAngles()):
                p1, p2, p3, theta0, k = force.getAngleParameters(i)
                if {p1, p2, p3} <= region:
                    force.setAngleParameters(i, p1, p2, p3, theta0, 0.0)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for i in range(force.getNumTorsions()):
                p1, p2, p3, p4, periodicity, phase, k = force.getTorsionParameters(i)
                if {p1, p2, p3, p4} <= region:
                    force.setTorsionParameters(i, p1, p2, p3, p4, periodicity, phase, 0.0)
        elif isinstance(force, openmm.CMAPTorsionForce):
            if any(set(force.getTorsionParameters(i)[1:]) <= region for i in range(force.getNumTorsions())):
                raise fail("system", "no CMAP torsions inside the ML region (not supported yet)", "CMAP terms")
        elif isinstance(force, openmm.NonbondedForce):
            for i, p1 in enumerate(atoms):
                for p2 in atoms[i + 1:]:
                    force.addException(p1, p2, 0.0, 1.0, 0.0, True)
        elif isinstance(force, openmm.CustomNonbondedForce):
            existing = {tuple(sorted(force.getExclusionParticles(i))) for i in range(force.getNumExclusions())}
            for i, p1 in enumerate(atoms):
                for p2 in atoms[i + 1:]:
                    if (min(p1, p2), max(p1, p2)) not in existing:
                        force.addExclusion(p1, p2)
    return mixed


def region_mm_system(system: openmm.System, atoms: Sequence[int]) -> openmm.System:
    """The region ``atoms`` alone (renumbered in their order), in vacuum, with the force field terms of
    ``system`` that :func:`embedding_mm_system` switches off: harmonic bonds and angles, periodic torsions
    and the nonbonded pairs (with their exceptions) among them, without cutoff. The classical stand-in for
    the ML part of ML/MM (the 'all-MM' draft of speculative dynamics), from the file's own parameters, so
    that a ligand the standard force fields have no template for has one."""
    atoms = [int(i) for i in atoms]
    new = {old: k for k, old in enumerate(atoms)}
    region = openmm.System()
    for i in atoms:
        region.addParticle(system.getParticleMass(i))
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            copy_ = openmm.HarmonicBondForce()
            for k in range(force.getNumBonds()):
                p1, p2, r0, kb = force.getBondParameters(k)
                if p1 in new and p2 in new:
                    copy_.addBond(new[p1], new[p2], r0, kb)
        elif isinstance(force, openmm.HarmonicAngleForce):
            copy_ = openmm.HarmonicAngleForce()
            for k in range(force.getNumAngles()):
                p1, p2, p3, theta0, ka = force.getAngleParameters(k)
                if {p1, p2, p3} <= new.keys():
                    copy_.addAngle(new[p1], new[p2], new[p3], theta0, ka)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            copy_ = openmm.PeriodicTorsionForce()
            for k in range(force.getNumTorsions()):
                p1, p2, p3, p4, periodicity, phase, kt = force.getTorsionParameters(k)
                if {p1, p2, p3, p4} <= new.keys():
                    copy_.addTorsion(new[p1], new[p2], new[p3], new[p4], periodicity, phase, kt)
        elif isinstance(force, openmm.NonbondedForce):
            copy_ = openmm.NonbondedForce()
            copy_.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
            for i in atoms:
                copy_.addParticle(*force.getParticleParameters(i))
            for k in range(force.getNumExceptions()):
                p1, p2, charge_product, sigma, epsilon = force.getExceptionParameters(k)
                if p1 in new and p2 in new:
                    copy_.addException(new[p1], new[p2], charge_product, sigma, epsilon)
        else:
            continue
        region.addForce(copy_)
    return region


def masses_of(system: openmm.System) -> np.ndarray:
    """Particle masses of ``system`` in amu."""
    return np.array([system.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.getNumParticles())])
