"""Plain MD, the reference every method is measured against: ABOBA Langevin dynamics on the System."""
from __future__ import annotations

from openmm import unit

from ..method import Method
from .aboba import LangevinABOBAIntegrator


def build(config, setup, state, platform, prepared, paths):
    integrator = LangevinABOBAIntegrator(config.temperature_k * unit.kelvin, config.friction_per_ps / unit.picosecond,
                                         config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(config.seed)
    return integrator, state


METHOD = Method(name="plain", help="plain Langevin dynamics (ABOBA), the reference", build=build,
                zero_friction=True, keeps_constraints=True)
