"""OpenMM reporters: a tqdm progress bar, a guard that stops a run at the first non-finite state, verified
checkpoints (with the output counts a resumed run rewinds to) and per-element kinetic temperatures."""
from __future__ import annotations

import signal
import sys
import threading
import warnings
from collections import deque
from typing import Dict, Optional, Sequence

import numpy as np
from openmm import app, unit

from .analysis import BOLTZMANN, element_temperature_series, standard_error
from .forces import masses_of
from .integrators.base import exploded
from .progress import progress_bar
from .storage import log_rows, output_count, save_checkpoint
from .validation import SimulationError


class IntervalReporter:
    """Base of reporters that report every ``interval`` steps and ask for the state in ``include``."""

    include: tuple = ()
    periodic = None

    def __init__(self, interval: int):
        self._interval = max(1, int(interval))

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": self.periodic, "include": list(self.include)}


class ProgressReporter(IntervalReporter):
    """tqdm progress bar over the steps of a run; ``postfix`` is a callable returning extra fields."""

    def __init__(self, total_steps: int, interval: int, start_step: int = 0, postfix=None, disable=None):
        super().__init__(interval)
        self._bar = progress_bar(total=int(total_steps), initial=int(start_step), unit="step",
                                 enabled=None if disable is None else not disable, dynamic_ncols=True)
        self._last = int(start_step)
        self._postfix = postfix

    def report(self, simulation, state):
        self._bar.update(simulation.currentStep - self._last)
        self._last = simulation.currentStep
        if self._postfix is not None:
            self._bar.set_postfix(self._postfix(), refresh=False)

    def close(self):
        self._bar.close()


class FiniteStateGuard(IntervalReporter):
    """Raise :class:`SimulationError` (naming the step) as soon as positions or velocities are non-finite, or,
    given the thermostat's ``temperature_k``, as soon as the dynamics run hot beyond any fluctuation and any
    start-up transient: the kinetic temperature of one report above ``T0 max(1 + 20 s, 10)``, or its mean over
    the last :attr:`WINDOW` reports above ``T0 max(1 + 8 s, 3)``, where ``s = sqrt(2 / dof)`` is the standard
    deviation of one report's kinetic temperature over ``T0`` at equilibrium (a chi-squared with ``dof``
    degrees of freedom). The mean of correlated reports fluctuates at most as much as one report, so either
    bound is at least 8 standard deviations from an equilibrium run; the floors of 10x and 3x leave room for
    an unminimised start heating a large system (an explicit-water ML/MM start reached 2.75x in two steps).
    Measured on coarse-grained alanine dipeptide (15 degrees of freedom): at 2 fs the largest 20-report mean
    was 1.4x; a 50 fs step heats it to 21x at the first report and 6x over 20 (stopped), 1e6 fs to 1e7x.

    Add it *before* trajectory reporters: OpenMM calls reporters in order, so a bad frame is never
    written and everything written before it is kept. It reads no energies (an ML energy costs a model
    call), only positions and velocities.
    """

    include = ("positions", "velocities")
    periodic = False
    WINDOW = 20

    def __init__(self, interval: int, temperature_k: Optional[float] = None):
        super().__init__(interval)
        self.temperature_k = temperature_k
        self._recent, self._masses = deque(maxlen=self.WINDOW), None

    def report(self, simulation, state):
        check_finite_state(state, simulation.currentStep)
        if self.temperature_k is not None:
            self._check_temperature(simulation, state)

    def _check_temperature(self, simulation, state) -> None:
        system = simulation.system
        if self._masses is None:
            self._masses = masses_of(system)
        masses = self._masses
        moving = masses > 0
        dof = 3 * int(moving.sum()) - system.getNumConstraints()
        if dof < 1:
            return
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        kinetic = 0.5 * float(np.sum(masses[moving, None] * velocities[moving] ** 2))  # kJ/mol
        temperature = 2.0 * kinetic / (dof * BOLTZMANN)
        self._recent.append(temperature)
        spread = np.sqrt(2.0 / dof)
        mean = float(np.mean(self._recent))
        single, window = self.temperature_k * max(1 + 20 * spread, 10), self.temperature_k * max(1 + 8 * spread, 3)
        if temperature > single or (len(self._recent) == self.WINDOW and mean > window):
            hot = temperature if temperature > single else mean
            raise SimulationError(f"the dynamics exploded at step {simulation.currentStep}: kinetic temperature "
                                  f"{hot:.0f} K against the thermostat's {self.temperature_k:g} K (beyond any "
                                  f"fluctuation of {dof} degrees of freedom); use a shorter time step. The run was "
                                  "stopped and everything written before this step was kept")


def check_finite_state(state, step: int) -> None:
    """Raise :class:`SimulationError` if ``state`` has non-finite positions or non-finite/superluminal velocities."""
    problem = exploded(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                       state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
    if problem is not None:
        name, atom = problem
        raise SimulationError(f"non-finite or exploding {name} at step {step} (first bad atom: {atom}); the "
                              "run was stopped and everything written before this step was kept")



class VerifiedCheckpointReporter(IntervalReporter):
    """Like OpenMM's ``CheckpointReporter``, but written atomically with a record (size, checksum, step and
    the frames/rows of ``outputs`` at that step) that ``--resume`` checks: see :mod:`openmm_accel.storage`.
    Add it after the trajectory and log reporters, so its counts include their report at the same step."""

    def __init__(self, path: str, interval: int, outputs: Dict[str, str], run: Optional[dict] = None):
        super().__init__(interval)
        self.path, self.run = path, run  # run: the settings recorded with each checkpoint
        self._outputs = dict(outputs)  # name -> path of a DCD (frames) or CSV log (rows)

    def report(self, simulation, state):
        self.save(simulation)

    def save(self, simulation) -> dict:
        counts = {name: output_count(path) for name, path in self._outputs.items()}
        return save_checkpoint(simulation, self.path, counts, self.run)


def report_now(simulation, reporters) -> None:
    """Have ``reporters`` report the current state now (e.g. the final state of a run that did not end on
    a report step), with the state each asks for."""
    for reporter in reporters:
        wanted = reporter.describeNextReport(simulation)  # a dict since OpenMM 8.1
        include, periodic = wanted["include"], wanted["periodic"]
        if periodic is None:
            periodic = simulation.topology.getPeriodicBoxVectors() is not None
        state = simulation.context.getState(getPositions="positions" in include,
                                            getVelocities="velocities" in include,
                                            getForces="forces" in include, getEnergy="energy" in include,
                                            getParameters=True, enforcePeriodicBox=periodic)
        reporter.report(simulation, state)


class StopRequest:
    """Context manager turning the first Ctrl-C (SIGINT) into a request (``requested``) that a run loop
    checks between report intervals, so it can stop on a sound state and save it; a second Ctrl-C raises
    ``KeyboardInterrupt`` at once. Outside the main thread (no signal handlers there) it does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)
        print("\nopenmm-accel: stopping after the current report interval and saving a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None and not self.requested:
            signal.signal(signal.SIGINT, self._previous)
        return False


class ElementTemperatureReporter(IntervalReporter):
    """The kinetic temperature of each element every ``interval`` steps, as rows of a CSV file (the step, then K
    per element; ``append`` continues a resumed run's file). A learned propagator can keep the total energy
    and still move it between atoms, so FlashMD's authors tell users to watch exactly this (Bigi et al.,
    arXiv:2505.19350). ``com_removed``: the dynamics hold the centre-of-mass momentum at zero (see
    :func:`openmm_accel.analysis.element_temperature_series`).

    :meth:`summary` gives each element's mean over the whole file, its standard error (pymbar's statistical
    inefficiency) and its deviation from the bath, and warns about every element off by more than
    :attr:`SIGMAS` standard errors (judged from :attr:`MIN_ROWS` rows on: a shorter series' inefficiency is
    not an estimate). The errors are calibrated: 15 seeded runs of alanine dipeptide with the exact propagator
    (4000 strides each) gave 60 deviations whose ratios to their errors had an RMS of 1.06 and a largest
    magnitude of 2.9, so 4 errors leaves a correct run unflagged (about 1 element in 16,000 by chance).
    """

    include = ("velocities",)
    periodic = False
    key = "element_temperatures"
    SIGMAS = 4.0
    MIN_ROWS = 20

    def __init__(self, path: str, interval: int, symbols: Sequence[str], masses, temperature_k: float,
                 com_removed: bool, append: bool = False):
        super().__init__(interval)
        self.path, self.temperature_k, self.com_removed = path, float(temperature_k), bool(com_removed)
        self._symbols, self._masses = list(symbols), np.asarray(masses, dtype=float)
        self.elements = sorted(set(self._symbols))
        self._rows = []
        if append and log_rows(path):
            self._rows = list(np.loadtxt(path, delimiter=",", comments="#", ndmin=2)[:, 1:])
        else:
            with open(path, "w") as handle:
                handle.write("#" + ",".join(['"Step"'] + [f'"{element} (K)"' for element in self.elements]) + "\n")
        self._file = open(path, "a")

    def report(self, simulation, state):
        velocities = state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        row = element_temperature_series(velocities[None], self._masses, self._symbols, self.com_removed)[1][0]
        self._rows.append(row)
        self._file.write(",".join([str(simulation.currentStep)] + [f"{t:.4f}" for t in row]) + "\n")
        self._file.flush()

    def close(self):
        self._file.close()

    def postfix(self) -> Dict[str, str]:
        """The progress bar's field: each element's mean deviation from the bath so far."""
        if not self._rows:
            return {}
        means = np.mean(self._rows, axis=0) - self.temperature_k
        return {"dT": " ".join(f"{element}{mean:+.1f}" for element, mean in zip(self.elements, means))}

    def summary(self) -> dict:
        """Per element: ``mean_k``, ``standard_error_k`` (None below :attr:`MIN_ROWS` rows) and ``deviation_k``;
        ``off``: the elements beyond :attr:`SIGMAS` standard errors (each also warned about)."""
        rows = np.array(self._rows).reshape(-1, len(self.elements))
        elements, off = {}, []
        for column, element in enumerate(self.elements):
            series = rows[:, column]
            mean = float(series.mean()) if len(series) else None
            error = standard_error(series) if len(series) >= self.MIN_ROWS else None
            deviation = None if mean is None else mean - self.temperature_k
            elements[element] = {"mean_k": mean, "standard_error_k": error, "deviation_k": deviation}
            if error is not None and abs(deviation) > self.SIGMAS * error:
                off.append(element)
                warnings.warn(f"{element} atoms ran at {mean:.1f} +- {error:.1f} K against the bath's "
                              f"{self.temperature_k:g} K ({deviation:+.1f} K, beyond {self.SIGMAS:g} standard "
                              "errors): the kinetic energy is not shared as at equilibrium (check the model, "
                              f"or a stronger friction); the series is in {self.path}")
        return {"temperature_k": self.temperature_k, "reports": len(rows), "sigmas": self.SIGMAS,
                "elements": elements, "off": off}


class VelocityDCDReporter(app.DCDReporter):
    """OpenMM's DCD reporter for velocities: each frame holds the velocities in nm/ps where a trajectory holds
    positions in nm, so ``mdtraj.load(path, top=...).xyz`` returns them (and the run's DCD tools rewind it)."""

    def describeNextReport(self, simulation):
        wanted = super().describeNextReport(simulation)
        return {**wanted, "periodic": False, "include": ["velocities"]}

    def report(self, simulation, state):
        super().report(simulation, _VelocitiesAsPositions(state))


class _VelocitiesAsPositions:
    """A State whose positions are its velocities (numerically: nm/ps read as nm)."""

    def __init__(self, state):
        self._state = state

    def getPositions(self, asNumpy=False):
        velocities = self._state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
        return unit.Quantity(velocities, unit.nanometer)

    def getPeriodicBoxVectors(self):
        return self._state.getPeriodicBoxVectors()
