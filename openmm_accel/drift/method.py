"""Force-guided drifting as a method of ``openmm-accel train``, ``sample``, ``run`` and ``bench`` (see
:mod:`openmm_accel.method`): a one-step generator of conformations trained on reference MD with forces;
``run --method drift`` is plain MD with the reference potential started from a generated conformation."""
from __future__ import annotations

import numpy as np
import openmm
from openmm import app

from ..harness import report_names
from ..learning.model_file import recipe_of
from ..method import Job, Method, Start
from ..molecular import Recipe
from ..systems import build as build_system, canonical_source
from ..validation import fail
from .config import DriftBenchConfig, DriftRunConfig, DriftSampleConfig, TrainDriftConfig
from .model import DEFAULT_SYSTEM, load, resolve, save, seed_simulation, shipped


class DriftTraining(Job):
    help = "train a one-step drifting generator (plain, FI or FK guidance) on reference data with forces"
    Config = TrainDriftConfig

    def run(self, config: TrainDriftConfig) -> str:
        from .training import train
        return train(config)


class DriftSampling(Job):
    help = "conformations in one forward pass each from a drifting generator, with their validity"
    Config = DriftSampleConfig

    def run(self, config: DriftSampleConfig) -> str:
        from .sampling import sample
        return sample(config)


class DriftBench(Job):
    help = ("drift models against held-out reference MD (distance TVD, bond MAE, validity, phi/psi JS, reference "
            "energies) and sampling speed against MD's effective samples per second; plots")
    Config = DriftBenchConfig

    def run(self, config: DriftBenchConfig) -> None:
        from .benchmark import main
        models = [resolve(name) for name in config.models] if config.models else list(shipped().values())
        if not models:
            raise fail("models", "drift model files (none is shipped yet)", None)
        report_names(models)
        main(config.json, models, config.data, config.samples, config.energy_samples, config.md_picoseconds,
             config.seed, config.threads[0])


class ForceGuidedDrifting(Method):
    name = "drift"
    help = ("plain Langevin dynamics of the reference potential (by default the data's) started from a "
            "conformation a drifting generator drew (velocities at the temperature)")
    Config = DriftRunConfig
    default_system = DEFAULT_SYSTEM
    resumable = ("drift_model",)  # it only draws the conformation a run starts from
    keeps_constraints = True  # plain MD, as --method plain
    allows_zero_friction = True
    train = DriftTraining()
    sample = DriftSampling()
    bench = DriftBench()

    def default_system_of(self, run) -> str:
        """The system of the named drift model's data (else the shipped models' default)."""
        return shipped.system_of(run.options.drift_model, DEFAULT_SYSTEM)

    def system(self, run):
        """A lab's file as the model's data recorded it (coordinates, force field, digests: its recipe), when
        ``--system`` names that file and its options are not given again; else None (``--system`` as given)."""
        made_for = recipe_of(load(resolve(run.options.drift_model, run.system)).metadata)
        if (made_for is None or not made_for.source.startswith("file:") or run.given_file_options()
                or canonical_source(made_for.source) != canonical_source(run.system)):
            return None
        return build_system(Recipe.of(made_for.source, run.model, run.member, source_options=made_for.source_options,
                                      constraints=run.constraints, hydrogen_mass_amu=run.hydrogen_mass_amu,
                                      ml_atoms=run.ml_atoms, backend=run.backend))

    def default_model(self, run) -> str:
        """The potential of the reference data the model learned (its recipe's)."""
        path = resolve(run.options.drift_model, run.system)
        made_for = recipe_of(load(path).metadata)
        if made_for is None:
            raise fail("model", "a potential for the MD (--model): the drift model does not record the potential of "
                       "its data (made without 'openmm-accel train drift')", f"none, with {path}")
        return made_for.potential

    def prepare(self, run, molecular) -> np.ndarray:
        """Check the model against the System's molecule and draw the conformation to start from."""
        model = load(resolve(run.options.drift_model, run.system))
        model.check_topology(molecular.topology)
        return model.sample(1, run.seed)[0]

    def load_model(self, path):
        return None if path is None else load(shipped.find(path))

    def save_model(self, path, model) -> None:
        save(path, model)

    def integrator(self, run, start: Start):
        """Plain ABOBA MD of the reference potential from the generated conformation, velocities at the
        temperature (seeded), constraints applied."""
        molecular = start.molecular
        simulation = app.Simulation(molecular.topology, molecular.system, openmm.VerletIntegrator(0.001),
                                    start.platform)
        seed_simulation(simulation, start.prepared, run.temperature_k, run.seed)
        return run.langevin.integrator(), simulation.context.getState(getPositions=True, getVelocities=True)


METHOD = ForceGuidedDrifting()
