"""One benchmark harness for every method: plain MD and the accelerated method run from the same state in
one invocation, timed (warm-up excluded) and sampled the same way, with results written as JSON, a Markdown
table and plots side by side. Speed is a ratio measured here, never in a test."""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import openmm
import torch
from openmm import unit

from .integrators import LangevinABOBAIntegrator
from .storage import atomic_savez, atomic_write
from .validation import InputError


def prepared_state(system: openmm.System, positions, temperature_k: float, platform: openmm.Platform, seed: int,
                   minimize: bool = True, properties: Optional[Dict[str, str]] = None) -> openmm.State:
    """Minimised positions with velocities drawn at ``temperature_k`` (seeded), from a throw-away Context with
    the platform ``properties``."""
    context = openmm.Context(system, LangevinABOBAIntegrator(temperature_k, 1.0, 0.001), platform, properties or {})
    context.setPositions(positions)
    if minimize:
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
    context.setVelocitiesToTemperature(temperature_k * unit.kelvin, seed)
    return context.getState(getPositions=True, getVelocities=True)


def sample(integrator: openmm.Integrator, system: openmm.System, state: openmm.State, platform: openmm.Platform,
           samples: int, every: int, atoms: Optional[Sequence[int]] = None,
           properties: Optional[Dict[str, str]] = None) -> Dict[str, object]:
    """Run ``samples`` x ``every`` steps of ``integrator`` from ``state`` (a Context with the platform
    ``properties``, e.g. ``{"Threads": "1"}``), recording after each block the
    positions and velocities (of ``atoms``, default all), box and potential energy; the wall time per step
    counts the stepping only, after one untimed warm-up step (compilation, caches) from which the run
    restarts at ``state``. ``final`` is the last state, e.g. to start the next run from."""
    context = openmm.Context(system, integrator, platform, properties or {})
    context.setState(state)
    integrator.step(1)
    context.setState(state)
    atoms = slice(None) if atoms is None else list(atoms)
    x, v, box, potential, elapsed = [], [], [], [], 0.0
    for _ in range(samples):
        began = time.perf_counter()
        integrator.step(every)
        elapsed += time.perf_counter() - began
        frame = context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        x.append(frame.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[atoms])
        v.append(frame.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)[atoms])
        box.append(frame.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
        potential.append(frame.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    final = context.getState(getPositions=True, getVelocities=True)
    del context
    return {"x": np.array(x), "v": np.array(v), "box": np.array(box), "potential": np.array(potential),
            "seconds_per_step": elapsed / (samples * every), "final": final}


def ns_per_day(seconds_per_step: float, step_fs: float) -> float:
    """Simulated ns per wall-clock day at ``seconds_per_step`` for steps of ``step_fs``."""
    return step_fs * 1e-6 / seconds_per_step * 86400.0


def machine(threads: int) -> dict:
    """Where a benchmark ran (reported with every result)."""
    return {"cpus": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "openmm": openmm.__version__}


def report_name(path: str) -> str:
    """The name a model file's rows and arrays take in a report: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


def report_names(paths: Sequence[str], argument: str = "models") -> list:
    """The report names (:func:`report_name`) of ``paths``, refused when two would be the same (the second
    model's results would hide the first's)."""
    names = [report_name(path) for path in paths]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise InputError(f"{argument}: expected model files with distinct names (they name the report's rows), "
                         f"got {', '.join(twice)} more than once")
    return names


def write_report(results: dict, json_path: Optional[str], markdown: str,
                 plot: Optional[Callable[[str], None]] = None,
                 arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
    """Print ``markdown``; with ``json_path`` also write ``results`` there, the table beside it (``.md``),
    ``plot(path)`` as ``.png`` and ``arrays`` (what a JSON would bloat: sampled structures) as ``.npz``."""
    print(markdown, flush=True)
    if not json_path:
        return
    stem = os.path.splitext(json_path)[0]
    atomic_write(json_path, json.dumps(results, indent=2).encode())
    atomic_write(stem + ".md", (markdown + "\n").encode())
    written = [json_path, stem + ".md"]
    if plot is not None:
        plot(stem + ".png")
        written.append(stem + ".png")
    if arrays:
        atomic_savez(stem + ".npz", **arrays)
        written.append(stem + ".npz")
    print("wrote " + ", ".join(written))
