"""Reference MD for learned methods, seeded and with a progress bar: NVE segments (FlashMD), Langevin frames
(equilibrium data for score-based forces and drifting) and the exact midpoints at which ABOBA evaluates
forces (LSD's distilled drafts). Long runs write their progress to a checkpoint file and continue from it."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import openmm
from openmm import unit

from ..devices import Placement
from ..forces import masses_of
from ..integrators import Langevin, LangevinABOBAIntegrator, VelocityVerletIntegrator
from ..integrators.constraints import Constraints
from ..progress import progress_bar
from ..storage import discard
from ..validation import InputError, SimulationError, fail
from .dataset import Dataset


def _frame(context: openmm.Context, energy: bool = True, forces: bool = False):
    """Positions (nm), velocities (nm/ps), and if asked the potential energy (kJ/mol) and forces (kJ/mol/nm)."""
    state = context.getState(getPositions=True, getVelocities=True, getEnergy=energy, getForces=forces)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond),
            state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) if energy else None,
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) if forces else None)


def _box(context: openmm.Context, system: openmm.System) -> Optional[np.ndarray]:
    if not system.usesPeriodicBoundaryConditions():
        return None
    return context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)


def _resumed(checkpoint: Optional[str], settings: dict, context: openmm.Context) -> Optional[Dataset]:
    """The segments a previous, interrupted call with the same ``settings`` recorded (its thermostat state
    restored into ``context``), or None."""
    if not checkpoint or not os.path.isfile(checkpoint):
        return None
    done = Dataset.load(checkpoint, "checkpoint")
    if done.metadata.get("settings") != settings:
        raise fail("checkpoint", "the partial data of the same sampling settings (delete it to start again)",
                   f"{checkpoint}, made with {done.metadata.get('settings')}")
    made_on, here = done.metadata.get("platform"), context.getPlatform().getName()
    if made_on is not None and made_on != here:  # an OpenMM checkpoint loads on its own platform only
        raise fail("device", f"the device the partial data {checkpoint} were made on (OpenMM's {made_on} platform)",
                   f"one with the {here} platform")
    context.loadCheckpoint(bytes.fromhex(done.metadata["thermostat"]))
    return done


@dataclass(frozen=True)
class NVEPlan:
    """What :func:`sample_nve` records: ``segments`` NVE velocity-Verlet segments of ``segment_steps`` steps of
    ``timestep_fs`` (a frame every ``record_every``), each after ``decorrelation_steps`` Langevin steps at
    ``temperature_k`` (friction 5/ps) seeded with ``seed``."""

    temperature_k: float
    segments: int
    segment_steps: int
    record_every: int = 4
    timestep_fs: float = 0.5
    decorrelation_steps: int = 2000
    seed: int = 1


def sample_nve(system: openmm.System, positions, plan: NVEPlan, placement: Placement = Placement(),
               progress: bool = False, starts: Optional[np.ndarray] = None,
               checkpoint: Optional[str] = None) -> Dataset:
    """Thermalise with Langevin, then record the NVE segments of ``plan``: positions, velocities, potential
    energies (on ``placement``'s platform).

    Without ``starts`` one Langevin run from the minimised ``positions`` continues between segments, so the
    data cover what ``segments`` x ``decorrelation_steps`` steps of dynamics reach. ``starts`` (``(F, N, 3)``
    nm, e.g. the frames of a long run with a cheaper potential) spread the data over the conformations they
    visit: segment ``k`` thermalises from frame ``k F / segments`` with fresh Maxwell-Boltzmann velocities.
    ``checkpoint``: a file the segments so far are written to after each one; a call with the same settings
    continues from it (and the same seed gives the same data), and it is removed when the data are complete.
    """
    temperature, segments, segment_steps = plan.temperature_k, plan.segments, plan.segment_steps
    record_every, timestep, decorrelation_steps, seed = (plan.record_every, plan.timestep_fs * 1e-3,
                                                         plan.decorrelation_steps, plan.seed)
    if system.getNumConstraints() > 0:
        raise fail("system", "a System without constraints (every atom moves in the data)", "constraints")
    masses = masses_of(system)
    if starts is not None:
        starts = np.asarray(starts, dtype=np.float64)
        if starts.ndim != 3 or starts.shape[1:] != (len(masses), 3) or len(starts) < 1:
            raise fail("starts", f"frames of shape (F, {len(masses)}, 3) nm", starts.shape)
        if not np.all(np.isfinite(starts)):
            raise fail("starts", "finite positions", "NaN or infinite values")
    settings = {"kind": "nve", "temperature_k": float(temperature), "segments": segments, "segment_steps": segment_steps,
                "record_every": record_every, "timestep_ps": timestep, "decorrelation_steps": decorrelation_steps,
                "seed": seed, "starts": None if starts is None else len(starts), "atoms": len(masses)}
    verlet = VelocityVerletIntegrator(timestep)  # synchronous q and p (OpenMM's VerletIntegrator is leap-frog)
    nve = placement.context(system, verlet)
    # created last: on Reference, a CustomIntegrator's Context reseeds the process-wide generator
    thermostat = LangevinABOBAIntegrator(temperature, 5.0, timestep)
    thermostat.setRandomNumberSeed(seed)
    nvt = placement.context(system, thermostat)
    records = segment_steps // record_every + 1
    x = np.empty((segments, records, len(masses), 3))
    v, energies = np.empty_like(x), np.empty((segments, records))
    done = _resumed(checkpoint, settings, nvt)
    first = 0
    if done is not None:
        first = done.positions.shape[0]
        x[:first], v[:first], energies[:first] = done.positions, done.velocities, done.potential
    else:
        nvt.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(nvt, maxIterations=500)
        nvt.setVelocitiesToTemperature(temperature, seed)
    began = time.perf_counter() - (done.metadata.get("seconds", 0.0) if done is not None else 0.0)
    bar = progress_bar(total=segments * (decorrelation_steps + segment_steps),
                       initial=first * (decorrelation_steps + segment_steps), enabled=progress, unit="step",
                       desc="NVE data")
    for segment in range(first, segments):
        if starts is not None:
            nvt.setPositions(starts[segment * len(starts) // segments])
            nvt.setVelocitiesToTemperature(temperature, seed + segment)
        thermostat.step(decorrelation_steps)
        bar.update(decorrelation_steps)
        nve.setState(nvt.getState(getPositions=True, getVelocities=True))
        for record in range(records):
            x[segment, record], v[segment, record], energies[segment, record], _ = _frame(nve)
            if record < records - 1:
                verlet.step(record_every)
                bar.update(record_every)
        if not np.all(np.isfinite(x[segment])):
            raise InputError(f"NVE segment {segment} blew up: reduce the time step")
        if checkpoint and segment < segments - 1:
            Dataset(x[:segment + 1], masses, record_every * timestep, v[:segment + 1],
                    potential=energies[:segment + 1], metadata={
                        "settings": settings, "thermostat": nvt.createCheckpoint().hex(),
                        "platform": nvt.getPlatform().getName(),
                        "seconds": time.perf_counter() - began}).save(checkpoint)
    bar.close()
    if checkpoint and os.path.isfile(checkpoint):
        discard(os.path.dirname(os.path.abspath(checkpoint)), [os.path.basename(checkpoint)])
    return Dataset(x, masses, record_every * timestep, v, potential=energies, box=_box(nve, system),
                   metadata={**settings, "seconds": time.perf_counter() - began})


def sample_langevin(system: openmm.System, state: openmm.State, langevin: Langevin, frames: int, every: int,
                    placement: Placement = Placement(), progress: bool = False) -> Dataset:
    """Equilibrium frames: ABOBA Langevin (``langevin``) from ``state``, recording positions, velocities,
    forces and potential energies every ``every`` steps (one segment of ``frames`` frames)."""
    integrator = langevin.integrator()
    temperature, friction, timestep = langevin.temperature_k, langevin.friction_per_ps, langevin.timestep_fs * 1e-3
    context = placement.context(system, integrator)
    context.setState(state)
    masses = masses_of(system)
    x = np.empty((1, frames, len(masses), 3))
    v, f, energies = np.empty_like(x), np.empty_like(x), np.empty((1, frames))
    began = time.perf_counter()
    for frame in progress_bar(range(frames), progress, unit="frame", desc="Langevin data"):
        integrator.step(every)
        x[0, frame], v[0, frame], energies[0, frame], f[0, frame] = _frame(context, forces=True)
    if not np.all(np.isfinite(x)):
        raise SimulationError("the Langevin run blew up: reduce the time step")
    settings = {"kind": "langevin", "temperature_k": float(temperature), "friction_per_ps": float(friction),
                "timestep_ps": float(timestep), "every": every, "seed": langevin.seed,
                "seconds": time.perf_counter() - began}
    return Dataset(x, masses, every * timestep, v, f, energies, _box(context, system), metadata=settings)


def sample_midpoints(system: openmm.System, state: openmm.State, langevin: Langevin, steps: int, stride: int,
                     placement: Placement = Placement(), progress=None):
    """Run ABOBA (``langevin``) on ``system`` from ``state``; return the midpoints of every ``stride``-th step
    (exactly where the next step evaluates the force: with constraints, after RATTLE's projection) and the end
    state."""
    integrator = langevin.integrator()
    context = placement.context(system, integrator)
    context.setState(state)
    h = integrator.getStepSize().value_in_unit(unit.picosecond)
    constraints = Constraints.from_system(system)
    midpoints = []
    for _ in range(steps // stride):
        integrator.step(stride - 1)
        x, v, _, _ = _frame(context, energy=False)
        midpoint = x + 0.5 * h * v
        midpoints.append(midpoint if constraints is None else constraints.positions(x, midpoint))
        integrator.step(1)
        if progress is not None:
            progress.update(stride)
    return np.array(midpoints), context.getState(getPositions=True, getVelocities=True)
