"""The options of score-based forces, declared once: ``run --method score``, ``train score``, ``sample
--method score`` and ``bench score``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple

from openmm import unit

from ..learning.config import ReferenceTraining, TrainerConfig, TrainingRun
from ..method import BenchConfig, SampleConfig, at_least_two_samples
from ..options import option, positive_in, redefault
from ..validation import check_seed, count, fail
from .diffusion import CORRECTOR_STEPS, SDE_STEPS, SNR
from .mapping import NAMED

MD_STARTS = ("data", "iid")


def _non_negative(value, name) -> None:
    count(value, name, "a non-negative integer", minimum=0)


@dataclass
class ScoreTrainingConfig(TrainerConfig):
    """The shared trainer's settings, the network's size and the Fokker-Planck term. The defaults are the
    settings every model in docs/score.md was trained with (batch 32, learning rate 2e-3, 2 hidden layers of
    64 per bead)."""

    resumable: ClassVar[Tuple[str, ...]] = ("epochs", "expert_epochs")
    hidden: int = option(64, "--hidden", "width of each bead's MLP", check=count)
    layers: int = option(2, "--layers", "hidden layers of each bead's MLP", check=count)
    fp_weight: float = option(0.0, "--fp-weight", "weight of the Fokker-Planck residual (the paper: 5e-4; 0: off)",
                              check=positive_in(unit.dimensionless, allow_zero=True))
    fp_max_t: float = option(1.0, "--fp-max-t", "the residual only below this diffusion time (where the MD energy "
                             "is used)", check=positive_in(unit.dimensionless))
    fp_batch: int = option(64, "--fp-batch", "configurations per batch that also get the residual", check=count)
    experts: Tuple[float, ...] = option((), "--experts", "diffusion times between time-partitioned experts, e.g. 0.1 "
                                        "0.6 (three networks, trained one after another from the smallest times; "
                                        "the first gives the MD forces)")
    expert_epochs: Tuple[int, ...] = option((), "--expert-epochs", "epochs of each expert, from the smallest times "
                                            "up (default: --epochs each)")


@dataclass(frozen=True)
class ScoreRunConfig:
    score_model: Optional[str] = option(None, "--score-model", "model file from 'openmm-accel train score', or a "
                                        "shipped model's name (default: the shipped model for --system)")
    replicas: int = option(1, "--replicas", "independent copies of the molecule in one System (one batched network "
                           "call for all: many trajectories for little more than the cost of one)", check=count)


@dataclass
class TrainScoreConfig(TrainingRun, ReferenceTraining, ScoreTrainingConfig):
    """``train score``: the trainer's and the network's settings, the reference data and the model file."""

    mapping: str = option("backbone", "--mapping", f"beads: {', '.join(NAMED)} (one per alpha carbon), or an mdtraj "
                          "selection (one bead per selected atom)")
    output: str = redefault(TrainingRun, "output", "score.npz")
    threads: int = redefault(TrainingRun, "threads", 2)


@dataclass(frozen=True)
class SamplerConfig:
    """The reverse-SDE sampler's settings."""

    sde_steps: int = option(SDE_STEPS, "--sde-steps", "reverse-SDE steps from t = 1 to 1e-5", check=count)
    corrector_steps: int = option(CORRECTOR_STEPS, "--corrector-steps", "Metropolis-adjusted Langevin steps at "
                                  "each noise level (0: the plain reverse SDE)", check=_non_negative)
    snr: float = option(SNR, "--snr", "the corrector's signal-to-noise ratio: its step is 2 (snr |z| / |score|)^2",
                        check=positive_in(unit.dimensionless))

    def sampler(self) -> dict:
        """The settings as keywords of ``ScoreModel.sample``."""
        return {"steps": self.sde_steps, "corrector_steps": self.corrector_steps, "snr": self.snr}


@dataclass(frozen=True)
class ScoreSampleConfig(SampleConfig, SamplerConfig):
    score_model: Optional[str] = option(None, "--score-model", "model file or shipped name (default: the shipped "
                                        "model of --system)")


@dataclass(frozen=True)
class ScoreBenchConfig(BenchConfig, SamplerConfig):
    models: Tuple[str, ...] = option((), "--models", "model files or shipped names (default: all shipped models)")
    data: Optional[str] = option(None, "--data", "the reference data folder (default: the one recorded in each "
                                 "model)")
    samples: int = option(20000, "--samples", "iid samples per model (at least 2: distributions are compared)",
                          check=at_least_two_samples)
    md_duration: float = option(0.5, "--md-duration", "ns of CG MD per replica", check=positive_in(unit.nanosecond))
    md_discard: float = option(10.0, "--md-discard", "ps at the start of each replica left out of the comparison",
                               check=positive_in(unit.picosecond, allow_zero=True))
    md_start: str = option("data", "--md-start", "where CG MD replicas start: the data's first frame, or the "
                           "model's own iid samples (then MD must keep the model's distribution, no burn-in)",
                           choices=MD_STARTS)
    md_timestep: float = option(2.0, "--md-timestep", "fs, CG MD", check=positive_in(unit.femtosecond))
    md_friction: float = option(1.0, "--md-friction", "1/ps, CG MD", check=positive_in(unit.picosecond**-1))

    def md_frames_kept(self) -> int:
        """CG MD frames (1 ps apart) per replica compared with the reference: at least 2, checked before any
        work."""
        kept = max(int(round(self.md_duration * 1000)), 2) - int(round(self.md_discard))
        if kept < 2:
            raise fail("md_duration", f"more than --md-discard ({self.md_discard:g} ps) and 2 frames (1 ps apart)",
                       f"{self.md_duration:g} ns")
        return kept
    all_atom_duration: float = option(2.0, "--all-atom-duration", "ps of all-atom MD in implicit solvent for its "
                                      "speed (a tenth of it in explicit water)", check=positive_in(unit.picosecond))
    replicas: int = option(64, "--replicas", "CG MD trajectories, side by side in one System", check=count)
    seed: int = option(1, "--seed", "seed of the samples and of the MD", check=check_seed)
    backend: str = option("torchforce", "--backend", "Force bridge of the CG MD", choices=("torchforce",
                                                                                          "pythonforce"))
