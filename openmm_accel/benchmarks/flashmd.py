"""Moved to :mod:`openmm_accel.flashmd.benchmark` (names re-exported for existing scripts)."""
from ..flashmd.benchmark import bench_model, main, plot, table  # noqa: F401
