"""Draft/target pairs for ML/MM (mechanical embedding) that share their MM part.

With ``target = MM_embedding + ML(region)`` and ``draft = MM_embedding + cheap(region)`` the MM term is
the same object in both, so :class:`~openmm_accel.speculative.engine.SpeculativeEngine` evaluates it
once per drafted step and verifies only ``ML - cheap`` on the region. The target-draft force difference
is zero on every solvent atom, so acceptance does not fall with the size of the water box.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import openmm

from ..devices import AUTO
from ..forces import embedding_mm_system, region_mm_system
from ..models.base import EnergyModel
from ..models.classical import OpenMMEnergyModel
from ..models.composite import ModelSum
from ..systems import subset_topology


def embedding_pair(system: openmm.System, atoms: Sequence[int], target_region: EnergyModel,
                   draft_region: EnergyModel, device: str = AUTO) -> Tuple[ModelSum, ModelSum]:
    """``(draft, target)`` for an ML/MM ``system`` (the MM System before embedding) and region ``atoms``; the MM
    part runs on ``device`` (one thread on the CPU)."""
    mm = OpenMMEnergyModel(embedding_mm_system(system, atoms), device=device, threads=1)
    n = system.getNumParticles()
    return ModelSum(n, [(mm, None), (draft_region, atoms)]), ModelSum(n, [(mm, None), (target_region, atoms)])


def region_force_field_model(system: openmm.System, topology, atoms: Sequence[int],
                             device: str = AUTO) -> OpenMMEnergyModel:
    """The ML/MM ``system``'s own force field on the region ``atoms`` alone, in vacuum
    (:func:`~openmm_accel.forces.region_mm_system`): the 'all-MM' draft's region term."""
    return OpenMMEnergyModel(region_mm_system(system, atoms), subset_topology(topology, atoms), device=device,
                             threads=1)
