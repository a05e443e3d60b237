"""The main job: build a system with a chosen potential, run it with progress, write standard files.

Used by ``openmm-accel run``; also callable from Python (:func:`run`). Output directory contents:

* ``topology.pdb`` - the starting structure (with the topology mdtraj needs);
* ``trajectory.dcd`` - frames every ``report_interval`` steps;
* ``log.csv`` - OpenMM StateDataReporter log (step, time, energies, temperature, speed);
* ``checkpoint.chk`` - OpenMM checkpoint, written every ``checkpoint_interval`` steps and at the end, with
  ``checkpoint.json`` beside it (size, checksum, step, output counts: see :mod:`openmm_accel.storage`);
* ``summary.json`` - settings, wall time and simulated ns/day;
* ``velocities.dcd`` (with ``--velocities``) - velocities every ``report_interval`` steps, nm/ps, stored as a
  DCD stores positions: ``mdtraj.load(..., top=...).xyz`` holds them;
* files of the method (e.g. ``draft.npz``, the distilled draft of a speculative run).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional

import openmm
from openmm import app, unit

from . import devices, systems
from .devices import device_option
from .forces import BACKENDS
from .harness import prepared_state
from .integrators import Langevin
from .method import Method, Start, get_method, methods
from .options import checked, option, options_of, positive_in
from .reporters import (FiniteStateGuard, ProgressReporter, StopRequest, VelocityDCDReporter,
                        VerifiedCheckpointReporter, report_now)
from .storage import atomic_write, check_output, discard, load_checkpoint, rewind_outputs, verified_checkpoint
from .molecular import CONSTRAINT_CHOICES, MM_MODEL, MolecularSystem
from .systems import SystemOptions
from .threads import check_threads, use_torch_threads
from .validation import InputError, SimulationError, check_seed, choice, count, fail, positive

RUN_FILES = ("topology.pdb", "trajectory.dcd", "log.csv", "checkpoint.chk", "checkpoint.json", "summary.json",
             "velocities.dcd")


def _check_platform(value, name) -> None:
    choice(value, devices.platform_names(), name)


def _check_output(value, name) -> None:
    if not isinstance(value, str) or not value:
        raise fail(name, "a folder name", value)


def _check_steps(value, name) -> None:
    count(value, name, "a positive number of steps")


def _check_threads(value, name) -> None:
    check_threads(value, "threads")


@dataclass
class RunConfig(SystemOptions):
    """Settings of one run (plain numbers in OpenMM's units: K, fs, 1/ps, amu): the system (and how a file
    becomes one), the options every method shares, ``method`` and ``options``, that method's own settings
    (its ``Config``; None: its defaults)."""

    model: str = option("ani1x", "--model", "potential: a registered model (see 'openmm-accel models') on the "
                        "solute, or 'mm' for the system's own force field")
    member: Optional[int] = option(None, "--member", "single ANI-1x network 0-7 instead of the ensemble")
    backend: str = option("torchforce", "--backend", "how the ML model enters OpenMM", choices=BACKENDS)
    method: str = option("plain", "--method", "how to run the dynamics (options of each method below)")
    steps: int = option(2000, "--steps", "total steps (including any already in a checkpoint)", check=_check_steps)
    timestep_fs: float = option(1.0, "--timestep", "fs", check=positive_in(unit.femtosecond, "timestep"))
    temperature_k: float = option(300.0, "--temperature", "K", check=positive_in(unit.kelvin, "temperature"))
    friction_per_ps: Optional[float] = option(None, "--friction", "Langevin friction, 1/ps (default: 1; with "
                                              "--method flashmd the friction its model was measured at, 10 unless "
                                              "the shipped model's table in the README says otherwise)",
                                              check=positive_in(unit.picosecond**-1, "friction", allow_zero=True))
    hydrogen_mass_amu: Optional[float] = option(None, "--hydrogen-mass", "hydrogen mass repartitioning, amu",
                                                check=positive_in(unit.amu, "hydrogen_mass"))
    constraints: str = option("none", "--constraints", "hbonds: X-H bond lengths (force-field values) and water "
                              "geometry held fixed, for 1-2 fs steps", choices=CONSTRAINT_CHOICES)
    report_interval: int = option(100, "--report-interval", "steps between frames of trajectory.dcd and lines of "
                                  "log.csv", check=count)
    velocities: bool = option(False, "--velocities", "also write velocities.dcd: velocities (nm/ps) every "
                              "report_interval steps, stored as a DCD stores positions (mdtraj.load gives them "
                              "as xyz), e.g. to check each element's temperature")
    checkpoint_interval: int = option(1000, "--checkpoint-interval", "steps between verified checkpoints",
                                      check=count)
    output: str = option("openmm_accel_run", "--output", "output directory", check=_check_output)
    platform: Optional[str] = option(None, "--platform", "OpenMM platform instead of --device's (CUDA on a GPU, "
                                     "else CPU), e.g. Reference for double precision or OpenCL",
                                     check=_check_platform)
    torch_threads: int = option(1, "--threads", "torch intra-op threads (1 is fastest for small molecules on 2 "
                                "cores)", check=_check_threads)
    device: str = device_option()
    seed: int = option(1, "--seed", "seed of the velocities and of the integrator's noise", check=check_seed)
    minimize: bool = option(True, "--no-minimize", "start from the structure as given")
    resume: bool = option(False, "--resume", "continue from OUTPUT/checkpoint.chk (verified first)")
    overwrite: bool = option(False, "--overwrite", "replace the results of an earlier run in OUTPUT (without it, "
                             "or --resume, such a folder is refused)")
    progress: Optional[bool] = option(None, "--no-progress", "no progress bar (default: shown; when standard error "
                                      "is not a terminal, a line a minute)")
    options: Any = None

    @property
    def langevin(self) -> Langevin:
        """The run's thermostat, time step and seed."""
        return Langevin(self.temperature_k, self.friction_per_ps, self.timestep_fs, self.seed)

    def method_options(self):
        """The method's own settings: ``options``, or its defaults."""
        return self.options if self.options is not None else get_method(self.method).Config()

    def flat(self) -> Dict[str, Any]:
        """Every setting in one mapping: the common ones and the method's (``summary.json``'s ``config``)."""
        common = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "options"}
        return {**common, **asdict(self.method_options())}

    def unused(self, method: Method) -> Dict[str, str]:
        """The common options with no effect in this run, each with where they have one."""
        def listed(keep) -> str:
            return " or ".join(name for name, other in methods().items() if keep(other))
        ml = self.model != MM_MODEL
        unused = {}
        if method.brings_potential:
            unused["model"] = "--method " + listed(lambda other: not other.brings_potential) + \
                " (other methods bring their potential)"
        if not ml or method.brings_potential:
            unused["member"] = unused["ml_atoms"] = "an ML --model"
        if not ml and not method.brings_potential:
            unused["backend"] = "an ML --model, or a method that brings its own model"
        if method.brings_timestep:
            unused["timestep_fs"] = "--method " + listed(lambda other: not other.brings_timestep) + \
                " (other methods step by their model's stride)"
        if not method.keeps_constraints:
            unused["constraints"] = "--method " + listed(lambda other: other.keeps_constraints)
        return unused


def run_options(method: Optional[Method] = None):
    """The options of ``openmm-accel run``: the common ones, or those of ``method``."""
    return options_of(RunConfig if method is None else method.Config)


def validated(config: RunConfig, given: Optional[set] = None) -> RunConfig:
    """``config`` with every field checked (numbers in range, names known, options that apply to the chosen
    method and model); an :class:`InputError` names the first bad field, what was expected and what was given.
    ``given``: the fields the user set (the command line knows); by default those that differ from the defaults."""
    if not isinstance(config, RunConfig):
        raise fail("config", "a RunConfig", type(config).__name__)
    choice(config.method, methods(), "method")
    method = get_method(config.method)
    if config.options is not None and not isinstance(config.options, method.Config):
        raise fail("options", f"a {method.Config.__name__} (the settings of --method {config.method})",
                   type(config.options).__name__)
    config = checked(config)
    if not method.brings_potential:
        systems.check_potential(config.model, None)
    own = checked(config.method_options())
    if config.friction_per_ps is not None:
        positive(config.friction_per_ps, unit.picosecond**-1, "friction", allow_zero=method.allows_zero_friction)
    scoped = [(declared, RunConfig(), config, config.unused(method)) for declared in run_options()]
    scoped += [(declared, method.Config(), own, {name: f"--method {method.name} {where}" for name, where in
                                                 method.unused(replace(config, options=own)).items()})
               for declared in run_options(method)]
    for declared, defaults, settings, unused in scoped:
        value = getattr(settings, declared.name)
        set_by_user = declared.name in given if given is not None else value != getattr(defaults, declared.name)
        if set_by_user and declared.name in unused:
            raise fail(f"{declared.name} ({declared.flag})", f"it only with {unused[declared.name]}, where it has an "
                       "effect", f"{value!r} with --method {config.method} --model {config.model}")
    return replace(config, options=own)


def with_method_defaults(config: RunConfig, given: Optional[set] = None) -> RunConfig:
    """``config`` with what its method chooses when the user did not: the friction, and the system and the
    potential for a method that has its own defaults (e.g. the system its shipped model was trained for,
    with the potential of its data)."""
    method = get_method(config.method)
    if config.friction_per_ps is None:
        config = replace(config, friction_per_ps=method.default_friction(config))
    system_given = "system" in given if given is not None else config.system != RunConfig().system
    default_system = None if system_given else method.default_system_of(config)
    if default_system is not None:
        config = replace(config, system=default_system)
    model_given = "model" in given if given is not None else config.model != RunConfig().model
    if not model_given:
        config = replace(config, model=method.default_model(config) or config.model)
    return config


#: Settings a resumed run may change: how long and how it runs, not what it simulates.
RESUMABLE = ("steps", "output", "resume", "overwrite", "progress", "torch_threads", "report_interval",
             "checkpoint_interval", "platform", "backend", "minimize")


def run_identity(config: RunConfig) -> dict:
    """What makes a run what it is (recorded with its checkpoints, as JSON; a resume with other values is
    refused): every setting but how long and how it runs (:data:`RESUMABLE` and the method's own)."""
    free = set(RESUMABLE) | set(get_method(config.method).resumable)
    free |= config.unset_options()  # as runs recorded before these options existed say nothing about them
    return json.loads(json.dumps({key: value for key, value in config.flat().items() if key not in free}))


def build_system(config: RunConfig) -> MolecularSystem:
    """The standard system of ``config`` with its potential (:func:`openmm_accel.systems.with_potential`)."""
    return systems.with_potential(config.system, config.model, config.member, config.hydrogen_mass_amu,
                                  config.backend, config.constraints, config.source_options(), config.ml_atoms)


def output_files() -> tuple:
    """Every file a run may write into its folder: the common ones and every method's."""
    return RUN_FILES + tuple(name for method in methods().values() for name in method.output_files)


def _close_reporters(simulation: app.Simulation) -> None:
    for reporter in simulation.reporters:
        if hasattr(reporter, "close"):
            reporter.close()
        stream = getattr(reporter, "_out", None)  # DCD/StateData reporters own their files
        if stream is not None and hasattr(stream, "close"):
            stream.close()


def run(config: RunConfig, given: Optional[set] = None) -> dict:
    """Run ``config``; returns the summary (also written to ``summary.json``).

    Nothing is lost: an existing run in ``config.output`` is refused unless resumed or overwritten;
    checkpoints are verified before they are resumed; the final state is always in the trajectory and
    log; and Ctrl-C (SIGINT) finishes the current report interval, writes a checkpoint, the frames so far
    and ``summary.json`` (``"interrupted": true``), then raises ``KeyboardInterrupt`` (a second Ctrl-C
    stops at once, keeping the last checkpoint). ``--resume`` continues from there. ``given``: see
    :func:`validated`.
    """
    called = time.perf_counter()
    config = validated(config, given)
    method = get_method(config.method)
    use_torch_threads(config.torch_threads)
    config = with_method_defaults(config, given)
    molecular = method.system(config) or build_system(config)
    # what the method checks (e.g. a mismatched model file) is refused before the output folder is looked at
    prepared = method.prepare(config, molecular)
    paths = {name: os.path.join(config.output, name) for name in output_files()}
    earlier = check_output(config.output, tuple(paths), config.resume, config.overwrite)
    record = verified_checkpoint(paths["checkpoint.chk"])[1] if config.resume else None
    if record is not None and record["step"] >= config.steps:
        raise fail("steps", f"more than the {record['step']} steps already in the checkpoint", config.steps)
    identity = run_identity(config)
    if record is not None and record.get("run") is not None and record["run"] != identity:
        different = sorted(key for key in set(identity) | set(record["run"])
                           if identity.get(key) != record["run"].get(key))
        changes = ", ".join(f"{key} {identity.get(key)!r} (was {record['run'].get(key)!r})" for key in different)
        raise fail("resume", "the settings of the run being resumed (or --overwrite to start again)",
                   f"other {changes}")

    platform = (openmm.Platform.getPlatformByName(config.platform) if config.platform
                else devices.platform(config.device))
    properties = {} if config.platform else devices.platform_properties(config.device)
    state = None if config.resume else prepared_state(molecular.system, molecular.positions, config.temperature_k,
                                                      platform, config.seed, config.minimize, properties)
    integrator, state = method.integrator(config, Start(molecular, state, platform, prepared, paths, config.device))
    if config.overwrite:  # only now: an input error above has lost nothing (the method rewrote its own files)
        discard(config.output, [name for name in earlier if name not in method.files(config)])
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform, properties)
    tracked = {name: paths[name] for name in ("trajectory.dcd", "log.csv") + method.reported_files
               + (("velocities.dcd",) if config.velocities else ())}
    if config.resume:
        record = load_checkpoint(simulation, paths["checkpoint.chk"])
        rewind_outputs(tracked, record["outputs"])
    else:
        simulation.context.setState(state)
        simulation.context.setStepCount(0)
        simulation.context.setTime(0.0)
        with open(paths["topology.pdb"], "w") as handle:
            app.PDBFile.writeFile(molecular.topology, state.getPositions(), handle)
    start = simulation.currentStep

    own = method.reporters(config, molecular, paths, integrator)  # e.g. FlashMD's per-element temperatures
    progress = ProgressReporter(config.steps, config.report_interval, start,
                                postfix=lambda: {**method.progress(integrator),
                                                 **{k: v for reporter in own for k, v in reporter.postfix().items()}},
                                disable=None if config.progress is None else not config.progress)
    appending = config.resume and os.path.getsize(paths["trajectory.dcd"]) > 0
    outputs = [app.DCDReporter(paths["trajectory.dcd"], config.report_interval, append=appending),
               app.StateDataReporter(paths["log.csv"], config.report_interval, step=True, time=True,
                                     potentialEnergy=True, kineticEnergy=True, totalEnergy=True,
                                     temperature=True, speed=True, append=config.resume)]
    if config.velocities:
        outputs.append(VelocityDCDReporter(paths["velocities.dcd"], config.report_interval, append=appending))
    checkpoints = VerifiedCheckpointReporter(paths["checkpoint.chk"], config.checkpoint_interval, tracked, identity)
    simulation.reporters += [FiniteStateGuard(config.report_interval, config.temperature_k)] + outputs + own + [
        checkpoints, progress]
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
            report_now(simulation, outputs + own)
        checkpoints.save(simulation)
    progress.close()
    _close_reporters(simulation)
    done = simulation.currentStep - start
    simulated_ns = done * integrator.getStepSize().value_in_unit(unit.nanosecond)
    settings = config.flat()
    if method.brings_potential:  # --model had no effect: the method's own potential is in the recipe
        settings["model"] = None
    summary = {
        "config": settings, "system": molecular.name, "recipe": molecular.recipe.to_json(),
        "atoms": molecular.topology.getNumAtoms(), "platform": simulation.context.getPlatform().getName(),
        "steps_run": done, "final_step": simulation.currentStep, "wall_seconds": wall,
        "ns_per_day": simulated_ns / wall * 86400.0 if wall > 0 else None,
        # what it cost before the first step (building the system, minimising, e.g. distilling an LSD draft)
        "setup_seconds": began - called,
        "ns_per_day_with_setup": simulated_ns / (wall + began - called) * 86400.0 if wall > 0 else None,
        "interrupted": interrupted, "error": None if error is None or interrupted else str(error),
        "files": {name: path for name, path in paths.items() if os.path.exists(path) or name == "summary.json"},
    }
    for other in methods().values():  # each method's statistics under its key (None for the others)
        if other.statistics_key:
            summary[other.statistics_key] = ({**integrator.statistics, **{r.key: r.summary() for r in own}}
                                              if other is method else None)
    if hasattr(integrator, "close"):
        integrator.close()
    atomic_write(paths["summary.json"], json.dumps(summary, indent=2).encode())
    if interrupted:
        raise KeyboardInterrupt(f"interrupted at step {simulation.currentStep}; continue with --resume")
    if error is not None:
        raise error
    return summary


def build_integrator(config: RunConfig, start: Start):
    """The integrator of ``config.method`` and the state to start from (for scripts that run it themselves);
    ``start.molecular`` is replaced by the method's own system, if it has one."""
    config = with_method_defaults(validated(config))
    method = get_method(config.method)
    molecular = method.system(config) or start.molecular
    paths = start.paths or {name: os.path.join(config.output, name) for name in output_files()}
    return method.integrator(config, Start(molecular, start.state, start.platform, method.prepare(config, molecular),
                                           paths, config.device))


__all__ = ["RunConfig", "Start", "build_integrator", "build_system", "run",
           "InputError"]
