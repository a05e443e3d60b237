"""FlashMD: long-stride prediction of (positions, momenta), embedded in OpenMM (METHODS.md section 2)."""
from .model import FlashMDEnsemble, FlashMDModel, VerletPropagator

__all__ = ["FlashMDEnsemble", "FlashMDModel", "VerletPropagator"]
