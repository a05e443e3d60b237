"""FlashMD: long-stride prediction of (positions, momenta), embedded in OpenMM (Bigi et al. 2025,
arXiv:2505.19350). The OpenMM integrator is :class:`FlashMDIntegrator`."""
from .integrator import FlashMDIntegrator, Safeguards, Thermostat
from .model import FlashMDEnsemble, FlashMDModel, VerletPropagator

__all__ = ["FlashMDEnsemble", "FlashMDIntegrator", "FlashMDModel", "Safeguards", "Thermostat", "VerletPropagator"]
