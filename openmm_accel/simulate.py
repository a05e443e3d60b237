"""The main job: build a system with a chosen potential, run it with progress, write standard files.

Used by ``openmm-accel run``; also callable from Python (:func:`run`). Output directory contents:

* ``topology.pdb`` - the starting structure (with the topology mdtraj needs);
* ``trajectory.dcd`` - frames every ``report_interval`` steps;
* ``log.csv`` - OpenMM StateDataReporter log (step, time, energies, temperature, speed);
* ``checkpoint.chk`` - OpenMM checkpoint, written every ``checkpoint_interval`` steps and at the end, with
  ``checkpoint.json`` beside it (size, checksum, step, output counts: see :mod:`openmm_accel.storage`);
* ``summary.json`` - settings, wall time and simulated ns/day;
* files of the method (e.g. ``draft.npz``, the distilled draft of a speculative run).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, make_dataclass, replace
from typing import Optional

import openmm
from openmm import app, unit

from . import systems
from .forces import BACKENDS, default_platform
from .harness import prepared_state
from .method import Option, get_method, methods, positive_in
from .reporters import FiniteStateGuard, ProgressReporter, StopRequest, VerifiedCheckpointReporter, report_now
from .storage import atomic_write, check_output, discard, load_checkpoint, rewind_outputs, verified_checkpoint
from .systems import MM_MODEL, Setup, check_name
from .threads import use_torch_threads
from .validation import InputError, SimulationError, choice, count, fail, positive

RUN_FILES = ("topology.pdb", "trajectory.dcd", "log.csv", "checkpoint.chk", "checkpoint.json", "summary.json")


def _ml(config) -> bool:
    return config.model != MM_MODEL


def _check_platform(value, name) -> None:
    choice(value, [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())], name)


def _check_output(value, name) -> None:
    if not isinstance(value, str) or not value:
        raise fail(name, "a folder name", value)


def _steps_of_model(config) -> bool:
    return not get_method(config.method).own_timestep


#: Options of every run (plain numbers in OpenMM's units: K, fs, 1/ps, amu); each method adds its own.
COMMON_OPTIONS = (
    Option("system", "--system", "alanine-dipeptide-vacuum", "standard system (see 'openmm-accel systems'), or "
           "'openmmtools:NAME'", check=check_name),
    Option("model", "--model", "ani1x", "potential: a registered model (see 'openmm-accel models') on the solute, "
           "or 'mm' for the system's own force field", applies=lambda config: not get_method(config.method).own_potential,
           where=lambda: "--method " + " or ".join(name for name, method in methods().items()
                                                   if not method.own_potential) + " (other methods bring their potential)"),
    Option("member", "--member", None, "single ANI-1x network 0-7 instead of the ensemble", type=int,
           applies=lambda config: _ml(config) and not get_method(config.method).own_potential,
           where="an ML --model"),
    Option("backend", "--backend", "torchforce", "how the ML model enters OpenMM", choices=BACKENDS,
           applies=lambda config: _ml(config) or get_method(config.method).own_potential,
           where="an ML --model, or a method that brings its own model"),
    Option("method", "--method", "plain", "how to run the dynamics (options of each method below)",
           choices=tuple(methods())),
    Option("steps", "--steps", 2000, "total steps (including any already in a checkpoint)", type=int,
           check=lambda value, name: count(value, name, "a positive number of steps")),
    Option("timestep_fs", "--timestep", 1.0, "fs", type=float, check=positive_in(unit.femtosecond, "timestep"),
           applies=_steps_of_model, where=lambda: "--method " + " or ".join(
               name for name, method in methods().items() if not method.own_timestep) + " (other methods step "
               "by their model's stride)"),
    Option("temperature_k", "--temperature", 300.0, "K", type=float, check=positive_in(unit.kelvin, "temperature")),
    Option("friction_per_ps", "--friction", None, "Langevin friction, 1/ps (default: 1; with --method flashmd the "
           "friction its model was measured at, 10 unless the shipped model's table in the README says otherwise)",
           type=float),
    Option("hydrogen_mass_amu", "--hydrogen-mass", None, "hydrogen mass repartitioning, amu", type=float,
           check=positive_in(unit.amu, "hydrogen_mass")),
    Option("constraints", "--constraints", "none", "hbonds: X-H bond lengths (force-field values) and water "
           "geometry held fixed, for 1-2 fs steps", choices=systems.CONSTRAINT_CHOICES,
           applies=lambda config: get_method(config.method).keeps_constraints,
           where=lambda: "--method " + " or ".join(name for name, method in methods().items()
                                                   if method.keeps_constraints)),
    Option("report_interval", "--report-interval", 100, type=int, check=count),
    Option("checkpoint_interval", "--checkpoint-interval", 1000, type=int, check=count),
    Option("output", "--output", "openmm_accel_run", "output directory", check=_check_output),
    Option("platform", "--platform", None, "OpenMM platform (default: CUDA/OpenCL if present, else CPU, or "
           "Reference for torchforce)", check=_check_platform),
    Option("torch_threads", "--threads", 1, "torch intra-op threads (1 is fastest for small molecules on 2 cores)",
           type=int, check=lambda value, name: count(value, "threads", "a positive number of torch threads")),
    Option("seed", "--seed", 1, type=int, check=lambda value, name: count(
        value, name, "a positive integer (OpenMM reads seed 0 as 'from the clock')")),
    Option("minimize", "--no-minimize", True, "start from the structure as given", action="store_false"),
    Option("resume", "--resume", False, "continue from OUTPUT/checkpoint.chk (verified first)", action="store_true"),
    Option("overwrite", "--overwrite", False, "replace the results of an earlier run in OUTPUT (without it, or "
           "--resume, such a folder is refused)", action="store_true"),
    Option("progress", "--no-progress", None, "no progress bar (default: tqdm's choice; off when not a terminal)",
           action="store_false"),
)


def _run_config_class():
    names = {option.name for option in COMMON_OPTIONS}
    fields = [(option.name, object, option.default) for option in COMMON_OPTIONS]
    for method in methods().values():
        for option in method.options:
            if option.name in names:
                raise TypeError(f"method {method.name!r} redefines the run option {option.name!r}")
            names.add(option.name)
            fields.append((option.name, object, option.default))
    return make_dataclass("RunConfig", fields, namespace={"__doc__": (
        "Settings of one run: the common options and every registered method's (plain numbers in OpenMM's "
        "units: K, fs, 1/ps, amu). Built from :data:`COMMON_OPTIONS` and the method registry.")})


RunConfig = _run_config_class()
RunConfig.__module__ = __name__
METHODS = tuple(methods())
OUTPUT_FILES = RUN_FILES + tuple(name for method in methods().values() for name in method.all_files)


def scoped_options():
    """Every run option that applies only in some set-ups, as (option, applies(config), where): a value other
    than the default elsewhere is refused, never silently ignored."""
    for option in COMMON_OPTIONS:
        if option.where:
            yield option, option.applies, option.where() if callable(option.where) else option.where
    for method in methods().values():
        for option in method.options:
            yield (option, lambda config, method=method, option=option: method.applies(option, config),
                   f"--method {method.name}" + (f" {option.where}" if option.where else ""))


def validated(config, given: Optional[set] = None):
    """``config`` with every field checked (numbers in range, names known, options that apply to the chosen
    method and model); an :class:`InputError` names the first bad field, what was expected and what was given.
    ``given``: the fields the user set (the command line knows); by default those that differ from the defaults."""
    if not isinstance(config, RunConfig):
        raise fail("config", "a RunConfig", type(config).__name__)
    choice(config.method, METHODS, "method")
    method = get_method(config.method)
    for option in COMMON_OPTIONS + method.options:
        option.validate(getattr(config, option.name))
    if config.friction_per_ps is not None:
        positive(config.friction_per_ps, unit.picosecond**-1, "friction", allow_zero=method.zero_friction)
    default = RunConfig()
    for option, applies, where in scoped_options():
        value = getattr(config, option.name)
        set_by_user = option.name in given if given is not None else value != getattr(default, option.name)
        if set_by_user and not applies(config):
            raise fail(f"{option.name} ({option.flag})", f"it only with {where}, where it has an effect",
                       f"{value!r} with --method {config.method} --model {config.model}")
    return config


def with_method_defaults(config, given: Optional[set] = None):
    """``config`` with what its method chooses when the user did not: the friction, and the system and the
    potential for a method that has its own defaults (e.g. the system its shipped model was trained for,
    with the potential of its data)."""
    method = get_method(config.method)
    if config.friction_per_ps is None:
        config = replace(config, friction_per_ps=method.default_friction(config))
    system_given = "system" in given if given is not None else config.system != RunConfig().system
    if method.default_system is not None and not system_given:
        config = replace(config, system=method.default_system)
    model_given = "model" in given if given is not None else config.model != RunConfig().model
    if method.default_model is not None and not model_given:
        config = replace(config, model=method.default_model(config))
    return config


def build_system(config) -> Setup:
    """The standard system of ``config`` with its potential (:func:`openmm_accel.systems.with_potential`)."""
    return systems.with_potential(config.system, config.model, config.member, config.hydrogen_mass_amu,
                                  config.backend, config.constraints)


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
    config = validated(config, given)
    method = get_method(config.method)
    use_torch_threads(config.torch_threads)
    config = with_method_defaults(config, given)
    setup = method.setup(config) if method.setup is not None else build_system(config)
    molecular = setup.molecular
    # what the method checks (e.g. a mismatched model file) is refused before the output folder is looked at
    prepared = method.prepare(config, setup) if method.prepare is not None else None
    paths = {name: os.path.join(config.output, name) for name in OUTPUT_FILES}
    earlier = check_output(config.output, OUTPUT_FILES, config.resume, config.overwrite)
    record = verified_checkpoint(paths["checkpoint.chk"])[1] if config.resume else None
    if record is not None and record["step"] >= config.steps:
        raise fail("steps", f"more than the {record['step']} steps already in the checkpoint", config.steps)

    platform = openmm.Platform.getPlatformByName(config.platform or default_platform(molecular.system))
    state = None if config.resume else prepared_state(molecular.system, molecular.positions, config.temperature_k,
                                                      platform, config.seed, config.minimize)
    integrator, state = method.build(config, setup, state, platform, prepared, paths)
    if config.overwrite:  # only now: an input error above has lost nothing (the method rewrote its own files)
        discard(config.output, [name for name in earlier if name not in method.files(config)])
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

    postfix = (lambda: method.progress(integrator)) if method.progress is not None else None
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
    }
    for other in methods().values():  # each method's statistics under its key (None for the others)
        if other.statistics_key:
            summary[other.statistics_key] = integrator.statistics if other is method else None
    if hasattr(integrator, "close"):
        integrator.close()
    atomic_write(paths["summary.json"], json.dumps(summary, indent=2).encode())
    if interrupted:
        raise KeyboardInterrupt(f"interrupted at step {simulation.currentStep}; continue with --resume")
    if error is not None:
        raise error
    return summary


def build_integrator(config, setup: Setup, state: openmm.State, platform: openmm.Platform,
                     paths: Optional[dict] = None):
    """The integrator of ``config.method`` and the state to start from (for scripts that run it themselves)."""
    method = get_method(validated(config).method)
    config = with_method_defaults(config)
    if method.setup is not None:
        setup = method.setup(config)
    prepared = method.prepare(config, setup) if method.prepare is not None else None
    paths = paths or {name: os.path.join(config.output, name) for name in OUTPUT_FILES}
    return method.build(config, setup, state, platform, prepared, paths)


__all__ = ["RunConfig", "Setup", "build_integrator", "build_system", "default_platform", "run", "InputError"]
