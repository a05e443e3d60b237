"""Plain MD, the reference every method is measured against: ABOBA Langevin dynamics on the System."""
from __future__ import annotations

from openmm import unit

from ..method import Method, Start
from .aboba import LangevinABOBAIntegrator


def aboba_of(run) -> LangevinABOBAIntegrator:
    """The ABOBA integrator of a run's temperature, friction and time step, seeded with its seed."""
    integrator = LangevinABOBAIntegrator(run.temperature_k * unit.kelvin, run.friction_per_ps / unit.picosecond,
                                         run.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(run.seed)
    return integrator


class PlainMD(Method):
    name = "plain"
    help = "plain Langevin dynamics (ABOBA), the reference"
    allows_zero_friction = True
    keeps_constraints = True

    def integrator(self, run, start: Start):
        return aboba_of(run), start.state


METHOD = PlainMD()
