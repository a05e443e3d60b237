"""Drafting, verifying and committing ABOBA steps: the scheduler-independent core of LSD.

A step from the committed state (x, v) with index n (Kosmala et al. 2026, arXiv:2606.02455)::

    x'  = x + (h/2) v                                   # midpoint, model independent
    mu_q = a v + c (F_draft(x') + offset) / m           # draft mean; c = (1 + a) h / 2
    v_q = mu_q + sigma xi_n                             # drafted velocity
    x_q = x' + (h/2) v_q                                # drafted position; the next draft starts here

With constraints, each half drift is RATTLE's (position projection, velocity correction and projection,
all model independent) and the velocity Gaussian is projected onto the tangent space at x':
``mu_q = a v + c P(F/m)``, ``v_q = mu_q + P(sigma xi_n)``. Whitened, both Gaussians are standard normal
on the same subspace and their mean difference lies in it, so the reflection coupling acts on the
projected mean difference and stays on the subspace (docs/lsd-constraints.md).

Verification needs the target force at the same midpoint, ``mu_p = a v + c F_target(x') / m``, and the
coupling of :mod:`.coupling` decides with ``u_n``. The randomness ``(xi_n, u_n)`` is a pure function of
``(seed, n)``: redrafting step n after a rejection reuses it (it is independent of everything committed
before n, so the committed chain is still exactly the target's), and schedulers that verify in a
different order or grouping give identical trajectories for the same seed and offsets.

``offset`` is speculative error correction: a target-minus-draft force measured at the midpoint of a
committed step. It is recorded with every draft, so the verifier uses the true draft density and
exactness holds. Which measurement a draft uses is fixed by the committed history alone (a
:class:`Correction`: refreshed after every rejection and every ``period`` committed steps), never by
how the work was scheduled or timed, so a seeded run is reproducible whatever the windows, the
scheduler or the machine's speed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..integrators.constraints import Constraints, TangentProjector
from ..models.base import EnergyModel
from ..models.composite import split_shared, sum_of
from ..validation import SimulationError, fail
from .coupling import acceptance_probability, couple

NOISE_BLOCK = 64  # steps of Gaussian noise generated together


@dataclass
class ABOBAParameters:
    """Constants of one ABOBA step for given masses (float64; per-atom arrays shaped ``(N, 1)``)."""

    timestep: float
    a: float
    c: float
    sigma: np.ndarray
    inverse_mass: np.ndarray
    kt: float
    friction: float
    constraints: Optional[Constraints] = None

    @classmethod
    def create(cls, kt: float, friction: float, timestep: float, masses: np.ndarray,
               constraints: Optional[Constraints] = None) -> "ABOBAParameters":
        masses = np.asarray(masses, dtype=np.float64).reshape(-1, 1)
        if np.any(masses <= 0):
            raise fail("system", "positive masses for every particle (no virtual sites)", "a massless particle")
        a = math.exp(-friction * timestep)
        if a >= 1.0:
            raise fail("friction", "a positive friction (speculative coupling needs the Langevin noise)", friction)
        return cls(timestep, a, (1 + a) * 0.5 * timestep, np.sqrt(kt * (1 - a * a) / masses), 1.0 / masses, kt,
                   friction, constraints)

    def matches(self, kt: float, friction: float, timestep: float) -> bool:
        return (self.kt, self.friction, self.timestep) == (kt, friction, timestep)

    def drift(self, position: np.ndarray, velocity: np.ndarray):
        """A: half a step of free flight, then RATTLE's position and velocity projections if constrained.
        Returns the new position and velocity and the tangent projection there (``None`` if unconstrained)."""
        moved = position + 0.5 * self.timestep * velocity
        if self.constraints is None:
            return moved, velocity, None
        constrained = self.constraints.positions(position, moved)
        projector = self.constraints.projector(constrained)
        return constrained, projector(velocity + (constrained - moved) / (0.5 * self.timestep)), projector


@dataclass
class DraftedStep:
    """One drafted step and everything needed to verify it."""

    index: int
    velocity: np.ndarray          # v after the first half drift (v_n itself without constraints)
    midpoint: np.ndarray          # x'
    draft_force: np.ndarray       # F_draft(x'), without the offset (shared terms included)
    offset: np.ndarray            # error-correction offset used for this draft
    mean: np.ndarray              # mu_q
    noise: np.ndarray             # the whitened draw: xi_n, projected if constrained
    sample: np.ndarray            # the drafted Gaussian velocity mu_q + sigma * noise
    position_out: Optional[np.ndarray]  # drafted x_{n+1} ... (None: the constraints could not be kept)
    velocity_out: Optional[np.ndarray]  # ... and v_{n+1} (the sample, RATTLE-corrected if constrained)
    projector: Optional[TangentProjector] = None  # the tangent projection at x' (constraints only)
    shared_force: Optional[np.ndarray] = None  # forces of the terms draft and target share, at x'
    draft_version: int = 0


@dataclass
class VerifiedStep:
    """The committed outcome of one drafted step."""

    index: int
    position: np.ndarray
    velocity: np.ndarray
    accepted: bool
    delta_norm: float
    offset: np.ndarray            # F_target - F_draft at this step's midpoint: the next error correction
    midpoint: np.ndarray          # x' of this step ...
    target_force: np.ndarray      # ... and the forces of the target's own (not shared) terms there:
                                  # the training data of a distilled draft


NEVER = 2**62  # a refresh period that never comes (no error correction)


@dataclass
class Correction:
    """The error-correction offset drafts use from step ``start`` on, until step ``start + period`` or the
    next rejection, whichever comes first; then the correction measured at the step before replaces it.

    Drafting never runs past :attr:`limit` before the step before it is committed, so every draft's offset
    is a function of the committed history and the period: the same seed gives the same path."""

    start: int
    offset: np.ndarray
    period: int = NEVER

    @property
    def limit(self) -> int:
        """The first step that needs a refreshed offset."""
        return self.start + self.period

    def after(self, step: "VerifiedStep") -> "Correction":
        """The correction in force after committing ``step``."""
        if step.accepted and step.index + 1 < self.limit:
            return self
        return Correction(step.index + 1, step.offset, self.period)


@dataclass
class Statistics:
    """Counters of a speculative run (also stored in integrator variables, so checkpoints keep them)."""

    verified: int = 0
    accepted: int = 0
    committed: int = 0
    rounds: int = 0
    draft_calls: int = 0
    target_calls: int = 0
    target_configurations: int = 0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0
    predicted_acceptance_sum: float = 0.0

    NAMES = ("verified", "accepted", "committed", "rounds", "draft_calls", "target_calls",
             "target_configurations", "draft_seconds", "target_seconds", "predicted_acceptance_sum")

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.verified if self.verified else float("nan")

    @property
    def predicted_acceptance(self) -> float:
        """Mean of 2 Phi(-|delta|/2) over verified steps: the acceptance the force errors predict."""
        return self.predicted_acceptance_sum / self.verified if self.verified else float("nan")

    @property
    def mean_streak(self) -> float:
        """Committed steps per synchronous round (or per pipeline flush)."""
        return self.committed / self.rounds if self.rounds else float("nan")

    def as_dict(self) -> Dict[str, float]:
        out = {name: getattr(self, name) for name in self.NAMES}
        out.update(acceptance_rate=self.acceptance_rate, predicted_acceptance=self.predicted_acceptance,
                   mean_streak=self.mean_streak)
        return out


class ModelEvaluator:
    """Float64 forces of an energy model for ``(B, N, 3)`` float64 arrays, with timing and NaN checks.

    Models that rely on autograd forces are compiled with TorchScript when possible (as TorchForce does
    for the Simulation), which removes most of the Python overhead of small batches.
    """

    def __init__(self, model: EnergyModel, role: str):
        self.model = model
        self.role = role
        self._dtype, self._device = model.dtype, model.device  # looked up once: they walk the tensors
        self._compiled = None
        if type(model).energies_and_forces is EnergyModel.energies_and_forces:
            try:
                self._compiled = torch.jit.script(model)
            except Exception:  # not scriptable: evaluate eagerly
                self._compiled = None

    def energies_and_forces(self, positions: torch.Tensor):
        if self._compiled is None:
            return self.model.energies_and_forces(positions)
        positions = positions.detach().requires_grad_(True)
        energies = self._compiled(positions)
        (gradient,) = torch.autograd.grad(energies.sum(), positions)
        return energies.detach(), -gradient

    def forces(self, positions: np.ndarray, first_step: int, check: bool = True) -> Tuple[np.ndarray, float]:
        """Float64 forces at ``positions`` ``(B, N, 3)`` and the seconds they took; non-finite ones raise
        :class:`SimulationError` naming the step, unless ``check`` is off (the caller checks in order)."""
        began = time.perf_counter()
        tensor = torch.as_tensor(positions, dtype=self._dtype, device=self._device)
        _, forces = self.energies_and_forces(tensor)
        forces = forces.detach().cpu().double().numpy()
        seconds = time.perf_counter() - began
        if check and not np.all(np.isfinite(forces)):
            bad = int(np.argwhere(~np.all(np.isfinite(forces), axis=(1, 2)))[0, 0])
            raise SimulationError(f"the {self.role} model returned non-finite forces at step {first_step + bad}; "
                                  "the committed trajectory up to that step was kept")
        return forces, seconds


class SpeculativeEngine:
    """Drafts and verifies ABOBA steps for a draft/target pair (no scheduling, no OpenMM)."""

    def __init__(self, draft: EnergyModel, target: EnergyModel, params: ABOBAParameters, seed: int,
                 error_correction: bool = True, slack: Optional[float] = None):
        shared, draft_only, target_only = split_shared(draft, target)
        n_atoms = draft.n_atoms
        if shared and draft_only and target_only:
            # Terms both models contain are evaluated once, with the draft; the verifier needs only the rest.
            self.shared = ModelEvaluator(sum_of(n_atoms, shared), "draft")
            self.draft = ModelEvaluator(sum_of(n_atoms, draft_only), "draft")
            self.target = ModelEvaluator(sum_of(n_atoms, target_only), "target")
        else:  # nothing shared, or one model holds all of the other (e.g. the target as its own draft)
            self.shared = None
            self.draft, self.target = ModelEvaluator(draft, "draft"), ModelEvaluator(target, "target")
        self.params = params
        self.seed = int(seed)
        self.error_correction = bool(error_correction)
        self.slack = slack
        self.statistics = Statistics()
        self.draft_version = 0
        self._noise_block: Optional[int] = None
        self._noise: Optional[Tuple[np.ndarray, np.ndarray]] = None

    # -- randomness: a pure function of (seed, step index) -------------------------------------------------
    def noise(self, index: int) -> Tuple[np.ndarray, float]:
        """Standard-normal ``xi_n`` of shape ``(N, 3)`` and ``log u_n`` for step ``index``."""
        block = index // NOISE_BLOCK
        if block != self._noise_block:
            rng = np.random.default_rng([self.seed, block])
            n_atoms = self.params.sigma.shape[0]
            self._noise = (rng.standard_normal((NOISE_BLOCK, n_atoms, 3)), np.log(rng.random(NOISE_BLOCK)))
            self._noise_block = block
        xi, log_u = self._noise
        return xi[index % NOISE_BLOCK], float(log_u[index % NOISE_BLOCK])

    # -- drafting and verifying ------------------------------------------------------------------------
    def draft_version_changed(self) -> None:
        """Record that the draft's parameters changed between steps (exactness is unaffected)."""
        self.draft_version += 1

    def draft_step(self, index: int, position: np.ndarray, velocity: np.ndarray, offset: np.ndarray) -> DraftedStep:
        p = self.params
        midpoint, velocity, projector = p.drift(position, velocity)
        forces, seconds = self.draft.forces(midpoint[None], index)
        shared_force = None
        if self.shared is not None:
            shared, shared_seconds = self.shared.forces(midpoint[None], index)
            shared_force, seconds = shared[0], seconds + shared_seconds
        self.statistics.draft_calls += 1
        self.statistics.draft_seconds += seconds
        draft_force = forces[0] if shared_force is None else forces[0] + shared_force
        mean = p.a * velocity + self._kick(draft_force + offset, projector)
        noise, _ = self.noise(index)
        if projector is not None:
            noise = projector(p.sigma * noise) / p.sigma
        sample = mean + p.sigma * noise
        try:
            position_out, velocity_out, _ = p.drift(midpoint, sample)
        except SimulationError:  # a wild draft's velocity that cannot be constrained: nothing is drafted past
            position_out = velocity_out = None  # this step; the target is sure to reject it (else verify raises)
        return DraftedStep(index, velocity, midpoint, draft_force, offset, mean, noise, sample, position_out,
                           velocity_out, projector, shared_force, self.draft_version)

    def _kick(self, force: np.ndarray, projector: Optional[TangentProjector]) -> np.ndarray:
        """The force's part of the velocity mean, ``c P(F/m)``."""
        kick = self.params.c * force * self.params.inverse_mass
        return kick if projector is None else projector(kick)

    def target_forces(self, steps: List[DraftedStep]) -> np.ndarray:
        forces, seconds = self.target.forces(np.stack([s.midpoint for s in steps]), steps[0].index)
        self.statistics.target_calls += 1
        self.statistics.target_configurations += len(steps)
        self.statistics.target_seconds += seconds
        return self.complete(steps, forces)

    def complete(self, steps: List[DraftedStep], target_only: np.ndarray) -> np.ndarray:
        """Full target forces from the target-only terms plus the shared terms the drafts computed."""
        if self.shared is None:
            return target_only
        return target_only + np.stack([s.shared_force for s in steps])

    def verify(self, step: DraftedStep, target_force: np.ndarray) -> VerifiedStep:
        p = self.params
        drafted_total = step.draft_force + step.offset
        if self.slack is not None:  # BIASED: pulls the target toward the draft by at most `slack` per component
            target_force = target_force - np.clip(target_force - drafted_total, -self.slack, self.slack)
        mu_target = p.a * step.velocity + self._kick(target_force, step.projector)
        delta = (mu_target - step.mean) / p.sigma
        _, log_u = self.noise(step.index)
        result = couple(step.noise, delta, mu_target, p.sigma, step.sample, log_u)
        if result.accepted and step.position_out is not None:
            position, velocity = step.position_out, step.velocity_out
        else:  # (an accepted draw that could not be constrained raises here, naming the step)
            position, velocity, _ = p.drift(step.midpoint, result.velocity)
        stats = self.statistics
        stats.verified += 1
        stats.accepted += int(result.accepted)
        stats.committed += 1
        stats.predicted_acceptance_sum += float(acceptance_probability(result.delta_norm))
        offset = target_force - step.draft_force if self.error_correction else np.zeros_like(target_force)
        if step.projector is not None and self.error_correction:
            # keep only the part that moves atoms along the constraints: the rest (e.g. a draft's error
            # along an X-H bond) is absorbed here and would leak into later drafts as the bond turns
            offset = step.projector(offset * p.inverse_mass) / p.inverse_mass
        own = target_force if step.shared_force is None else target_force - step.shared_force
        return VerifiedStep(step.index, position, velocity, result.accepted, result.delta_norm, offset,
                            step.midpoint, own)
