"""Moved to :mod:`openmm_accel.speculative.benchmark` (names re-exported for existing scripts)."""
from ..speculative.benchmark import DRAFTS, SETTINGS, main, measure  # noqa: F401
