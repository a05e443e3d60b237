"""openmm_accel: machine-learning acceleration of molecular dynamics inside OpenMM.

Subpackages: :mod:`~openmm_accel.models` (batched energy models and their registry),
:mod:`~openmm_accel.forces` (models as OpenMM Forces), :mod:`~openmm_accel.integrators`,
:mod:`~openmm_accel.systems` (standard test systems), the methods (:mod:`~openmm_accel.speculative`,
:mod:`~openmm_accel.flashmd`) and :mod:`~openmm_accel.simulate` (the main job). ``MLPotential`` is the
openmm-ml facade (:mod:`~openmm_accel.potentials`), imported on first use: ``import openmm_accel`` stays light.
"""
from ._version import __version__
from .validation import InputError, SimulationError


def __getattr__(name):
    if name == "MLPotential":
        from .potentials import MLPotential
        return MLPotential
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__", "InputError", "MLPotential", "SimulationError"]
