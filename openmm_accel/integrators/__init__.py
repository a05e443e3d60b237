"""Integrators: the ABOBA reference and the base class of every Python-driven integrator."""
from .aboba import LangevinABOBAIntegrator
from .base import PythonStepIntegrator, owning_context

__all__ = ["LangevinABOBAIntegrator", "PythonStepIntegrator", "owning_context"]
