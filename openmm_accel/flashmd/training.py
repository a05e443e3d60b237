"""FlashMD training: NVE data (:mod:`openmm_accel.learning.sampling`), pairs one stride apart, and the
losses the shared trainer minimises (:mod:`openmm_accel.learning.trainer`).

Data: thermalised starts from a Langevin (ABOBA) run at the target temperature, each followed by an NVE
velocity-Verlet segment with the reference potential (the System), recorded every ``record_every``
steps. Pairs ``(q, p)(t) -> (q, p)(t + stride)`` are taken within segments, and every pair is also used
time-reversed, ``(q', -p') -> (q, -p)``, which Hamiltonian dynamics maps exactly.
Loss (mass-scaled, normalised by the data's spread): positions + momenta + optional energy
conservation ``((K' + V(q') - H) / (N kT))^2`` with the reference potential.
"""
from __future__ import annotations

import dataclasses
import os
import zipfile
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import numpy as np
import openmm
import torch
from openmm import unit

from ..devices import Placement
from ..learning.dataset import Dataset
from ..learning.sampling import NVEPlan, sample_nve
from ..learning.trainer import Trainer, TrainerConfig
from ..models.base import EnergyModel, label_forces
from ..learning.model_file import check_system, read_model, save_model
from ..validation import as_array, fail
from .model import FlashMDModel
from .network import FlashMDNet
from .symplectic import SYMPLECTIC

METHOD = "flashmd"


@dataclass
class Trajectories:
    """NVE segments: positions/momenta ``(S, T, N, 3)`` (nm, amu nm/ps), potential ``(S, T)`` kJ/mol."""

    positions: np.ndarray
    momenta: np.ndarray
    potential: np.ndarray
    masses: np.ndarray
    interval: float  # ps between records
    box: Optional[np.ndarray] = None  # (3, 3) nm for a periodic system (fixed: the segments are NVE)
    forces: Optional[np.ndarray] = None  # (S, T, N, 3) kJ/mol/nm, for models that take forces as inputs

    @classmethod
    def of(cls, data: Dataset) -> "Trajectories":
        """The NVE segments of a :class:`~openmm_accel.learning.dataset.Dataset` (momenta from velocities)."""
        if data.velocities is None or data.potential is None:
            raise fail("data", "NVE segments with velocities and potential energies", "a dataset without them")
        return cls(data.positions, data.velocities * data.masses[None, None, :, None], data.potential, data.masses,
                   data.interval_ps, data.box, data.forces)

    def dataset(self, topology=None, metadata: Optional[dict] = None) -> Dataset:
        """These segments as a :class:`~openmm_accel.learning.dataset.Dataset` (to save)."""
        return Dataset(self.positions, self.masses, self.interval, self.momenta / self.masses[None, None, :, None],
                       self.forces, self.potential, self.box, topology, metadata or {})

    def pairs(self, stride: float):
        """(x0, p0, x1, p1, H0, F0) for every pair one ``stride`` apart within a segment, plus time reversals
        (F0, the reference forces at x0, is None without ``forces``)."""
        x, p, h, f = self.windows(stride, 1)
        return x[:, 0], p[:, 0], x[:, 1], p[:, 1], h, f

    def windows(self, stride: float, strides: int):
        """Runs of ``strides`` + 1 states one ``stride`` apart within a segment, forwards and time-reversed:
        positions and momenta ``(W, strides + 1, N, 3)``, H at the start ``(W,)`` and the reference forces
        at the first state ``(W, N, 3)`` (None without ``forces``). The forward windows come first."""
        lag = int(round(stride / self.interval))
        records = self.positions.shape[1]
        if lag < 1 or abs(lag * self.interval - stride) > 1e-6 * stride or lag * strides >= records:
            raise fail("stride", f"a multiple of the record interval ({self.interval * 1000:g} fs) with "
                       f"{strides} x stride shorter than a segment", f"{stride * 1000:g} fs")
        starts = records - lag * strides

        def runs(a):  # (S, T, ...) -> (S * starts, strides + 1, ...)
            picked = np.stack([a[:, k * lag:k * lag + starts] for k in range(strides + 1)], axis=2)
            return picked.reshape((-1,) + picked.shape[2:])
        x, p = runs(self.positions), runs(self.momenta)
        kinetic = (self.momenta**2 / (2 * self.masses[None, None, :, None])).sum((-1, -2))
        h = (self.potential + kinetic)[:, :starts].reshape(-1)
        x, p, h = np.concatenate([x, x[:, ::-1]]), np.concatenate([p, -p[:, ::-1]]), np.concatenate([h, h])
        if self.forces is None:
            return x, p, h, None
        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731
        return x, p, h, np.concatenate([flat(self.forces[:, :starts]), flat(self.forces[:, lag * strides:])])


def generate_nve(system: openmm.System, positions, plan: NVEPlan, placement: Placement = Placement(),
                 progress: bool = False, starts: Optional[np.ndarray] = None) -> Trajectories:
    """NVE segments of the reference potential (the System), as pairs are taken from them
    (:func:`openmm_accel.learning.sampling.sample_nve`, which documents the arguments)."""
    return Trajectories.of(sample_nve(system, positions, plan, placement, progress, starts))


def reference_forces(reference: EnergyModel, data: Trajectories, batch: int = 64, progress: bool = False) -> np.ndarray:
    """Forces (kJ/mol/nm) of the reference potential at every recorded frame (:func:`label_forces`)."""
    frames = data.positions.reshape((-1,) + data.positions.shape[2:])
    return label_forces(reference, frames, data.box, batch, progress).reshape(data.positions.shape)


def _forces(reference: EnergyModel, positions: torch.Tensor, boxes: Optional[torch.Tensor]) -> torch.Tensor:
    """Reference forces (kJ/mol/nm, float64, no graph) at a batch of positions ``(B, N, 3)`` nm."""
    boxes = None if boxes is None else boxes.to(reference.dtype)
    return reference.energies_and_forces(positions.to(reference.dtype), boxes)[1].detach().double()


@dataclass
class TrainingConfig(TrainerConfig):
    """The shared trainer's settings and FlashMD's loss terms (see :func:`train`); a resumed training may
    change the loss terms (a curriculum: every command is recorded with its epochs, ``training_runs``)."""

    resumable: ClassVar[Tuple[str, ...]] = ("epochs", "energy_weight", "input_noise", "rollout", "kinetic_weight")

    energy_weight: float = 0.0
    input_noise: float = 0.0  # nm
    rollout: int = 1  # strides per training sample, each from the previous prediction
    kinetic_weight: float = 0.0  # weight of the per-element kinetic energy loss


def _scales(model: FlashMDNet, x0, p0, x1, p1, f0=None):
    """RMS of the mass-scaled targets beyond free flight (and of the mass-scaled forces)."""
    sqrt_m = np.sqrt(model.masses.cpu().numpy())[None, :, None]
    du = (x1 - x0) * sqrt_m - model.stride * p0 / sqrt_m
    ds = (p1 - p0) / sqrt_m
    rms = [float(np.sqrt(np.mean(a**2))) + 1e-12 for a in (du, ds) + (() if f0 is None else (f0 / sqrt_m,))]
    return rms


def train(model: FlashMDNet, data: Trajectories, config: TrainingConfig, reference: Optional[EnergyModel] = None,
          checkpoint: Optional[str] = None, progress: bool = False, kt: float = 2.494,
          command: Optional[str] = None) -> dict:
    """Train ``model`` on ``data`` with the shared :class:`~openmm_accel.learning.trainer.Trainer` (cosine
    schedule, optional EMA, resumes from ``checkpoint`` and writes it every epoch; each epoch's history entry
    records ``command`` and the cumulative wall time).

    ``config.input_noise`` > 0 trains on perturbed inputs: every training input position is displaced by a
    Gaussian of RMS ``input_noise * sqrt(1.008 amu / m)`` (hydrogen: ``input_noise``; mass-scaled, like the
    loss), a model with force inputs gets the ``reference`` forces recomputed there, and the targets stay the
    true ones. In a closed loop each prediction starts from the previous one's slightly wrong positions; a
    model trained only on exact inputs trusts the forces there and its errors compound, one trained this way
    learns to steer back. Validation stays on exact inputs.

    ``config.rollout`` = K > 1 trains on runs of K strides (the pushforward remedy for the same problem):
    each stride after the first starts from the model's own previous prediction (with the ``reference``
    forces there, for a model with force inputs; gradients flow through the predicted positions and
    momenta, not through those forces), and the loss averages the errors of all K against the data. A bias
    too small to matter in one stride but compounding over many, such as a mode amplified by 1 % per
    stride, weighs K times more. Validation scores one stride, so it compares across K.

    ``config.kinetic_weight`` > 0 adds ``sum_e <(K_e' - K_e) / (N_e kT)>^2``, the batch mean of the error of
    each element's predicted kinetic energy K_e' against the true one: the systematic part, not the
    per-sample scatter. A least-squares fit shrinks the momenta it cannot predict exactly (at 8 fs the
    hydrogens' kinetic energy by ~7 %, the carbons' by ~3 %); the integrator's global rescaling restores
    the total but not its split, so in NVT the elements end up at different temperatures. This term makes
    the shrinkage cost what it does in dynamics.
    """
    if not isinstance(config.rollout, int) or config.rollout < 1:
        raise fail("rollout", "a positive number of strides", config.rollout)
    if model.fitted_on_midpoints and config.rollout > 1:
        raise fail("rollout", "1 for a symplectic model (it is trained on each stride's own midpoint, without "
                   "its solver)", config.rollout)
    x, p, h0, f0 = data.windows(model.stride, config.rollout)
    if model.force_inputs and f0 is None:
        raise fail("data", "trajectories with reference forces (the model takes forces as inputs)", "no forces")
    f0 = f0 if model.force_inputs else None
    if config.input_noise < 0:
        raise fail("input_noise", "a non-negative RMS displacement (nm)", config.input_noise)
    if reference is None and config.energy_weight > 0:
        raise fail("reference", "the reference potential (the energy loss evaluates it at the predictions)", None)
    if model.force_inputs and reference is None and (config.input_noise > 0 or config.rollout > 1):
        raise fail("reference", "the reference potential (input noise and rollout need the forces at positions "
                   "that are not in the data)", None)
    if config.kinetic_weight < 0:
        raise fail("kinetic_weight", "a non-negative weight", config.kinetic_weight)
    numbers = np.asarray(model.atomic_numbers if model.atomic_numbers is not None else np.zeros(model.n_atoms))
    by_element = torch.as_tensor((numbers[:, None] == np.unique(numbers)[None, :]).astype(np.float64))  # (N, E)
    by_element = by_element / (by_element.sum(0) * kt)  # sums each element's kinetic energy in units of N_e kT
    noise = config.input_noise * torch.sqrt(1.008 / model.masses.double())[None, :, None] / np.sqrt(3)
    trainer = Trainer(model, len(x), config, checkpoint, validation_batch=config.batch_size)
    device = trainer.device  # the model is there now; its batches and the reference follow
    if reference is not None:
        reference.to(device)
    generator, tr = trainer.generator, trainer.training
    scales = _scales(model, x[tr, 0], p[tr, 0], x[tr, 1], p[tr, 1], None if f0 is None else f0[tr])
    su, ss = scales[:2]
    if not trainer.resumed:
        with torch.no_grad():
            model.scale.copy_(torch.tensor(scales, dtype=torch.float64))
    sqrt_m = model.masses.double().sqrt()[None, :, None]
    masses = model.masses.double()[None, :]
    tensors = [torch.as_tensor(a, device=device) for a in (x, p, h0, h0 if f0 is None else f0)]  # (h0: unused)
    by_element, noise = by_element.to(device), noise.to(device)
    box = None if data.box is None else torch.as_tensor(np.asarray(data.box, dtype=np.float64), device=device)

    def losses(index, training: bool):
        bx, bp, bh, bf = (t[index] for t in tensors)
        boxes = None if box is None else box.expand(len(index), 3, 3)
        x_in, p_in = bx[:, 0], bp[:, 0]
        if training and config.input_noise > 0:
            x_in = x_in + noise * torch.randn(x_in.shape, generator=generator, dtype=x_in.dtype, device=device)
            if model.force_inputs:
                bf = _forces(reference, x_in, boxes)
        strides = config.rollout if training else 1
        position, momentum, energy, kinetic = (torch.zeros((), dtype=torch.float64, device=device) for _ in range(4))
        with torch.set_grad_enabled(training):
            for k in range(1, strides + 1):
                px, pp = model.fit_prediction(x_in, p_in, bx[:, k], bp[:, k], boxes,
                                              bf if model.force_inputs else None)
                position = position + (((px - bx[:, k]) * sqrt_m / su) ** 2).mean() / strides
                momentum = momentum + (((pp - bp[:, k]) / sqrt_m / ss) ** 2).mean() / strides
                atom_kinetic = (pp**2).sum(-1) / (2 * masses)  # (B, N), predicted
                if reference is not None and config.energy_weight > 0:
                    potential = reference(px.to(reference.dtype), boxes).double()
                    energy = energy + (((atom_kinetic.sum(-1) + potential - bh) / (model.n_atoms * kt)) ** 2
                                       ).mean() / strides
                if config.kinetic_weight > 0:
                    error = ((atom_kinetic - (bp[:, k]**2).sum(-1) / (2 * masses)) @ by_element).mean(0)
                    kinetic = kinetic + (error**2).sum() / strides
                if k < strides:  # the next stride starts from this prediction
                    x_in, p_in = px, pp
                    if model.force_inputs:
                        bf = _forces(reference, px.detach(), boxes)
            total = position + momentum + config.energy_weight * energy + config.kinetic_weight * kinetic
        return total, {"position": position.item(), "momentum": momentum.item(), "energy": energy.item(),
                       "kinetic": kinetic.item()}

    result = trainer.fit(losses, progress, command, "FlashMD training")
    model.cpu()
    return {**result, "samples": len(x), "position_scale": su, "momentum_scale": ss}


def evaluate(model: FlashMDModel, data: Trajectories, reference: EnergyModel, elements: Sequence[str],
             batch: int = 64) -> dict:
    """Accuracy of one-stride predictions on (held-out) NVE data, as the integrator would see it.

    Per element: RMS position error (nm) and RMS velocity error (nm/ps); for the whole system: the mean
    and RMS of the energy error ``K' + V(q') - H`` (kJ/mol; what the rescaling removes), the mean
    excess potential ``V(q') - V(q_true)``, and the fraction of predictions with ``H - V' <= 0`` (the
    integrator's "unphysical" fallback). Free flight (``q + tau p/m``, ``p``) is scored alongside.
    """
    if model.force_inputs and data.forces is None:
        data = dataclasses.replace(data, forces=reference_forces(reference, data))
    x0, p0, x1, p1, h0, f0 = data.pairs(model.stride)
    half = len(x0) // 2  # forward pairs only: the reversed ones are the same predictions mirrored
    masses = model.masses.numpy()[None, :, None]
    box = None if data.box is None else torch.as_tensor(np.asarray(data.box, dtype=np.float64))
    names = np.array(list(elements))
    v_true = data.potential[:, int(round(model.stride / data.interval)):].reshape(-1)  # at x1, forward pairs

    def score(predict) -> dict:
        xs, ps = [], []
        for start in range(0, half, batch):
            index = slice(start, min(start + batch, half))
            x, p = predict(index)
            xs.append(x)
            ps.append(p)
        x, p = np.concatenate(xs), np.concatenate(ps)
        v_new = np.concatenate([potential(x[start:start + batch]) for start in range(0, half, batch)])
        energy_error = (p**2 / (2 * masses)).sum((-1, -2)) + v_new - h0[:half]
        per_element = {}
        for name in sorted(set(names)):
            atoms = names == name
            per_element[name] = {
                "position_rms_nm": float(np.sqrt(np.mean((x - x1[:half])[:, atoms] ** 2) * 3)),
                "velocity_rms_nm_per_ps": float(np.sqrt(np.mean(((p - p1[:half]) / masses)[:, atoms] ** 2) * 3))}
        return {"per_element": per_element, "energy_error_mean": float(energy_error.mean()),
                "energy_error_rms": float(np.sqrt(np.mean(energy_error**2))),
                "excess_potential_mean": float(np.mean(v_new - v_true)),
                "unphysical_fraction": float(np.mean(h0[:half] - v_new <= 0))}

    def potential(x: np.ndarray) -> np.ndarray:
        boxes = None if box is None else box.to(reference.dtype).expand(len(x), 3, 3)
        with torch.no_grad():
            return reference(torch.as_tensor(x).to(reference.dtype), boxes).double().numpy()

    def by_model(index):
        forces = f0[index] if model.force_inputs else None  # (filled in above when missing)
        return model.predict(x0[index], p0[index], None if box is None else box.numpy(), forces)

    def free_flight(index):
        return x0[index] + model.stride * p0[index] / masses, p0[index]

    return {"pairs": half, "model": score(by_model), "free_flight": score(free_flight)}


def save(path: str, model: FlashMDNet, metadata: dict) -> None:
    """Write a model file (:mod:`openmm_accel.learning.model_file`): weights, architecture, stride, elements,
    masses, reference and provenance."""
    metadata = {**metadata, "elements": model.atomic_numbers, "masses": model.masses.tolist()}
    save_model(path, METHOD, {name: tensor.numpy() for name, tensor in model.state_dict().items()}, model.config(),
               metadata)


def load(path: str, argument: str = "path") -> FlashMDModel:
    """Read a model file written by :func:`save` (an explicit or a symplectic network, by its config)."""
    header, arrays = read_model(path, METHOD, "FlashMD model file", argument)
    config = dict(header["config"])
    kind = config.pop("kind", "explicit")
    model = SYMPLECTIC[kind](**config) if kind in SYMPLECTIC else FlashMDNet(**config)
    model.load_state_dict({name: torch.as_tensor(array) for name, array in arrays.items()})
    model.metadata = header["metadata"]
    model.eval()
    return model


def open_model(path: str, atomic_numbers: Sequence[int], masses, argument: str = "flashmd_model") -> FlashMDModel:
    """A FlashMD model file of either kind for a System of ``atomic_numbers`` and ``masses`` (amu, or a
    Quantity): written by :func:`save` (refused unless made for those elements and masses), or a
    TorchScript (metatomic) model exported by metatrain, which is bound to them."""
    masses = as_array(masses, unit.amu, "masses")
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            torchscript = any("/code/" in name for name in archive.namelist())
        if torchscript:
            from .metatomic import MetatomicFlashMD
            return MetatomicFlashMD(path, atomic_numbers, masses)
    model = load(path, argument)
    check_system({"elements": model.atomic_numbers, "masses": model.masses.tolist()}, atomic_numbers, masses, path,
                 "FlashMD model")
    return model
