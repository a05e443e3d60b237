"""Generic integrators: the base of Python-driven integrators, the ABOBA Langevin reference and velocity
Verlet. The methods' integrators live in their folders (``speculative.integrator``,
``flashmd.integrator``); their names are re-exported here, on first use, so that existing scripts keep
working without this generic layer importing the method folders above it.
"""
from importlib import import_module

from .aboba import LangevinABOBAIntegrator
from .base import PythonStepIntegrator, owning_context
from .verlet import VelocityVerletIntegrator

#: Method integrators re-exported for compatibility: name -> module that defines it.
METHOD_INTEGRATORS = {"SpeculativeLangevinIntegrator": "openmm_accel.speculative.integrator",
                      "FlashMDIntegrator": "openmm_accel.flashmd.integrator"}


def __getattr__(name):
    if name in METHOD_INTEGRATORS:
        return getattr(import_module(METHOD_INTEGRATORS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FlashMDIntegrator", "LangevinABOBAIntegrator", "PythonStepIntegrator", "SpeculativeLangevinIntegrator",
           "VelocityVerletIntegrator", "owning_context"]
