"""FlashMD training: NVE data from OpenMM, pairs one stride apart, and a resumable trainer.

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
import time
import zipfile
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np
import openmm
import torch
from openmm import unit

from ..forces import masses_of
from ..integrators.aboba import LangevinABOBAIntegrator
from ..integrators.verlet import VelocityVerletIntegrator
from ..models.base import EnergyModel, label_forces
from ..storage import atomic_save
from ..validation import InputError, as_array, fail
from .model import FlashMDModel
from .network import FlashMDNet

FORMAT_VERSION = 1


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


def generate_nve(system: openmm.System, positions, temperature: float, segments: int, segment_steps: int,
                 record_every: int = 4, timestep: float = 0.0005, decorrelation_steps: int = 2000,
                 platform: str = "Reference", seed: int = 1, progress: bool = False,
                 starts: Optional[np.ndarray] = None) -> Trajectories:
    """Thermalise with Langevin, then record ``segments`` NVE segments of ``segment_steps`` Verlet steps.

    Without ``starts`` one Langevin run from the minimised ``positions`` continues between segments, so
    the data cover what ``segments`` x ``decorrelation_steps`` steps of dynamics reach. ``starts``
    (``(F, N, 3)`` nm, e.g. the frames of a long run with a cheaper potential) spread the data over the
    conformations they visit: segment ``k`` thermalises from frame ``k F / segments`` with fresh
    Maxwell-Boltzmann velocities for ``decorrelation_steps`` before its NVE segment.
    """
    from tqdm.auto import tqdm
    if system.getNumConstraints() > 0:
        raise fail("system", "a System without constraints (FlashMD moves every atom)", "constraints")
    masses = masses_of(system)
    if starts is not None:
        starts = np.asarray(starts, dtype=np.float64)
        if starts.ndim != 3 or starts.shape[1:] != (len(masses), 3) or len(starts) < 1:
            raise fail("starts", f"frames of shape (F, {len(masses)}, 3) nm", starts.shape)
        if not np.all(np.isfinite(starts)):
            raise fail("starts", "finite positions", "NaN or infinite values")
    chosen = openmm.Platform.getPlatformByName(platform)
    verlet = VelocityVerletIntegrator(timestep)  # synchronous q and p (OpenMM's VerletIntegrator is leap-frog)
    nve = openmm.Context(system, verlet, chosen)
    # created last: on Reference, a CustomIntegrator's Context reseeds the process-wide generator
    thermostat = LangevinABOBAIntegrator(temperature, 5.0, timestep)
    thermostat.setRandomNumberSeed(seed)
    nvt = openmm.Context(system, thermostat, chosen)
    nvt.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(nvt, maxIterations=500)
    nvt.setVelocitiesToTemperature(temperature, seed)
    records = segment_steps // record_every + 1
    xs = np.empty((segments, records, len(masses), 3))
    ps, vs = np.empty_like(xs), np.empty((segments, records))
    bar = tqdm(total=segments * (decorrelation_steps + segment_steps), disable=not progress, unit="step",
               desc="NVE data")
    for segment in range(segments):
        if starts is not None:
            nvt.setPositions(starts[segment * len(starts) // segments])
            nvt.setVelocitiesToTemperature(temperature, seed + segment)
        thermostat.step(decorrelation_steps)
        bar.update(decorrelation_steps)
        nve.setState(nvt.getState(getPositions=True, getVelocities=True))
        for record in range(records):
            state = nve.getState(getPositions=True, getVelocities=True, getEnergy=True)
            xs[segment, record] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            ps[segment, record] = state.getVelocities(asNumpy=True).value_in_unit(
                unit.nanometer / unit.picosecond) * masses[:, None]
            vs[segment, record] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            if record < records - 1:
                verlet.step(record_every)
                bar.update(record_every)
        if not np.all(np.isfinite(xs[segment])):
            raise InputError(f"NVE segment {segment} blew up: reduce the time step")
    bar.close()
    box = (nve.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
           if system.usesPeriodicBoundaryConditions() else None)
    return Trajectories(xs, ps, vs, masses, record_every * timestep, box)


def reference_forces(reference: EnergyModel, data: Trajectories, batch: int = 64, progress: bool = False) -> np.ndarray:
    """Forces (kJ/mol/nm) of the reference potential at every recorded frame (:func:`label_forces`)."""
    frames = data.positions.reshape((-1,) + data.positions.shape[2:])
    return label_forces(reference, frames, data.box, batch, progress).reshape(data.positions.shape)


def _forces(reference: EnergyModel, positions: torch.Tensor, boxes: Optional[torch.Tensor]) -> torch.Tensor:
    """Reference forces (kJ/mol/nm, float64, no graph) at a batch of positions ``(B, N, 3)`` nm."""
    boxes = None if boxes is None else boxes.to(reference.dtype)
    return reference.energies_and_forces(positions.to(reference.dtype), boxes)[1].detach().double()


@dataclass
class TrainingConfig:
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 2e-3
    energy_weight: float = 0.0
    validation_fraction: float = 0.1
    seed: int = 0
    input_noise: float = 0.0  # nm; see train()
    rollout: int = 1  # strides per training sample, each from the previous prediction; see train()
    kinetic_weight: float = 0.0  # weight of the per-element kinetic energy loss; see train()


def _scales(model: FlashMDNet, x0, p0, x1, p1, f0=None):
    """RMS of the mass-scaled targets beyond free flight (and of the mass-scaled forces)."""
    sqrt_m = np.sqrt(model.masses.numpy())[None, :, None]
    du = (x1 - x0) * sqrt_m - model.stride * p0 / sqrt_m
    ds = (p1 - p0) / sqrt_m
    rms = [float(np.sqrt(np.mean(a**2))) + 1e-12 for a in (du, ds) + (() if f0 is None else (f0 / sqrt_m,))]
    return rms


def train(model: FlashMDNet, data: Trajectories, config: TrainingConfig, reference: Optional[EnergyModel] = None,
          checkpoint: Optional[str] = None, progress: bool = False, kt: float = 2.494,
          command: Optional[str] = None) -> dict:
    """Train ``model`` on ``data``; resumes from ``checkpoint`` if it exists and writes it every epoch.

    Each epoch's history entry records ``command`` (what ran it) and the training wall time up to it, summed
    over resumed runs, so a model trained in several runs keeps how each epoch was made and what it cost.

    The learning rate follows a cosine from ``config.learning_rate`` to 0 over ``config.epochs``; a run
    resumed with more (or fewer) epochs continues on the schedule of the new total.

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
    from tqdm.auto import trange
    if not isinstance(config.rollout, int) or config.rollout < 1:
        raise fail("rollout", "a positive number of strides", config.rollout)
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
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(x))
    n_val = max(1, int(config.validation_fraction * len(order)))
    val, tr = order[:n_val], order[n_val:]
    scales = _scales(model, x[tr, 0], p[tr, 0], x[tr, 1], p[tr, 1], None if f0 is None else f0[tr])
    su, ss = scales[:2]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    history, start = [], 0
    if checkpoint and os.path.isfile(checkpoint):
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, start = saved["history"], saved["epoch"]
        if "rng" in saved:  # (older checkpoints lack the generator states)
            rng.bit_generator.state = saved["rng"]
            generator.set_state(saved["generator"])
        if scheduler.T_max != max(config.epochs, 1):  # resumed with another --epochs: the new total's schedule
            scheduler.T_max = max(config.epochs, 1)
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = 0.5 * base * (1.0 + np.cos(np.pi * min(start, scheduler.T_max) / scheduler.T_max))
    else:
        with torch.no_grad():
            model.scale.copy_(torch.tensor(scales, dtype=torch.float64))
    sqrt_m = torch.as_tensor(np.sqrt(model.masses.numpy()))[None, :, None]
    masses = model.masses.double()[None, :]
    tensors = [torch.as_tensor(a) for a in (x, p, h0, h0 if f0 is None else f0)]  # (h0: unused stand-in)

    box = None if data.box is None else torch.as_tensor(np.asarray(data.box, dtype=np.float64))

    def losses(index, training: bool):
        bx, bp, bh, bf = (t[index] for t in tensors)
        boxes = None if box is None else box.expand(len(index), 3, 3)
        x_in, p_in = bx[:, 0], bp[:, 0]
        if training and config.input_noise > 0:
            x_in = x_in + noise * torch.randn(x_in.shape, generator=generator, dtype=x_in.dtype)
            if model.force_inputs:
                bf = _forces(reference, x_in, boxes)
        strides = config.rollout if training else 1
        position, momentum, energy, kinetic = (torch.zeros((), dtype=torch.float64) for _ in range(4))
        with torch.set_grad_enabled(training):
            for k in range(1, strides + 1):
                px, pp = model.call(x_in, p_in, boxes, bf if model.force_inputs else None)
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
        return total, position.item(), momentum.item(), energy.item(), kinetic.item()

    began = time.perf_counter() - (history[-1].get("seconds", 0.0) if history else 0.0)
    for epoch in trange(start, config.epochs, disable=not progress, desc="FlashMD training", unit="epoch"):
        model.train()
        learning_rate = optimizer.param_groups[0]["lr"]
        shuffled = rng.permutation(tr)
        for batch in np.array_split(shuffled, max(1, len(shuffled) // config.batch_size)):
            loss, *_ = losses(batch, True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        total, position, momentum, energy, kinetic = losses(val, False)
        history.append({"epoch": epoch + 1, "validation_loss": total.item(), "position": position,
                        "momentum": momentum, "energy": energy, "kinetic": kinetic, "learning_rate": learning_rate,
                        "seconds": time.perf_counter() - began, "command": command})
        if checkpoint:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1,
                     "config": asdict(config), "rng": rng.bit_generator.state, "generator": generator.get_state()}
            atomic_save(checkpoint, lambda temporary: torch.save(state, temporary))
    return {"history": history, "seconds": history[-1]["seconds"] if history else 0.0, "samples": len(x),
            "position_scale": su, "momentum_scale": ss}


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
    """Write a model file: weights, architecture, stride, elements, masses, reference and provenance."""
    from .._version import __version__
    saved = {"format": "openmm_accel.flashmd", "format_version": FORMAT_VERSION, "package_version": __version__,
             "config": model.config(), "state": model.state_dict(), "metadata": dict(metadata)}
    atomic_save(path, lambda temporary: torch.save(saved, temporary))


def load(path: str) -> FlashMDNet:
    """Read a model file written by :func:`save` (clear errors for missing or foreign files)."""
    if not os.path.isfile(path):
        raise fail("path", "an existing FlashMD model file", path)
    try:
        saved = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as error:
        raise fail("path", "a FlashMD model file written by openmm_accel", f"{path} ({error})") from None
    if not isinstance(saved, dict) or saved.get("format") != "openmm_accel.flashmd":
        raise fail("path", "a FlashMD model file written by openmm_accel", path)
    if saved["format_version"] > FORMAT_VERSION:
        raise fail("path", f"format version <= {FORMAT_VERSION} (update openmm_accel)", saved["format_version"])
    model = FlashMDNet(**saved["config"])
    model.load_state_dict(saved["state"])
    model.metadata = saved["metadata"]
    model.eval()
    return model


def open_model(path: str, atomic_numbers: Sequence[int], masses) -> FlashMDModel:
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
    model = load(path)
    if model.atomic_numbers is not None and list(model.atomic_numbers) != [int(z) for z in atomic_numbers]:
        raise fail("path", f"a FlashMD model of the System's {len(atomic_numbers)} atoms and elements",
                   f"{path}, made for {len(model.atomic_numbers)} atoms with other elements")
    trained = model.masses.numpy()
    if trained.shape != masses.shape or not np.allclose(trained, masses, rtol=1e-6):
        raise fail("path", "a FlashMD model trained with the System's masses (the same hydrogen mass "
                   "repartitioning, if any)", f"{path}, trained with other masses")
    return model
