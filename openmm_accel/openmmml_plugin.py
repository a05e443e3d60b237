"""The package's potentials in openmm-ml: ``openmmml.MLPotential("ani1x")`` works when openmm_accel is
installed beside openmm-ml (``pip install openmmml``), through openmm-ml's own ``openmmml.potentials`` entry
point. openmm-ml 1.8 has no ``ani1x``; its ``ani2x`` and ``ani1ccx`` (torchani downloads) and ``mace`` keep
their own implementations: the names registered here are only those openmm-ml lacks, so that nothing it
already means changes. openmm-ml loads this module while it imports itself, so the module imports nothing
from openmm-ml (importing ``openmmml.mlpotential`` here would load this module again, half made): its
classes have the methods openmm-ml 1.8 calls on ``MLPotentialImplFactory`` and ``MLPotentialImpl``.
"""
from __future__ import annotations

from .forces import to_openmm_force
from .models import create


class PotentialImplFactory:
    """Makes the implementation of one of the package's registered models for openmm-ml."""

    def createImpl(self, name: str, **args) -> "PotentialImpl":
        return PotentialImpl(name, **args)


class PotentialImpl:
    """A registered model as openmm-ml's potential: its Force (TorchForce, or PythonForce with
    ``backend="pythonforce"``) on the ML atoms, in openmm-ml's force group. Other keyword arguments, of
    ``MLPotential(name, ...)`` or of ``createSystem``, are the model's options (e.g. ``member=0``)."""

    def __init__(self, name: str, **options):
        self.name, self.options = name, options

    def getSupportedEmbeddings(self) -> list:
        """No embedding of its own: openmm-ml's mechanical embedding calls :meth:`addForces` on the region."""
        return []

    def getMLLongRange(self) -> bool:
        """The package's models are short-ranged (ANI's cutoff is 0.52 nm): no long-range part to embed."""
        return False

    def addForces(self, topology, system, atoms, forceGroup, **args):
        options = {**self.options, **args}
        backend = options.pop("backend", "torchforce")
        if atoms is not None:
            options["atoms"] = [int(i) for i in atoms]
        elif system.usesPeriodicBoundaryConditions():
            options["periodic"] = True
        model = create(self.name, topology, **options)
        system.addForce(to_openmm_force(model, backend, None if atoms is None else options["atoms"], forceGroup))


__all__ = ["PotentialImpl", "PotentialImplFactory"]
