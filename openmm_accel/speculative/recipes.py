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

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import openmm
from openmm import unit

from ..models import create
from ..models.base import EnergyModel
from ..models.classical import OpenMMEnergyModel
from ..method import Langevin, Start
from ..validation import choice, fail
from .config import DRAFTS, SpeculativeConfig
from .distill import acceptance_metric, distill
from .force_matched import ForceMatchedModel, OnlineForceMatching
from .integrator import SpeculativeLangevinIntegrator
from .mlmm import embedding_pair, region_force_field_model



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
    choice(kind, DRAFTS, "draft")
    start, rms, trainer = None, None, None
    if kind == "member":
        options = {"member": member} if region is None else {"member": member, "atoms": region}
        draft_region = create(model_name, topology, **options)
    elif kind == "mm":
        draft_region = (OpenMMEnergyModel(mm_system, topology, platform="CPU", properties={"Threads": "1"})
                        if region is None else region_force_field_model(topology, region))
    else:
        distilled = None
        if draft_file and load_draft and os.path.isfile(draft_file):
            draft_region = ForceMatchedModel(topology, region)
            draft_region.load(draft_file)
        else:
            distilled = distill(target_region, topology, simulation_system, state, region, distill_steps, 2,
                                temperature, friction, timestep, platform)
            draft_region, rms, start = distilled.model, distilled.train_rms, distilled.final_state
            if draft_file:
                draft_region.save(draft_file)
        if online:  # refined in the metric it was fitted in, from the distillation data when there are some
            trainer = OnlineForceMatching(draft_region, region, metric=acceptance_metric(simulation_system, region))
            if distilled is not None:
                trainer.start(distilled.midpoints, distilled.target_forces)
    if region is None:
        return SpeculativePair(draft_region, target_region, trainer, rms, start)
    draft, target = embedding_pair(mm_system, region, target_region, draft_region)
    return SpeculativePair(draft, target, trainer, rms, start)


def speculative_integrator(langevin: Langevin, model: str, options: SpeculativeConfig, start: Start,
                           draft_file: Optional[str] = None,
                           load_draft: bool = False) -> Tuple[SpeculativeLangevinIntegrator, openmm.State]:
    """The speculative integrator of ``langevin`` with ``start.setup``'s ML potential (``model``) as target
    and a draft of it chosen by ``options``, and the state to start from (after distillation, its final
    state). ``draft_file``: where a distilled draft is written, or read from if ``load_draft``."""
    setup, state = start.setup, start.state
    if setup.model is None:
        raise fail("model", "an ML target for --method lsd (the draft approximates it)", model)
    pair = speculative_pair(options.draft, model, setup.model, setup.molecular.topology, setup.mm_system,
                            setup.molecular.system, state, setup.region, options.draft_member, options.distill_steps,
                            options.online, langevin.temperature_k, langevin.friction_per_ps,
                            langevin.timestep_fs * 1e-3, start.platform.getName(), draft_file, load_draft=load_draft)
    integrator = SpeculativeLangevinIntegrator(langevin.temperature_k * unit.kelvin,
                                               langevin.friction_per_ps / unit.picosecond,
                                               langevin.timestep_fs * unit.femtosecond, draft=pair.draft,
                                               target=pair.target, scheduler=options.scheduler,
                                               window=options.window, adaptive_window=options.adaptive_window,
                                               workers=options.workers, error_correction=options.error_correction,
                                               seed=langevin.seed, draft_trainer=pair.trainer)
    return integrator, pair.start or state
