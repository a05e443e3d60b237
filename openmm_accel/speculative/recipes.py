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
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import openmm
from openmm import unit

from ..devices import torch_device
from ..models import create
from ..models.base import EnergyModel
from ..models.classical import OpenMMEnergyModel
from ..integrators import Langevin
from ..method import Start
from ..validation import choice, fail
from .config import DRAFTS, SpeculativeConfig
from .distill import acceptance_metric, distill
from .force_matched import ForceMatchedModel, OnlineForceMatching
from .integrator import SpeculativeLangevinIntegrator, Verification
from .mlmm import embedding_pair, region_force_field_model
from .schedulers import BatchedScheduler, create_scheduler



@dataclass
class SpeculativePair:
    draft: EnergyModel
    target: EnergyModel
    trainer: Optional[OnlineForceMatching] = None
    distill_rms: Optional[float] = None
    start: Optional[openmm.State] = None  # state after the distillation run (a good place to start)


def speculative_pair(options: SpeculativeConfig, model_name: str, start: Start, langevin: Langevin,
                     draft_file: Optional[str] = None, load_draft: bool = True) -> SpeculativePair:
    """Draft and target for ``start.molecular``'s ML model (``model_name``, on its region, or on all atoms in
    vacuum), the draft of kind ``options.draft``; a distilled draft is fitted along ``langevin`` dynamics from
    ``start.state``.

    ``draft_file``: for ``"distilled"``, load the fitted parameters from this file instead of
    distilling (written by a previous run; only if ``load_draft``), or write them there after distilling.
    """
    molecular, kind, member = start.molecular, options.draft, options.draft_member
    target_region, topology, mm_system, region = (molecular.model, molecular.topology, molecular.mm_system,
                                                  molecular.region)
    choice(kind, DRAFTS, "draft")
    after, rms, trainer = None, None, None  # after: the distillation run's end state
    if kind == "member":
        chosen = {"member": member} if region is None else {"member": member, "atoms": region}
        draft_region = create(model_name, topology, **chosen)
    elif kind == "mm":
        draft_region = (OpenMMEnergyModel(mm_system, topology, start.device, threads=1)
                        if region is None else region_force_field_model(mm_system, topology, region, start.device))
    else:
        distilled = None
        if draft_file and load_draft and os.path.isfile(draft_file):
            draft_region = ForceMatchedModel(topology, region)
            draft_region.load(draft_file)
        else:
            # the distillation's own noise (seed 1), whatever the run's seed
            distilled = distill(target_region, molecular, start.state, replace(langevin, seed=1), region,
                                options.distill_steps, 2, start.device)
            draft_region, rms, after = distilled.model, distilled.train_rms, distilled.final_state
            if draft_file:
                draft_region.save(draft_file)
        if options.online:  # refined in the metric it was fitted in, from the distillation data when there are some
            trainer = OnlineForceMatching(draft_region, region, metric=acceptance_metric(molecular.system, region))
            if distilled is not None:
                trainer.start(distilled.midpoints, distilled.target_forces)
    if region is None:
        draft, target = draft_region, target_region
    else:
        draft, target = embedding_pair(mm_system, region, target_region, draft_region, start.device)
    device = torch_device(start.device)  # batched drafting and verification run there
    return SpeculativePair(draft.to(device), target.to(device), trainer, rms, after)


def speculative_integrator(langevin: Langevin, model: str, options: SpeculativeConfig, start: Start,
                           draft_file: Optional[str] = None,
                           load_draft: bool = False) -> Tuple[SpeculativeLangevinIntegrator, openmm.State]:
    """The speculative integrator of ``langevin`` with ``start.molecular``'s ML potential (``model``) as target
    and a draft of it chosen by ``options``, and the state to start from (after distillation, its final
    state). ``draft_file``: where a distilled draft is written, or read from if ``load_draft``."""
    molecular, state = start.molecular, start.state
    if molecular.model is None:
        raise fail("model", "an ML target for --method lsd (the draft approximates it)", model)
    pair = speculative_pair(options, model, start, langevin, draft_file, load_draft=load_draft)
    scheduler = (BatchedScheduler(options.window, options.adaptive_window) if options.scheduler == "batched" else
                 create_scheduler("ray", workers=options.workers, chunk=options.window, device=start.device))
    integrator = SpeculativeLangevinIntegrator(langevin.temperature_k * unit.kelvin,
                                               langevin.friction_per_ps / unit.picosecond,
                                               langevin.timestep_fs * unit.femtosecond, draft=pair.draft,
                                               target=pair.target, scheduler=scheduler, seed=langevin.seed,
                                               verification=Verification(options.error_correction,
                                                                         online=pair.trainer))
    return integrator, pair.start or state
