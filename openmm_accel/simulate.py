"""The main job: build a system with a chosen potential, run it with progress, write standard files.

Used by ``openmm-accel run``; also callable from Python (:func:`run`). Output directory contents:

* ``topology.pdb`` - the starting structure (with the topology mdtraj needs);
* ``trajectory.dcd`` - frames every ``report_interval`` steps;
* ``log.csv`` - OpenMM StateDataReporter log (step, time, energies, temperature, speed);
* ``checkpoint.chk`` - OpenMM checkpoint, written every ``checkpoint_interval`` steps and at the end;
* ``summary.json`` - settings, wall time and simulated ns/day.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Optional

import openmm
from openmm import app, unit

from . import systems
from .forces import create_mixed_system, create_ml_system
from .integrators import LangevinABOBAIntegrator
from .models import create
from .reporters import FiniteStateGuard, ProgressReporter
from .validation import InputError, SimulationError, choice, fail

METHODS = ("plain",)
MM_MODEL = "mm"


@dataclass
class RunConfig:
    """Settings of one run (plain numbers in OpenMM's units: K, fs, 1/ps, amu)."""

    system: str = "alanine-dipeptide-vacuum"
    model: str = "ani1x"
    member: Optional[int] = None
    backend: str = "torchforce"
    method: str = "plain"
    steps: int = 2000
    timestep_fs: float = 1.0
    temperature_k: float = 300.0
    friction_per_ps: float = 1.0
    hydrogen_mass_amu: Optional[float] = None
    report_interval: int = 100
    checkpoint_interval: int = 1000
    output: str = "openmm_accel_run"
    platform: Optional[str] = None  # None: the fastest platform that supports the chosen force backend
    torch_threads: int = 1
    seed: int = 1
    minimize: bool = True
    resume: bool = False
    progress: Optional[bool] = None  # None: tqdm decides (off when not a terminal)


def build_system(config: RunConfig) -> systems.MolecularSystem:
    """The standard system with the requested potential: MM as is, ML alone (vacuum) or ML/MM."""
    hydrogen_mass = None if config.hydrogen_mass_amu is None else config.hydrogen_mass_amu * unit.amu
    molecular = systems.load(config.system, **({"hydrogen_mass": hydrogen_mass} if hydrogen_mass else {}))
    if config.model == MM_MODEL:
        return molecular
    options = {} if config.member is None else {"member": config.member}
    solute = molecular.solute_atoms
    if len(solute) == molecular.topology.getNumAtoms() and not molecular.system.usesPeriodicBoundaryConditions():
        model = create(config.model, molecular.topology, **options)
        system = create_ml_system(model, molecular.masses, config.backend)
    else:
        model = create(config.model, molecular.topology, atoms=solute, **options)
        system = create_mixed_system(molecular.system, model, solute, config.backend)
    return systems.MolecularSystem(f"{molecular.name}:{config.model}", molecular.topology, system,
                                   molecular.positions)


def default_platform(backend: str) -> str:
    """CUDA or OpenCL when present; else CPU, except Reference for TorchForce (openmmtorch has no CPU kernel)."""
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    for name in ("CUDA", "OpenCL"):
        if name in names:
            return name
    return "Reference" if backend == "torchforce" else "CPU"


def _close_reporters(simulation: app.Simulation) -> None:
    for reporter in simulation.reporters:
        if hasattr(reporter, "close"):
            reporter.close()
        stream = getattr(reporter, "_out", None)  # DCD/StateData reporters own their files
        if stream is not None and hasattr(stream, "close"):
            stream.close()


def run(config: RunConfig) -> dict:
    """Run ``config``; returns the summary (also written to ``summary.json``)."""
    import torch
    choice(config.method, METHODS, "method")
    if config.steps < 1:
        raise fail("steps", "a positive number of steps", config.steps)
    torch.set_num_threads(int(config.torch_threads))
    os.makedirs(config.output, exist_ok=True)
    paths = {name: os.path.join(config.output, name) for name in
             ("topology.pdb", "trajectory.dcd", "log.csv", "checkpoint.chk", "summary.json")}
    if config.resume and not os.path.isfile(paths["checkpoint.chk"]):
        raise fail("resume", f"an existing checkpoint {paths['checkpoint.chk']}", "no such file")

    molecular = build_system(config)
    integrator = LangevinABOBAIntegrator(config.temperature_k * unit.kelvin, config.friction_per_ps / unit.picosecond,
                                         config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed)
    platform = openmm.Platform.getPlatformByName(config.platform or default_platform(config.backend))
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform)
    if config.resume:
        simulation.loadCheckpoint(paths["checkpoint.chk"])
    else:
        simulation.context.setPositions(molecular.positions)
        if config.minimize:
            simulation.minimizeEnergy(maxIterations=500)
        simulation.context.setVelocitiesToTemperature(config.temperature_k * unit.kelvin, config.seed)
        positions = simulation.context.getState(getPositions=True).getPositions()
        with open(paths["topology.pdb"], "w") as handle:
            app.PDBFile.writeFile(molecular.topology, positions, handle)
    start = simulation.currentStep
    remaining = config.steps - start
    if remaining <= 0:
        raise fail("steps", f"more than the {start} steps already in the checkpoint", config.steps)

    progress = ProgressReporter(config.steps, config.report_interval, start,
                                disable=None if config.progress is None else not config.progress)
    simulation.reporters += [
        FiniteStateGuard(config.report_interval),
        app.DCDReporter(paths["trajectory.dcd"], config.report_interval, append=config.resume),
        app.StateDataReporter(paths["log.csv"], config.report_interval, step=True, time=True,
                              potentialEnergy=True, kineticEnergy=True, totalEnergy=True, temperature=True,
                              speed=True, append=config.resume),
        app.CheckpointReporter(paths["checkpoint.chk"], config.checkpoint_interval),
        progress,
    ]
    began = time.perf_counter()
    error = None
    try:
        simulation.step(remaining)
    except openmm.OpenMMException as exception:  # e.g. "Particle coordinate is NaN"
        error = SimulationError(f"OpenMM stopped near step {simulation.currentStep}: {exception}; everything "
                                "written before that step was kept")
    except SimulationError as exception:
        error = exception
    wall = time.perf_counter() - began
    _close_reporters(simulation)
    done = simulation.currentStep - start
    if error is None:
        simulation.saveCheckpoint(paths["checkpoint.chk"])
    simulated_ns = done * config.timestep_fs * 1e-6
    summary = {
        "config": asdict(config), "system": molecular.name, "atoms": molecular.topology.getNumAtoms(),
        "steps_run": done, "final_step": simulation.currentStep, "wall_seconds": wall,
        "ns_per_day": simulated_ns / wall * 86400.0 if wall > 0 else None,
        "error": None if error is None else str(error), "files": paths,
    }
    with open(paths["summary.json"], "w") as handle:
        json.dump(summary, handle, indent=2)
    if error is not None:
        raise error
    return summary


__all__ = ["RunConfig", "build_system", "run", "InputError"]
