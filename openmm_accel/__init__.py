"""openmm_accel: machine-learning acceleration of molecular dynamics inside OpenMM.

Subpackages: :mod:`~openmm_accel.models` (batched energy models and their registry),
:mod:`~openmm_accel.forces` (models as OpenMM Forces), :mod:`~openmm_accel.integrators`,
:mod:`~openmm_accel.systems` (standard test systems) and :mod:`~openmm_accel.simulate` (the main job).
"""
from ._version import __version__
from .validation import InputError, SimulationError

__all__ = ["__version__", "InputError", "SimulationError"]
