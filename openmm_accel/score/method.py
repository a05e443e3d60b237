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
from ..learning.conformations import check_new, write_conformations
from ..learning.model_file import ShippedModels
from ..learning.reference import load_reference
from ..method import Command, Method, Option, positive_in
from ..storage import discard, earlier_results, writable_folder
from ..systems import Setup, load as load_system
from ..threads import use_torch_threads
from ..validation import SimulationError, count, fail
from .benchmark import MD_STARTS, main as benchmark
from .diffusion import CORRECTOR_STEPS, SDE_STEPS, SNR
from .mapping import NAMED, Mapping
from .system import coarse_grained
from .training import ScoreTrainingConfig, load, save, train_score

DEFAULT_SYSTEM = "openmmtools:AlanineDipeptideImplicit"
shipped = ShippedModels("score", {DEFAULT_SYSTEM: "ala2-implicit-backbone",  # the default model per --system
                                  "openmmtools:AlanineDipeptideExplicit": "ala2-explicit-backbone",
                                  "valine-dipeptide-implicit": "val2-implicit-backbone"})
resolve = shipped.resolve


def setup(config) -> Setup:
    """The coarse-grained system of ``config``: the beads of the all-atom system, driven by the model."""
    path = resolve(config.score_model, config.system)
    model = load(path)
    if abs(model.temperature_k - config.temperature_k) > 1e-6:
        raise fail("temperature", f"the temperature the score model learned ({model.temperature_k:g} K): its "
                   "forces are kT times the score at that kT", config.temperature_k)
    molecular = coarse_grained(model, load_system(config.system), config.backend, path, config.replicas)
    return Setup(molecular, molecular.system)


OPTIONS = (Option("score_model", "--score-model", None, "model file from 'openmm-accel train score', or a shipped "
                  "model's name (default: the shipped model for --system)"),
           Option("replicas", "--replicas", 1, "independent copies of the molecule in one System (one batched "
                  "network call for all: many trajectories for little more than the cost of one)", type=int,
                  check=count))

TRAIN_OPTIONS = (
    Option("data", "--data", None, "folder of 'openmm-accel data' (reference MD with its topology)"),
    Option("mapping", "--mapping", "backbone", f"beads: {' or '.join(NAMED)}", choices=NAMED),
    Option("held_out", "--held-out", 0.2, "fraction of each walker's frames, at its end, kept out of training "
           "(for the benchmark)", type=float),
    Option("epochs", "--epochs", 50, type=int, check=count),
    Option("batch_size", "--batch-size", ScoreTrainingConfig.batch_size, type=int, check=count),
    Option("learning_rate", "--learning-rate", ScoreTrainingConfig.learning_rate, type=float,
           check=positive_in(unit.dimensionless)),
    Option("hidden", "--hidden", ScoreTrainingConfig.hidden, "width of each bead's MLP", type=int, check=count),
    Option("layers", "--layers", ScoreTrainingConfig.layers, "hidden layers of each bead's MLP", type=int,
           check=count),
    Option("fp_weight", "--fp-weight", 0.0, "weight of the Fokker-Planck residual (the paper: 5e-4; 0: off)",
           type=float, check=positive_in(unit.dimensionless, allow_zero=True)),
    Option("fp_max_t", "--fp-max-t", ScoreTrainingConfig.fp_max_t, "the residual only below this diffusion time",
           type=float),
    Option("fp_batch", "--fp-batch", ScoreTrainingConfig.fp_batch, "configurations per batch that also get the "
           "residual", type=int, check=count),
    Option("experts", "--experts", None, "diffusion times between time-partitioned experts, e.g. 0.1 0.6 (three "
           "networks, trained one after another from the smallest times; the first gives the MD forces)",
           type=float, nargs="+"),
    Option("expert_epochs", "--expert-epochs", None, "epochs of each expert, from the smallest times up (default: "
           "--epochs each)", type=int, nargs="+"),
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
    experts = tuple(args.experts or ())
    checkpoints = [".train.chk"] if not experts else [f".train.chk.expert{i}" for i in range(len(experts) + 1)]
    names = [os.path.basename(args.output)] + [os.path.basename(args.output) + end for end in checkpoints]
    existing = earlier_results(folder, names, args.resume, args.overwrite, args.output)
    if args.resume and not set(names[1:]) & set(existing):
        raise fail("resume", f"a training checkpoint {args.output}{checkpoints[0]}", "none")
    data = load_reference(args.data)
    mapping = Mapping.of(data.topology, args.mapping)
    kept = int(round(data.positions.shape[1] * (1.0 - args.held_out)))
    positions = mapping(data.positions[:, :kept]).reshape(-1, mapping.beads, 3)
    if args.overwrite:
        discard(folder, existing)
    known = {field.name for field in fields(ScoreTrainingConfig)}
    given = {name: getattr(args, name) for name in known if hasattr(args, name)}
    given.update(experts=experts, expert_epochs=tuple(args.expert_epochs or ()))
    config = ScoreTrainingConfig(**given)
    atoms = list(data.topology.atoms())
    pdb = io.StringIO()
    app.PDBFile.writeFile(mapping.topology(data.topology), positions[0] * unit.nanometer, pdb)
    metadata = {"topology_pdb": pdb.getvalue(), "atoms": list(mapping.atoms), "mapping": mapping.name,
                "beads": mapping.describe(data.topology),
                "elements": [atoms[i].element.atomic_number for i in mapping.atoms],
                # the atoms' own masses (the data's may be repartitioned): CG dynamics use them
                "masses": [atoms[i].element.mass.value_in_unit(unit.amu) for i in mapping.atoms],
                "system": data.metadata.get("system"),
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
    check_new(args.output)
    path = resolve(args.score_model, args.system or DEFAULT_SYSTEM)
    model = load(path)
    if "topology_pdb" not in model.metadata:
        raise fail("score_model", "a model file with its coarse-grained topology", path)
    began = time.perf_counter()
    positions = model.sample(args.count, seed=args.seed, **sampler(args))
    seconds = time.perf_counter() - began
    if not np.all(np.isfinite(positions)):
        raise SimulationError(f"the reverse SDE diverged in {int((~np.isfinite(positions)).any((1, 2)).sum())} of "
                              f"{args.count} samples: use more --sde-steps, or a better trained model")
    topology = app.PDBFile(io.StringIO(model.metadata["topology_pdb"])).topology
    written = write_conformations(args.output, positions, topology)
    return (f"{args.count} configurations in {seconds:.1f} s ({args.count / seconds:.0f} per second), "
            f"wrote {', '.join(written)}")


SAMPLER_OPTIONS = (
    Option("sde_steps", "--sde-steps", SDE_STEPS, "reverse-SDE steps from t = 1 to 1e-5", type=int, check=count),
    Option("corrector_steps", "--corrector-steps", CORRECTOR_STEPS, "Metropolis-adjusted Langevin steps at each noise level "
           "(0: the plain reverse SDE)", type=int,
           check=lambda value, name: count(value, name, "a non-negative integer", minimum=0)),
    Option("snr", "--snr", SNR, "the corrector's signal-to-noise ratio: its step is 2 (snr |z| / |score|)^2",
           type=float, check=positive_in(unit.dimensionless)))


def sampler(args) -> dict:
    """The reverse-SDE settings of ``SAMPLER_OPTIONS``, as keywords of ``ScoreModel.sample``."""
    return {"steps": args.sde_steps, "corrector_steps": args.corrector_steps, "snr": args.snr}


SAMPLE = Command("independent configurations by the reverse SDE of a score model",
                 (Option("score_model", "--score-model", None, "model file or shipped name (default: the shipped "
                         "model of --system)"),
                  *SAMPLER_OPTIONS), sample)


def _bench(args) -> None:
    models = [resolve(name, "") for name in args.models] if args.models else list(shipped().values())
    if not models:
        raise fail("models", "score model files (none is shipped yet)", None)
    benchmark(args.json, models, args.data, args.samples, sampler(args), args.md_duration, args.md_timestep,
              args.md_friction, args.all_atom_duration, args.seed, args.threads[0], args.backend, args.replicas,
              args.md_discard, args.md_start)


BENCH = Command(
    help="score models against held-out reference MD (iid and CG MD: phi/psi JS, PMF, bond W1) and CG MD speed "
         "against all-atom MD; plots",
    options=(Option("models", "--models", None, "model files or shipped names (default: all shipped models)",
                    nargs="+"),
             Option("data", "--data", None, "the reference data folder (default: the one recorded in each model)"),
             Option("samples", "--samples", 20000, "iid samples per model", type=int, check=count),
             *SAMPLER_OPTIONS,
             Option("md_duration", "--md-duration", 0.5, "ns of CG MD per replica", type=float,
                    check=positive_in(unit.nanosecond)),
             Option("md_discard", "--md-discard", 10.0, "ps at the start of each replica left out of the "
                    "comparison", type=float, check=positive_in(unit.picosecond, allow_zero=True)),
             Option("md_start", "--md-start", "data", "where CG MD replicas start: the data's first frame, or the "
                    "model's own iid samples (then MD must keep the model's distribution, no burn-in)",
                    choices=MD_STARTS),
             Option("md_timestep", "--md-timestep", 2.0, "fs, CG MD", type=float, check=positive_in(unit.femtosecond)),
             Option("md_friction", "--md-friction", 1.0, "1/ps, CG MD", type=float,
                    check=positive_in(unit.picosecond**-1)),
             Option("all_atom_duration", "--all-atom-duration", 2.0, "ps of all-atom MD in implicit solvent for its "
                    "speed (a tenth of it in explicit water)", type=float, check=positive_in(unit.picosecond)),
             Option("replicas", "--replicas", 64, "CG MD trajectories, side by side in one System", type=int,
                    check=count),
             Option("seed", "--seed", 1, type=int),
             Option("backend", "--backend", "torchforce", "Force bridge of the CG MD", choices=("torchforce",
                                                                                                "pythonforce"))),
    run=_bench)

METHOD = Method(name="score", help="score-based forces: coarse-grained Langevin MD with kT times a trained "
                "energy-based diffusion model's score", build=plain_build, options=OPTIONS, setup=setup,
                own_potential=True, default_system=DEFAULT_SYSTEM,
                train=Command("train an energy-based diffusion model (DSM + Fokker-Planck) on reference data",
                              TRAIN_OPTIONS, train),
                sample=SAMPLE, bench=BENCH)
