"""Ready-made draft/target pairs for the standard set-ups (used by ``openmm-accel run/bench``).

Drafts:

* ``"distilled"`` - a :class:`~openmm_accel.speculative.force_matched.ForceMatchedModel` fitted to the target
  along a short plain-target run (optionally refined online during the run);
* ``"member"`` - one network of the ANI-1x ensemble;
* ``"mm"`` - the classical force field.

In vacuum the target is the ML model itself; in solvent (ML/MM) draft and target share the MM
embedding term (:mod:`.mlmm`), so the verifier only evaluates the solute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import openmm

from ..models import create
from ..models.base import EnergyModel
from ..models.classical import OpenMMEnergyModel
from ..validation import choice
from .distill import distill
from .force_matched import ForceMatchedModel, OnlineForceMatching
from .mlmm import embedding_pair, region_force_field_model

DRAFTS = ("distilled", "member", "mm")


@dataclass
class SpeculativePair:
    draft: EnergyModel
    target: EnergyModel
    trainer: Optional[OnlineForceMatching] = None
    distill_rms: Optional[float] = None
    start: Optional[openmm.State] = None  # state after the distillation run (a good place to start)


def speculative_pair(kind: str, model_name: str, target_region: EnergyModel, topology,
                     mm_system: openmm.System, simulation_system: openmm.System, state: openmm.State,
                     region: Optional[Sequence[int]] = None, member: int = 0, distill_steps: int = 2000,
                     online: bool = False, temperature=300.0, friction=1.0, timestep=0.001,
                     platform: str = "Reference", draft_file: Optional[str] = None,
                     load_draft: bool = True) -> SpeculativePair:
    """Build draft and target for ``target_region`` (on ``region`` atoms, or all atoms in vacuum).

    ``draft_file``: for ``"distilled"``, load the fitted parameters from this file instead of
    distilling (written by a previous run; only if ``load_draft``), or write them there after distilling.
    """
    import os
    choice(kind, DRAFTS, "draft")
    start, rms, trainer = None, None, None
    if kind == "member":
        options = {"member": member} if region is None else {"member": member, "atoms": region}
        draft_region = create(model_name, topology, **options)
    elif kind == "mm":
        draft_region = (OpenMMEnergyModel(mm_system, topology, platform="CPU", properties={"Threads": "1"})
                        if region is None else region_force_field_model(topology, region))
    else:
        if draft_file and load_draft and os.path.isfile(draft_file):
            draft_region = ForceMatchedModel(topology, region)
            draft_region.load(draft_file)
        else:
            distilled = distill(target_region, topology, simulation_system, state, region, distill_steps, 2,
                                temperature, friction, timestep, platform)
            draft_region, rms, start = distilled.model, distilled.train_rms, distilled.final_state
            if draft_file:
                draft_region.save(draft_file)
            if online:
                trainer = OnlineForceMatching(draft_region, region)
                trainer.start(distilled.midpoints, distilled.target_forces)
        if online and trainer is None:
            trainer = OnlineForceMatching(draft_region, region)
    if region is None:
        return SpeculativePair(draft_region, target_region, trainer, rms, start)
    draft, target = embedding_pair(mm_system, region, target_region, draft_region)
    return SpeculativePair(draft, target, trainer, rms, start)
