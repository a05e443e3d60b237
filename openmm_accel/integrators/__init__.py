"""Generic integrators: the base of Python-driven integrators, the ABOBA Langevin reference and velocity
Verlet. The methods' integrators live in their folders: :class:`openmm_accel.speculative.SpeculativeLangevinIntegrator`
and :class:`openmm_accel.flashmd.FlashMDIntegrator`.
"""
from .aboba import Langevin, LangevinABOBAIntegrator
from .base import PythonStepIntegrator, owning_context
from .verlet import VelocityVerletIntegrator

__all__ = ["Langevin", "LangevinABOBAIntegrator", "PythonStepIntegrator", "VelocityVerletIntegrator", "owning_context"]
