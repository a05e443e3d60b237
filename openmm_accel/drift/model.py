"""A trained drifting generator and what it is for: conformations in one forward pass (batched, seeded,
streamed), in the handedness of the data, and OpenMM simulations started from them.

A model file (the shared format, :mod:`openmm_accel.learning.model_file`) holds the generator's weights and
architecture, the representation and guidance it was trained with, the normalisation, the temperature,
the molecule (topology PDB, elements, masses), its validity criteria from the data (bond lengths, closest
approaches, stereocentres) and the provenance (data, command, wall time)."""
from __future__ import annotations

import io
from typing import Iterator, Optional

import numpy as np
import torch
import openmm
from openmm import app, unit

from ..learning.model_file import ShippedModels, read_model, save_model
from ..learning.reference import data_md
from ..progress import progress_bar
from ..validation import as_positions, count, fail, positive
from .network import Generator, InternalFrame, InternalGenerator
from .validity import Validity, in_hand

METHOD = "drift"


DEFAULT_SYSTEM = "openmmtools:AlanineDipeptideImplicit"
shipped = ShippedModels(METHOD, {DEFAULT_SYSTEM: "ala2-implicit",  # the default model per --system
                                 "ethanol-vacuum": "ethanol-ani1x-500k"})


def resolve(given, system: str = DEFAULT_SYSTEM) -> str:
    """The model file: ``given`` as a path or shipped name, else the shipped model for ``system``."""
    return shipped.resolve(given, system)


class DriftModel:
    """A trained generator with its normalisation ``scale`` (nm), temperature (K) and metadata: the
    representation it was trained in, the molecule and the provenance."""

    def __init__(self, net: Generator, scale: float, temperature_k: float, metadata: Optional[dict] = None,
                 validity: Optional[Validity] = None):
        self.net, self.scale, self.temperature_k = net, float(scale), float(temperature_k)
        self.metadata = dict(metadata or {})
        self.validity = validity  # the molecule's bonds, closest approaches and stereocentres in the data

    @property
    def representation(self) -> str:
        return self.metadata.get("representation", "coordinates")

    def topology(self) -> app.Topology:
        """The molecule's topology (atom names, residues, bonds), as the model file recorded it."""
        if "topology_pdb" not in self.metadata:
            raise fail("drift_model", "a model file with its molecule's topology", "one without")
        return app.PDBFile(io.StringIO(self.metadata["topology_pdb"])).topology

    @torch.no_grad()
    def batches(self, number: int, seed: int = 1, batch: int = 10000) -> Iterator[np.ndarray]:
        """``number`` conformations ``(M, N, 3)`` nm in batches of at most ``batch``, one forward pass each,
        seeded (the same seed and batch give the same conformations). A generator trained on distances is
        blind to mirror images: each of its conformations whose stereocentres are mostly of the wrong hand is
        mirrored (every distance unchanged), so that it has the data's handedness."""
        count(number, "count")
        count(batch, "batch")
        device = self.net.reference.device  # the generator's (see to)
        generator = torch.Generator(device).manual_seed(seed)
        self.net.eval()
        for start in range(0, number, batch):
            z = torch.randn(min(batch, number - start), self.net.latent, generator=generator,
                            dtype=self.net.reference.dtype, device=device)
            x = self.net(z).cpu().numpy() * self.scale
            if self.representation == "distances" and self.validity is not None:
                wrong = in_hand(x, self.validity.stereocentres, self.validity.handedness) < 0.5
                x[wrong, :, 2] *= -1.0
            yield x

    def to(self, device) -> "DriftModel":
        """Move the generator to ``device`` (a ``torch.device``, see :func:`openmm_accel.devices.torch_device`),
        where :meth:`batches` then draws; returns the model."""
        self.net.to(device)
        return self

    def sample(self, number: int, seed: int = 1, batch: int = 10000) -> np.ndarray:
        """``number`` conformations ``(number, N, 3)`` nm (see :meth:`batches`)."""
        return np.concatenate(list(self.batches(number, seed, batch)))

    def check_topology(self, topology: app.Topology, argument: str = "drift_model") -> None:
        """Refuse a molecule of other atoms than the model's (number and elements, in order)."""
        elements = [atom.element.atomic_number if atom.element is not None else 0 for atom in topology.atoms()]
        trained = [int(z) for z in self.metadata.get("elements", [])]
        if elements != trained:
            raise fail(argument, f"a drift model of this molecule ({len(elements)} atoms with its elements)",
                       f"a model of {len(trained)} atoms" + (" with other elements" if len(trained) ==
                                                              len(elements) else ""))


def seed_simulation(simulation: app.Simulation, positions, temperature, seed: int = 1) -> None:
    """Start ``simulation`` from a generated conformation: ``positions`` (N, 3) nm (a Quantity is converted)
    with the System's constraints applied, and velocities drawn at ``temperature`` (K, or a Quantity),
    seeded (OpenMM reads a seed of 0 as "from the clock", so 0 is refused)."""
    system = simulation.context.getSystem()
    x = as_positions(positions, system.getNumParticles())
    kelvin = positive(temperature, unit.kelvin, "temperature")
    count(seed, "seed")
    context = simulation.context
    context.setPositions(x * unit.nanometer)
    if system.getNumConstraints():
        context.applyConstraints(1e-8)
    context.setVelocitiesToTemperature(kelvin * unit.kelvin, seed)
    if system.getNumConstraints():
        context.applyVelocityConstraints(1e-8)


def refine(samples, settings: dict, picoseconds, seed: int = 1, max_iterations: int = 100,
           progress: bool = False) -> np.ndarray:
    """Short MD refinement of raw samples ``(M, N, 3)`` nm with the reference potential, run as the data of
    ``settings`` (their ``settings.json``) were made: each sample is relaxed by at most ``max_iterations``
    L-BFGS iterations (a stretched bond or a clash would make MD blow up), given velocities at the temperature
    (seed ``seed + i``) and run for ``picoseconds`` (ps or a Quantity) of the data's Langevin dynamics.
    Returns the refined positions (the raw samples are not changed), NaN for a sample OpenMM could not
    relax or run (e.g. two atoms on top of each other): a post-processing step that trades the generator's
    speed for the reference potential's local structure, reported apart from raw samples."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[-1] != 3:
        raise fail("samples", "conformations (M, N, 3) nm", f"shape {samples.shape}")
    duration = positive(picoseconds, unit.picosecond, "picoseconds")
    count(seed, "seed")
    count(max_iterations, "max_iterations")
    _, system, context = data_md(settings, seed)
    if system.getNumParticles() != samples.shape[1]:
        raise fail("samples", f"conformations of the data's {system.getNumParticles()} atoms",
                   f"{samples.shape[1]} atoms")
    integrator = context.getIntegrator()
    steps = max(int(round(duration * 1000.0 / settings["timestep_fs"])), 1)
    kelvin = settings["temperature_k"] * unit.kelvin
    refined = np.empty_like(samples)
    for i in progress_bar(range(len(samples)), progress, desc="refine", unit="sample"):
        try:
            context.setPositions(samples[i] * unit.nanometer)
            if system.getNumConstraints():
                context.applyConstraints(1e-6)
            openmm.LocalEnergyMinimizer.minimize(context, maxIterations=max_iterations)
            context.setVelocitiesToTemperature(kelvin, seed + i)
            integrator.step(steps)
            state = context.getState(getPositions=True)
            refined[i] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        except openmm.OpenMMException:  # NaN coordinates or forces
            refined[i] = np.nan
    return refined


def save(path: str, model: DriftModel) -> None:
    """Write a drift model file: weights, architecture, normalisation, temperature, molecule, provenance."""
    arrays = {f"net.{name}": value.float().numpy() if value.is_floating_point() else value.numpy()
              for name, value in model.net.state_dict().items()}
    if model.validity is not None:
        arrays.update(model.validity.arrays())
    save_model(path, METHOD, arrays, model.net.config(),
               {**model.metadata, "scale_nm": model.scale, "temperature_k": model.temperature_k})


def load(path: str, argument: str = "drift_model") -> DriftModel:
    """Read a drift model file (refused, naming ``argument``, if missing, damaged, foreign or of another
    method)."""
    header, arrays = read_model(path, METHOD, "drift model file", argument)
    weights = {name[4:]: torch.as_tensor(value) for name, value in arrays.items() if name.startswith("net.")}
    config = header["config"]
    if config.get("kind") == "internal":
        frame = InternalFrame(weights["anchors"], weights["rows"], weights["values"], weights["spreads"],
                              weights.get("ring_bonds"), weights.get("closure_lengths"))  # none without rings
        net = InternalGenerator(weights["reference"], frame, config["hidden"], config["layers"], config["limit"],
                                config.get("source", "internal"))
    else:
        net = Generator(weights["reference"], config["hidden"], config["layers"])
    net.load_state_dict(weights)
    net.double().eval()  # trained in float32; sampled in float64
    metadata = header["metadata"]
    validity = Validity.from_arrays(arrays) if "validity_bonds" in arrays else None
    return DriftModel(net, metadata["scale_nm"], metadata["temperature_k"], metadata, validity)
