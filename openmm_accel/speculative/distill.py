"""Distilled drafts: sample a short plain-target run and force-match a cheap model to it.

``distill(...)`` runs ABOBA with the target (the System the Simulation will use), collects the exact
midpoints at which the target's forces act (:func:`openmm_accel.learning.sampling.sample_midpoints`),
evaluates the target there in batches, and fits a
:class:`~openmm_accel.speculative.force_matched.ForceMatchedModel` on the region ``atoms`` (the whole molecule
in vacuum, the solute in ML/MM) in the metric verification sees errors in (mass-weighted, along the
constraints' tangent space: :class:`~openmm_accel.speculative.force_matched.AcceptanceMetric`). The returned
data seed :class:`OnlineForceMatching`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import openmm

from ..devices import AUTO, Placement
from ..forces import masses_of
from ..integrators import Langevin
from ..integrators.constraints import Constraints
from ..learning.sampling import sample_midpoints
from ..models.base import EnergyModel, label_forces
from .force_matched import AcceptanceMetric, ForceMatchedModel


#: The distillation run's settings unless told: 300 K, 1/ps, 1 fs, seed 1.
DISTILLATION = Langevin(300.0, 1.0, 1.0)


@dataclass
class DistilledDraft:
    model: ForceMatchedModel
    midpoints: np.ndarray       # (M, n_region, 3) nm
    target_forces: np.ndarray   # (M, n_region, 3) kJ/mol/nm
    train_rms: float
    final_state: openmm.State   # where the sampling run ended (a good start for the speculative run)


def distill(target_region: EnergyModel, molecular, state: openmm.State, langevin: Langevin = DISTILLATION,
            atoms: Optional[Sequence[int]] = None, steps: int = 2000, stride: int = 2,
            device: str = AUTO) -> DistilledDraft:
    """Fit a :class:`ForceMatchedModel` on ``atoms`` to ``target_region`` along a short ABOBA run (``langevin``)
    of ``molecular``'s System from ``state``, on ``device``."""
    topology, system = molecular.topology, molecular.system
    model = ForceMatchedModel(topology, atoms)
    model.check_memory()  # before the sampling run: a molecule too large is refused at once
    midpoints, final = sample_midpoints(system, state, langevin, steps, stride, Placement(device))
    region = midpoints if atoms is None else midpoints[:, list(atoms)]
    forces = label_forces(target_region, region, batch=32, role="target")
    rms = model.fit(region, forces, metric=acceptance_metric(system, atoms))
    return DistilledDraft(model, region, forces, rms, final)


def acceptance_metric(system: openmm.System, atoms: Optional[Sequence[int]] = None) -> AcceptanceMetric:
    """The acceptance metric of the region ``atoms`` of ``system`` (its masses and the constraints among them)."""
    atoms = list(range(system.getNumParticles())) if atoms is None else list(atoms)
    constraints = Constraints.from_system(system)
    return AcceptanceMetric(masses_of(system)[atoms], None if constraints is None else constraints.among(atoms))

