"""``MLPotential``: the openmm-ml facade over the model registry.

An openmm-ml script works after changing one import::

    from openmm_accel import MLPotential            # was: from openmmml import MLPotential
    potential = MLPotential("ani1x")
    system = potential.createSystem(topology)
    mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)

The potential is any model registered with :func:`openmm_accel.models.create` (``openmm-accel models``
lists them), with its options (e.g. ``MLPotential("ani1x", member=0)`` for one network). It also gives
the batched energy model that integrators need (:meth:`MLPotential.model`), and can be passed as
``draft=`` or ``target=`` to :class:`~openmm_accel.speculative.integrator.SpeculativeLangevinIntegrator`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import openmm
from openmm import app

from .forces import create_mixed_system, create_ml_system
from .models import available, create
from .models.base import EnergyModel
from .models.registry import model_file
from .validation import closest_name, fail


class MLPotential:
    """A registered energy model by name, applied to Topologies as openmm-ml does.

    Parameters
    ----------
    name : str
        A registered model (``openmm_accel.models.available()``), e.g. ``"ani1x"``.
    backend : {"torchforce", "pythonforce"}
        How the model enters the System (see :func:`openmm_accel.forces.to_openmm_force`).
    **options
        The model's own options (checked by its factory), e.g. ``member=0``, ``dtype="float64"``.
    """

    def __init__(self, name: str, backend: str = "torchforce", **options):
        if not model_file(name) and name not in available():
            raise closest_name(str(name), available(), "name", "model")
        self.name, self.backend, self.options = name, backend, dict(options)
        self.topology: Optional[app.Topology] = None  # of the last System made (used by integrators)
        self.atoms: Optional[list] = None

    def model(self, topology: app.Topology, atoms: Optional[Sequence[int]] = None) -> EnergyModel:
        """The batched energy model of ``topology``'s atoms (or of ``atoms``, an ML region)."""
        options = dict(self.options)
        if atoms is not None:
            options["atoms"] = [int(i) for i in atoms]
        if atoms is None and topology is not None and topology.getPeriodicBoxVectors() is not None:
            options.setdefault("periodic", True)  # (an ML region sees only the solute, without the box)
        return create(self.name, topology, **options)

    def createSystem(self, topology: app.Topology, removeCMMotion: bool = True, **args) -> openmm.System:
        """A System whose only potential is this model, with the topology's element masses (and box)."""
        self._no_unknown(args, "createSystem")
        model = self.model(topology)
        masses = [atom.element.mass for atom in topology.atoms()]
        box = topology.getPeriodicBoxVectors()
        system = create_ml_system(model, masses, self.backend, box_vectors=box)
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        self.topology, self.atoms = topology, None
        return system

    def createMixedSystem(self, topology: app.Topology, system: openmm.System, atoms: Sequence[int],
                          interpolate: bool = False, forceGroup: Optional[int] = None, **args) -> openmm.System:
        """ML/MM: this model on ``atoms``, the MM ``system`` everywhere else (mechanical embedding)."""
        self._no_unknown(args, "createMixedSystem")
        if interpolate:
            raise fail("interpolate", "False (switching between MM and ML with a lambda parameter is not "
                       "supported)", True)
        atoms = [int(i) for i in atoms]
        mixed = create_mixed_system(system, self.model(topology, atoms), atoms, self.backend, forceGroup)
        self.topology, self.atoms = topology, atoms
        return mixed

    @staticmethod
    def _no_unknown(args: dict, method: str) -> None:
        if args:
            raise fail(f"{method}(...)", "no options but those documented (model options go to MLPotential(...))",
                       sorted(args))

    def __repr__(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"MLPotential({self.name!r}{options})"


__all__ = ["MLPotential"]
