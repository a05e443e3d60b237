"""Moved to :mod:`openmm_accel.speculative.force_matched` (the distilled drafts of speculative dynamics);
this name is kept for existing scripts (a compatibility re-export: nothing in the package imports it)."""
from ..speculative.force_matched import ForceMatchedModel, NormalEquations, OnlineForceMatching

__all__ = ["ForceMatchedModel", "NormalEquations", "OnlineForceMatching"]
