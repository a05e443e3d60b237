"""OpenMM reporters: a tqdm progress bar and a guard that stops a run at the first non-finite state; the
rewinding of a run's outputs to the checkpoint it resumes from."""
from __future__ import annotations

import os
import struct
from typing import Optional, Tuple

import numpy as np
from openmm import unit

from .validation import SimulationError


class ProgressReporter:
    """tqdm progress bar over the steps of a run; ``postfix`` is a callable returning extra fields."""

    def __init__(self, total_steps: int, interval: int, start_step: int = 0, postfix=None, disable=None):
        from tqdm.auto import tqdm
        self._interval = max(1, int(interval))
        self._bar = tqdm(total=int(total_steps), initial=int(start_step), unit="step", disable=disable,
                         dynamic_ncols=True)
        self._last = int(start_step)
        self._postfix = postfix

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation, state):
        self._bar.update(simulation.currentStep - self._last)
        self._last = simulation.currentStep
        if self._postfix is not None:
            self._bar.set_postfix(self._postfix(), refresh=False)

    def close(self):
        self._bar.close()


class FiniteStateGuard:
    """Raise :class:`SimulationError` (naming the step) as soon as positions or velocities are non-finite.

    Add it *before* trajectory reporters: OpenMM calls reporters in order, so a bad frame is never
    written and everything written before it is kept. It reads no energies (an ML energy costs a model
    call), only positions and velocities.
    """

    def __init__(self, interval: int):
        self._interval = max(1, int(interval))

    def describeNextReport(self, simulation):
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions", "velocities"]}

    def report(self, simulation, state):
        check_finite_state(state, simulation.currentStep)


#: No atom moves faster than light; a velocity above it (nm/ps) means the integration has exploded.
SPEED_OF_LIGHT = 299792.458


def exploded(positions: np.ndarray, velocities: np.ndarray) -> Optional[Tuple[str, int]]:
    """``(what, first bad atom)`` if positions (nm) are non-finite or velocities (nm/ps) non-finite or
    faster than light; ``None`` for a sound state. The one explosion test every integrator uses."""
    speeds = np.linalg.norm(velocities, axis=1)
    for name, bad in (("positions", ~np.all(np.isfinite(positions), axis=1)),
                      ("velocities", ~(np.isfinite(speeds) & (speeds < SPEED_OF_LIGHT)))):
        if bad.any():
            return name, int(np.argmax(bad))
    return None


def check_finite_state(state, step: int) -> None:
    """Raise :class:`SimulationError` if ``state`` has non-finite positions or non-finite/superluminal velocities."""
    problem = exploded(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                       state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond))
    if problem is not None:
        name, atom = problem
        raise SimulationError(f"non-finite or exploding {name} at step {step} (first bad atom: {atom}); the "
                              "run was stopped and everything written before this step was kept")


def rewind_outputs(dcd_path: str, log_path: str, step: int) -> None:
    """Drop the frames and log rows a run wrote after ``step`` (the checkpoint it resumes from).

    A run stopped by an error or killed has reported past its last checkpoint; resuming from that
    checkpoint would otherwise append those steps a second time. The DCD (as OpenMM's ``DCDFile`` writes
    it: frame i at step ``first + i interval``) is cut to its frames at or before ``step`` and its header's
    frame count and last step are updated; the CSV log (step in its first column) keeps the rows at or
    before ``step``."""
    if os.path.isfile(dcd_path) and os.path.getsize(dcd_path) > 0:
        with open(dcd_path, "r+b") as handle:
            header = handle.read(100)
            frames, first, interval = struct.unpack("<3i", header[8:20])
            has_box = struct.unpack("<i", header[48:52])[0] == 1
            comments = struct.unpack("<i", header[92:96])[0]
            handle.seek(104 + comments)
            atoms = struct.unpack("<i", handle.read(4))[0]
            keep = 0 if step < first else min(frames, (step - first) // max(interval, 1) + 1)
            if keep < frames:
                frame_bytes = (56 if has_box else 0) + 3 * (8 + 4 * atoms)
                handle.truncate(104 + comments + 8 + keep * frame_bytes)
                handle.seek(8)
                handle.write(struct.pack("<i", keep))
                handle.seek(20)
                handle.write(struct.pack("<i", first + max(keep - 1, 0) * interval))
    if os.path.isfile(log_path):
        with open(log_path) as handle:
            lines = handle.readlines()
        kept = [line for line in lines if line.startswith("#") or not line.strip() or
                int(float(line.split(",")[0])) <= step]
        if len(kept) < len(lines):
            with open(log_path, "w") as handle:
                handle.writelines(kept)
