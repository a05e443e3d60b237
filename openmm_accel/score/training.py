"""Training an energy-based diffusion model on coarse-grained configurations, with the shared trainer
(:mod:`openmm_accel.learning.trainer`): denoising score matching plus, with weight ``fp_weight``, the
Fokker-Planck residual (its unbiased two-probe estimate, divided by D^2 for D degrees of freedom, so that
``fp_weight`` means what the paper's alpha means), and the versioned model file."""
from __future__ import annotations

import time
from dataclasses import asdict, replace
from typing import Optional, Sequence

import numpy as np
import torch
from openmm import unit

from ..learning.trainer import Trainer, start_data_training
from ..options import checked
from ..validation import as_array, fail, positive
from .config import ScoreTrainingConfig, TrainScoreConfig
from .diffusion import T_MIN, VPDiffusion
from .mapping import Mapping
from .model import ScoreModel, save
from .network import EnergyNet, TimeExperts



def normalisation(positions: np.ndarray) -> float:
    """The one scalar that divides centred coordinates: their standard deviation (nm)."""
    centred = positions - positions.mean(axis=-2, keepdims=True)
    return float(np.sqrt(np.mean(centred**2)))


def train_score(positions: np.ndarray, config: ScoreTrainingConfig, checkpoint: Optional[str] = None,
                progress: bool = False, command: Optional[str] = None, temperature_k: float = 300.0,
                metadata: Optional[dict] = None) -> tuple:
    """Train on bead positions ``(F, n, 3)`` nm (a Quantity is converted) at ``temperature_k``; returns the
    :class:`ScoreModel` and the trainer's result."""
    positions = as_array(positions, unit.nanometer, "positions")
    temperature_k = positive(temperature_k, unit.kelvin, "temperature_k")
    if positions.ndim != 3 or positions.shape[-1] != 3 or positions.shape[1] < 2:
        raise fail("positions", "bead positions (F, n >= 2, 3) nm", f"shape {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise fail("positions", "finite positions", "NaN or infinite values")
    scale = normalisation(positions)
    # float32: training is ~1.5x faster than in float64, and the residual's finite differences (steps 1e-4
    # in normalised units) stay far above float32 round-off; a loaded model evaluates in float64
    x = torch.as_tensor((positions - positions.mean(axis=-2, keepdims=True)) / scale, dtype=torch.float32)
    bounds = expert_bounds(config.experts)
    epochs = list(config.expert_epochs) or [config.epochs] * (len(bounds) - 1)
    if len(epochs) != len(bounds) - 1:
        raise fail("expert_epochs", f"one number of epochs per expert ({len(bounds) - 1})", list(epochs))
    nets, histories, seconds = [], [], 0.0
    for index, (low, high) in enumerate(zip(bounds[:-1], bounds[1:])):
        torch.manual_seed(config.seed + index)
        net = EnergyNet(positions.shape[1], config.hidden, config.layers)
        part = replace(config, epochs=epochs[index], seed=config.seed + index)
        saved = None if checkpoint is None else (checkpoint if len(bounds) == 2 else f"{checkpoint}.expert{index}")
        label = "score training" + (f", expert {index + 1} of {len(bounds) - 1} (t {low:g}-{high:g})"
                                    if len(bounds) > 2 else "")
        result = _fit(net, x, part, saved, progress, command, label, max(low, T_MIN), high)
        net.cpu().double().eval()  # used as a loaded model file is: float64 (the float32 weights convert exactly)
        nets.append(net)
        histories += [{**entry, "expert": index} for entry in result["history"]]
        seconds += result["seconds"]
    model_net = nets[0] if len(nets) == 1 else TimeExperts(nets, bounds)
    meta = {**(metadata or {}), "training": asdict(config), "history": histories}
    return ScoreModel(model_net, scale, temperature_k, meta), {"history": histories, "seconds": seconds}


def expert_bounds(inner: Sequence[float]) -> list:
    """``[0, *inner, 1]``: the time ranges of the experts (one range, [0, 1], without experts)."""
    bounds = [0.0, *[float(b) for b in inner], 1.0]
    if any(b <= a for a, b in zip(bounds[:-1], bounds[1:])):
        raise fail("experts", "increasing diffusion times strictly between 0 and 1", list(inner))
    return bounds


def _fit(net: EnergyNet, x: torch.Tensor, config: ScoreTrainingConfig, checkpoint: Optional[str], progress: bool,
         command: Optional[str], label: str, low: float, high: float) -> dict:
    """Train one energy network on diffusion times in [low, high]: DSM plus the residual below fp_max_t."""
    diffusion = VPDiffusion(x.shape[1])
    trainer = Trainer(net, len(x), config, checkpoint)
    generator, x = trainer.generator, x.to(trainer.device)
    fp_high = min(high, config.fp_max_t)

    def losses(index, training: bool):
        batch = x[torch.as_tensor(index)]
        t = low + (high - low) * torch.rand(len(batch), generator=generator, device=x.device)
        with torch.enable_grad():  # the score is a gradient, in validation too
            dsm = diffusion.dsm_loss(net, batch, t, generator).mean()
            fp = torch.zeros((), device=x.device)
            if config.fp_weight > 0 and fp_high > low:
                some = batch[:config.fp_batch]
                t_fp = low + (fp_high - low) * torch.rand(len(some), generator=generator, device=x.device)
                noisy, _ = diffusion.diffuse(some, t_fp, generator)
                r1, r2 = diffusion.fp_residual_pair(net, noisy, t_fp, generator)
                # per dimension squared, as the paper's code weighs it: r grows like D (a sum over D terms)
                fp = (r1 * r2).mean() / diffusion.dimension**2
            total = dsm + config.fp_weight * fp
        return (total if training else total.detach()), {"dsm": dsm.item(), "fp": fp.item()}

    return trainer.fit(losses, progress, command, label)


def train(config: TrainScoreConfig) -> str:
    """``openmm-accel train score``: train on the reference data's frames (minus the held-out end) and save the
    model; returns what was done, in a line."""
    config = checked(config)
    experts = tuple(config.experts)
    checkpoints = [".train.chk"] if not experts else [f".train.chk.expert{i}" for i in range(len(experts) + 1)]
    job = start_data_training(config, checkpoints)
    data = job.data
    mapping = Mapping.of(data.topology, config.mapping)
    positions = mapping(data.positions[:, :job.kept]).reshape(-1, mapping.beads, 3)
    atoms = list(data.topology.atoms())
    metadata = {**job.provenance(config, mapping.topology(data.topology), positions[0]),
                "atoms": list(mapping.atoms), "mapping": mapping.name, "beads": mapping.describe(data.topology),
                "elements": [atoms[i].element.atomic_number for i in mapping.atoms],
                # the atoms' own masses (the data's may be repartitioned): CG dynamics use them
                "masses": [atoms[i].element.mass.value_in_unit(unit.amu) for i in mapping.atoms]}
    began = time.perf_counter()
    model, result = train_score(positions, config, job.checkpoint(), config.progress is not False,
                                metadata["command"], data.metadata["temperature_k"], metadata)
    job.finish(model, result, began, save)
    last = result["history"][-1]
    return (f"wrote {config.output}: {mapping.beads} beads, {len(positions)} frames, {len(result['history'])} epochs "
            f"in {result['seconds']:.0f} s, validation loss {last['validation_loss']:.4f} (dsm {last['dsm']:.4f}, "
            f"fp {last['fp']:.3g})")
