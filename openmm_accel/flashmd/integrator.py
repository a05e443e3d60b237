"""FlashMD as an OpenMM integrator: one model call per stride, energy-conserving rescaling, thermostats
by operator splitting, and a safe fallback to ordinary steps with the reference potential.

One step (one stride; Bigi et al. 2025, arXiv:2505.19350)::

    thermostat half-step (Langevin O or Bussi SVR, over stride/2)         [if a temperature is set]
    H = K + V(x)                                                            (V cached from the last step)
    (x', p') = model(x, p[, F(x)])  [random rotation in/out if the model is not equivariant; COM kept]
    V' = V(x');  p' <- p' sqrt((H - V') / K')                             (stage "rescale", on the device)
                                  [and F(x') for a model with force inputs, in the same evaluation]
    thermostat half-step

Periodic systems: the model gets the box; an OpenMM ``MonteCarloBarostat`` in the System acts once per
stride (its frequency counts strides), giving NpT.

The System in the Context is the *reference potential* (what the model was trained on): it supplies V'
for the rescaling and the forces of the fallback. If ``H - V' <= 0`` or ``K' = 0`` (an unphysical
prediction), if the prediction is non-finite or moves an atom faster than ``speed_limit`` (as a
velocity or as a displacement over the stride), if an ensemble's spread exceeds
``uncertainty_threshold`` (these are the settings of :class:`Safeguards`), or if an implicit (symplectic
midpoint) model's fixed point did not converge, the stride is redone with
``fallback_substeps`` velocity-Verlet steps of the reference potential (``unphysical="fallback"``,
default) or the run stops with a clear error (``"stop"``). How often each happened is in
:attr:`FlashMDIntegrator.statistics`. If the fallback's reference dynamics themselves blow up (a state
already too hot), the run stops with a :class:`SimulationError`, back at the start of that stride.

``metropolis=True`` makes a stride a generalised hybrid Monte Carlo step (Horowitz 1991): thermostat
half-step, the model's proposal ``(x', p')`` taken as it is (no rescaling, no centre-of-mass correction),
accepted with probability ``min(1, exp(-(H(x', p') - H(x, p)) / kT))`` with ``H = K + V`` of the reference
potential, else the state is kept with its momenta flipped, then the second thermostat half-step. For a
proposal map that preserves phase-space volume and is reversible (``F o map o F o map = id`` with ``F`` the
momentum flip: a symplectic, time-symmetric map such as velocity Verlet with *any* potential), the chain
samples the reference potential's Boltzmann distribution exactly, however wrong the map: its error only
lowers the acceptance. A map that is not volume-preserving (today's learned FlashMD networks) gets no such
guarantee: the tests show the bias of one.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import openmm
import torch
from openmm import unit

from ..forces import masses_of
from ..integrators.base import PythonStepIntegrator, exploded, refuse_constraints, temperature_kt
from ..validation import InputError, SimulationError, choice, fail, positive
from .model import FlashMDEnsemble, FlashMDModel

_PREFIX = "fmd_"
_FALLBACKS = ("fallback_unphysical", "fallback_nonfinite", "fallback_too_fast", "fallback_uncertain",
              "fallback_unconverged")
_COUNTERS = ("strides",) + _FALLBACKS + ("rescale_sum", "rejected")


@dataclass(frozen=True)
class Thermostat:
    """The thermostat around each FlashMD step: Langevin O half-steps (``friction``, 1/ps) or Bussi stochastic
    velocity rescaling (``kind="svr"``, ``time_constant``, ps); Quantities or plain numbers in those units."""

    kind: str = "langevin"
    friction: Any = 1.0
    time_constant: Any = 0.01


@dataclass(frozen=True)
class Safeguards:
    """What keeps a FlashMD run physical whatever the model's errors (module docstring).

    ``rescale_energy``: rescale momenta after each prediction so that H = K + V is conserved (default on);
    ``remove_com_motion``: keep the centre-of-mass momentum at zero (default on); ``unphysical``:
    ``"fallback"`` (redo the stride with ``fallback_substeps`` velocity-Verlet steps of the reference
    potential; default stride / 0.5 fs) or ``"stop"``, for an unphysical, non-finite or uncertain prediction;
    ``uncertainty_threshold``: for a :class:`FlashMDEnsemble`, fall back when the members' spread of
    ``sqrt(m) dq`` (sqrt(amu) nm) exceeds this; ``speed_limit``: predictions with an atom faster than this
    (nm/ps if a plain number; default 100 nm/ps, where a hydrogen carries 5,000 kJ/mol) are unphysical, so an
    exploding model is caught before its coordinates reach the force kernels."""

    rescale_energy: bool = True
    remove_com_motion: bool = True
    unphysical: str = "fallback"
    fallback_substeps: Optional[int] = None
    uncertainty_threshold: Optional[float] = None
    speed_limit: Any = 100.0


class FlashMDIntegrator(PythonStepIntegrator):
    """Long-stride dynamics with a FlashMD model inside ``openmm.app.Simulation``.

    Parameters
    ----------
    model : FlashMDModel
        Predicts (positions, momenta) one stride ahead for this System's atoms and masses.
    stride : Quantity or float, optional
        Must equal the model's stride (ps if a plain number); given for clarity and checked.
    temperature : Quantity or float, optional
        None: NVE. Otherwise NVT with ``thermostat``.
    thermostat : {"langevin", "svr"} or Thermostat
        Langevin O half-steps or Bussi stochastic velocity rescaling around each FlashMD step (a name: its
        defaults, 1/ps and 10 fs; :class:`Thermostat` sets the friction or time constant).
    safeguards : Safeguards, optional
        Energy rescaling, centre-of-mass removal and the fallback for unphysical predictions (default on).
    random_rotations : bool, optional
        Rotate the system randomly before each call and back after (default: when the model is not
        rotation-equivariant).
    metropolis : bool
        Accept or reject each stride by the reference energy (module docstring): exact for a volume-preserving,
        reversible model; needs a ``temperature``; rescaling and centre-of-mass removal are off.
    seed : int, optional
        Seed of rotations and thermostat noise (stored in the integrator: checkpoints keep it).
    """

    def __init__(self, model: FlashMDModel, stride=None, temperature=None, thermostat="langevin",
                 safeguards: Optional[Safeguards] = None, random_rotations: Optional[bool] = None,
                 seed: Optional[int] = None, metropolis: bool = False):
        if not isinstance(model, FlashMDModel):
            raise fail("model", "a FlashMDModel", type(model).__name__)
        if stride is not None:
            given = positive(stride, unit.picosecond, "stride")
            if abs(given - model.stride) > 1e-9 * model.stride:
                raise fail("stride", f"the model's stride ({model.stride * 1000:g} fs): one model per stride",
                           f"{given * 1000:g} fs")
        super().__init__(model.stride)
        self.model = model
        self.kt = None if temperature is None else temperature_kt(temperature)
        thermostat = Thermostat(thermostat) if isinstance(thermostat, str) else thermostat
        if not isinstance(thermostat, Thermostat):
            raise fail("thermostat", "'langevin', 'svr' or a Thermostat", type(thermostat).__name__)
        safeguards = Safeguards() if safeguards is None else safeguards
        if not isinstance(safeguards, Safeguards):
            raise fail("safeguards", "a Safeguards", type(safeguards).__name__)
        fallback_substeps, uncertainty_threshold = safeguards.fallback_substeps, safeguards.uncertainty_threshold
        self.thermostat = choice(thermostat.kind, ("langevin", "svr"), "thermostat")
        self.friction = positive(thermostat.friction, unit.picosecond**-1, "friction")
        self.time_constant = positive(thermostat.time_constant, unit.picosecond, "time_constant")
        self.metropolis = bool(metropolis)
        if self.metropolis and self.kt is None:
            raise fail("metropolis", "a temperature (the Metropolis test compares energies with kT)", None)
        if self.metropolis and not model.volume_preserving:
            warnings.warn(f"FlashMDIntegrator: metropolis=True with a {type(model).__name__}, whose map is not "
                          "known to preserve phase-space volume: the Metropolis test then does not make the "
                          "sampling exact (the learned FlashMD networks are not symplectic; watch the per-element "
                          "temperatures)")
        self.rescale_energy = bool(safeguards.rescale_energy) and not self.metropolis
        self.unphysical = choice(safeguards.unphysical, ("fallback", "stop"), "unphysical")
        self.fallback_substeps = (max(1, int(round(model.stride / 0.0005))) if fallback_substeps is None
                                  else int(fallback_substeps))
        if self.fallback_substeps < 1:
            raise fail("fallback_substeps", "a positive integer", fallback_substeps)
        if uncertainty_threshold is not None and not isinstance(model, FlashMDEnsemble):
            raise fail("uncertainty_threshold", "a FlashMDEnsemble model (the spread of its members)",
                       type(model).__name__)
        self.uncertainty_threshold = uncertainty_threshold
        self.random_rotations = (not model.rotation_equivariant) if random_rotations is None else bool(random_rotations)
        self.remove_com_motion = bool(safeguards.remove_com_motion) and not self.metropolis
        self.speed_limit = positive(safeguards.speed_limit, unit.nanometer / unit.picosecond, "speed_limit")
        seed = int(np.random.SeedSequence().entropy % 2**31) if seed is None else int(seed)
        self.addGlobalVariable(_PREFIX + "seed", seed)
        self.addGlobalVariable(_PREFIX + "step", 0)
        for name in _COUNTERS:
            self.addGlobalVariable(_PREFIX + name, 0.0)
        # device-side pieces: the energy-conserving rescaling and the reference fallback
        self.addGlobalVariable("htotal", 0.0)
        self.addGlobalVariable("kinetic", 0.0)
        self.addGlobalVariable("potential", 0.0)
        self.addGlobalVariable("radicand", 0.0)
        self.addGlobalVariable("hsub", 0.0)
        forces = model.force_inputs
        if forces:
            self.addPerDofVariable("fref", 0.0)
        with self.stage("rescale"):
            self.addComputeSum("kinetic", "0.5*m*v*v")
            if forces:  # before the energy, so that OpenMM evaluates both in one call
                self.addComputePerDof("fref", "f")
            self.addComputeGlobal("potential", "energy")
            self.addComputeGlobal("radicand", "select(kinetic, (htotal - potential)/kinetic, -1)")
            self.beginIfBlock("radicand > 0")
            self.addComputePerDof("v", "v*sqrt(radicand)")
            self.endBlock()
        with self.stage("update"):  # barostat moves (MonteCarloBarostat: NpT) and other context updates
            self.addUpdateContextState()
        with self.stage("measure"):
            self.addComputeSum("kinetic", "0.5*m*v*v")
            if forces:
                self.addComputePerDof("fref", "f")
            self.addComputeGlobal("potential", "energy")
        with self.stage("verlet"):
            self.addComputePerDof("v", "v + 0.5*hsub*f/m")
            self.addComputePerDof("x", "x + hsub*v")
            self.addComputePerDof("v", "v + 0.5*hsub*f/m")
        self._masses = None
        self._cache = None  # (positions, potential energy, forces or None) at the end of the last stride

    # -- set-up ---------------------------------------------------------------------------------------
    def check_context(self, context: openmm.Context) -> None:
        refuse_constraints(context, type(self).__name__)
        self._check_reference(context)
        system = context.getSystem()
        masses = masses_of(system)
        if len(masses) != self.model.n_atoms:
            raise fail("model", f"a model of {len(masses)} atoms (the System's)", f"{self.model.n_atoms} atoms")
        if np.any(masses <= 0):
            raise InputError("FlashMDIntegrator: massless particles (virtual sites) cannot be moved by a model")
        model_masses = self.model.masses.numpy()
        if not np.allclose(model_masses, masses, rtol=1e-6):
            bad = np.flatnonzero(~np.isclose(model_masses, masses, rtol=1e-6))
            raise fail("model", "a model trained with the System's masses (OpenMM's element masses or the "
                       "same hydrogen mass repartitioning)", f"different masses at particles {bad[:5].tolist()}")
        self._masses = masses
        self._periodic = system.usesPeriodicBoundaryConditions()
        if self._periodic and self.random_rotations:
            raise fail("random_rotations", "False for a periodic system (a rotation does not map the box onto "
                       "itself); use a rotation-equivariant model", True)

    def _check_reference(self, context: openmm.Context) -> None:
        """Refuse a System whose potential is not the one the model was trained with: its forces at the
        model file's probe configuration (``metadata["probe"]``, see ``flashmd.pipeline.reference_probe``)
        must be the recorded ones. Files without a probe are not checked."""
        probe = (getattr(self.model, "metadata", None) or {}).get("probe")
        if probe is None or len(probe["positions"]) != context.getSystem().getNumParticles():
            return  # (a wrong atom count is reported by the checks that follow)
        saved = context.getState(getPositions=True, getVelocities=True, getParameters=True)
        try:
            if probe["box"] is not None:
                context.setPeriodicBoxVectors(*probe["box"])
            context.setPositions(np.asarray(probe["positions"]))
            forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
                unit.kilojoule_per_mole / unit.nanometer)
        finally:
            context.setState(saved)
        expected = np.asarray(probe["forces"])
        difference = float(np.max(np.abs(forces - expected)))
        if not difference <= 1e-3 * max(float(np.max(np.abs(expected))), 1.0):
            trained = self.model.metadata
            raise fail("model", "a System with the reference potential the FlashMD model was trained with "
                       f"({trained.get('reference')!r} on {trained.get('system')!r})",
                       f"a System whose forces at the model's probe configuration differ by up to "
                       f"{difference:.3g} kJ/mol/nm")

    # -- helpers --------------------------------------------------------------------------------------
    def _rng(self, step: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([int(self.getGlobalVariableByName(_PREFIX + "seed")), step, purpose])

    def _remove_com(self, momenta: np.ndarray) -> np.ndarray:
        if not self.remove_com_motion:
            return momenta
        m = self._masses[:, None]
        return momenta - m * momenta.sum(0) / self._masses.sum()

    def _thermostat(self, momenta: np.ndarray, step: int, half: int) -> np.ndarray:
        """One thermostat half-step (stride/2) on momenta (amu nm/ps)."""
        if self.kt is None:
            return momenta
        rng = self._rng(step, half)
        m = self._masses[:, None]
        dt = 0.5 * self.model.stride
        if self.thermostat == "langevin":
            a = np.exp(-self.friction * dt)
            momenta = a * momenta + np.sqrt(self.kt * (1 - a * a) * m) * rng.standard_normal(momenta.shape)
            return self._remove_com(momenta)
        momenta = self._remove_com(momenta)
        dof = 3 * len(self._masses) - (3 if self.remove_com_motion else 0)
        kinetic = float(np.sum(momenta**2 / (2 * m)))
        if kinetic <= 0:
            return momenta
        target = 0.5 * dof * self.kt
        c = np.exp(-dt / self.time_constant)
        r1 = rng.standard_normal()
        rest = 2.0 * rng.gamma(0.5 * (dof - 1)) if dof > 1 else 0.0  # chi-squared with dof - 1 degrees
        new = (kinetic + (1 - c) * (target * (r1 * r1 + rest) / dof - kinetic)
               + 2 * r1 * np.sqrt(c * (1 - c) * kinetic * target / dof))
        return momenta * np.sqrt(max(new, 0.0) / kinetic)

    def _predict(self, x: np.ndarray, p: np.ndarray, step: int, box: Optional[np.ndarray] = None,
                 forces: Optional[np.ndarray] = None):
        """Model prediction with optional random rotation and (not in Metropolis mode, where the proposal must
        stay volume-preserving) the centre of mass moved as free flight; returns (x', p', spread)."""
        total = self._masses.sum()
        centre = (self._masses[:, None] * x).sum(0) / total
        rotation, pivot = np.eye(3), np.zeros(3)  # rotated about the centre of mass; else the model sees x as is
        if self.random_rotations:
            from scipy.spatial.transform import Rotation
            rotation, pivot = Rotation.random(random_state=self._rng(step, 3)).as_matrix(), centre
        xr, pr = (x - pivot) @ rotation.T, p @ rotation.T
        device = self.model.masses.device  # the model's (see devices.torch_device)
        inputs = [torch.as_tensor(xr[None], device=device), torch.as_tensor(pr[None], device=device),
                  None if box is None else torch.as_tensor(box[None], device=device),
                  None if forces is None else torch.as_tensor((forces @ rotation.T)[None], device=device)]
        spread = None
        with torch.no_grad():
            if isinstance(self.model, FlashMDEnsemble):
                xn, pn, spread_t = self.model.forward_with_spread(*inputs)
                spread = float(spread_t[0])
            else:
                xn, pn = self.model.call(*inputs)
        x_new = xn[0].double().cpu().numpy() @ rotation + pivot
        p_new = pn[0].double().cpu().numpy() @ rotation
        if self.metropolis:
            return x_new, p_new, spread
        # centre of mass: momentum as before, position moved uniformly
        p_new = p_new - self._masses[:, None] * (p_new.sum(0) - p.sum(0)) / total
        moved = centre + self.model.stride * p.sum(0) / total
        x_new = x_new - (self._masses[:, None] * x_new).sum(0) / total + moved
        return x_new, p_new, spread

    def _reference(self, positions: np.ndarray):
        """Reference potential energy (and forces, for a model with force inputs) at the Context's
        positions, cached from the last stride when they have not moved since."""
        if self._cache is not None and np.array_equal(positions, self._cache[0]):
            return self._cache[1:]
        self.run_stage("measure")
        return self.getGlobalVariableByName("potential"), self._reference_forces()

    def _reference_forces(self) -> Optional[np.ndarray]:
        return np.array(self.getPerDofVariableByName("fref")) if self.model.force_inputs else None

    def _stopped(self, positions: np.ndarray, velocities: np.ndarray, problem: str) -> SimulationError:
        """Put the Context back at the start of the stride and return the error that stops the run."""
        self.context.setPositions(positions)
        self.context.setVelocities(velocities)
        self._cache = None
        return SimulationError(f"{problem}; stopped with the trajectory up to the previous stride kept")

    def _counter(self, name: str, add: float = 1.0) -> None:
        self.setGlobalVariableByName(_PREFIX + name, self.getGlobalVariableByName(_PREFIX + name) + add)

    # -- the step -------------------------------------------------------------------------------------
    def advance(self, max_steps: int) -> int:
        context = self.context
        step = int(self.getGlobalVariableByName(_PREFIX + "step"))
        self.run_stage("update")
        state = context.getState(getPositions=True, getVelocities=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer) if self._periodic else None
        m = self._masses[:, None]
        v0 = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        p = self._thermostat(v0 * m, step, 0)
        if self.metropolis:
            self._metropolis_stride(x, p, step, box)
            return 1
        # H before the move: only the rescaling needs it (without it, and without force inputs, a stride
        # costs no reference evaluation)
        potential, forces = self._reference(x) if self.rescale_energy or self.model.force_inputs else (0.0, None)
        total = potential + float(np.sum(p**2 / (2 * m)))
        x_new, p_new, spread = self._predict(x, p, step, box, forces)
        problem = None
        if not self.model.converged:  # an implicit (symplectic) map whose solver did not converge
            problem = "fallback_unconverged"
        elif exploded(x_new, p_new / m) is not None:
            problem = "fallback_nonfinite"
        elif max(np.max(np.linalg.norm(p_new / m, axis=1)),
                 np.max(np.linalg.norm(x_new - x, axis=1)) / self.model.stride) > self.speed_limit:
            problem = "fallback_too_fast"
        elif self.uncertainty_threshold is not None and spread > self.uncertainty_threshold:
            problem = "fallback_uncertain"
        if problem is None:
            context.setPositions(x_new)
            context.setVelocities(p_new / m)
            self.setGlobalVariableByName("htotal", total)
            if self.rescale_energy:
                self.run_stage("rescale")
                radicand = self.getGlobalVariableByName("radicand")
                if not (np.isfinite(radicand) and radicand > 0):
                    problem = "fallback_unphysical"
                else:
                    self._counter("rescale_sum", float(np.sqrt(radicand)))
        if problem is not None:
            cause = problem.replace("fallback_", "").replace("_", " ")
            if self.unphysical == "stop":
                raise self._stopped(x, v0, f"FlashMD step {step + 1}: {cause} prediction (H - V' <= 0, "
                                    "non-finite, too fast or too uncertain)")
            self._counter(problem)
            context.setPositions(x)
            context.setVelocities(p / m)
            self.setGlobalVariableByName("hsub", self.model.stride / self.fallback_substeps)
            try:
                for _ in range(self.fallback_substeps):
                    self.run_stage("verlet")
                end = context.getState(getPositions=True, getVelocities=True)
                broken = exploded(end.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                                  end.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
            except openmm.OpenMMException as error:  # e.g. "Particle coordinate is NaN" from a force kernel
                broken = str(error)
            if broken is not None:  # reference dynamics blew up: the state was already unsound (too hot)
                raise self._stopped(x, v0, f"FlashMD step {step + 1}: the fallback to reference dynamics "
                                    f"exploded ({broken}) after a {cause} prediction")
        else:
            end = context.getState(getPositions=True, getVelocities=True)
        velocities = end.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        context.setVelocities(self._thermostat(velocities * m, step, 1) / m)
        known = problem is None and self.rescale_energy  # the rescale stage measured V at the new positions
        self._cache = ((end.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                        self.getGlobalVariableByName("potential"), self._reference_forces()) if known else None)
        self.setGlobalVariableByName(_PREFIX + "step", step + 1)
        self._counter("strides")
        return 1

    def _metropolis_stride(self, x: np.ndarray, p: np.ndarray, step: int, box: Optional[np.ndarray]) -> None:
        """The proposal, the Metropolis test on H = K + V and the second thermostat half-step (p after the
        first); a non-finite, too fast or unconverged proposal is rejected."""
        m = self._masses[:, None]
        potential, forces = self._reference(x)
        total = potential + float(np.sum(p**2 / (2 * m)))
        x_new, p_new, _ = self._predict(x, p, step, box, forces)
        accepted = False
        if (self.model.converged and exploded(x_new, p_new / m) is None
                and np.max(np.linalg.norm(p_new / m, axis=1)) <= self.speed_limit):
            self.context.setPositions(x_new)
            self.run_stage("measure")
            change = self.getGlobalVariableByName("potential") + float(np.sum(p_new**2 / (2 * m))) - total
            accepted = bool(np.isfinite(change) and np.log(self._rng(step, 4).random()) < -change / self.kt)
        if accepted:
            end = (x_new, self.getGlobalVariableByName("potential"), self._reference_forces())
            p = p_new
        else:
            self.context.setPositions(x)
            end, p = (x, potential, forces), -p
            self._counter("rejected")
        self.context.setVelocities(self._thermostat(p, step, 1) / m)
        self._cache = end
        self.setGlobalVariableByName(_PREFIX + "step", step + 1)
        self._counter("strides")

    @property
    def statistics(self) -> dict:
        """Strides taken, fallbacks by cause, the mean rescaling factor sqrt((H - V')/K') and, in Metropolis mode,
        the acceptance rate."""
        out = {name: self.getGlobalVariableByName(_PREFIX + name) for name in _COUNTERS}
        rejected = out.pop("rejected")
        if self.metropolis:
            out["acceptance_rate"] = 1.0 - rejected / out["strides"] if out["strides"] else float("nan")
        accepted = out["strides"] - sum(out[name] for name in _FALLBACKS)
        out["mean_rescale_factor"] = out.pop("rescale_sum") / accepted if accepted > 0 else float("nan")
        out["fallback_fraction"] = (out["strides"] - accepted) / out["strides"] if out["strides"] else float("nan")
        return out
