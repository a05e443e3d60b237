"""``openmm-accel train flashmd``: data generation, training and the saved model, resumable end to end.

Files next to the model ``OUTPUT`` (e.g. ``ala2-8fs.pt``): ``OUTPUT.data.npz`` (the NVE data, a
:class:`~openmm_accel.learning.dataset.Dataset` reused on resume; ``OUTPUT.data.partial.npz`` while it is
being generated, from which an interrupted run continues), ``OUTPUT.train.chk`` (the training checkpoint, written every epoch) and ``OUTPUT`` itself, whose
metadata record the stride, the system, the reference potential, elements, masses, package version,
the command line and wall times.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, replace
from typing import List

import mdtraj
import numpy as np
import torch
from openmm import unit

from ..devices import AUTO, Placement
from ..learning.dataset import Dataset
from ..learning.sampling import NVEPlan, sample_nve
from ..models.base import label_forces
from ..models.classical import OpenMMEnergyModel
from ..options import checked
from ..storage import model_file_place, promote_staged, staging_prefix
from ..systems import check_potential, with_potential
from ..threads import use_torch_threads
from ..validation import as_array, fail
from .config import TrainFlashMDConfig
from .network import FlashMDNet
from .symplectic import SYMPLECTIC
from .training import TrainingConfig, Trajectories, save, train


def _reference_potential(molecular, device: str):
    """The reference potential as a batched EnergyModel: the ML model itself for a pure ML System
    (batched is cheapest), else the whole System evaluated by OpenMM on ``device``."""
    if molecular.model is not None and molecular.region is None:
        return molecular.model
    return OpenMMEnergyModel(molecular.system, molecular.topology, device)


def reference_probe(molecular, positions, device: str = AUTO) -> dict:
    """A fingerprint of the reference potential for the model file: one configuration (nm; with the box of a
    periodic system) and the reference forces there (kJ/mol/nm). The FlashMD integrator refuses a System
    whose forces differ there, since the model's rescaling and fallbacks use the System as its reference."""
    x = as_array(positions, unit.nanometer, "positions")
    box = None
    if molecular.system.usesPeriodicBoundaryConditions():
        box = np.array([v.value_in_unit(unit.nanometer) for v in molecular.system.getDefaultPeriodicBoxVectors()])
    _, forces = _reference_potential(molecular, device).evaluate(x, box)
    return {"positions": x.tolist(), "forces": np.asarray(forces).tolist(),
            "box": None if box is None else box.tolist()}


def load_starts(path: str, topology) -> np.ndarray:
    """Frames ``(F, N, 3)`` nm of a trajectory of the training system (any format mdtraj reads; files
    without a topology, such as DCD, are read with the system's)."""
    if not os.path.isfile(path):
        raise fail("starts", "an existing trajectory file", path)
    reference = mdtraj.Topology.from_openmm(topology)
    try:
        frames = mdtraj.load(path) if path.endswith((".pdb", ".h5", ".pdb.gz")) else mdtraj.load(path, top=reference)
    except (OSError, ValueError) as error:
        raise fail("starts", f"a trajectory of the {reference.n_atoms}-atom training system", f"{path}: {error}")
    if frames.n_atoms != reference.n_atoms:
        raise fail("starts", f"a trajectory of the {reference.n_atoms}-atom training system",
                   f"{frames.n_atoms} atoms in {path}")
    return frames.xyz.astype(np.float64)


def validated_training(config: TrainFlashMDConfig) -> TrainFlashMDConfig:
    """``config`` with every field checked, and its output files: an :class:`InputError` names the first bad
    field, what was expected and what was given. An earlier model at ``output`` (or its data or training
    checkpoint) is refused unless resumed or overwritten; resuming needs something to resume."""
    config = checked(config)
    check_potential(config.model, config.member, "an ML reference --model")
    if config.stride_fs % (config.record_every * config.timestep_fs) > 1e-9:
        raise fail("stride", f"a positive multiple of record_every x timestep "
                   f"({config.record_every * config.timestep_fs:g} fs)", f"{config.stride_fs} fs")
    beside = [path[len(config.output):] for path in training_files(config.output)[1:]]
    existing = model_file_place(config.output, beside, config.resume, config.overwrite)
    if config.resume and not set(existing) - {os.path.basename(config.output)}:
        raise fail("resume", f"the data {config.output}.data.npz (or its part) or training checkpoint "
                   f"{config.output}.train.chk of an earlier run to continue", "neither exists")
    return config


def training_files(output: str) -> List[str]:
    """The model file and, beside it, its data, training checkpoint and partial data (the resumable state)."""
    return [output, output + ".data.npz", output + ".train.chk", output + ".data.partial.npz"]


def training_runs(history: List[dict]) -> List[dict]:
    """The commands that trained a model, in order, each with its epochs (first, last): one entry unless the
    training was resumed with another command (e.g. ``--resume --epochs 28 --rollout 3`` after 20 epochs)."""
    runs: List[dict] = []
    for entry in history:
        if not runs or runs[-1]["command"] != entry.get("command"):
            runs.append({"command": entry.get("command"), "epochs": [entry["epoch"], entry["epoch"]]})
        runs[-1]["epochs"][1] = entry["epoch"]
    return runs


def _check_stored_data(dataset: Dataset, plan: NVEPlan, path: str) -> None:
    """Refuse NVE data on disk made with other settings than ``plan`` (a resumed training reuses them)."""
    wanted = {"temperature_k": float(plan.temperature_k), "segments": plan.segments,
              "segment_steps": plan.segment_steps, "record_every": plan.record_every,
              "timestep_ps": plan.timestep_fs * 1e-3, "decorrelation_steps": plan.decorrelation_steps,
              "seed": plan.seed}
    different = sorted(key for key, value in wanted.items() if dataset.metadata.get(key) != value)
    if different:
        raise fail("resume", f"the NVE data in {path} made with this training's settings (or --overwrite)",
                   f"data made with other {', '.join(different)}")


def run_training(config: TrainFlashMDConfig) -> dict:
    """Generate (or reuse) data, train (or resume) and save the model; returns a summary. With ``overwrite``
    the earlier model, data and checkpoint stay until the new model is saved (the new ones are written beside
    them, as ``OUTPUT.new...``), so a failed or interrupted run loses nothing."""
    config = validated_training(config)
    use_torch_threads(config.threads)
    suffixes = [path[len(config.output):] for path in training_files(config.output)[1:]]
    replacing = config.overwrite and any(os.path.exists(path) for path in training_files(config.output))
    prefix = staging_prefix(config.output, suffixes, replacing)
    data_path, checkpoint, partial_path = (prefix + suffix for suffix in suffixes)
    molecular = with_potential(config.system, config.model, config.member, config.hydrogen_mass_amu,
                               source_options=config.source_options(), ml_atoms=config.ml_atoms)
    began = time.perf_counter()
    plan = NVEPlan(config.temperature_k, config.segments, config.segment_steps, config.record_every,
                   config.timestep_fs, config.decorrelation_steps, seed=config.seed + 1)
    stored_before = os.path.isfile(data_path)
    if stored_before:
        dataset = Dataset.load(data_path)
        _check_stored_data(dataset, plan, data_path)
    else:
        starts = None if config.starts is None else load_starts(config.starts, molecular.topology)
        dataset = sample_nve(molecular.system, molecular.positions, plan, Placement(config.device),
                             progress=config.progress is not False, starts=starts, checkpoint=partial_path)
        dataset = replace(dataset, topology=molecular.topology,
                          metadata={**dataset.metadata, "recipe": molecular.recipe.to_json(),
                                    "system": config.system, "reference": config.model,
                                    "member": config.member, "hydrogen_mass_amu": config.hydrogen_mass_amu})
    force_inputs = config.force_inputs and config.symplectic is None
    if force_inputs and dataset.forces is None:  # computed once, in batches, and stored with the data
        reference = _reference_potential(molecular, config.device)
        dataset = dataset.with_forces(label_forces(reference, dataset.frames(), dataset.box,
                                                   progress=config.progress is not False))
        stored_before = False
    if not stored_before:
        dataset.save(data_path)
    data = Trajectories.of(dataset)
    data_seconds = time.perf_counter() - began
    torch.manual_seed(config.seed)
    numbers = [a.element.atomic_number for a in molecular.topology.atoms()]
    if config.symplectic is not None:
        model = SYMPLECTIC[config.symplectic](numbers, data.masses, config.stride_fs * 1e-3, config.hidden,
                                              config.layers, config.cutoff_nm)
    else:
        model = FlashMDNet(numbers, data.masses, config.stride_fs * 1e-3, config.hidden, config.layers,
                           config.cutoff_nm, force_inputs=force_inputs)
    training = TrainingConfig(epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                              energy_weight=config.energy_weight, seed=config.seed, input_noise=config.input_noise_nm,
                              rollout=config.rollout, kinetic_weight=config.kinetic_weight,
                              ema_decay=config.ema_decay, device=config.device)
    needs_reference = config.energy_weight > 0 or (force_inputs and (config.input_noise_nm > 0 or
                                                                      config.rollout > 1))
    reference = _reference_potential(molecular, config.device) if needs_reference else None
    command = " ".join(sys.argv)
    result = train(model, data, training, reference=reference, checkpoint=checkpoint,
                   progress=config.progress is not False, command=command,
                   kt=(unit.MOLAR_GAS_CONSTANT_R * config.temperature_k * unit.kelvin).value_in_unit(
                       unit.kilojoule_per_mole))
    metadata = {"recipe": molecular.recipe.to_json(),
                "system": config.system, "reference": config.model, "member": config.member,
                "hydrogen_mass_amu": config.hydrogen_mass_amu, "stride_fs": config.stride_fs,
                "elements": numbers, "training": asdict(config), "command": command,
                "runs": training_runs(result["history"]),
                "data_seconds": data_seconds, "training_seconds": result["seconds"],
                "samples": result["samples"], "final_validation_loss": result["history"][-1]["validation_loss"],
                "probe": reference_probe(molecular, data.positions[0, 0], config.device)}
    save(config.output, model, metadata)
    promote_staged(config.output, prefix, suffixes)  # the new data and checkpoint take the old ones' place
    return metadata
