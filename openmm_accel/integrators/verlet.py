"""Velocity Verlet with synchronous positions and velocities.

OpenMM's ``VerletIntegrator`` is leap-frog: the velocities it reports lag the positions by half a step.
FlashMD learns maps between states (q(t), p(t)) at equal times, so its training data come from this one.
With constraints it is RATTLE: the drift is followed by the position projection and its velocity
correction, the second kick by the velocity projection (no-ops without constraints).
"""
from __future__ import annotations

import openmm
from openmm import unit

from ..validation import positive
from .constraints import PROGRAM_TOLERANCE, add_constrained_drift


class VelocityVerletIntegrator(openmm.CustomIntegrator):
    """NVE velocity Verlet (kick-drift-kick); ``timestep`` in ps if a plain number."""

    def __init__(self, timestep=0.5 * unit.femtosecond):
        super().__init__(positive(timestep, unit.picosecond, "timestep"))
        # It draws no random numbers, but on the Reference platform every CustomIntegrator reseeds the one
        # process-wide generator when its Context is created, and seed 0 means "from the clock": a fixed seed
        # keeps the other integrators' streams (e.g. the thermostat in FlashMD data generation) reproducible.
        self.setRandomNumberSeed(1)
        self.setConstraintTolerance(PROGRAM_TOLERANCE)
        self.addUpdateContextState()
        self.addPerDofVariable("unconstrained", 0.0)
        self.addComputePerDof("v", "v + 0.5*dt*f/m")
        add_constrained_drift(self, "dt")
        self.addComputePerDof("v", "v + 0.5*dt*f/m")
        self.addConstrainVelocities()
