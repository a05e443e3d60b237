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
from dataclasses import asdict, dataclass, replace
from typing import Optional

import openmm
from openmm import app, unit

from . import systems
from .forces import create_mixed_system, create_ml_system
from .integrators import LangevinABOBAIntegrator
from .models import create
from .reporters import FiniteStateGuard, ProgressReporter, rewind_outputs
from .validation import InputError, SimulationError, choice, fail

METHODS = ("plain", "lsd", "flashmd")
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
    friction_per_ps: Optional[float] = None  # None: 1/ps, or for FlashMD the model's (flashmd.pretrained)
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
    # speculative dynamics (method "lsd")
    draft: str = "distilled"
    draft_member: int = 0
    scheduler: str = "batched"
    workers: int = 2
    window: int = 8
    error_correction: bool = True
    online: bool = False
    distill_steps: int = 2000
    # FlashMD (method "flashmd"): the model file (its stride replaces the time step)
    flashmd_model: Optional[str] = None
    thermostat: str = "langevin"


@dataclass
class Setup:
    """What a run simulates: the target System (``molecular.system``), the MM System it came from, the ML
    model (None for pure MM) and its region (None when the model covers every atom)."""

    molecular: systems.MolecularSystem
    mm_system: openmm.System
    model: Optional[object] = None
    region: Optional[list] = None


def build_system(config: RunConfig) -> Setup:
    """The standard system with the requested potential: MM as is, ML alone (vacuum) or ML/MM."""
    hydrogen_mass = None if config.hydrogen_mass_amu is None else config.hydrogen_mass_amu * unit.amu
    molecular = systems.load(config.system, **({"hydrogen_mass": hydrogen_mass} if hydrogen_mass else {}))
    if config.model == MM_MODEL:
        return Setup(molecular, molecular.system)
    options = {} if config.member is None else {"member": config.member}
    solute = molecular.solute_atoms
    if len(solute) == molecular.topology.getNumAtoms() and not molecular.system.usesPeriodicBoundaryConditions():
        model, region = create(config.model, molecular.topology, **options), None
        system = create_ml_system(model, molecular.masses, config.backend)
    else:
        model, region = create(config.model, molecular.topology, atoms=solute, **options), solute
        system = create_mixed_system(molecular.system, model, solute, config.backend)
    target = systems.MolecularSystem(f"{molecular.name}:{config.model}", molecular.topology, system,
                                     molecular.positions)
    return Setup(target, molecular.system, model, region)


def prepared_state(system: openmm.System, positions, config: RunConfig, platform: openmm.Platform) -> openmm.State:
    """Minimised positions with velocities drawn at the run temperature (in a throw-away Context)."""
    integrator = LangevinABOBAIntegrator(config.temperature_k, config.friction_per_ps, config.timestep_fs * 1e-3)
    context = openmm.Context(system, integrator, platform)
    context.setPositions(positions)
    if config.minimize:
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
    context.setVelocitiesToTemperature(config.temperature_k * unit.kelvin, config.seed)
    return context.getState(getPositions=True, getVelocities=True)


def build_integrator(config: RunConfig, setup: Setup, state: openmm.State, platform: openmm.Platform,
                     draft_file: Optional[str] = None):
    """The integrator of ``config.method``; for LSD also the state to start from (after distillation)."""
    temperature = config.temperature_k * unit.kelvin
    friction, timestep = config.friction_per_ps / unit.picosecond, config.timestep_fs * unit.femtosecond
    if config.method == "plain":
        integrator = LangevinABOBAIntegrator(temperature, friction, timestep)
        integrator.setRandomNumberSeed(config.seed)
        return integrator, state
    if config.method == "flashmd":
        from .flashmd.training import open_model
        from .integrators import FlashMDIntegrator
        from .flashmd.pretrained import resolve
        topology = setup.molecular.topology
        model = open_model(resolve(config.flashmd_model, config.system, config.model),
                           [atom.element.atomic_number for atom in topology.atoms()], setup.molecular.masses)
        for option, key, what in (("model", "reference", "reference potential"), ("system", "system", "system")):
            trained = getattr(model, "metadata", {}).get(key)
            if trained is not None and trained != getattr(config, option):
                raise fail(option, f"the {what} the FlashMD model was trained on ({trained!r})",
                           getattr(config, option))
        return FlashMDIntegrator(model, temperature=temperature, thermostat=config.thermostat, friction=friction,
                                 seed=config.seed), state
    from .integrators import SpeculativeLangevinIntegrator
    from .speculative.recipes import speculative_pair
    if setup.model is None:
        raise fail("model", "an ML target for --method lsd (the draft approximates it)", config.model)
    pair = speculative_pair(config.draft, config.model, setup.model, setup.molecular.topology, setup.mm_system,
                            setup.molecular.system, state, setup.region, config.draft_member,
                            config.distill_steps, config.online,
                            config.temperature_k, config.friction_per_ps, config.timestep_fs * 1e-3,
                            platform.getName(), draft_file)
    integrator = SpeculativeLangevinIntegrator(temperature, friction, timestep, draft=pair.draft, target=pair.target,
                                               scheduler=config.scheduler, window=config.window,
                                               workers=config.workers, error_correction=config.error_correction,
                                               seed=config.seed, draft_trainer=pair.trainer)
    return integrator, pair.start or state


def default_platform(system: openmm.System) -> str:
    """CUDA or OpenCL when present; else CPU, except Reference for a System with a TorchForce (openmmtorch has
    no CPU kernel)."""
    names = {openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())}
    for name in ("CUDA", "OpenCL"):
        if name in names:
            return name
    try:
        import torch  # noqa: F401  (openmmtorch needs torch loaded first)
        from openmmtorch import TorchForce
    except ImportError:
        return "CPU"
    return "Reference" if any(TorchForce.isinstance(force) for force in system.getForces()) else "CPU"


def _close_reporters(simulation: app.Simulation) -> None:
    for reporter in simulation.reporters:
        if hasattr(reporter, "close"):
            reporter.close()
        stream = getattr(reporter, "_out", None)  # DCD/StateData reporters own their files
        if stream is not None and hasattr(stream, "close"):
            stream.close()


def default_friction(config: RunConfig) -> float:
    """Langevin friction (1/ps) when none is given: 1/ps (light coupling that leaves the dynamics nearly
    Newtonian), for FlashMD the friction its model was measured at (see ``flashmd.pretrained``)."""
    if config.method == "flashmd":
        from .flashmd.pretrained import measured_friction, resolve
        return measured_friction(resolve(config.flashmd_model, config.system, config.model))
    return 1.0


def run(config: RunConfig) -> dict:
    """Run ``config``; returns the summary (also written to ``summary.json``)."""
    import torch
    choice(config.method, METHODS, "method")
    if config.steps < 1:
        raise fail("steps", "a positive number of steps", config.steps)
    torch.set_num_threads(int(config.torch_threads))
    if config.friction_per_ps is None:
        config = replace(config, friction_per_ps=default_friction(config))
    os.makedirs(config.output, exist_ok=True)
    paths = {name: os.path.join(config.output, name) for name in
             ("topology.pdb", "trajectory.dcd", "log.csv", "checkpoint.chk", "summary.json")}
    if config.resume and not os.path.isfile(paths["checkpoint.chk"]):
        raise fail("resume", f"an existing checkpoint {paths['checkpoint.chk']}", "no such file")

    setup = build_system(config)
    molecular = setup.molecular
    platform = openmm.Platform.getPlatformByName(config.platform or default_platform(molecular.system))
    draft_file = os.path.join(config.output, "draft.npz")
    state = None if config.resume else prepared_state(molecular.system, molecular.positions, config, platform)
    if config.resume and config.method == "lsd" and config.draft == "distilled" and not os.path.isfile(draft_file):
        raise fail("resume", f"the distilled draft {draft_file} of the run being resumed", "no such file")
    integrator, state = build_integrator(config, setup, state, platform, draft_file)
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform)
    if config.resume:
        simulation.loadCheckpoint(paths["checkpoint.chk"])
        rewind_outputs(paths["trajectory.dcd"], paths["log.csv"], simulation.currentStep)
    else:
        simulation.context.setState(state)
        simulation.context.setStepCount(0)
        simulation.context.setTime(0.0)
        with open(paths["topology.pdb"], "w") as handle:
            app.PDBFile.writeFile(molecular.topology, state.getPositions(), handle)
    start = simulation.currentStep
    remaining = config.steps - start
    if remaining <= 0:
        raise fail("steps", f"more than the {start} steps already in the checkpoint", config.steps)

    postfix = None
    if config.method == "lsd":
        postfix = lambda: {"acceptance": f"{integrator.acceptance_rate:.2f}"}  # noqa: E731
    elif config.method == "flashmd":
        postfix = lambda: {"fallbacks": f"{integrator.statistics['fallback_fraction']:.2f}"}  # noqa: E731
    progress = ProgressReporter(config.steps, config.report_interval, start, postfix=postfix,
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
    simulated_ns = done * integrator.getStepSize().value_in_unit(unit.nanosecond)
    summary = {
        "config": asdict(config), "system": molecular.name, "atoms": molecular.topology.getNumAtoms(),
        "steps_run": done, "final_step": simulation.currentStep, "wall_seconds": wall,
        "ns_per_day": simulated_ns / wall * 86400.0 if wall > 0 else None,
        "error": None if error is None else str(error), "files": paths,
        "speculative": integrator.statistics if config.method == "lsd" else None,
        "flashmd": integrator.statistics if config.method == "flashmd" else None,
    }
    if hasattr(integrator, "close"):
        integrator.close()
    with open(paths["summary.json"], "w") as handle:
        json.dump(summary, handle, indent=2)
    if error is not None:
        raise error
    return summary


__all__ = ["RunConfig", "build_system", "run", "InputError"]
