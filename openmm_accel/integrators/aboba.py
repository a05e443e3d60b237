"""The ABOBA Langevin integrator: the exact reference that speculative dynamics reproduces.

One step from (x_n, v_n) with a = exp(-gamma h) (the splitting of Kosmala et al. 2026, arXiv:2606.02455)::

    A    x'      = x_n + (h/2) v_n
    BOB  v_{n+1} = a v_n + (1 + a) (h/2) F(x')/m + sigma xi,   sigma = sqrt(kT (1 - a^2) / m)
    A    x_{n+1} = x' + (h/2) v_{n+1}

Exactly one force evaluation per step, at the midpoint x'. The new velocity is one Gaussian with mean
``mu = a v_n + (1 + a)(h/2) F/m`` and standard deviation ``sigma``; a draft and a target model differ only
in ``mu``, which is what makes the speculative coupling possible. Both are kept in per-DOF variables
(``mean``, ``sigma``) after every step.

**Constraints** (X-H bonds, rigid water) enter as RATTLE: each A is followed by the position projection,
the velocity correction ``v += (x - x~)/(h/2)`` and the velocity projection P (mass-weighted, onto the
tangent space of the constraints); the BOB update is projected at x'. Because P is linear and idempotent
and v is already tangent, B, O and B with a projection after each collapse into one projected Gaussian::

    v_{n+1} = P(x') [a v + (1 + a)(h/2) F/m + sigma xi]      mean  a v + (1 + a)(h/2) P F/m

so draft and target steps still differ only in the (tangent) mean: the speculative coupling carries over
(docs/lsd-constraints.md). It is the scheme of openmmtools' ``LangevinIntegrator(splitting="R V O V R")``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from openmm import unit

from ..validation import positive
from .base import PythonStepIntegrator, temperature_kt
from .constraints import PROGRAM_TOLERANCE, add_constrained_drift

_PER_PS = unit.picosecond**-1


class LangevinABOBAIntegrator(PythonStepIntegrator):
    """Langevin dynamics with the ABOBA splitting, as an ``openmm.CustomIntegrator``.

    Parameters
    ----------
    temperature : Quantity or float
        Heat-bath temperature (K if a plain number). Default 300 K.
    friction : Quantity or float
        Collision rate gamma (1/ps if a plain number). Default 1/ps.
    timestep : Quantity or float
        Step h (ps if a plain number). Default 1 fs.

    Notes
    -----
    The System's constraints are kept with RATTLE projections (see the module docstring); their tolerance
    is OpenMM's ``setConstraintTolerance`` (default here 1e-8). Particles with zero mass (virtual sites)
    are left unmoved by the velocity update. Use it like any integrator::

        integrator = LangevinABOBAIntegrator(300*unit.kelvin, 1/unit.picosecond, 1*unit.femtosecond)
        simulation = app.Simulation(topology, system, integrator)
    """

    def __init__(self, temperature=300.0 * unit.kelvin, friction=1.0 / unit.picosecond,
                 timestep=1.0 * unit.femtosecond):
        super().__init__(positive(timestep, unit.picosecond, "timestep"))
        self.addGlobalVariable("kT", temperature_kt(temperature))
        self.addGlobalVariable("friction", positive(friction, _PER_PS, "friction", allow_zero=True))
        self.addGlobalVariable("a", 0.0)
        self.addPerDofVariable("mean", 0.0)
        self.addPerDofVariable("sigma", 0.0)
        self.addPerDofVariable("unconstrained", 0.0)
        self.setConstraintTolerance(PROGRAM_TOLERANCE)
        self.add_aboba_step()

    def add_aboba_step(self) -> None:
        """Append one ABOBA step to the program."""
        self.addUpdateContextState()
        self.addComputeGlobal("a", "exp(-friction*dt)")
        self.add_drift()
        self.addComputePerDof("v", "a*v + select(m, (1 + a)*0.5*dt*f/m, 0)")
        self.addConstrainVelocities()
        self.addComputePerDof("mean", "v")
        self.addComputePerDof("sigma", "select(m, sqrt(kT*(1 - a*a)/m), 0)")
        self.addComputePerDof("v", "mean + sigma*gaussian")
        self.addConstrainVelocities()
        self.add_drift()

    def add_drift(self) -> None:
        """A: half a step of free flight, then RATTLE (no-ops without constraints)."""
        add_constrained_drift(self, "0.5*dt")
        self.addConstrainVelocities()

    # -- OpenMM-style accessors ----------------------------------------------------------------
    def getTemperature(self) -> unit.Quantity:
        kt = self.getGlobalVariableByName("kT") * unit.kilojoule_per_mole
        return (kt / unit.MOLAR_GAS_CONSTANT_R).in_units_of(unit.kelvin)

    def setTemperature(self, temperature) -> None:
        self.setGlobalVariableByName("kT", temperature_kt(temperature))

    def getFriction(self) -> unit.Quantity:
        return self.getGlobalVariableByName("friction") / unit.picosecond

    def setFriction(self, friction) -> None:
        self.setGlobalVariableByName("friction", positive(friction, _PER_PS, "friction", allow_zero=True))

    def getVelocityMean(self) -> unit.Quantity:
        """Mean of the last step's velocity Gaussian, ``(N, 3)`` in nm/ps."""
        return self.per_dof("mean") * (unit.nanometer / unit.picosecond)

    def getVelocityStd(self) -> unit.Quantity:
        """Standard deviation of the last step's velocity Gaussian, ``(N, 3)`` in nm/ps."""
        return self.per_dof("sigma") * (unit.nanometer / unit.picosecond)


@dataclass(frozen=True)
class Langevin:
    """Langevin dynamics' settings in OpenMM's units: temperature (K), friction (1/ps), time step (fs), and the
    seed of its random stream (0 would mean "from the clock" to OpenMM; give a positive one)."""

    temperature_k: float
    friction_per_ps: float
    timestep_fs: float
    seed: int = 1

    def integrator(self) -> "LangevinABOBAIntegrator":
        """The seeded ABOBA integrator of these settings."""
        integrator = LangevinABOBAIntegrator(self.temperature_k * unit.kelvin, self.friction_per_ps / unit.picosecond,
                                             self.timestep_fs * unit.femtosecond)
        integrator.setRandomNumberSeed(self.seed)
        return integrator


def stationary_harmonic_covariance(k: float, mass: float, kt: float, friction: float, timestep: float) -> np.ndarray:
    """Exact stationary covariance of (x, v) for ABOBA on a 1-D harmonic oscillator ``U = k x^2 / 2``.

    ABOBA is linear here: ``s_{n+1} = M s_n + b xi`` with ``s = (x, v)``; the stationary covariance solves
    the discrete Lyapunov equation ``S = M S M^T + b b^T``. It differs from the continuous-time answer
    ``diag(kT/k, kT/m)`` by O((h omega)^2), so tests against it detect a wrong splitting.
    Units: nm, ps, amu, kJ/mol. Returns the 2x2 matrix [[<x x>, <x v>], [<v x>, <v v>]].
    """
    from scipy.linalg import solve_discrete_lyapunov
    a = np.exp(-friction * timestep)
    noise = np.sqrt(kt * (1 - a * a) / mass) * np.array([timestep / 2, 1.0])
    transition = harmonic_transition(k, mass, friction, timestep)
    return solve_discrete_lyapunov(transition, np.outer(noise, noise))


def harmonic_transition(k: float, mass: float, friction: float, timestep: float) -> np.ndarray:
    """The 2x2 ABOBA transition matrix M of ``(x, v)`` for ``U = k x^2 / 2`` (lag-n covariance: M^n S)."""
    h, a = timestep, np.exp(-friction * timestep)
    c = (1 + a) * h / 2 * k / mass
    # v' = -c x + (a - c h/2) v + sigma xi ;  x' = x + h/2 v + h/2 v'
    row_v = np.array([-c, a - c * h / 2])
    return np.array([[1.0, h / 2], [0.0, 0.0]]) + np.outer([h / 2, 1.0], row_v)
