"""One trainer for every learned method: Adam on shuffled mini-batches with a cosine learning-rate schedule,
an optional exponential moving average (EMA) of the weights, a seeded validation split, a checkpoint
written every epoch from which a later call resumes (same split, same shuffles, same noise), and a history
that records for each epoch its losses, learning rate, cumulative wall time and the command that ran it.

A loss that becomes NaN or infinite stops training with a :class:`SimulationError`, leaving the last good
checkpoint in place. The method supplies the model and ``losses(index, training)``: the loss of the samples ``index`` (a tensor
to minimise when ``training``) and its named parts, which the history records.
"""
from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from openmm import app, unit

from ..devices import torch_device
from ..progress import progress_bar
from ..storage import atomic_save, model_file_place, promote_staged, staging_prefix
from ..threads import use_torch_threads
from ..validation import SimulationError, fail
from .config import TrainerConfig, TrainingRun, check_ema_decay
from .reference import data_recipe, load_reference

Losses = Callable[[np.ndarray, bool], Tuple[torch.Tensor, Dict[str, float]]]


def _same(recorded, current) -> bool:
    """Equal settings: the same values (tuples and lists alike), or the same file however the path is written."""
    if isinstance(recorded, (list, tuple)) and isinstance(current, (list, tuple)):
        return len(recorded) == len(current) and all(_same(a, b) for a, b in zip(recorded, current))
    if isinstance(recorded, str) and isinstance(current, str) and recorded != current:
        return os.path.abspath(recorded) == os.path.abspath(current)
    return recorded == current


class Trainer:
    """Trains ``model`` on ``samples`` samples (see the module). ``rng`` (numpy) and ``generator`` (torch) are
    the seeded random streams a method's ``losses`` may draw from; both are checkpointed. ``validation_batch``:
    validate in batches of this many samples, the loss and its parts averaged over them weighted by their sizes
    (for losses that are means over samples; memory then stays that of a training batch: a 218-atom FlashMD
    model validated on 390 samples at once took over 15 GB); None: all samples in one call."""

    def __init__(self, model: torch.nn.Module, samples: int, config: TrainerConfig, checkpoint: Optional[str] = None,
                 validation_batch: Optional[int] = None):
        if samples < 2:
            raise fail("data", "at least two samples (one to validate on)", samples)
        check_ema_decay(config.ema_decay)
        self.device = torch_device(config.device)  # the model, its batches and the generator live there
        self.model, self.config, self.checkpoint = model.to(self.device), config, checkpoint
        self.validation_batch = validation_batch
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        order = self.rng.permutation(samples)
        n_validation = max(1, int(config.validation_fraction * samples))
        self.validation, self.training = order[:n_validation], order[n_validation:]
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(config.epochs, 1))
        self.average = None
        if config.ema_decay is not None:
            self.average = torch.optim.swa_utils.AveragedModel(
                model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay))
        self.history, self.epoch = [], 0
        self.resumed = bool(checkpoint and os.path.isfile(checkpoint))
        if self.resumed:
            self._resume()

    def _resume(self) -> None:
        try:
            saved = torch.load(self.checkpoint, weights_only=False, map_location=self.device)
            saved["model"], saved["optimizer"], saved["history"], saved["epoch"]
        except Exception as error:  # truncated, foreign or damaged: never continue from it
            raise fail("resume", "a whole training checkpoint to continue from", f"{self.checkpoint} "
                       f"({type(error).__name__}: {error}); remove it to train anew") from None
        self._check_settings(saved.get("config", {}))
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as error:  # e.g. another network size: torch's "size mismatch"
            raise fail("resume", "the network the training checkpoint was made with (the same size and layout)",
                       f"{self.checkpoint}: {str(error).splitlines()[0]}") from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.history, self.epoch = saved["history"], saved["epoch"]
        if "rng" in saved:  # (older checkpoints lack the generator states)
            self.rng.bit_generator.state = saved["rng"]
            self.generator.set_state(saved["generator"].cpu())  # (a generator state is a CPU tensor)
        if self.average is not None and saved.get("average") is not None:
            self.average.load_state_dict(saved["average"])
        total = max(self.config.epochs, 1)
        if self.scheduler.T_max != total:  # resumed with another number of epochs: the new total's schedule
            self.scheduler.T_max = total
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = 0.5 * base * (1.0 + np.cos(np.pi * min(self.epoch, total) / total))

    def _check_settings(self, recorded: dict) -> None:
        """Refuse to continue with settings other than those the checkpoint's training was started with
        (except those its config may change on resume, e.g. the number of epochs, and the job's own)."""
        current = asdict(self.config)
        free = set(getattr(self.config, "resumable", ())) | {item.name for item in fields(TrainingRun)}
        different = sorted(key for key in recorded.keys() & current.keys()
                           if key not in free and not _same(recorded[key], current[key]))
        if different:
            changes = ", ".join(f"{key} {current[key]!r} (was {recorded[key]!r})" for key in different)
            raise fail("resume", f"the settings the training in {self.checkpoint} was started with (or --overwrite "
                       "to train anew)", f"other {changes}")

    def _save(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "history": self.history, "epoch": self.epoch,
                 "config": asdict(self.config), "rng": self.rng.bit_generator.state,
                 "generator": self.generator.get_state(),
                 "average": None if self.average is None else self.average.state_dict()}
        atomic_save(self.checkpoint, lambda temporary: torch.save(state, temporary))

    def _use_weights(self, weights) -> None:
        with torch.no_grad():
            for parameter, value in zip(self.model.parameters(), weights):
                parameter.copy_(value)

    def _validated(self, losses: Losses) -> Tuple[torch.Tensor, Dict[str, float]]:
        if self.average is None:
            return self._validation_loss(losses)
        weights = [parameter.detach().clone() for parameter in self.model.parameters()]
        self._use_weights(self.average.module.parameters())
        try:
            return self._validation_loss(losses)
        finally:
            self._use_weights(weights)

    def _validation_loss(self, losses: Losses) -> Tuple[torch.Tensor, Dict[str, float]]:
        if self.validation_batch is None or len(self.validation) <= self.validation_batch:
            return losses(self.validation, False)
        total, parts = 0.0, {}
        for start in range(0, len(self.validation), self.validation_batch):
            index = self.validation[start:start + self.validation_batch]
            loss, named = losses(index, False)
            weight = len(index) / len(self.validation)
            total = total + loss.detach() * weight
            parts = {name: parts.get(name, 0.0) + value * weight for name, value in named.items()}
        return total, parts

    def _check(self, loss: torch.Tensor, epoch: int) -> None:
        if not torch.isfinite(loss):
            kept = f"the checkpoint of epoch {self.epoch} is kept" if self.checkpoint and self.epoch else "nothing saved"
            raise SimulationError(f"training diverged: the loss became {loss.item()} in epoch {epoch + 1}; {kept} "
                                  "(try a lower learning rate)")

    def fit(self, losses: Losses, progress: bool = False, command: Optional[str] = None,
            description: str = "training") -> dict:
        """Train up to ``config.epochs`` (from where a checkpoint left off); with EMA the model ends with the
        averaged weights. Returns the history and the training wall time summed over resumed runs."""
        began = time.perf_counter() - (self.history[-1].get("seconds", 0.0) if self.history else 0.0)
        for epoch in progress_bar(range(self.epoch, self.config.epochs), progress, desc=description, unit="epoch"):
            self.model.train()
            learning_rate = self.optimizer.param_groups[0]["lr"]
            shuffled = self.rng.permutation(self.training)
            for batch in np.array_split(shuffled, max(1, len(shuffled) // self.config.batch_size)):
                loss, _ = losses(batch, True)
                self._check(loss, epoch)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                if self.average is not None:
                    self.average.update_parameters(self.model)
            self.scheduler.step()
            self.model.eval()
            total, parts = self._validated(losses)
            self._check(total, epoch)
            self.epoch = epoch + 1
            self.history.append({"epoch": self.epoch, "validation_loss": total.item(), **parts,
                                 "learning_rate": learning_rate, "seconds": time.perf_counter() - began,
                                 "command": command})
            if self.checkpoint:
                self._save()
        if self.average is not None:
            self._use_weights(self.average.module.parameters())
        return {"history": self.history, "seconds": self.history[-1]["seconds"] if self.history else 0.0}


@dataclass
class DataTraining:
    """The shared start of a ``train`` job on reference data (:func:`start_data_training`): the ``data``, the
    frames per walker it trains on (``kept``; the rest are held out), and the model file's ``folder`` with
    the earlier results found there (``existing``). With ``overwrite`` these stay until the new model is
    complete: the new training checkpoints are written under ``prefix`` (the model file's name +
    ``.new``) and take the old ones' place in :meth:`complete`, so a refused, failed or interrupted job
    loses nothing."""

    data: object
    kept: int
    folder: str
    existing: list
    output: str
    prefix: str
    checkpoints: Sequence[str]

    def checkpoint(self, suffix: str = ".train.chk") -> str:
        """Where this job's training checkpoint ``suffix`` is written."""
        return self.prefix + suffix

    def finish(self, model, result: dict, began: float, save: Callable) -> None:
        """Record the training's and the job's wall time (since ``began``) in the model's metadata, save it with
        the method's ``save(path, model)`` and :meth:`complete` the job."""
        model.metadata["training_seconds"] = result["seconds"]
        model.metadata["wall_seconds"] = time.perf_counter() - began
        save(self.output, model)
        self.complete()

    def complete(self) -> None:
        """After the new model is saved: its checkpoints replace the earlier ones."""
        promote_staged(self.output, self.prefix, self.checkpoints)

    def provenance(self, config, topology, positions, **data_notes) -> dict:
        """What a model file records of its data: the topology (as PDB text, with ``positions`` nm), the
        data's system and recipe, its folder, settings and split (and ``data_notes``), and the command."""
        text = io.StringIO()
        app.PDBFile.writeFile(topology, positions * unit.nanometer, text)
        data = self.data
        recipe = data_recipe(data.metadata)
        return {"topology_pdb": text.getvalue(), "system": data.metadata.get("system"),
                **({"recipe": recipe.to_json()} if recipe is not None else {}),
                "data": {"folder": os.path.abspath(config.data), "settings": data.metadata,
                         "training_frames_per_walker": self.kept, "held_out_fraction": config.held_out,
                         **data_notes},
                "command": " ".join(sys.argv)}



def start_data_training(config, checkpoints: Sequence[str]) -> DataTraining:
    """The shared start of a ``train`` job on reference data (a config with the options of
    :class:`~.config.TrainingRun` and :class:`~.config.ReferenceTraining`, already :func:`~..options.checked`):
    torch's threads set, the output folder writable, an earlier model or one of its ``checkpoints`` (suffixes of the
    model file's name) refused unless resumed or overwritten (a resume needs a checkpoint), the data read."""
    use_torch_threads(config.threads)
    if not config.data:
        raise fail("data", "a folder of reference data (--data)", None)
    existing = model_file_place(config.output, checkpoints, config.resume, config.overwrite)
    if config.resume and not set(existing) - {os.path.basename(config.output)}:
        raise fail("resume", f"a training checkpoint {config.output}{checkpoints[0]}", "none")
    data = load_reference(config.data)
    kept = int(round(data.positions.shape[1] * (1.0 - config.held_out)))
    if kept < 2:
        raise fail("held_out", f"a fraction that leaves training frames (at least 2 of each walker's "
                   f"{data.positions.shape[1]})", config.held_out)
    prefix = staging_prefix(config.output, checkpoints, config.overwrite and bool(existing))
    return DataTraining(data, kept, os.path.dirname(os.path.abspath(config.output)), existing, config.output, prefix,
                        tuple(checkpoints))

