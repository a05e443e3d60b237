"""The symplectic FlashMD map (flashmd/symplectic.py): symplectic and time-reversible by construction, solved
to its tolerance, energy without drift, trained and loaded by the shared FlashMD pipeline.

Checked on ethanol (9 atoms, 54 phase-space coordinates) with random weights: any generating function gives a
symplectic, reversible map, so the properties must hold before any training. Tolerances: the Jacobian is
taken by central differences of 1e-6 (mass-scaled) on a map solved to 1e-12, so its entries carry ~1e-6 of
error (measured: the symplectic form is kept to ~1e-9); the explicit network, which nothing makes
symplectic, misses by order one.
"""
import numpy as np
import pytest
import torch
from openmm import unit

from openmm_accel import InputError, systems
from openmm_accel.flashmd.network import FlashMDNet
from openmm_accel.flashmd.symplectic import FixedPoint, LearnedVerletNet, SymplecticFlashMDNet

STRIDE = 0.004  # ps


@pytest.fixture(scope="module")
def ethanol():
    molecular = systems.load("ethanol-vacuum")
    masses = np.array([molecular.system.getParticleMass(i).value_in_unit(unit.amu)
                       for i in range(molecular.system.getNumParticles())])
    numbers = [atom.element.atomic_number for atom in molecular.topology.atoms()]
    x = np.asarray(molecular.positions.value_in_unit(unit.nanometer))
    p = np.random.default_rng(1).normal(size=x.shape) * np.sqrt(masses * 2.494)[:, None]
    return numbers, masses, x, p


def symplectic_model(ethanol, tolerance=1e-12, kind=SymplecticFlashMDNet):
    numbers, masses, _, _ = ethanol
    torch.manual_seed(2)
    model = kind(numbers, masses, STRIDE, hidden=16, solver=FixedPoint(tolerance))
    model.scale.copy_(torch.tensor([0.02, 0.3], dtype=torch.float64))  # what training would measure
    return model


def mass_scaled_map(model, masses):
    root = np.sqrt(masses)[:, None]
    n = len(masses)

    def step(z):
        q = torch.as_tensor(z[:3 * n].reshape(n, 3) / root)[None]
        p = torch.as_tensor(z[3 * n:].reshape(n, 3) * root)[None]
        with torch.no_grad():
            q1, p1 = model(q, p)
        assert getattr(model, "converged", True)
        return np.concatenate([(q1[0].double().numpy() * root).ravel(), (p1[0].double().numpy() / root).ravel()])
    return step


def symplectic_error(step, z, h=1e-6):
    """max |D^T Omega D - Omega| for the map's Jacobian D by central differences."""
    size = len(z)
    jacobian = np.stack([(step(z + h * e) - step(z - h * e)) / (2 * h) for e in np.eye(size)], axis=1)
    half = size // 2
    omega = np.block([[np.zeros((half, half)), np.eye(half)], [-np.eye(half), np.zeros((half, half))]])
    return float(np.abs(jacobian.T @ omega @ jacobian - omega).max())


@pytest.mark.parametrize("kind", [SymplecticFlashMDNet, LearnedVerletNet])
def test_the_map_is_symplectic_and_the_explicit_network_is_not(ethanol, kind):
    numbers, masses, x, p = ethanol
    root = np.sqrt(masses)[:, None]
    z = np.concatenate([(x * root).ravel(), (p / root).ravel()])
    model = symplectic_model(ethanol, kind=kind)
    step = mass_scaled_map(model, masses)
    moved = step(z) - z
    assert np.abs(moved).max() > 1e-3  # a real move, not the identity
    assert symplectic_error(step, z) < 1e-6
    torch.manual_seed(2)
    explicit = FlashMDNet(numbers, masses, STRIDE, hidden=16).double()  # planted: nothing makes it symplectic
    explicit.scale.copy_(torch.tensor([0.02, 0.3], dtype=torch.float64))
    assert symplectic_error(mass_scaled_map(explicit, masses), z) > 1e-3


@pytest.mark.parametrize("kind", [SymplecticFlashMDNet, LearnedVerletNet])
def test_the_map_is_time_reversible_and_flags_a_fixed_point_it_did_not_reach(ethanol, kind):
    """Phi(R Phi(z)) = R z with R(q, p) = (q, -p); with one iteration allowed the solver says it stopped short."""
    _, masses, x, p = ethanol
    model = symplectic_model(ethanol, kind=kind)
    q0, p0 = torch.as_tensor(x)[None], torch.as_tensor(p)[None]
    with torch.no_grad():
        q1, p1 = model(q0, p0)
        assert model.converged and (model.iterations > 1 or kind is LearnedVerletNet)
        q2, p2 = model(q1, -p1)
    assert float((q2 - q0).abs().max()) < 1e-10 and float((p2 + p0).abs().max()) < 1e-8
    if kind is LearnedVerletNet:
        return
    capped = symplectic_model(ethanol)
    capped.max_iterations = 1
    with torch.no_grad():
        capped(q0, p0)
    assert not capped.converged and capped.residual > capped.tolerance


def test_the_map_keeps_its_energy_without_drift_and_an_explicit_map_of_the_same_function_does_not(ethanol):
    """Backward error analysis: a symplectic map close to the flow of H = K + E keeps H within bounded
    oscillations. 1,000 strides: the drift of H over the second half against the first stays within the
    fluctuation; the explicit map z' = z + J grad S(z) (same S, planted) drifts by far more."""
    _, masses, x, p = ethanol
    model = symplectic_model(ethanol, tolerance=1e-10)

    def energy(q, p):
        with torch.no_grad():
            return float((p**2 / (2 * model.masses[:, None])).sum() + model.correction(q, p)[0])

    def run(step):
        q, m = torch.as_tensor(x)[None], torch.as_tensor(p)[None] * 0.5
        energies = []
        for _ in range(1000):
            q, m = step(q, m)
            energies.append(energy(q, m))
        return np.array(energies)

    def explicit(q, m):
        dq, dp = model.increments(q, m)
        return q + dq, m + dp

    def implicit(q, m):
        with torch.no_grad():
            out = model(q, m)
        assert model.converged
        return out

    symplectic, planted = run(implicit), run(explicit)
    drift = lambda e: abs(e[500:].mean() - e[:500].mean())  # noqa: E731
    assert drift(symplectic) < 3 * symplectic.std() + 1e-9
    assert drift(planted) > 10 * max(drift(symplectic), symplectic.std())


@pytest.mark.parametrize("kind", ["midpoint", "verlet"])
def test_a_symplectic_model_trains_saves_and_loads_through_the_flashmd_pipeline(tmp_path, kind):
    """train flashmd --symplectic KIND on a few ANI-1x NVE segments of alanine dipeptide: the loss falls below free
    flight's and the file loads back as the same map; the midpoint model refuses rollouts (no solver in
    training)."""
    from openmm_accel.flashmd.config import TrainFlashMDConfig
    from openmm_accel.flashmd.pipeline import run_training
    from openmm_accel.flashmd.training import TrainingConfig, Trajectories, load, train
    from openmm_accel.learning.dataset import Dataset
    output = str(tmp_path / "symplectic.pt")
    metadata = run_training(TrainFlashMDConfig(model="ani1x", symplectic=kind, stride_fs=8.0, segments=2,
                                                segment_steps=80, decorrelation_steps=50, epochs=3, threads=1,
                                                output=output, progress=False))
    assert metadata["final_validation_loss"] < 2.0  # free flight scores 2
    model = load(output)
    assert type(model) is {"midpoint": SymplecticFlashMDNet, "verlet": LearnedVerletNet}[kind]
    assert model.volume_preserving
    if kind == "verlet":
        return
    data = Trajectories.of(Dataset.load(output + ".data.npz"))
    with pytest.raises(InputError, match="rollout: expected 1 for a symplectic model"):
        train(model, data, TrainingConfig(epochs=1, rollout=2))
