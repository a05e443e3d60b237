"""Langevin speculative dynamics (LSD) as an OpenMM integrator (Kosmala et al. 2026, arXiv:2606.02455).

A cheap *draft* model proposes ABOBA steps; an expensive *target* model verifies them (batched, or on
Ray workers); the reflection maximal coupling commits a trajectory distributed exactly as ABOBA with the
target. The Simulation's System must be the target's: the first step checks that its forces agree.
"""
from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import openmm
from openmm import unit

from ..devices import Placement
from ..forces import masses_of
from ..integrators.aboba import LangevinABOBAIntegrator
from ..integrators.base import exploded
from ..integrators.constraints import Constraints
from ..models.base import EnergyModel
from ..models.classical import OpenMMEnergyModel
from ..potentials import MLPotential
from ..validation import InputError, SimulationError, count, fail, positive
from .engine import NEVER, ABOBAParameters, Correction, ModelEvaluator, SpeculativeEngine, Statistics
from .schedulers import create_scheduler

ModelLike = Union[EnergyModel, openmm.System, MLPotential]
_PREFIX = "lsd_"


def as_energy_model(model: ModelLike, role: str, topology=None) -> EnergyModel:
    """An energy model from an ``EnergyModel``, an ``openmm.System`` (evaluated in its own Context, on
    the Simulation's platform: see :meth:`SpeculativeLangevinIntegrator.check_context`) or an
    :class:`~openmm_accel.MLPotential` (for ``topology``: the one it, or the other role's potential, made
    a System for)."""
    if isinstance(model, EnergyModel):
        return model
    if isinstance(model, MLPotential):
        if model.atoms is not None:
            raise fail(role, "an MLPotential used with createSystem (for ML/MM, build draft and target with "
                       "speculative.mlmm.embedding_pair, which share the MM term)", f"{model!r} of an ML region")
        if topology is None:
            raise fail(role, "an MLPotential that has made the Simulation's System (call createSystem first), or "
                       "potential.model(topology)", f"{model!r}, which has made no System")
        return model.model(topology)
    if isinstance(model, openmm.System):
        wrapped = OpenMMEnergyModel(model)
        wrapped.follows_simulation_platform = True
        return wrapped
    raise fail(role, "an openmm_accel EnergyModel or an openmm.System", type(model).__name__)


def _adopt_platform(model: EnergyModel, context: openmm.Context) -> None:
    """Evaluate a System given as draft/target where the Simulation runs (its platform and device); one
    thread on the CPU platform."""
    if getattr(model, "follows_simulation_platform", False):
        model.where = Placement.of(context)


@dataclass(frozen=True)
class Verification:
    """What verification does with the target forces it computes, besides accepting or reflecting drafts.

    ``error_correction``: add a committed step's target-minus-draft force to every draft (exact; default on):
    the one measured before the last rejection or the last refresh, every ``correction_period`` steps (default:
    the scheduler's). Which correction a draft uses depends only on the committed history, so a seeded run is
    reproducible. ``online``: online distillation, an object with ``observe(midpoints, target_forces) ->
    bool`` (e.g. :class:`~openmm_accel.speculative.force_matched.OnlineForceMatching`) that refines the draft
    with the verified target forces and returns True when the draft changed; every step is drafted and
    verified with one frozen draft, so the committed trajectory stays exact. ``check_target``: compare target
    and Simulation forces at the first step (default on). ``slack``: BIASED, off by default: pull the target
    force toward the draft by at most this much per component (kJ/mol/nm); the trajectory is then no longer
    the target's.
    """

    error_correction: bool = True
    correction_period: Optional[int] = None
    online: Any = None
    check_target: bool = True
    slack: Any = None


class SpeculativeLangevinIntegrator(LangevinABOBAIntegrator):
    """ABOBA Langevin dynamics with the target's exact path distribution, computed speculatively.

    Parameters
    ----------
    temperature, friction, timestep
        As for :class:`LangevinABOBAIntegrator` (defaults 300 K, 1/ps, 1 fs). Friction must be positive.
    draft : EnergyModel, openmm.System or MLPotential
        The cheap model that proposes steps. A System is evaluated in its own Context on the Simulation's
        platform (its forces only: the constraints are the Simulation's, kept with RATTLE projections);
        wrap it in ``OpenMMEnergyModel(system, device=...)`` to choose another. An
        ``MLPotential`` (e.g. ``MLPotential("ani1x", member=0)``) is applied to the topology the target
        potential made the System for.
    target : EnergyModel, openmm.System or MLPotential, optional
        The model whose dynamics is sampled. It must be the Simulation's potential (checked at the first
        step). Default: the Simulation's own System, evaluated one configuration at a time; pass the
        batched energy model you built the System from to get batched verification.
    scheduler : {"batched", "ray"} or a scheduler
        Synchronous batched rounds on one device (:class:`~.schedulers.BatchedScheduler`: its window, whether
        it adapts to the measured acceptance and costs, its upper bound), or the asynchronous pipeline over
        Ray workers (:class:`~.ray_scheduler.RayScheduler`: its workers and steps per pipeline run); a name
        means the scheduler's defaults.
    seed : int, optional
        Seed of the step noise (random if omitted). Stored in the integrator, so checkpoints keep it.
    verification : Verification, optional
        What verification does besides accepting or reflecting: error correction, online refinement of the
        draft, the target check, and the (biased) slack; see :class:`Verification`.

    Statistics are properties (``acceptance_rate``, ``predicted_acceptance``, ``statistics``) backed by
    integrator variables, so they survive checkpoints. Steps verified ahead of what the Simulation asked
    for are kept in a look-ahead buffer and discarded if the Context's state, temperature, friction or
    time step are changed from outside.
    """

    def __init__(self, temperature=300.0 * unit.kelvin, friction=1.0 / unit.picosecond,
                 timestep=1.0 * unit.femtosecond, draft: Optional[ModelLike] = None,
                 target: Optional[ModelLike] = None, scheduler="batched", seed: Optional[int] = None,
                 verification: Optional["Verification"] = None):
        super().__init__(temperature, friction, timestep)
        positive(friction, unit.picosecond**-1, "friction")  # unlike plain ABOBA, LSD needs noise: gamma > 0
        if draft is None:
            raise fail("draft", "a draft model (EnergyModel or openmm.System)", None)
        topology = next((potential.topology for potential in (target, draft) if isinstance(potential, MLPotential)
                         and potential.topology is not None), None)
        self.draft_model = as_energy_model(draft, "draft", topology)
        self.target_model = None if target is None else as_energy_model(target, "target", topology)
        self.scheduler = create_scheduler(scheduler)
        verification = Verification() if verification is None else verification
        if not isinstance(verification, Verification):
            raise fail("verification", "a Verification", type(verification).__name__)
        self.error_correction = bool(verification.error_correction)
        period = verification.correction_period
        period = getattr(self.scheduler, "correction_period", None) if period is None else period
        if period is None:
            raise fail("scheduler", "a scheduler with a correction_period (see speculative.schedulers), or "
                       "Verification(correction_period=...)", type(self.scheduler).__name__)
        self.correction_period = count(period, "correction_period") if self.error_correction else NEVER
        slack = verification.slack
        self.slack = None if slack is None else positive(slack, unit.kilojoule_per_mole / unit.nanometer, "slack")
        if self.slack is not None:
            warnings.warn("SpeculativeLangevinIntegrator: slack > 0 is BIASED; the trajectory is no longer "
                          "distributed as the target's", stacklevel=2)
        self.check_target = bool(verification.check_target)
        self.draft_trainer = verification.online
        seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
        self.addGlobalVariable(_PREFIX + "seed", seed)
        self.addGlobalVariable(_PREFIX + "step", 0)
        self.addGlobalVariable(_PREFIX + "correction_start", 0)
        self.addPerDofVariable(_PREFIX + "offset", 0.0)
        for name in Statistics.NAMES:
            self.addGlobalVariable(_PREFIX + name, 0.0)
        self.engine: Optional[SpeculativeEngine] = None
        self._buffer = deque()
        self._written = None  # (positions, velocities) last written to the Context
        self._index = 0
        self._correction: Optional[Correction] = None
        self._position = self._velocity = None
        self._constraints: Optional[Constraints] = None

    # -- set-up at the first step ----------------------------------------------------------------------
    def check_context(self, context: openmm.Context) -> None:
        super().check_context(context)
        system = context.getSystem()
        n = system.getNumParticles()
        masses = masses_of(system)
        if self.target_model is None:
            self.target_model = as_energy_model(system, "target")
        for model in (self.draft_model, self.target_model):
            _adopt_platform(model, context)
        for role, model in (("draft", self.draft_model), ("target", self.target_model)):
            if model.n_atoms != n:
                raise fail(role, f"a model of {n} atoms (the Simulation's System)", f"{model.n_atoms} atoms")
            if isinstance(model, OpenMMEnergyModel):
                other = masses_of(model.system)
                if not np.allclose(other, masses, rtol=1e-9):
                    raise fail(role, "a System with the same particle masses as the Simulation's",
                               f"masses differing at particles {np.flatnonzero(~np.isclose(other, masses))[:5]}")
        draft_z, target_z = self.draft_model.atomic_numbers, self.target_model.atomic_numbers
        if draft_z is not None and target_z is not None and list(draft_z) != list(target_z):
            raise fail("draft", "the same elements in the same order as the target", "different atomic numbers")
        self._constraints = Constraints.from_system(system, masses)
        self.engine = SpeculativeEngine(self.draft_model, self.target_model, self._parameters(masses),
                                        int(self.getGlobalVariableByName(_PREFIX + "seed")),
                                        self.error_correction, self.slack)
        if self.check_target:
            self._check_target_matches(context)

    def _parameters(self, masses) -> ABOBAParameters:
        return ABOBAParameters.create(self.getGlobalVariableByName("kT"), self.getGlobalVariableByName("friction"),
                                      self.getStepSize().value_in_unit(unit.picosecond), masses, self._constraints)

    def _check_target_matches(self, context: openmm.Context) -> None:
        state = context.getState(getPositions=True, getForces=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        expected = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        forces, _ = ModelEvaluator(self.target_model, "target").forces(x[None], 0)
        if not (np.all(np.isfinite(expected)) and np.all(np.isfinite(forces))):
            return  # nothing to compare (e.g. positions not set yet); non-finite forces stop the run later
        scale = max(np.max(np.abs(expected)), 1.0)
        if np.max(np.abs(forces[0] - expected)) > 1e-3 * scale:
            raise InputError("target: expected the Simulation's own potential (the committed dynamics is the "
                             "target's), but the target's forces differ from the System's by up to "
                             f"{np.max(np.abs(forces[0] - expected)):.3g} kJ/mol/nm; build the System from the "
                             "target model, or pass check_target=False if this is intended")

    # -- keeping Python and the Context in step -------------------------------------------------------
    def begin_steps(self, context: openmm.Context) -> None:
        state = context.getState(getPositions=True, getVelocities=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        v = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        params = self.engine.params
        kt, friction = self.getGlobalVariableByName("kT"), self.getGlobalVariableByName("friction")
        timestep = self.getStepSize().value_in_unit(unit.picosecond)
        in_sync = (self._written is not None and np.array_equal(x, self._written[0])
                   and np.array_equal(v, self._written[1]) and params.matches(kt, friction, timestep))
        if in_sync:
            return
        # The Context was changed from outside (first step, setPositions, checkpoint, new T/gamma/h):
        # forget all look-ahead and take the integrator variables as the truth.
        self._buffer.clear()
        if not params.matches(kt, friction, timestep):
            self.engine.params = self._parameters(1.0 / params.inverse_mass[:, 0])
        self._position, self._velocity = x, v
        self._index = int(self.getGlobalVariableByName(_PREFIX + "step"))
        offset = self.per_dof(_PREFIX + "offset") if self.error_correction else np.zeros_like(x)
        self._correction = Correction(int(self.getGlobalVariableByName(_PREFIX + "correction_start")), offset,
                                      self.correction_period)
        stats = self.engine.statistics
        for name in Statistics.NAMES:
            value = self.getGlobalVariableByName(_PREFIX + name)
            setattr(stats, name, type(getattr(stats, name))(value))

    def end_steps(self, context: openmm.Context, steps_done: int) -> None:
        if self._position is None:
            return
        context.setPositions(self._position)
        context.setVelocities(self._velocity)
        state = context.getState(getPositions=True, getVelocities=True)  # as stored (e.g. float32 on GPUs)
        self._written = (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                         state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
        if not (np.array_equal(self._written[0], self._position) and np.array_equal(self._written[1], self._velocity)):
            self._buffer.clear()  # the Context rounded the state: the look-ahead no longer starts from it
            self._position, self._velocity = self._written
        self.setGlobalVariableByName(_PREFIX + "step", self._index)
        self.setGlobalVariableByName(_PREFIX + "correction_start", self._correction.start)
        self.set_per_dof(_PREFIX + "offset", self._correction.offset)
        for name in Statistics.NAMES:
            self.setGlobalVariableByName(_PREFIX + name, float(getattr(self.engine.statistics, name)))

    # -- the step -------------------------------------------------------------------------------------
    def advance(self, max_steps: int) -> int:
        if not self._buffer:
            self._refill()
        count = min(max_steps, len(self._buffer))
        for _ in range(count):
            step = self._buffer.popleft()
            self._check_state(step)
            self._position, self._velocity = step.position, step.velocity
            self._correction = self._correction.after(step)
            self._index = step.index + 1
        return count

    def _refill(self) -> None:
        # Drafted from the committed state and correction; the steps fold into the correction as they are
        # committed (advance), so a checkpoint taken inside the look-ahead resumes on the same path.
        steps = self.scheduler.run(self.engine, self._index, self._position, self._velocity, self._correction,
                                   self.scheduler.next_window(self.engine))
        self._buffer.extend(steps)
        if self.draft_trainer is not None and self.draft_trainer.observe([s.midpoint for s in steps],
                                                                         [s.target_force for s in steps]):
            self.engine.draft_version_changed()

    def _check_state(self, step) -> None:
        if exploded(step.position, step.velocity) is not None:
            self._buffer.clear()
            raise SimulationError(f"non-finite or exploding state at step {step.index + 1}; the committed "
                                  "trajectory up to the previous step was kept")

    # -- statistics -----------------------------------------------------------------------------------
    @property
    def statistics(self) -> dict:
        """Counters and rates: acceptance (measured and predicted from force errors), streaks, calls, times.

        Read from the integrator variables, so they are those of the Context's state (also after a
        checkpoint is loaded); counts include steps verified into the look-ahead buffer.
        """
        stats = Statistics()
        for name in Statistics.NAMES:
            setattr(stats, name, type(getattr(stats, name))(self.getGlobalVariableByName(_PREFIX + name)))
        out = stats.as_dict()
        out["window"] = getattr(self.scheduler, "window", None)
        out["scheduler"] = self.scheduler.name
        return out

    @property
    def acceptance_rate(self) -> float:
        return self.statistics["acceptance_rate"]

    @property
    def predicted_acceptance(self) -> float:
        return self.statistics["predicted_acceptance"]

    def close(self) -> None:
        """Release scheduler resources (Ray workers)."""
        self.scheduler.close()
