"""Langevin speculative dynamics (Kosmala et al. 2026, arXiv:2606.02455): the exact coupling, the draft/verify
engine, its schedulers (batched on one device, or Ray workers), distilled drafts, ML/MM pairs and the theory of
its acceptance and speed-up. The OpenMM integrator is :class:`SpeculativeLangevinIntegrator`.
"""
from .integrator import SpeculativeLangevinIntegrator, Verification

__all__ = ["SpeculativeLangevinIntegrator", "Verification"]
