"""The main job: build a system with a chosen potential, run it with progress, write standard files.

Used by ``openmm-accel run``; also callable from Python (:func:`run`). Output directory contents:

* ``topology.pdb`` - the starting structure (with the topology mdtraj needs);
* ``trajectory.dcd`` - frames every ``report_interval`` steps;
* ``log.csv`` - OpenMM StateDataReporter log (step, time, energies, temperature, speed);
* ``checkpoint.chk`` - OpenMM checkpoint, written every ``checkpoint_interval`` steps and at the end, with
  ``checkpoint.json`` beside it (size, checksum, step, output counts: see :mod:`openmm_accel.storage`);
* ``summary.json`` - settings, wall time and simulated ns/day;
* ``draft.npz`` - the distilled draft of a speculative run.
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
from .forces import BACKENDS, default_platform
from .integrators import LangevinABOBAIntegrator
from .reporters import FiniteStateGuard, ProgressReporter, StopRequest, VerifiedCheckpointReporter, report_now
from .storage import atomic_write, check_output, discard, load_checkpoint, rewind_outputs, verified_checkpoint
from .systems import MM_MODEL, Setup
from .threads import use_torch_threads
from .validation import InputError, SimulationError, choice, count, fail, positive

METHODS = ("plain", "lsd", "flashmd")
OUTPUT_FILES = ("topology.pdb", "trajectory.dcd", "log.csv", "checkpoint.chk", "checkpoint.json",
                "summary.json", "draft.npz")


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
    overwrite: bool = False  # replace an earlier run's results in ``output`` (refused by default)
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


#: Options that apply only in some set-ups: field -> (CLI flag, when it applies, where it applies). A value
#: other than the default elsewhere is refused, never silently ignored.
SCOPED_OPTIONS = {
    "member": ("--member", lambda c: c.model != MM_MODEL, "an ML --model"),
    "backend": ("--backend", lambda c: c.model != MM_MODEL, "an ML --model"),
    "timestep_fs": ("--timestep", lambda c: c.method != "flashmd", "--method plain or lsd (a FlashMD step is "
                    "its model's stride)"),
    "draft": ("--draft", lambda c: c.method == "lsd", "--method lsd"),
    "draft_member": ("--draft-member", lambda c: c.method == "lsd" and c.draft == "member",
                     "--method lsd --draft member"),
    "scheduler": ("--scheduler", lambda c: c.method == "lsd", "--method lsd"),
    "workers": ("--workers", lambda c: c.method == "lsd" and c.scheduler == "ray", "--method lsd --scheduler ray"),
    "window": ("--window", lambda c: c.method == "lsd", "--method lsd"),
    "error_correction": ("--no-error-correction", lambda c: c.method == "lsd", "--method lsd"),
    "online": ("--online", lambda c: c.method == "lsd" and c.draft == "distilled", "--method lsd --draft distilled"),
    "distill_steps": ("--distill-steps", lambda c: c.method == "lsd" and c.draft == "distilled",
                      "--method lsd --draft distilled"),
    "flashmd_model": ("--flashmd-model", lambda c: c.method == "flashmd", "--method flashmd"),
    "thermostat": ("--thermostat", lambda c: c.method == "flashmd", "--method flashmd"),
}


def validated(config: RunConfig, given: Optional[set] = None) -> RunConfig:
    """``config`` with every field checked (numbers in range, names known, options that apply to the chosen
    method and model); an :class:`InputError` names the first bad field, what was expected and what was given.
    ``given``: the fields the user set (the command line knows); by default those that differ from the defaults."""
    from .systems import SYSTEMS
    if not isinstance(config, RunConfig):
        raise fail("config", "a RunConfig", type(config).__name__)
    choice(config.method, METHODS, "method")
    if config.system not in SYSTEMS and not str(config.system).startswith("openmmtools:"):
        choice(config.system, SYSTEMS, "system")
    choice(config.backend, BACKENDS, "backend")
    count(config.steps, "steps", "a positive number of steps")
    count(config.torch_threads, "threads", "a positive number of torch threads")
    for name in ("report_interval", "checkpoint_interval", "workers", "window", "distill_steps"):
        count(getattr(config, name), name)
    count(config.seed, "seed", "a positive integer (OpenMM reads seed 0 as 'from the clock')")
    positive(config.timestep_fs, unit.femtosecond, "timestep")
    positive(config.temperature_k, unit.kelvin, "temperature")
    if config.friction_per_ps is not None:
        positive(config.friction_per_ps, unit.picosecond**-1, "friction", allow_zero=config.method == "plain")
    if config.hydrogen_mass_amu is not None:
        positive(config.hydrogen_mass_amu, unit.amu, "hydrogen_mass")
    if config.platform is not None:
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        choice(config.platform, names, "platform")
    if not isinstance(config.output, str) or not config.output:
        raise fail("output", "a folder name", config.output)
    choice(config.draft, ("distilled", "member", "mm"), "draft")
    choice(config.scheduler, ("batched", "ray"), "scheduler")
    choice(config.thermostat, ("langevin", "svr"), "thermostat")
    default = RunConfig()
    for name, (flag, applies, where) in SCOPED_OPTIONS.items():
        set_by_user = name in given if given is not None else getattr(config, name) != getattr(default, name)
        if set_by_user and not applies(config):
            raise fail(f"{name} ({flag})", f"it only with {where}, where it has an effect",
                       f"{getattr(config, name)!r} with --method {config.method} --model {config.model}")
    return config


def build_system(config: RunConfig) -> Setup:
    """The standard system of ``config`` with its potential (:func:`openmm_accel.systems.with_potential`)."""
    return systems.with_potential(config.system, config.model, config.member, config.hydrogen_mass_amu,
                                  config.backend)


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
                     draft_file: Optional[str] = None, flashmd=None):
    """The integrator of ``config.method``; for LSD also the state to start from (after distillation).
    ``flashmd``: the FlashMD model if already opened (default: :func:`flashmd_model`)."""
    temperature = config.temperature_k * unit.kelvin
    friction, timestep = config.friction_per_ps / unit.picosecond, config.timestep_fs * unit.femtosecond
    if config.method == "plain":
        integrator = LangevinABOBAIntegrator(temperature, friction, timestep)
        integrator.setRandomNumberSeed(config.seed)
        return integrator, state
    if config.method == "flashmd":
        from .flashmd.integrator import FlashMDIntegrator
        model = flashmd if flashmd is not None else flashmd_model(config, setup)
        return FlashMDIntegrator(model, temperature=temperature, thermostat=config.thermostat, friction=friction,
                                 seed=config.seed), state
    from .speculative.integrator import SpeculativeLangevinIntegrator
    from .speculative.recipes import speculative_pair
    if setup.model is None:
        raise fail("model", "an ML target for --method lsd (the draft approximates it)", config.model)
    pair = speculative_pair(config.draft, config.model, setup.model, setup.molecular.topology, setup.mm_system,
                            setup.molecular.system, state, setup.region, config.draft_member,
                            config.distill_steps, config.online,
                            config.temperature_k, config.friction_per_ps, config.timestep_fs * 1e-3,
                            platform.getName(), draft_file, load_draft=config.resume)
    integrator = SpeculativeLangevinIntegrator(temperature, friction, timestep, draft=pair.draft, target=pair.target,
                                               scheduler=config.scheduler, window=config.window,
                                               workers=config.workers, error_correction=config.error_correction,
                                               seed=config.seed, draft_trainer=pair.trainer)
    return integrator, pair.start or state


def flashmd_model(config: RunConfig, setup: Setup):
    """The FlashMD model of ``config`` (a file, or the shipped default for its system and potential), refused
    unless it was trained on this system with this reference potential."""
    from .flashmd.pretrained import resolve
    from .flashmd.training import open_model
    topology = setup.molecular.topology
    model = open_model(resolve(config.flashmd_model, config.system, config.model),
                       [atom.element.atomic_number for atom in topology.atoms()], setup.molecular.masses)
    for option, key, what in (("model", "reference", "reference potential"), ("system", "system", "system")):
        trained = getattr(model, "metadata", {}).get(key)
        if trained is not None and trained != getattr(config, option):
            raise fail(option, f"the {what} the FlashMD model was trained on ({trained!r})", getattr(config, option))
    return model


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


def run(config: RunConfig, given: Optional[set] = None) -> dict:
    """Run ``config``; returns the summary (also written to ``summary.json``).

    Nothing is lost: an existing run in ``config.output`` is refused unless resumed or overwritten;
    checkpoints are verified before they are resumed; the final state is always in the trajectory and
    log; and Ctrl-C (SIGINT) finishes the current report interval, writes a checkpoint, the frames so far
    and ``summary.json`` (``"interrupted": true``), then raises ``KeyboardInterrupt`` (a second Ctrl-C
    stops at once, keeping the last checkpoint). ``--resume`` continues from there. ``given``: see
    :func:`validated`.
    """
    config = validated(config, given)
    use_torch_threads(config.torch_threads)
    if config.friction_per_ps is None:
        config = replace(config, friction_per_ps=default_friction(config))
    setup = build_system(config)
    molecular = setup.molecular
    # a mismatched FlashMD model is refused before the output folder is looked at
    flashmd = flashmd_model(config, setup) if config.method == "flashmd" else None
    paths = {name: os.path.join(config.output, name) for name in OUTPUT_FILES}
    earlier = check_output(config.output, OUTPUT_FILES, config.resume, config.overwrite)
    record = verified_checkpoint(paths["checkpoint.chk"])[1] if config.resume else None
    if record is not None and record["step"] >= config.steps:
        raise fail("steps", f"more than the {record['step']} steps already in the checkpoint", config.steps)
    draft_file = paths["draft.npz"]
    if config.resume and config.method == "lsd" and config.draft == "distilled" and not os.path.isfile(draft_file):
        raise fail("resume", f"the distilled draft {draft_file} of the run being resumed", "no such file")

    platform = openmm.Platform.getPlatformByName(config.platform or default_platform(molecular.system))
    state = None if config.resume else prepared_state(molecular.system, molecular.positions, config, platform)
    integrator, state = build_integrator(config, setup, state, platform, draft_file, flashmd)
    if config.overwrite:  # only now: an input error above has lost nothing (a new draft replaced the old one)
        discard(config.output, [name for name in earlier if not (name == "draft.npz" and config.method == "lsd"
                                                                  and config.draft == "distilled")])
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform)
    if config.resume:
        record = load_checkpoint(simulation, paths["checkpoint.chk"])
        rewind_outputs(paths["trajectory.dcd"], paths["log.csv"], record["outputs"].get("trajectory.dcd", 0),
                       record["outputs"].get("log.csv", 0))
    else:
        simulation.context.setState(state)
        simulation.context.setStepCount(0)
        simulation.context.setTime(0.0)
        with open(paths["topology.pdb"], "w") as handle:
            app.PDBFile.writeFile(molecular.topology, state.getPositions(), handle)
    start = simulation.currentStep

    postfix = None
    if config.method == "lsd":
        postfix = lambda: {"acceptance": f"{integrator.acceptance_rate:.2f}"}  # noqa: E731
    elif config.method == "flashmd":
        postfix = lambda: {"fallbacks": f"{integrator.statistics['fallback_fraction']:.2f}"}  # noqa: E731
    progress = ProgressReporter(config.steps, config.report_interval, start, postfix=postfix,
                                disable=None if config.progress is None else not config.progress)
    appending = config.resume and os.path.getsize(paths["trajectory.dcd"]) > 0
    outputs = [app.DCDReporter(paths["trajectory.dcd"], config.report_interval, append=appending),
               app.StateDataReporter(paths["log.csv"], config.report_interval, step=True, time=True,
                                     potentialEnergy=True, kineticEnergy=True, totalEnergy=True,
                                     temperature=True, speed=True, append=config.resume)]
    checkpoints = VerifiedCheckpointReporter(paths["checkpoint.chk"], config.checkpoint_interval,
                                             {"trajectory.dcd": paths["trajectory.dcd"], "log.csv": paths["log.csv"]})
    simulation.reporters += [FiniteStateGuard(config.report_interval)] + outputs + [checkpoints, progress]
    began = time.perf_counter()
    error, interrupted = None, False
    with StopRequest() as stop:
        try:
            while simulation.currentStep < config.steps and not stop.requested:
                to_report = config.report_interval - simulation.currentStep % config.report_interval
                simulation.step(min(to_report, config.steps - simulation.currentStep))
        except openmm.OpenMMException as exception:  # e.g. "Particle coordinate is NaN"
            error = SimulationError(f"OpenMM stopped near step {simulation.currentStep}: {exception}; everything "
                                    "written before that step was kept")
        except SimulationError as exception:
            error = exception
        except KeyboardInterrupt:  # a second Ctrl-C: possibly mid-step, so the last checkpoint stays the state
            error = KeyboardInterrupt()
        interrupted = stop.requested or isinstance(error, KeyboardInterrupt)
    wall = time.perf_counter() - began
    if error is None:  # a sound state: it ends the trajectory and the log, and the checkpoint
        if simulation.currentStep != start and simulation.currentStep % config.report_interval:
            report_now(simulation, outputs)
        checkpoints.save(simulation)
    progress.close()
    _close_reporters(simulation)
    done = simulation.currentStep - start
    simulated_ns = done * integrator.getStepSize().value_in_unit(unit.nanosecond)
    summary = {
        "config": asdict(config), "system": molecular.name, "atoms": molecular.topology.getNumAtoms(),
        "steps_run": done, "final_step": simulation.currentStep, "wall_seconds": wall,
        "ns_per_day": simulated_ns / wall * 86400.0 if wall > 0 else None,
        "interrupted": interrupted, "error": None if error is None or interrupted else str(error),
        "files": paths,
        "speculative": integrator.statistics if config.method == "lsd" else None,
        "flashmd": integrator.statistics if config.method == "flashmd" else None,
    }
    if hasattr(integrator, "close"):
        integrator.close()
    atomic_write(paths["summary.json"], json.dumps(summary, indent=2).encode())
    if interrupted:
        raise KeyboardInterrupt(f"interrupted at step {simulation.currentStep}; continue with --resume")
    if error is not None:
        raise error
    return summary


__all__ = ["RunConfig", "Setup", "build_system", "default_platform", "run", "InputError"]
