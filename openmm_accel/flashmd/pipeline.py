"""``openmm-accel train flashmd``: data generation, training and the saved model, resumable end to end.

Files next to the model ``OUTPUT`` (e.g. ``ala2-8fs.pt``): ``OUTPUT.data.npz`` (the NVE data, reused on
resume), ``OUTPUT.train.chk`` (the training checkpoint, written every epoch) and ``OUTPUT`` itself, whose
metadata record the stride, the system, the reference potential, elements, masses, package version,
the command line and wall times.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import List, Optional

import numpy as np
import torch
from openmm import unit

from ..storage import atomic_savez
from ..validation import fail
from .network import FlashMDNet
from .training import TrainingConfig, Trajectories, generate_nve, reference_forces, save, train


def _reference_potential(setup):
    """The reference potential as a batched EnergyModel: the ML model itself for a pure ML System
    (batched is cheapest), else the whole System evaluated by OpenMM."""
    from ..models.classical import OpenMMEnergyModel
    from ..simulate import default_platform
    if setup.model is not None and setup.region is None:
        return setup.model
    system = setup.molecular.system
    return OpenMMEnergyModel(system, setup.molecular.topology, platform=default_platform(system))


def load_starts(path: str, topology) -> np.ndarray:
    """Frames ``(F, N, 3)`` nm of a trajectory of the training system (any format mdtraj reads; files
    without a topology, such as DCD, are read with the system's)."""
    import mdtraj
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


@dataclass
class TrainFlashMDConfig:
    system: str = "alanine-dipeptide-vacuum"
    model: str = "mm"                 # reference potential: "mm" (the system's force field) or an ML model name
    member: Optional[int] = None
    hydrogen_mass_amu: Optional[float] = None
    stride_fs: float = 8.0
    temperature_k: float = 300.0
    segments: int = 40
    segment_steps: int = 400
    record_every: int = 4
    timestep_fs: float = 0.5
    decorrelation_steps: int = 2000   # Langevin steps before each segment
    starts: Optional[str] = None      # trajectory whose frames start the segments (see generate_nve)
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 2e-3
    energy_weight: float = 0.0        # weight of the energy-conservation loss (evaluates the reference potential)
    kinetic_weight: float = 0.0       # weight of the per-element kinetic energy loss
    hidden: int = 64
    layers: int = 2
    cutoff_nm: float = 0.6
    force_inputs: bool = True         # the model also sees the reference forces at its input positions
    input_noise_nm: float = 0.0       # RMS displacement of training inputs (hydrogen; mass-scaled), see train()
    rollout: int = 1                  # strides per training sample (from the model's own predictions), see train()
    output: str = "flashmd.pt"
    resume: bool = False
    seed: int = 0
    progress: Optional[bool] = None


def training_runs(history: List[dict]) -> List[dict]:
    """The commands that trained a model, in order, each with its epochs (first, last): one entry unless the
    training was resumed with another command (e.g. ``--resume --epochs 28 --rollout 3`` after 20 epochs)."""
    runs: List[dict] = []
    for entry in history:
        if not runs or runs[-1]["command"] != entry.get("command"):
            runs.append({"command": entry.get("command"), "epochs": [entry["epoch"], entry["epoch"]]})
        runs[-1]["epochs"][1] = entry["epoch"]
    return runs


def run_training(config: TrainFlashMDConfig) -> dict:
    """Generate (or reuse) data, train (or resume) and save the model; returns a summary."""
    from ..simulate import RunConfig, build_system, default_platform
    if config.stride_fs <= 0 or config.stride_fs % (config.record_every * config.timestep_fs) > 1e-9:
        raise fail("stride", f"a positive multiple of record_every x timestep "
                   f"({config.record_every * config.timestep_fs:g} fs)", f"{config.stride_fs} fs")
    data_path, checkpoint = config.output + ".data.npz", config.output + ".train.chk"
    if not config.resume:
        for path in (data_path, checkpoint):
            if os.path.exists(path):
                os.remove(path)
    setup = build_system(RunConfig(system=config.system, model=config.model, member=config.member,
                                   hydrogen_mass_amu=config.hydrogen_mass_amu, backend="torchforce"))
    molecular = setup.molecular
    began = time.perf_counter()
    stored_before = os.path.isfile(data_path)
    if stored_before:
        stored = np.load(data_path)
        data = Trajectories(stored["positions"], stored["momenta"], stored["potential"], stored["masses"],
                            float(stored["interval"]), stored["box"] if "box" in stored else None,
                            stored["forces"] if "forces" in stored else None)
    else:
        starts = None if config.starts is None else load_starts(config.starts, molecular.topology)
        data = generate_nve(molecular.system, molecular.positions, config.temperature_k, config.segments,
                            config.segment_steps, config.record_every, config.timestep_fs * 1e-3,
                            config.decorrelation_steps, platform=default_platform(molecular.system),
                            seed=config.seed + 1, progress=config.progress is not False, starts=starts)
    if config.force_inputs and data.forces is None:  # computed once, in batches, and stored with the data
        data.forces = reference_forces(_reference_potential(setup), data, progress=config.progress is not False)
        stored_before = False
    if not stored_before:
        extra = {name: value for name, value in (("box", data.box), ("forces", data.forces)) if value is not None}
        arrays = dict(positions=data.positions, momenta=data.momenta, potential=data.potential, masses=data.masses,
                      interval=data.interval, **extra)
        atomic_savez(data_path, **arrays)
    data_seconds = time.perf_counter() - began
    torch.manual_seed(config.seed)
    numbers = [a.element.atomic_number for a in molecular.topology.atoms()]
    model = FlashMDNet(numbers, data.masses, config.stride_fs * 1e-3, config.hidden, config.layers, config.cutoff_nm,
                       force_inputs=config.force_inputs)
    training = TrainingConfig(config.epochs, config.batch_size, config.learning_rate, config.energy_weight,
                              seed=config.seed, input_noise=config.input_noise_nm,
                              rollout=config.rollout, kinetic_weight=config.kinetic_weight)
    needs_reference = config.energy_weight > 0 or (config.force_inputs and (config.input_noise_nm > 0 or
                                                                             config.rollout > 1))
    reference = _reference_potential(setup) if needs_reference else None
    command = " ".join(sys.argv)
    result = train(model, data, training, reference=reference, checkpoint=checkpoint,
                   progress=config.progress is not False, command=command,
                   kt=(unit.MOLAR_GAS_CONSTANT_R * config.temperature_k * unit.kelvin).value_in_unit(
                       unit.kilojoule_per_mole))
    metadata = {"system": config.system, "reference": config.model, "member": config.member,
                "hydrogen_mass_amu": config.hydrogen_mass_amu, "stride_fs": config.stride_fs,
                "elements": numbers, "training": asdict(config), "command": command,
                "runs": training_runs(result["history"]),
                "data_seconds": data_seconds, "training_seconds": result["seconds"],
                "samples": result["samples"], "final_validation_loss": result["history"][-1]["validation_loss"]}
    save(config.output, model, metadata)
    return metadata
