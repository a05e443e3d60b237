"""The options of force-guided drifting, declared once: ``run --method drift``, ``train drift``, ``sample
--method drift`` and ``bench drift``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from openmm import unit

from ..learning.config import ReferenceTraining, TrainerConfig, TrainingRun
from ..method import BenchConfig, SampleConfig, at_least_two_samples
from ..options import option, positive_in, redefault
from ..validation import check_seed, count, fail
from .field import GUIDANCE

REPRESENTATIONS = ("coordinates", "distances")
DATA_SCORES = ("positions", "forces")
GENERATORS = ("cartesian", "internal", "projected")


def _positive_widths(values, name) -> None:
    if not values or any(not 0.0 < width < float("inf") for width in values):
        raise fail(name, "positive fractions of the mean feature distance", list(values))


@dataclass
class DriftTrainingConfig(TrainerConfig):
    """The shared trainer's settings, the generator's size, the representation and the force guidance."""

    batch_size: int = redefault(TrainerConfig, "batch_size", 256)
    learning_rate: float = redefault(TrainerConfig, "learning_rate", 1e-3)
    hidden: int = option(256, "--hidden", "width of the generator's MLP", check=count)
    layers: int = option(3, "--layers", "hidden layers of the generator", check=count)
    representation: str = option("coordinates", "--representation", "space of the drifting field",
                                 choices=REPRESENTATIONS)
    guidance: str = option("none", "--guidance", "force guidance: fi (force-interpolated), fk (force-aligned "
                           "kernel) or none", choices=GUIDANCE)
    omega: float = option(1.0, "--omega", "strength of the force guidance (1: the first-order Boltzmann correction "
                          "in full)", check=positive_in(unit.dimensionless, allow_zero=True))
    widths: Tuple[float, ...] = option((0.05, 0.1, 0.2), "--widths", "kernel widths, as fractions of the data's "
                                       "mean feature distance", check=_positive_widths)
    positives: int = option(256, "--positives", "data frames per step the field attracts samples to (the batch and "
                            "random others; more resolve finer structure)", check=count)
    generator: str = option("cartesian", "--generator", "cartesian: atom positions from an MLP; internal: bond "
                            "lengths, angles and torsions from an MLP (rotors turn, bonds stay bonds); projected: "
                            "atom positions from an MLP, rebuilt with bond lengths and angles bounded (torsions "
                            "kept)", choices=GENERATORS)
    limit: Optional[float] = option(None, "--limit", "internal and projected generators: bond lengths and angles "
                                    "stay within this many of the data's spreads (inside the validity tolerance; "
                                    "None: 4 for internal, whose bound is smooth, 2 for projected, whose samples it "
                                    "clips)", check=positive_in(unit.dimensionless))
    data_score: str = option("positions", "--data-score", "how guidance knows the data's own score: positions "
                             "(their kernel mean shift: any data) or forces (the data are Boltzmann at their own "
                             "temperature, so their score is their forces over its kT: less noisy; not with "
                             "--biased-subset)", choices=DATA_SCORES)
    guide_stiff: bool = option(False, "--guide-stiff", "let force guidance act along bond lengths and angles too "
                               "(by default it leaves them alone: there its correction is noise, docs/drift.md)")


@dataclass
class TrainDriftConfig(TrainingRun, ReferenceTraining, DriftTrainingConfig):
    """``train drift``: the trainer's and the generator's settings, the reference data and the model file."""

    biased_subset: Optional[int] = option(None, "--biased-subset", "train on this many frames drawn evenly from the "
                                          "phi/psi basins (a deliberately biased data set, for the bias-correction "
                                          "experiment)", check=count)
    temperature_k: Optional[float] = option(None, "--temperature", "K (drift: of the Boltzmann distribution force "
                                            "guidance aims at; None: the data's; another needs --guidance fi or fk)",
                                            check=positive_in(unit.kelvin))
    epochs: int = redefault(TrainerConfig, "epochs", 100)
    output: str = redefault(TrainingRun, "output", "drift.npz")


@dataclass(frozen=True)
class DriftRunConfig:
    drift_model: Optional[str] = option(None, "--drift-model", "model file from 'openmm-accel train drift', or a "
                                        "shipped model's name (default: the shipped model for --system)")


@dataclass(frozen=True)
class DriftSampleConfig(SampleConfig):
    drift_model: Optional[str] = option(None, "--drift-model", "model file or shipped name (default: the shipped "
                                        "model of --system)")
    batch: int = option(10000, "--batch", "conformations per forward pass (and per write)", check=count)
    refine: float = option(0.0, "--refine", "ps of MD with the reference potential (as the data were made, after "
                           "at most 100 minimisation steps) for each sample, written apart to FILE.refined.EXT (0: "
                           "raw samples only; a few samples per second for 1 ps of alanine dipeptide)",
                           check=positive_in(unit.picosecond, allow_zero=True))
    progress: Optional[bool] = option(None, "--no-progress", "no progress bar for --refine")


@dataclass(frozen=True)
class DriftBenchConfig(BenchConfig):
    models: Tuple[str, ...] = option((), "--models", "model files or shipped names (default: all shipped models)")
    data: Optional[str] = option(None, "--data", "the reference data folder (default: the one recorded in each "
                                 "model)")
    samples: int = option(20000, "--samples", "conformations per model (at least 2: distributions are compared)",
                          check=at_least_two_samples)
    energy_samples: int = option(2000, "--energy-samples", "of them, how many get the reference potential's energy",
                                 check=count)
    md_picoseconds: float = option(5.0, "--md-picoseconds", "ps of the data's MD timed for its speed",
                                   check=positive_in(unit.picosecond))
    seed: int = option(1, "--seed", "seed of the samples and of the MD", check=check_seed)
