"""Integrators: the ABOBA reference, speculative dynamics, FlashMD, and the base of Python-driven integrators."""
from .aboba import LangevinABOBAIntegrator
from .base import PythonStepIntegrator, owning_context
from .flashmd import FlashMDIntegrator
from .speculative import SpeculativeLangevinIntegrator

__all__ = ["FlashMDIntegrator", "LangevinABOBAIntegrator", "PythonStepIntegrator", "SpeculativeLangevinIntegrator",
           "owning_context"]
