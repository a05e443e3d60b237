"""The pattern every ``openmm_accel`` integrator follows.

An accelerated integrator is a Python subclass of ``openmm.CustomIntegrator``. OpenMM's
``Simulation.step`` calls the *Python* ``step()`` method, so ``step()`` can interleave model calls
(a draft, a batched target, a FlashMD network) with programs that run on the Context's device.

The rules that make this work inside ``openmm.app.Simulation``, with reporters and checkpoints:

1. **Stages.** A CustomIntegrator has one program. It is split into named *stages*, each an if-block
   on the global variable ``pystage`` (built with ``with self.stage("name"): ...``); ``run_stage(name)``
   executes exactly one stage on the device. Data crosses between Python and the device through
   integrator variables (``get/setPerDofVariableByName``, ``get/setGlobalVariableByName``) or the
   Context's own state (``setPositions``/``setVelocities`` on :attr:`PythonStepIntegrator.context`).
2. **Time and step count.** Every program call advances OpenMM's time by ``dt`` and its step count by
   one, whatever the stage did. ``step()`` therefore records both before the work and sets them after,
   from the number of *physical* steps committed, so ``Simulation.currentStep``, reporters and
   checkpoints see physical steps (a step of a long-stride integrator advances time by its stride).
3. **State that must survive a checkpoint** (statistics, RNG-dependent offsets, counters) lives in
   integrator variables, which ``Context.createCheckpoint`` and ``Simulation.saveState`` store.
   Python attributes are caches only.
4. **The Context** is the one this integrator is bound to (an OpenMM integrator can belong to exactly
   one Context); :attr:`PythonStepIntegrator.context` finds it, so user scripts never pass it around.
5. **Checks on the System** (constraints, masses, atom counts) run once, on the first ``step()``,
   in :meth:`PythonStepIntegrator.check_context`, and raise a clear error before anything moves.

Subclasses implement :meth:`PythonStepIntegrator.advance`. An integrator whose whole step is one
program (the ABOBA reference) keeps the default, which runs the program ``steps`` times on the device.
"""
from __future__ import annotations

import gc
import weakref
from contextlib import contextmanager
from typing import Dict, Optional, Tuple

import numpy as np
import openmm
from openmm import unit

from ..validation import InputError, positive

STAGE_VARIABLE = "pystage"


def owning_context(integrator: openmm.Integrator) -> Optional[openmm.Context]:
    """The ``openmm.Context`` that ``integrator`` is bound to, or ``None`` if it is not bound yet.

    OpenMM's Python ``Context`` keeps a reference to its integrator (``Context._integrator``); the
    integrator keeps none back, so it is found among the integrator's referrers.
    """
    for referrer in gc.get_referrers(integrator):
        if isinstance(referrer, openmm.Context) and getattr(referrer, "_integrator", None) is integrator:
            return referrer
        if isinstance(referrer, dict) and referrer.get("_integrator") is integrator:
            for owner in gc.get_referrers(referrer):
                if isinstance(owner, openmm.Context) and getattr(owner, "__dict__", None) is referrer:
                    return owner
    return None


class PythonStepIntegrator(openmm.CustomIntegrator):
    """A ``CustomIntegrator`` whose ``step()`` runs in Python (see the module docstring for the rules).

    Parameters
    ----------
    timestep : openmm.unit.Quantity or float
        Physical time advanced by one step (ps if a plain number).
    """

    def __init__(self, timestep):
        super().__init__(timestep)
        self._stages: Dict[str, int] = {}
        self._context_ref = None
        self._checked_context_id = None

    # -- building the program -------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str):
        """Builder: the computations added inside the ``with`` block form stage ``name``."""
        if not self._stages:
            self.addGlobalVariable(STAGE_VARIABLE, -1)
        self._stages[name] = len(self._stages)
        self.beginIfBlock(f"{STAGE_VARIABLE} = {self._stages[name]}")
        yield
        self.endBlock()

    # -- running ---------------------------------------------------------------------------------
    @property
    def context(self) -> openmm.Context:
        """The Context this integrator is bound to (raises if it is not bound to one)."""
        context = self._context_ref() if self._context_ref is not None else None
        if context is None:
            context = owning_context(self)
            if context is None:
                raise RuntimeError(f"{type(self).__name__} is not bound to an openmm.Context yet; create a "
                                   "Context or Simulation with it first")
            try:
                self._context_ref = weakref.ref(context)
            except TypeError:  # pragma: no cover - SWIG objects normally accept weak references
                self._context_ref = lambda: context
        return context

    def run_stage(self, name: str) -> None:
        """Execute stage ``name`` of the program once on the device."""
        self.setGlobalVariableByName(STAGE_VARIABLE, self._stages[name])
        openmm.CustomIntegrator.step(self, 1)

    def step(self, steps: int) -> None:
        """Advance ``steps`` physical steps (this is what ``Simulation.step`` calls)."""
        steps = int(steps)
        if steps <= 0:
            return
        context = self.context
        if self._checked_context_id != id(context):
            self.check_context(context)
            self._checked_context_id = id(context)
        start_time, start_count = context.getTime(), context.getStepCount()
        self.begin_steps(context)
        done = 0
        try:
            while done < steps:
                committed = self.advance(steps - done)
                if not 1 <= committed <= steps - done:
                    raise RuntimeError(f"{type(self).__name__}.advance committed {committed} steps; "
                                       f"expected 1..{steps - done}")
                done += committed
        finally:
            self.end_steps(context, done)
            context.setTime(start_time + done * self.getStepSize())
            context.setStepCount(start_count + done)

    def advance(self, max_steps: int) -> int:
        """Commit between 1 and ``max_steps`` physical steps; return how many. Default: the program."""
        openmm.CustomIntegrator.step(self, max_steps)
        return max_steps

    def check_context(self, context: openmm.Context) -> None:
        """Validate the System once before the first step; subclasses extend this."""

    def begin_steps(self, context: openmm.Context) -> None:
        """Hook run at the start of every ``step()`` call (e.g. read the Context's state)."""

    def end_steps(self, context: openmm.Context, steps_done: int) -> None:
        """Hook run at the end of every ``step()`` call, also after an error (e.g. write committed state)."""

    # -- helpers for subclasses --------------------------------------------------------------------
    def per_dof(self, name: str) -> np.ndarray:
        """A per-DOF variable as an ``(N, 3)`` float64 array (in OpenMM's default units)."""
        return np.array(self.getPerDofVariableByName(name), dtype=np.float64).reshape(-1, 3)

    def set_per_dof(self, name: str, values: np.ndarray) -> None:
        """Set a per-DOF variable from an ``(N, 3)`` array."""
        self.setPerDofVariableByName(name, [openmm.Vec3(*row) for row in np.asarray(values, dtype=np.float64)])


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


def refuse_constraints(context: openmm.Context, integrator_name: str) -> None:
    """Raise if the System has constraints (for methods whose steps cannot keep them, e.g. FlashMD's
    learned strides)."""
    system = context.getSystem()
    if system.getNumConstraints() > 0:
        raise InputError(
            f"{integrator_name}: expected a System without constraints, but it has {system.getNumConstraints()} "
            "(this method's steps cannot keep them). Build the System with constraints=None and "
            "rigidWater=False; use hydrogen mass repartitioning for longer steps.")


def temperature_kt(temperature) -> float:
    """k_B T in kJ/mol for a temperature in kelvin (Quantity or float)."""
    kelvin = positive(temperature, unit.kelvin, "temperature")
    return (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
