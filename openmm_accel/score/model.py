"""A trained score model and its two uses: forces for OpenMM and independent samples.

Coordinates enter the network centred (mean over beads removed) and divided by one scalar ``scale`` (the
data's standard deviation, nm). The potential of mean force for MD is ``U(x) = kT E((x - mean x) / scale,
T_MIN)``, so its forces are ``kT s / scale`` (autograd carries the chain rule): :class:`ScoreEnergyModel`
is that potential as a batched :class:`~openmm_accel.models.base.EnergyModel`, ready for the package's Force
bridge (TorchForce or PythonForce).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from openmm import unit
from torch import Tensor

from ..learning.model_file import read_model, save_model
from ..models.base import EnergyModel
from .. import validation
from ..validation import fail, positive
from .diffusion import CORRECTOR_STEPS, SDE_STEPS, SNR, T_MIN, VPDiffusion
from .network import EnergyNet, TimeExperts

METHOD = "score"


def kt_of(temperature_k: float) -> float:
    """k_B T in kJ/mol."""
    return (unit.MOLAR_GAS_CONSTANT_R * temperature_k * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


class ScoreEnergyModel(EnergyModel):
    """``U(x) = kT E((x - mean x) / scale, T_MIN)`` in kJ/mol for bead positions ``(B, n, 3)`` nm; with
    ``replicas`` K, the sum over K independent copies of the molecule, ``(B, K n, 3)`` (one network call
    for all of them: a System of K non-interacting copies samples K trajectories for little more than one)."""

    def __init__(self, net: EnergyNet, scale: float, temperature_k: float, atomic_numbers=None, replicas: int = 1):
        super().__init__(net.n * replicas, None if atomic_numbers is None else list(atomic_numbers) * replicas)
        self.net = net
        self.beads = net.n
        self.scale = float(scale)
        self.kt = kt_of(temperature_k)
        self.t_min = T_MIN

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        batch = positions.shape[0]
        x = positions.to(torch.float64).reshape(-1, self.beads, 3)
        x = (x - x.mean(dim=1, keepdim=True)) / self.scale
        t = torch.full((x.shape[0],), self.t_min, dtype=torch.float64, device=x.device)
        return self.kt * self.net(x, t).reshape(batch, -1).sum(1)


class ScoreModel:
    """A trained energy network (or time-partitioned experts) with what it needs to be used: the
    normalisation ``scale`` (nm), the temperature of its data, its mapping (bead atoms and names) and
    metadata (provenance)."""

    def __init__(self, net, scale: float, temperature_k: float, metadata: Optional[dict] = None):
        self.net, self.scale, self.temperature_k = net, float(scale), float(temperature_k)
        self.metadata = dict(metadata or {})
        self.diffusion = VPDiffusion(net.n)

    @property
    def md_net(self) -> EnergyNet:
        """The network of the smallest diffusion times, whose energy at T_MIN is the potential of mean force."""
        return self.net.nets[0] if isinstance(self.net, TimeExperts) else self.net

    def energy_model(self, replicas: int = 1) -> ScoreEnergyModel:
        """The model's potential of mean force at its temperature (of ``replicas`` copies), for OpenMM."""
        return ScoreEnergyModel(self.md_net, self.scale, self.temperature_k, self.metadata.get("elements"), replicas)

    def sample(self, count: int, steps: int = SDE_STEPS, seed: int = 1, batch: int = 1000,
               corrector_steps: int = CORRECTOR_STEPS, snr: float = SNR) -> np.ndarray:
        """``count`` independent configurations ``(count, n, 3)`` nm (centred) by the reverse SDE, seeded;
        ``corrector_steps`` Metropolis-adjusted Langevin steps per noise level (see ``VPDiffusion.sample``)."""
        for value, name, minimum in ((count, "count", 1), (steps, "steps", 1), (batch, "batch", 1),
                                     (corrector_steps, "corrector_steps", 0)):
            validation.count(value, name, "an integer >= 1" if minimum else "a non-negative integer", minimum)
        positive(snr, unit.dimensionless, "snr")
        generator = torch.Generator(self.device).manual_seed(seed)  # on the model's device, as every batch
        self.net.eval()
        parts = [self.diffusion.sample(self.net, min(batch, count - start), steps, generator,
                                       corrector_steps=corrector_steps, snr=snr)
                 for start in range(0, count, batch)]
        return torch.cat(parts).cpu().numpy() * self.scale

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "ScoreModel":
        """Move the network to ``device`` (a ``torch.device``, see :func:`openmm_accel.devices.torch_device`),
        where :meth:`sample` then draws; returns the model."""
        self.net.to(device)
        return self


def save(path: str, model: ScoreModel) -> None:
    """Write a score model file: weights, architecture, normalisation, temperature, mapping, provenance."""
    save_model(path, METHOD, {name: value.float().numpy() if value.is_floating_point() else value.numpy()
                              for name, value in model.net.state_dict().items()},
               model.net.config(), {**model.metadata, "scale_nm": model.scale, "temperature_k": model.temperature_k})


def load(path: str, argument: str = "path") -> ScoreModel:
    """Read a score model file (refused, naming ``argument``, if missing, damaged, foreign or of another
    method)."""
    header, arrays = read_model(path, METHOD, "score model file", argument)
    config = header["config"]
    if "experts" in config:
        net = TimeExperts([EnergyNet(**expert) for expert in config["experts"]], config["bounds"])
    else:
        net = EnergyNet(**config)
    net.load_state_dict({name: torch.as_tensor(value) for name, value in arrays.items()})
    net.double().eval()  # trained in float32; forces and samples are evaluated in float64
    metadata = header["metadata"]
    return ScoreModel(net, metadata["scale_nm"], metadata["temperature_k"], metadata)


def check_mapping(model: ScoreModel, beads: Sequence[str], path: str, argument: str = "score_model") -> None:
    """Refuse a model made for other beads than ``beads`` (``RESNAME-ATOMNAME`` of the molecule's atoms the
    model maps), naming ``argument``: the error shows the beads the model was made for and those it found."""
    trained = model.metadata.get("beads")
    if trained is not None and list(trained) != list(beads):
        raise fail(argument, f"a molecule with the beads the model {path} was made for ({', '.join(trained)})",
                   f"{', '.join(beads)} at those atoms")
