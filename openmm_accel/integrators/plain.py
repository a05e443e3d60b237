"""Plain MD, the reference every method is measured against: ABOBA Langevin dynamics on the System."""
from __future__ import annotations

from ..method import Method, Start


class PlainMD(Method):
    name = "plain"
    help = "plain Langevin dynamics (ABOBA), the reference"
    allows_zero_friction = True
    keeps_constraints = True

    def integrator(self, run, start: Start):
        return run.langevin.integrator(), start.state


METHOD = PlainMD()
