"""Score-based forces as a method of ``openmm-accel run`` and ``train`` (see :mod:`openmm_accel.method`):
coarse-grained Langevin MD whose only force is a trained model's ``kT`` times score."""
from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import fields

import numpy as np
from openmm import app, unit

from ..integrators.plain import build as plain_build
from ..learning.reference import load_reference
from ..method import Command, Method, Option, positive_in
from ..storage import discard, earlier_results, writable_folder
from ..systems import Setup, load as load_system
from ..threads import use_torch_threads
from ..validation import SimulationError, count, fail, positive
from .mapping import NAMED, Mapping
from .system import coarse_grained
from .training import ScoreTrainingConfig, load, save, train_score

DIRECTORY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "score")
DEFAULTS = {"alanine-dipeptide-implicit": "ala2-implicit-backbone"}  # shipped model for --system


def shipped() -> dict:
    """Shipped score models, by name."""
    if not os.path.isdir(DIRECTORY):
        return {}
    return {name[:-4]: os.path.join(DIRECTORY, name) for name in sorted(os.listdir(DIRECTORY)) if name.endswith(".npz")}


def resolve(given, system: str) -> str:
    """The model file: ``given`` as a path or shipped name, else the shipped model for ``system``."""
    models = shipped()
    if given:
        return models.get(given, given) if not os.path.exists(given) else given
    if DEFAULTS.get(system) in models:
        return models[DEFAULTS[system]]
    raise fail("score_model", "a score model file (none is shipped for this system; make one with 'openmm-accel "
               "data' and 'openmm-accel train score')", None)


def setup(config) -> Setup:
    """The coarse-grained system of ``config``: the beads of the all-atom system, driven by the model."""
    path = resolve(config.score_model, config.system)
    model = load(path)
    if abs(model.temperature_k - config.temperature_k) > 1e-6:
        raise fail("temperature", f"the temperature the score model learned ({model.temperature_k:g} K): its "
                   "forces are kT times the score at that kT", config.temperature_k)
    molecular = coarse_grained(model, load_system(config.system), config.backend, path)
    return Setup(molecular, molecular.system)


OPTIONS = (Option("score_model", "--score-model", None, "model file from 'openmm-accel train score', or a shipped "
                  "model's name (default: the shipped model for --system)"),)

TRAIN_OPTIONS = (
    Option("data", "--data", None, "folder of 'openmm-accel data' (reference MD with its topology)"),
    Option("mapping", "--mapping", "backbone", f"beads: {' or '.join(NAMED)}", choices=NAMED),
    Option("held_out", "--held-out", 0.2, "fraction of each walker's frames, at its end, kept out of training "
           "(for the benchmark)", type=float),
    Option("epochs", "--epochs", 50, type=int, check=count),
    Option("batch_size", "--batch-size", 256, type=int, check=count),
    Option("learning_rate", "--learning-rate", 1e-3, type=float,
           check=positive_in(unit.dimensionless)),
    Option("hidden", "--hidden", 96, type=int, check=count),
    Option("layers", "--layers", 2, type=int, check=count),
    Option("fp_weight", "--fp-weight", 0.0, "weight of the Fokker-Planck residual (the paper: 5e-4; 0: off)",
           type=float, check=lambda value, name: positive(value, unit.dimensionless, name, allow_zero=True)),
    Option("fp_max_t", "--fp-max-t", 1.0, "the residual only below this diffusion time", type=float),
    Option("ema_decay", "--ema", None, "exponential moving average of the weights (e.g. 0.999)", type=float),
    Option("seed", "--seed", 0, type=int),
    Option("threads", "--threads", 2, "torch intra-op threads", type=int, check=count),
    Option("output", "--output", "score.npz", "model file"),
    Option("resume", "--resume", False, "continue from OUTPUT.train.chk", action="store_true"),
    Option("overwrite", "--overwrite", False, "replace an earlier model and its training checkpoint",
           action="store_true"),
    Option("progress", "--no-progress", None, action="store_false"),
)


def train(args) -> str:
    """``openmm-accel train score``: train on the reference data's frames (minus the held-out end)."""
    use_torch_threads(args.threads)
    if not args.data:
        raise fail("data", "a folder of reference data (--data)", None)
    if not 0.0 <= args.held_out < 1.0:
        raise fail("held_out", "a fraction in [0, 1)", args.held_out)
    folder = os.path.dirname(os.path.abspath(args.output))
    writable_folder(folder, "output", args.output)
    names = [os.path.basename(args.output), os.path.basename(args.output) + ".train.chk"]
    existing = earlier_results(folder, names, args.resume, args.overwrite, args.output)
    if args.resume and names[1] not in existing:
        raise fail("resume", f"the training checkpoint {args.output}.train.chk", "none")
    data = load_reference(args.data)
    mapping = Mapping.of(data.topology, args.mapping)
    kept = int(round(data.positions.shape[1] * (1.0 - args.held_out)))
    positions = mapping(data.positions[:, :kept]).reshape(-1, mapping.beads, 3)
    if args.overwrite:
        discard(folder, existing)
    known = {field.name for field in fields(ScoreTrainingConfig)}
    config = ScoreTrainingConfig(**{name: getattr(args, name) for name in known if hasattr(args, name)})
    atoms = list(data.topology.atoms())
    pdb = io.StringIO()
    app.PDBFile.writeFile(mapping.topology(data.topology), positions[0] * unit.nanometer, pdb)
    metadata = {"topology_pdb": pdb.getvalue(),"atoms": list(mapping.atoms), "mapping": mapping.name, "beads": mapping.describe(data.topology),
                "elements": [atoms[i].element.atomic_number for i in mapping.atoms],
                "masses": data.masses[list(mapping.atoms)].tolist(), "system": data.metadata.get("system"),
                "data": {"folder": os.path.abspath(args.data), "settings": data.metadata,
                         "training_frames_per_walker": kept, "held_out_fraction": args.held_out},
                "command": " ".join(sys.argv)}
    began = time.perf_counter()
    model, result = train_score(positions, config, args.output + ".train.chk", args.progress is not False,
                                metadata["command"], data.metadata["temperature_k"], metadata)
    model.metadata["training_seconds"] = result["seconds"]
    model.metadata["wall_seconds"] = time.perf_counter() - began
    save(args.output, model)
    last = result["history"][-1]
    return (f"wrote {args.output}: {mapping.beads} beads, {len(positions)} frames, {len(result['history'])} epochs "
            f"in {result['seconds']:.0f} s, validation loss {last['validation_loss']:.4f} (dsm {last['dsm']:.4f}, "
            f"fp {last['fp']:.3g})")


def sample(args) -> str:
    """``openmm-accel sample --method score``: independent configurations by the reverse SDE, as a trajectory
    with the model's coarse-grained topology."""
    import mdtraj
    if os.path.exists(args.output):
        raise fail("output", "a new file (samples are never written over earlier results)", args.output)
    writable_folder(os.path.dirname(os.path.abspath(args.output)), "output", args.output)
    path = resolve(args.score_model, "alanine-dipeptide-implicit")
    model = load(path)
    if "topology_pdb" not in model.metadata:
        raise fail("score_model", "a model file with its coarse-grained topology", path)
    topology = mdtraj.Topology.from_openmm(app.PDBFile(io.StringIO(model.metadata["topology_pdb"])).topology)
    began = time.perf_counter()
    positions = model.sample(args.count, args.sde_steps, args.seed)
    seconds = time.perf_counter() - began
    if not np.all(np.isfinite(positions)):
        raise SimulationError(f"the reverse SDE diverged in {int((~np.isfinite(positions)).any((1, 2)).sum())} of "
                              f"{args.count} samples: use more --sde-steps, or a better trained model")
    trajectory = mdtraj.Trajectory(positions.astype("float32"), topology)
    trajectory.save(args.output)
    written = [args.output]
    if os.path.splitext(args.output)[1].lower() in (".dcd", ".xtc", ".trr", ".nc"):
        trajectory[0].save_pdb(args.output + ".pdb")
        written.append(args.output + ".pdb")
    return (f"{args.count} configurations in {seconds:.1f} s ({args.count / seconds:.0f} per second), "
            f"wrote {', '.join(written)}")


SAMPLE = Command("independent configurations by the reverse SDE of a score model",
                 (Option("score_model", "--score-model", None, "model file or shipped name (default: the shipped "
                         "alanine dipeptide model)"),
                  Option("sde_steps", "--sde-steps", 500, "reverse-SDE steps from t = 1 to 1e-5", type=int,
                         check=count)), sample)

METHOD = Method(name="score", help="score-based forces: coarse-grained Langevin MD with kT times a trained "
                "energy-based diffusion model's score", build=plain_build, options=OPTIONS, setup=setup,
                own_potential=True,
                train=Command("train an energy-based diffusion model (DSM + Fokker-Planck) on reference data",
                              TRAIN_OPTIONS, train),
                sample=SAMPLE)
