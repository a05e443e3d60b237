"""Force-guided drifting as a method of ``openmm-accel train``, ``sample`` and ``run`` (see
:mod:`openmm_accel.method`): a one-step generator of conformations trained on reference MD with forces;
``run --method drift`` is plain MD with the reference potential started from a generated conformation."""
from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import fields

import numpy as np
import openmm
import torch
from openmm import app, unit

from ..integrators.plain import build as plain_build
from ..learning.conformations import check_new, write_conformations
from ..learning.reference import load_reference
from ..learning.trainer import check_ema_decay
from ..method import Command, Method, Option, positive_in
from ..storage import discard, earlier_results, writable_folder
from ..threads import use_torch_threads
from ..validation import count, fail
from .benchmark import BENCH
from .features import tangent_forces
from .field import GUIDANCE
from .model import DEFAULT_SYSTEM, load, refine, resolve, save, seed_simulation
from .training import DATA_SCORES, GENERATORS, REPRESENTATIONS, DriftTrainingConfig, biased_subset, train_drift
from .validity import Validity

def _percentages(report: dict) -> str:
    total = len(report["valid"])
    return ", ".join(f"{name.replace('_', ' ')} {100.0 * np.mean(report[name]):.2f} %"
                     for name in ("valid", "bonds_ok", "clash_free", "chirality_ok")) + f" of {total}"


TRAIN_OPTIONS = (
    Option("data", "--data", None, "folder of 'openmm-accel data' (reference MD with forces and its topology)"),
    Option("held_out", "--held-out", 0.2, "fraction of each walker's frames, at its end, kept out of training "
           "(for the benchmark)", type=float),
    Option("biased_subset", "--biased-subset", None, "train on this many frames drawn evenly from the phi/psi "
           "basins (a deliberately biased data set, for the bias-correction experiment)", type=int, check=count),
    Option("representation", "--representation", DriftTrainingConfig.representation, "space of the drifting field",
           choices=REPRESENTATIONS),
    Option("guidance", "--guidance", DriftTrainingConfig.guidance, "force guidance: fi (force-interpolated), fk "
           "(force-aligned kernel) or none", choices=GUIDANCE),
    Option("omega", "--omega", DriftTrainingConfig.omega, "strength of the force guidance (1: the first-order "
           "Boltzmann correction in full)", type=float, check=positive_in(unit.dimensionless, allow_zero=True)),
    Option("temperature_k", "--temperature", None, "K (drift: of the Boltzmann distribution force guidance aims "
           "at; None: the data's; another needs --guidance fi or fk)", type=float,
           check=positive_in(unit.kelvin)),
    Option("data_score", "--data-score", DriftTrainingConfig.data_score, "how guidance knows the data's own "
           "score: positions (their kernel mean shift: any data) or forces (the data are Boltzmann at their own "
           "temperature, so their score is their forces over its kT: less noisy; not with --biased-subset)",
           choices=DATA_SCORES),
    Option("guide_stiff", "--guide-stiff", False, "let force guidance act along bond lengths and angles too (by "
           "default it leaves them alone: there its correction is noise, docs/drift.md)", action="store_true"),
    Option("widths", "--widths", list(DriftTrainingConfig.widths), "kernel widths, as fractions of the data's mean "
           "feature distance", type=float, nargs="+"),
    Option("generator", "--generator", DriftTrainingConfig.generator, "cartesian: atom positions from an MLP; "
           "internal: bond lengths, angles and torsions from an MLP (rotors turn, bonds stay bonds); projected: "
           "atom positions from an MLP, rebuilt with bond lengths and angles bounded (torsions kept)",
           choices=GENERATORS),
    Option("limit", "--limit", DriftTrainingConfig.limit, "internal and projected generators: bond lengths and "
           "angles stay within this many of the data's spreads (inside the validity tolerance; None: 4 for "
           "internal, whose bound is smooth, 2 for projected, whose samples it clips)",
           type=float, check=positive_in(unit.dimensionless)),
    Option("positives", "--positives", DriftTrainingConfig.positives, "data frames per step the field attracts "
           "samples to (the batch and random others; more resolve finer structure)", type=int, check=count),
    Option("epochs", "--epochs", 100, type=int, check=count),
    Option("batch_size", "--batch-size", DriftTrainingConfig.batch_size, type=int, check=count),
    Option("learning_rate", "--learning-rate", DriftTrainingConfig.learning_rate, type=float,
           check=positive_in(unit.dimensionless)),
    Option("hidden", "--hidden", DriftTrainingConfig.hidden, "width of the generator's MLP", type=int, check=count),
    Option("layers", "--layers", DriftTrainingConfig.layers, "hidden layers of the generator", type=int, check=count),
    Option("ema_decay", "--ema", None, "exponential moving average of the weights (e.g. 0.999)", type=float,
           check=lambda value, name: check_ema_decay(value, name)),
    Option("seed", "--seed", 0, type=int),
    Option("threads", "--threads", 1, "torch intra-op threads", type=int, check=count),
    Option("output", "--output", "drift.npz", "model file"),
    Option("resume", "--resume", False, "continue from OUTPUT.train.chk", action="store_true"),
    Option("overwrite", "--overwrite", False, "replace an earlier model and its training checkpoint",
           action="store_true"),
    Option("progress", "--no-progress", None, action="store_false"),
)


def train(args) -> str:
    """``openmm-accel train drift``: train a generator on the reference data's frames and forces (minus the
    held-out end of each walker)."""
    use_torch_threads(args.threads)
    if not args.data:
        raise fail("data", "a folder of reference data (--data)", None)
    if not 0.0 <= args.held_out < 1.0:
        raise fail("held_out", "a fraction in [0, 1)", args.held_out)
    if any(not 0.0 < width for width in args.widths):
        raise fail("widths", "positive fractions of the mean feature distance", args.widths)
    folder = os.path.dirname(os.path.abspath(args.output))
    writable_folder(folder, "output", args.output)
    names = [os.path.basename(args.output), os.path.basename(args.output) + ".train.chk"]
    existing = earlier_results(folder, names, args.resume, args.overwrite, args.output)
    if args.resume and names[1] not in existing:
        raise fail("resume", f"a training checkpoint {args.output}.train.chk", "none")
    data = load_reference(args.data)
    if data.forces is None:
        raise fail("data", "reference data with the forces of every frame", args.data)
    temperature = data.metadata["temperature_k"] if args.temperature_k is None else args.temperature_k
    if temperature != data.metadata["temperature_k"] and args.guidance == "none":
        raise fail("temperature", f"the data's {data.metadata['temperature_k']:g} K without force guidance (only "
                   "--guidance fi or fk can aim at another temperature)", f"{temperature:g} K")
    if args.data_score == "forces" and args.biased_subset:
        raise fail("data_score", "'positions' for a biased subset (its frames are not Boltzmann at any "
                   "temperature, so their forces are not their score)", "forces")
    atoms = data.positions.shape[2]
    if data.topology.getNumAtoms() != atoms:
        raise fail("data", "frames of every atom of the topology (data recorded with --record all)",
                   f"{atoms} of {data.topology.getNumAtoms()} atoms")
    kept = int(round(data.positions.shape[1] * (1.0 - args.held_out)))
    positions = data.positions[:, :kept].reshape(-1, atoms, 3).astype(np.float64)
    forces = data.forces[:, :kept].reshape(-1, atoms, 3).astype(np.float64)
    validity = Validity.of(data.topology, positions)
    if data.metadata.get("constraints") == "hbonds":  # the data have no spread along X-H bonds
        forces = tangent_forces(torch.as_tensor(positions), torch.as_tensor(forces),
                                torch.as_tensor(hydrogen_bonds(data.topology))).numpy()
    if args.biased_subset:
        chosen = biased_subset(data.topology, positions, args.biased_subset, args.seed)
        positions, forces = positions[chosen], forces[chosen]
    if args.overwrite:
        discard(folder, existing)
    known = {field.name for field in fields(DriftTrainingConfig)}
    given = {name: getattr(args, name) for name in known if hasattr(args, name)}
    config = DriftTrainingConfig(**{**given, "widths": tuple(args.widths)})
    pdb = io.StringIO()
    app.PDBFile.writeFile(data.topology, positions[0] * unit.nanometer, pdb)
    metadata = {"topology_pdb": pdb.getvalue(),
                "elements": [atom.element.atomic_number for atom in data.topology.atoms()],
                "system": data.metadata.get("system"),
                "data": {"folder": os.path.abspath(args.data), "settings": data.metadata,
                         "training_frames_per_walker": kept, "held_out_fraction": args.held_out,
                         "biased_subset": args.biased_subset, "frames": len(positions)},
                "command": " ".join(sys.argv)}
    began = time.perf_counter()
    model, result = train_drift(positions, forces, temperature, config, args.output + ".train.chk",
                                args.progress is not False, metadata["command"], metadata, validity, data.topology,
                                data.metadata["temperature_k"])
    model.metadata["training_seconds"] = result["seconds"]
    model.metadata["wall_seconds"] = time.perf_counter() - began
    save(args.output, model)
    last = result["history"][-1]
    return (f"wrote {args.output}: {atoms} atoms, {len(positions)} frames, {config.generator} generator, "
            f"{config.representation}, guidance "
            f"{config.guidance}, {len(result['history'])} epochs in {result['seconds']:.0f} s, drift left "
            f"{last['drift']:.3f} of the mean feature distance")


def refined_path(path: str) -> str:
    """Where refined samples go: ``samples.dcd`` -> ``samples.refined.dcd`` (beside the raw ones)."""
    stem, extension = os.path.splitext(path)
    return f"{stem}.refined{extension}"


def sample(args) -> str:
    """``openmm-accel sample --method drift``: conformations from a generator, streamed to a trajectory with
    the molecule's topology, and a report of their validity (every raw sample is written, valid or not);
    with ``--refine``, also the samples after short MD with the reference potential, in a file of their own."""
    check_new(args.output)
    if args.refine:
        check_new(refined_path(args.output))
    path = resolve(args.drift_model, args.system or DEFAULT_SYSTEM)
    model = load(path)
    topology = model.topology()
    reports, kept = [], []

    def checked():
        for batch in model.batches(args.count, args.seed, args.batch):
            if model.validity is not None:
                reports.append(model.validity.check(batch))
            if args.refine:
                kept.append(batch)
            yield batch
    began = time.perf_counter()
    written = write_conformations(args.output, checked(), topology)
    seconds = time.perf_counter() - began
    line = f"{args.count} conformations in {seconds:.1f} s ({args.count / seconds:.0f} per second, written)"
    if reports:
        line += "; " + _percentages(_merged(reports))
    line += f"; wrote {', '.join(written)}"
    if args.refine:
        # the data's MD, at the temperature the model aims at (guidance may aim at another than the data's)
        settings = {**model.metadata["data"]["settings"], "temperature_k": model.temperature_k}
        refined_reports, failed = [], []

        def refined():
            done = 0
            for batch in kept:  # sample i's velocities are drawn with seed + i, whatever the batches
                batch = refine(batch, settings, args.refine, args.seed + done, progress=args.progress is not False)
                done += len(batch)
                finite = np.isfinite(batch).all(axis=(1, 2))
                failed.append(int(np.sum(~finite)))
                batch = batch[finite]
                if len(batch):
                    if model.validity is not None:
                        refined_reports.append(model.validity.check(batch))
                    yield batch
        began = time.perf_counter()
        written = write_conformations(refined_path(args.output), refined(), topology)
        seconds = time.perf_counter() - began
        line += (f"\nrefined by {args.refine:g} ps of the reference potential's MD each in {seconds:.1f} s "
                 f"({args.count / seconds:.1f} per second)")
        if sum(failed):
            line += f"; {sum(failed)} could not be relaxed (non-finite forces) and are left out"
        if refined_reports:
            line += "; " + _percentages(_merged(refined_reports))
        line += f"; wrote {', '.join(written)}"
    return line


def _merged(reports: list) -> dict:
    return {name: np.concatenate([r[name] for r in reports]) for name in reports[0]}


SAMPLE = Command("conformations in one forward pass each from a drifting generator, with their validity",
                 (Option("drift_model", "--drift-model", None, "model file or shipped name (default: the shipped "
                         "model of --system)"),
                  Option("batch", "--batch", 10000, "conformations per forward pass (and per write)", type=int,
                         check=count),
                  Option("refine", "--refine", 0.0, "ps of MD with the reference potential (as the data were "
                         "made, after at most 100 minimisation steps) for each sample, written apart to "
                         "FILE.refined.EXT (0: raw samples only; a few samples per second for 1 ps of alanine "
                         "dipeptide)",
                         type=float, check=positive_in(unit.picosecond, allow_zero=True)),
                  Option("progress", "--no-progress", None, "no progress bar for --refine", action="store_false")),
                 sample)


def prepare(config, setup) -> np.ndarray:
    """Check the model against the System's molecule and draw the conformation to start from."""
    model = load(resolve(config.drift_model, config.system))
    model.check_topology(setup.molecular.topology)
    return model.sample(1, config.seed)[0]


def build(config, setup, state, platform, prepared, paths):
    """Plain ABOBA MD of the reference potential from the generated conformation ``prepared``, velocities at
    the temperature (seeded), constraints applied."""
    integrator, _ = plain_build(config, setup, state, platform, prepared, paths)
    simulation = app.Simulation(setup.molecular.topology, setup.molecular.system, openmm.VerletIntegrator(0.001),
                                platform)
    seed_simulation(simulation, prepared, config.temperature_k, config.seed)
    return integrator, simulation.context.getState(getPositions=True, getVelocities=True)


def hydrogen_bonds(topology: app.Topology) -> np.ndarray:
    """``(K, 2)`` the bonds OpenMM's ``HBonds`` constrains: every bond with a hydrogen."""
    return np.array([[a.index, b.index] for a, b in topology.bonds()
                     if app.element.hydrogen in (a.element, b.element)], dtype=int).reshape(-1, 2)


def data_potential(config) -> str:
    """The potential of the reference data the model learned (``--model`` when not given)."""
    return load(resolve(config.drift_model, config.system)).metadata["data"]["settings"]["model"]


OPTIONS = (Option("drift_model", "--drift-model", None, "model file from 'openmm-accel train drift', or a shipped "
                  "model's name (default: the shipped model for --system)"),)

METHOD = Method(name="drift", help="plain Langevin dynamics of the reference potential (by default the data's) "
                "started from a conformation a drifting generator drew (velocities at the temperature)", build=build, options=OPTIONS, prepare=prepare,
                default_system=DEFAULT_SYSTEM, default_model=data_potential,
                train=Command("train a one-step drifting generator (plain, FI or FK guidance) on reference data "
                              "with forces", TRAIN_OPTIONS, train),
                sample=SAMPLE, bench=BENCH)
