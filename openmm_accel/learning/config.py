"""The settings every learned method's training shares, declared once as options of every ``train`` job
(:mod:`openmm_accel.options`): the trainer's (:class:`TrainerConfig`), the model file and its guards
(:class:`TrainingRun`) and the reference data it learns from (:class:`ReferenceTraining`). A method's
training config extends them; :func:`openmm_accel.options.redefault` gives one of them another default."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from openmm import unit

from ..devices import device_option
from ..options import option, positive_in
from ..threads import check_threads
from ..validation import check_seed, count, fail


def check_ema_decay(value, argument: str = "ema_decay") -> None:
    """Refuse an EMA decay outside (0, 1) (None: no averaging)."""
    if value is not None and not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise fail(argument, "a decay between 0 and 1 (exclusive)", value)


def _check_seed(value, argument) -> None:
    check_seed(value, argument, minimum=0)


def _check_fraction(value, argument) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise fail(argument, "a fraction in [0, 1)", value)


@dataclass
class TrainerConfig:
    """The trainer's settings; each is also an option of every ``train`` job (declared here once).
    ``resumable``: those a resumed training may change (the others are refused: the checkpoint's training
    was started with them)."""

    resumable: ClassVar[Tuple[str, ...]] = ("epochs",)
    epochs: int = option(50, "--epochs", "passes over the training data", check=count)
    batch_size: int = option(32, "--batch-size", "frames per optimiser step", check=count)
    learning_rate: float = option(2e-3, "--learning-rate", "Adam's step size",
                                       check=positive_in(unit.dimensionless))
    validation_fraction: float = 0.1
    seed: int = option(0, "--seed", "seed of the initial weights, batches and noise", check=_check_seed)
    device: str = device_option("where the model trains (train flashmd: also where OpenMM makes its data)")
    ema_decay: Optional[float] = option(None, "--ema", "keep and save an exponential moving average of the weights "
                                        "with this decay per step (e.g. 0.999; validation scores the average)",
                                        check=check_ema_decay)


@dataclass
class TrainingRun:
    """What every ``train`` job shares besides the trainer's settings: the model file and its guards."""

    output: str = option("model.npz", "--output", "model file")
    threads: int = option(1, "--threads", "torch intra-op threads", check=check_threads)
    resume: bool = option(False, "--resume", "continue from OUTPUT's training checkpoint")
    overwrite: bool = option(False, "--overwrite", "replace an earlier model and its training checkpoint at OUTPUT "
                             "(without it, or --resume, they are refused)")
    progress: Optional[bool] = option(None, "--no-progress", "no progress bar")


@dataclass
class ReferenceTraining:
    """The reference data (``openmm-accel data``) a ``train`` job learns from, and the part kept out of it."""

    data: Optional[str] = option(None, "--data", "folder of 'openmm-accel data' (reference MD with its topology)")
    held_out: float = option(0.2, "--held-out", "fraction of each walker's frames, at its end, kept out of "
                             "training (for the benchmark)", check=_check_fraction)
