"""Score-based forces as a method of ``openmm-accel run``, ``train``, ``sample`` and ``bench`` (see
:mod:`openmm_accel.method`): coarse-grained Langevin MD whose only force is a trained model's ``kT`` times
score."""
from __future__ import annotations

import io
import time
from dataclasses import replace

import numpy as np
from openmm import app

from ..devices import torch_device
from ..harness import report_names
from ..learning.model_file import ShippedModels, recipe_of
from ..method import Job, Method, Start
from ..molecular import MM_MODEL, MolecularSystem
from ..systems import build as build_system, canonical_source, load as load_system
from ..threads import use_torch_threads
from ..validation import SimulationError, fail
from .config import ScoreBenchConfig, ScoreRunConfig, ScoreSampleConfig, TrainScoreConfig

DEFAULT_SYSTEM = "openmmtools:AlanineDipeptideImplicit"
shipped = ShippedModels("score", {DEFAULT_SYSTEM: "ala2-implicit-backbone",  # the default model per --system
                                  "openmmtools:AlanineDipeptideExplicit": "ala2-explicit-backbone",
                                  "valine-dipeptide-implicit": "val2-implicit-backbone"})
resolve = shipped.resolve


class ScoreTraining(Job):
    help = "train an energy-based diffusion model (DSM + Fokker-Planck) on reference data"
    Config = TrainScoreConfig

    def run(self, config: TrainScoreConfig) -> str:
        from .training import train
        return train(config)


class ScoreSampling(Job):
    help = "independent configurations by the reverse SDE of a score model"
    Config = ScoreSampleConfig

    def run(self, config: ScoreSampleConfig) -> str:
        """Independent configurations by the reverse SDE, written as a trajectory with the model's
        coarse-grained topology."""
        from ..learning.conformations import check_format, check_new, write_conformations
        from .model import load
        count, output = config.count, config.output
        check_new(output)
        path, model = shipped.pick(config.score_model, config.system, DEFAULT_SYSTEM, load)
        if "topology_pdb" not in model.metadata:
            raise fail("score_model", "a model file with its coarse-grained topology", path)
        topology = app.PDBFile(io.StringIO(model.metadata["topology_pdb"])).topology
        check_format(output, topology)
        use_torch_threads(config.threads)
        began = time.perf_counter()
        positions = model.to(torch_device(config.device)).sample(count, seed=config.seed, **config.sampler())
        seconds = time.perf_counter() - began
        if not np.all(np.isfinite(positions)):
            raise SimulationError(f"the reverse SDE diverged in {int((~np.isfinite(positions)).any((1, 2)).sum())} "
                                  f"of {count} samples: use more --sde-steps, or a better trained model")
        written = write_conformations(output, positions, topology)
        return (f"{count} configurations in {seconds:.1f} s ({count / seconds:.0f} per second), "
                f"wrote {', '.join(written)}")


class ScoreBench(Job):
    help = ("score models against held-out reference MD (iid and CG MD: phi/psi JS, PMF, bond W1) and CG MD speed "
            "against all-atom MD; plots")
    Config = ScoreBenchConfig

    def run(self, config: ScoreBenchConfig) -> None:
        from .benchmark import main
        models = [resolve(name, "") for name in config.models] if config.models else list(shipped().values())
        if not models:
            raise fail("models", "score model files (none is shipped yet)", None)
        report_names(models)
        config.md_frames_kept()
        main(models, config)


class ScoreForces(Method):
    name = "score"
    help = ("score-based forces: coarse-grained Langevin MD with kT times a trained energy-based diffusion "
            "model's score")
    Config = ScoreRunConfig
    brings_potential = True
    default_system = DEFAULT_SYSTEM
    train = ScoreTraining()
    sample = ScoreSampling()
    bench = ScoreBench()

    def default_system_of(self, run) -> str:
        """The system the named score model was made for (else the shipped models' default)."""
        return shipped.system_of(run.options.score_model, DEFAULT_SYSTEM)

    def system(self, run) -> MolecularSystem:
        """The coarse-grained system of ``run``: the beads of the all-atom system, driven by the model."""
        from .system import coarse_grained
        from .model import load
        path, model = shipped.pick(run.options.score_model, run.system, DEFAULT_SYSTEM, load)
        if abs(model.temperature_k - run.temperature_k) > 1e-6:
            raise fail("temperature", f"the temperature the score model learned ({model.temperature_k:g} K): its "
                       "forces are kT times the score at that kT", run.temperature_k)
        made_for = recipe_of(model.metadata)
        all_atom = (build_system(replace(made_for, potential=MM_MODEL, potential_options=(), ml_atoms=None))
                    if made_for is not None and canonical_source(made_for.source) == canonical_source(run.system)
                    else load_system(run.system))  # the recipe rebuilds a file's system (its options, its digests)
        return coarse_grained(model, all_atom, run.backend, path, run.options.replicas)

    def load_model(self, path):
        from .model import load
        return None if path is None else load(shipped.find(path))

    def save_model(self, path, model) -> None:
        from .model import save
        save(path, model)

    def integrator(self, run, start: Start):
        return run.langevin.integrator(), start.state


METHOD = ScoreForces()
