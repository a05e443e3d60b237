"""Training a drifting generator on reference frames with forces, on the shared trainer
(:mod:`openmm_accel.learning.trainer`): each step draws as many conformations from the generator as it takes
data frames, and moves them along the drifting field (with force guidance) in the chosen representation."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from openmm import app, unit
from torch import Tensor

from ..analysis import BOLTZMANN, dihedrals
from ..learning.trainer import Trainer, start_data_training
from ..options import checked
from ..validation import as_array, choice, fail, positive
from .config import DATA_SCORES, GENERATORS, REPRESENTATIONS, DriftTrainingConfig, TrainDriftConfig
from .features import align, distance_scores, distances, pairs, tangent_forces, tangent_projector
from .field import GUIDANCE, Guidance, drifting_field, drifting_loss
from .model import DriftModel, save
from .network import Generator, InternalGenerator
from .validity import Validity, stiff_pairs

LIMITS = {"internal": 4.0, "projected": 2.0}  # default bounds in spreads, measured (docs/drift.md)


class Space:
    """A representation: features of normalised positions ``(B, N, 3)`` and the data's scores in it.
    ``stiff`` ``(K, 2)``: atom pairs (bonds, angles) whose lengths force guidance leaves alone (:meth:`soft`)."""

    def __init__(self, representation: str, atoms: int, stiff: Optional[Tensor] = None):
        choice(representation, REPRESENTATIONS, "representation")
        self.representation = representation
        self.pair_index = pairs(atoms)
        self.atoms = atoms
        self.stiff = stiff
        if stiff is not None and representation == "distances":  # features that are stiff pairs
            index = {(int(i), int(j)): k for k, (i, j) in enumerate(self.pair_index.tolist())}
            self.stiff_features = torch.tensor([index[(min(i, j), max(i, j))] for i, j in stiff.tolist()])

    def features(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), -1) if self.representation == "coordinates" else distances(x, self.pair_index)

    def scores(self, x: Tensor, cartesian: Tensor) -> Tensor:
        if self.stiff is not None:
            cartesian = tangent_forces(x, cartesian, self.stiff)
        if self.representation == "coordinates":
            return cartesian.reshape(len(x), -1)
        return distance_scores(x, cartesian, self.pair_index)

    def soft(self, features: Tensor) -> Callable[[Tensor], Tensor]:
        """The projection of a correction ``(B, D)`` at generated ``features`` onto the directions that keep
        every stiff pair's length: in coordinates the tangent projection at the generated conformations
        (computed once, applied for every kernel width), in distances the stiff pairs' entries set to zero."""
        if self.representation == "distances":
            return lambda correction: correction.index_fill(1, self.stiff_features, 0.0)
        projector = tangent_projector(features.reshape(len(features), self.atoms, 3), self.stiff)
        return lambda correction: (projector @ correction[..., None])[..., 0]


BASINS = ("beta/PII", "alpha_R", "alpha_L/C7ax")


def basins(angles: np.ndarray) -> np.ndarray:
    """The phi/psi basin (index into :data:`BASINS`) of each row of ``angles`` (M, 2) radians: phi > 0 is
    alpha_L/C7ax; with phi < 0, -120 < psi < 50 degrees is alpha_R, the rest beta/PII."""
    phi, psi = np.degrees(angles[:, 0]), np.degrees(angles[:, 1])
    return np.where(phi > 0, 2, np.where((psi > -120) & (psi < 50), 1, 0))


def biased_subset(topology, positions: np.ndarray, frames: int, seed: int) -> np.ndarray:
    """Indices of ``frames`` of ``positions`` (M, N, 3) nm, an equal share from each phi/psi basin (drawn
    without replacement where a basin has enough frames): a data set deliberately biased towards the
    rare basins, for showing that force guidance undoes a bias."""
    if frames > len(positions):
        raise fail("biased_subset", f"at most the {len(positions)} training frames of the data (a subset)", frames)
    try:
        which = basins(dihedrals(topology, positions))
    except (IndexError, ValueError):
        raise fail("biased_subset", "a peptide with phi and psi dihedrals (to bias by basin)", "another molecule") \
            from None
    rng = np.random.default_rng(seed)
    present = [np.flatnonzero(which == basin) for basin in range(len(BASINS)) if np.any(which == basin)]
    shares = np.diff(np.linspace(0, frames, len(present) + 1).round().astype(int))
    return np.sort(np.concatenate([rng.choice(members, share, replace=share > len(members))
                                   for members, share in zip(present, shares)]))


def mean_distance(features: Tensor, seed: int, count: int = 2000) -> float:
    """The data's mean distance between two frames' features (the unit of the kernel widths)."""
    generator = torch.Generator().manual_seed(seed)
    some = features[torch.randperm(len(features), generator=generator)[:count]]
    return float(torch.pdist(some).mean())


@dataclass
class TrainingFrames:
    """What a generator learns from: frames ``positions`` ``(F, N, 3)`` nm with their ``forces``
    (kJ/mol/nm); ``topology``: the molecule's bonds, needed by the internal-coordinate generators and to
    leave stiff pairs alone; ``validity``: the molecule's :class:`.validity.Validity` (its stereocentres put
    the samples of a distance-trained generator in the data's handedness); ``temperature_k``: the temperature
    the data are Boltzmann at, for ``data_score == "forces"`` (their score is then their forces over that kT)."""

    positions: np.ndarray
    forces: np.ndarray
    topology: Any = None
    validity: Any = None
    temperature_k: Optional[float] = None


def train_drift(frames: TrainingFrames, temperature_k: float, config: DriftTrainingConfig,
                checkpoint: Optional[str] = None, progress: bool = False, command: Optional[str] = None,
                metadata: Optional[dict] = None) -> tuple:
    """Train a generator of the Boltzmann distribution at ``temperature_k`` on ``frames``; returns the
    :class:`DriftModel` and the trainer's result."""
    positions = as_array(frames.positions, unit.nanometer, "positions")
    forces = as_array(frames.forces, unit.kilojoule_per_mole / unit.nanometer, "forces")
    temperature_k = positive(temperature_k, unit.kelvin, "temperature_k")
    if frames.temperature_k is not None:
        positive(frames.temperature_k, unit.kelvin, "temperature_k (of the data)")
    topology, validity, data_temperature_k = frames.topology, frames.validity, frames.temperature_k
    if positions.ndim != 3 or positions.shape[-1] != 3 or positions.shape[1] < 2:
        raise fail("positions", "frames (F, N >= 2, 3) nm", f"shape {positions.shape}")
    if forces.shape != positions.shape:
        raise fail("forces", f"the forces of every frame, shape {positions.shape}", f"shape {forces.shape}")
    if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(forces))):
        raise fail("positions", "finite positions and forces", "NaN or infinite values")
    choice(config.guidance, GUIDANCE, "guidance")
    choice(config.data_score, DATA_SCORES, "data_score")
    if config.data_score == "forces" and (config.guidance == "none" or not data_temperature_k):
        raise fail("data_score", "'forces' only with force guidance (fi or fk) and the data's temperature",
                   f"guidance {config.guidance}, data temperature {data_temperature_k}")
    aligned, turned, reference = align(torch.as_tensor(positions), torch.as_tensor(forces))
    scale = float(aligned.square().mean().sqrt())
    x = aligned / scale
    stiff = None
    if config.guidance != "none" and not config.guide_stiff and topology is not None:
        stiff = torch.as_tensor(stiff_pairs(topology))
    space = Space(config.representation, positions.shape[1], stiff)
    features = space.features(x).float()
    scores = None
    if config.guidance != "none":  # grad log p_B = F / kT, in normalised units
        scores = space.scores(x, turned * scale / (BOLTZMANN * temperature_k)).float()
    data_scores = None if config.data_score != "forces" else scores * (temperature_k / data_temperature_k)
    unit_distance = mean_distance(features, config.seed)
    widths = [w * unit_distance for w in config.widths]
    torch.manual_seed(config.seed)
    choice(config.generator, GENERATORS, "generator")
    if config.generator in ("internal", "projected"):
        if topology is None:
            raise fail("topology", f"the molecule's topology (the {config.generator} generator builds on its bonds)",
                       None)
        source = "internal" if config.generator == "internal" else "cartesian"
        net = InternalGenerator.for_data(topology, x, reference / scale, config.hidden, config.layers,
                                         source, LIMITS[config.generator] if config.limit is None
                                         else config.limit).float()
    else:
        net = Generator((reference / scale).float(), config.hidden, config.layers)
    trainer = Trainer(net, len(x), config, checkpoint)
    device = trainer.device
    features, scores, data_scores = (None if t is None else t.to(device) for t in (features, scores, data_scores))

    def losses(index, training: bool):
        # at least two samples: each is repelled by the others (a batch, or a validation split, of one frame)
        z = torch.randn(max(len(index), 2), net.latent, generator=trainer.generator, device=device)
        generated = space.features(net(z))
        pool = trainer.training if training else trainer.validation  # more positives from the same split
        extra = min(config.positives - len(index), len(pool))
        if extra > 0:
            index = np.concatenate([index, trainer.rng.choice(pool, extra, replace=False)])
        index = torch.as_tensor(index, device=device)
        guidance = Guidance(config.guidance, config.omega, None if scores is None else scores[index],
                            None if data_scores is None else data_scores[index],
                            None if stiff is None else space.soft(generated.detach()))
        field = drifting_field(generated, features[index], widths, guidance)
        loss = drifting_loss(generated, field)
        parts = {}
        if not training:  # the drift left, un-normalised, in units of the mean feature distance
            raw = drifting_field(generated.detach(), features[index], widths, guidance, normalise=False)
            parts["drift"] = float(raw.square().sum(-1).mean().sqrt()) / unit_distance
        return (loss if training else loss.detach()), parts

    result = trainer.fit(losses, progress, command, "drift training")
    net.cpu().double().eval()
    meta = {**(metadata or {}), "representation": config.representation, "guidance": config.guidance,
            "omega": config.omega, "guide_stiff": config.guide_stiff, "data_score": config.data_score,
            "widths_features": widths, "history": result["history"]}
    return DriftModel(net, scale, temperature_k, meta, validity), result


def hydrogen_bonds(topology: app.Topology) -> np.ndarray:
    """``(K, 2)`` the bonds OpenMM's ``HBonds`` constrains: every bond with a hydrogen."""
    return np.array([[a.index, b.index] for a, b in topology.bonds()
                     if app.element.hydrogen in (a.element, b.element)], dtype=int).reshape(-1, 2)


def train(config: TrainDriftConfig) -> str:
    """``openmm-accel train drift``: train a generator on the reference data's frames and forces (minus the
    held-out end of each walker) and save it; returns what was done, in a line."""
    config = checked(config)
    job = start_data_training(config, [".train.chk"])
    data = job.data
    if data.forces is None:
        raise fail("data", "reference data with the forces of every frame (imported trajectories need --forces or "
                   "--label-forces)", config.data)
    temperature = data.metadata["temperature_k"] if config.temperature_k is None else config.temperature_k
    if temperature != data.metadata["temperature_k"] and config.guidance == "none":
        raise fail("temperature", f"the data's {data.metadata['temperature_k']:g} K without force guidance (only "
                   "--guidance fi or fk can aim at another temperature)", f"{temperature:g} K")
    if config.data_score == "forces" and config.biased_subset:
        raise fail("data_score", "'positions' for a biased subset (its frames are not Boltzmann at any "
                   "temperature, so their forces are not their score)", "forces")
    atoms = data.positions.shape[2]
    if data.topology.getNumAtoms() != atoms:
        raise fail("data", "frames of every atom of the topology (data recorded with --record all)",
                   f"{atoms} of {data.topology.getNumAtoms()} atoms")
    positions = data.positions[:, :job.kept].reshape(-1, atoms, 3).astype(np.float64)
    forces = data.forces[:, :job.kept].reshape(-1, atoms, 3).astype(np.float64)
    validity = Validity.of(data.topology, positions)
    if data.metadata.get("constraints") == "hbonds":  # the data have no spread along X-H bonds
        forces = tangent_forces(torch.as_tensor(positions), torch.as_tensor(forces),
                                torch.as_tensor(hydrogen_bonds(data.topology))).numpy()
    if config.biased_subset:
        chosen = biased_subset(data.topology, positions, config.biased_subset, config.seed)
        positions, forces = positions[chosen], forces[chosen]
    metadata = {**job.provenance(config, data.topology, positions[0], biased_subset=config.biased_subset,
                                 frames=len(positions)),
                "elements": [atom.element.atomic_number for atom in data.topology.atoms()]}
    began = time.perf_counter()
    frames = TrainingFrames(positions, forces, data.topology, validity, data.metadata["temperature_k"])
    model, result = train_drift(frames, temperature, config, job.checkpoint(),
                                config.progress is not False, metadata["command"], metadata)
    job.finish(model, result, began, save)
    last = result["history"][-1]
    return (f"wrote {config.output}: {atoms} atoms, {len(positions)} frames, {config.generator} generator, "
            f"{config.representation}, guidance "
            f"{config.guidance}, {len(result['history'])} epochs in {result['seconds']:.0f} s, drift left "
            f"{last['drift']:.3f} of the mean feature distance")
