"""The options of FlashMD, declared once: ``run --method flashmd``, ``train flashmd`` and ``bench flashmd``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from openmm import unit

from ..learning.config import TrainerConfig, TrainingRun
from ..method import BenchConfig
from ..options import option, positive_in, redefault
from ..systems import SystemOptions
from ..validation import count
from .pretrained import PAPER_FRICTION_PER_PS

def _non_negative(value, name) -> None:
    count(value, name, "a non-negative integer", minimum=0)


def _zero_or_more(quantity, argument=None):
    return positive_in(quantity, argument, allow_zero=True)


@dataclass(frozen=True)
class FlashMDRunConfig:
    flashmd_model: Optional[str] = option(None, "--flashmd-model", "model file from 'openmm-accel train flashmd', "
                                          "or a shipped model's name (default: the shipped model for --system and "
                                          "--model)")
    thermostat: str = option("langevin", "--thermostat", "Langevin (BAOAB-like splitting) or stochastic velocity "
                             "rescaling", choices=("langevin", "svr"))
    metropolis: bool = option(False, "--metropolis", "accept or reject each stride by the reference energy "
                              "(generalised HMC): exact for a volume-preserving, reversible model, whose error then "
                              "only lowers the acceptance; no energy rescaling")


@dataclass
class TrainFlashMDConfig(SystemOptions, TrainingRun, TrainerConfig):
    """``train flashmd``: NVE data of a reference potential on a system (a standard one or a lab's file), and
    the model learned from them (plain numbers in OpenMM's units: K, fs, nm, amu)."""

    model: str = option("mm", "--model", "reference potential: 'mm' or a registered ML model")
    member: Optional[int] = option(None, "--member", "single ANI-1x network 0-7 as the reference")
    hydrogen_mass_amu: Optional[float] = option(None, "--hydrogen-mass", "hydrogen mass repartitioning, amu",
                                                check=positive_in(unit.amu, "hydrogen_mass"))
    stride_fs: float = option(8.0, "--stride", "fs", check=positive_in(unit.femtosecond, "stride"))
    temperature_k: float = option(300.0, "--temperature", "K", check=positive_in(unit.kelvin, "temperature"))
    segments: int = option(40, "--segments", "independent NVE segments", check=count)
    segment_steps: int = option(400, "--segment-steps", "Verlet steps per segment", check=count)
    record_every: int = option(4, "--record-every", "Verlet steps between recorded frames",
                                check=count)
    timestep_fs: float = option(0.5, "--timestep", "Verlet step, fs", check=positive_in(unit.femtosecond, "timestep"))
    decorrelation_steps: int = option(2000, "--decorrelation-steps", "Langevin steps before each segment",
                                      check=_non_negative)
    starts: Optional[str] = option(None, "--starts", "trajectory of the system (e.g. a long MM run's DCD) whose "
                                   "frames, spread over the segments, start them: data covering its conformations")
    energy_weight: float = option(0.0, "--energy-weight", "weight of the energy-conservation loss "
                                  "((K' + V(q') - H) / N kT)^2 (0: off)", check=_zero_or_more(unit.dimensionless))
    kinetic_weight: float = option(0.0, "--kinetic-weight", "weight of the per-element kinetic energy loss "
                                   "sum_e <(K_e' - K_e) / N_e kT>^2 (batch mean; 0: off), against the shrinkage of "
                                   "hard-to-predict momenta that leaves elements at unequal temperatures",
                                   check=_zero_or_more(unit.dimensionless))
    hidden: int = option(64, "--hidden", check=count)
    layers: int = option(2, "--layers", check=count)
    cutoff_nm: float = option(0.6, "--cutoff", "message-passing cutoff, nm", check=positive_in(unit.nanometer,
                                                                                                 "cutoff"))
    symplectic: Optional[str] = option(None, "--symplectic", "a symplectic, time-reversible model (no force "
                                       "inputs): 'midpoint', a learned midpoint generating function solved by "
                                       "fixed point at each stride, or 'verlet', kick-drift-kick with a learned "
                                       "stride potential (explicit)", choices=("midpoint", "verlet"))
    force_inputs: bool = option(True, "--no-force-inputs", "a model of positions and momenta only (by default it "
                                "also sees the reference forces, which the energy rescaling evaluates anyway)")
    input_noise_nm: float = option(0.0, "--input-noise", "nm: train on inputs displaced by this RMS (hydrogen; "
                                   "heavier atoms by sqrt(m_H/m)), with the reference forces recomputed there, so "
                                   "that the model corrects its own errors in a closed loop (about its one-stride "
                                   "hydrogen position error; 0: off)", check=_zero_or_more(unit.dimensionless))
    rollout: int = option(1, "--rollout", "strides per training sample, each from the model's previous prediction "
                          "(1: one-stride pairs); penalises errors that compound", check=count)
    output: str = redefault(TrainingRun, "output", "flashmd.pt")
    threads: int = redefault(TrainingRun, "threads", 2)


@dataclass(frozen=True)
class FlashMDBenchConfig(BenchConfig):
    quick: bool = option(False, "--quick", "a smoke run")
    models: Tuple[str, ...] = option((), "--models", "model files or shipped names (default: all shipped models)")
    duration: float = option(10.0, "--duration", "ps of NVT per run", check=positive_in(unit.picosecond))
    nve_duration: float = option(2.0, "--nve-duration", "ps of NVE per run", check=positive_in(unit.picosecond))
    reference_duration: Optional[float] = option(None, "--reference-duration", "ps of the reference runs (default: "
                                                 "--duration)", check=positive_in(unit.picosecond))
    friction: float = option(PAPER_FRICTION_PER_PS, "--friction", "Langevin friction (1/ps) of the reference and "
                             "FlashMD thermostats", check=positive_in(unit.picosecond**-1))
