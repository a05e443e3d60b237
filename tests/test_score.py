"""Score-based forces (Plainer et al. 2025, arXiv:2506.17139): the diffusion, the energy network, its forces
for OpenMM, the Fokker-Planck residual, training and model files."""
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import SIGMA_BUDGET
from method_tests import MethodTests
from openmm_accel import InputError, systems
from openmm_accel.learning.trainer import Trainer, TrainerConfig
from openmm_accel.score.diffusion import VPDiffusion, alpha, sigma
from openmm_accel.score.mapping import Mapping
from openmm_accel.score.model import ScoreModel, kt_of
from openmm_accel.score.network import EnergyNet
from openmm_accel.score.model import check_mapping, load, save
from openmm_accel.score.training import ScoreTrainingConfig, train_score



def random_rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))  # a proper rotation


def test_backbone_mapping_keeps_phi_and_psi():
    import mdtraj
    ala2 = systems.load("alanine-dipeptide-vacuum")
    mapping = Mapping.of(ala2.topology, "backbone")
    assert mapping.describe(ala2.topology) == ["ACE-C", "ALA-N", "ALA-CA", "ALA-C", "NME-N"]
    full = mdtraj.Trajectory(np.asarray(ala2.positions._value)[None], mdtraj.Topology.from_openmm(ala2.topology))
    beads = mdtraj.Trajectory(mapping(full.xyz), mdtraj.Topology.from_openmm(mapping.topology(ala2.topology)))
    np.testing.assert_allclose(mdtraj.compute_phi(beads)[1], mdtraj.compute_phi(full)[1], atol=1e-6)
    np.testing.assert_allclose(mdtraj.compute_psi(beads)[1], mdtraj.compute_psi(full)[1], atol=1e-6)
    np.testing.assert_allclose(mapping.masses(ala2.system), [12.01, 14.01, 12.01, 12.01, 14.01], atol=0.01)
    with pytest.raises(InputError, match="mapping: expected distinct atom indices"):
        Mapping.of(ala2.topology, [0, 0, 99])


def test_forces_are_kt_times_the_score_over_the_scale_and_rotate_with_the_molecule():
    """The OpenMM potential U = kT E((x - mean)/scale): its forces (autograd) equal kT s / scale, match finite
    differences of U, sum to zero, and rotate with the beads; E is invariant, and odd features see a mirror."""
    torch.manual_seed(0)
    net = EnergyNet(5, hidden=16, layers=2).double()  # as a model file loads: float64 for the checks
    model = ScoreModel(net, scale=0.12, temperature_k=300.0)
    potential = model.energy_model()
    x = np.random.default_rng(1).normal(scale=0.15, size=(3, 5, 3))
    energies, forces = potential.evaluate(x)
    score = model.diffusion.score(net, torch.as_tensor((x - x.mean(1, keepdims=True)) / 0.12),
                                  torch.full((3,), 1e-5, dtype=torch.float64))[1].detach().numpy()
    np.testing.assert_allclose(forces, kt_of(300.0) * score / 0.12, rtol=1e-10, atol=1e-10)
    h, numeric = 1e-6, np.zeros_like(x[0])
    for i in range(5):
        for k in range(3):
            plus, minus = x[:1].copy(), x[:1].copy()
            plus[0, i, k] += h
            minus[0, i, k] -= h
            numeric[i, k] = -(potential.evaluate(plus)[0][0] - potential.evaluate(minus)[0][0]) / (2 * h)
    np.testing.assert_allclose(forces[0], numeric, rtol=1e-6, atol=1e-6 * np.abs(numeric).max())
    np.testing.assert_allclose(forces.sum(1), 0.0, atol=1e-9)
    rotation = random_rotation(2)
    moved = x @ rotation.T + np.array([0.3, -1.0, 2.0])
    moved_energies, moved_forces = potential.evaluate(moved)
    np.testing.assert_allclose(moved_energies, energies, rtol=1e-10)
    np.testing.assert_allclose(moved_forces, forces @ rotation.T, rtol=1e-8, atol=1e-9)
    mirrored = x * np.array([1.0, 1.0, -1.0])
    assert not np.allclose(potential.evaluate(mirrored)[0], energies)  # chirality is seen


def gaussian_energy(diffusion, variance0, wrong=False):
    """-log q_t of centred Gaussian data of variance ``variance0`` (exact), or a time-inconsistent one."""
    def energy(x, t):
        v = alpha(t) ** 2 * variance0 + sigma(t) ** 2 if not wrong else torch.full_like(t, variance0)
        return (x**2).sum((-1, -2)) / (2 * v) + 0.5 * diffusion.dimension * torch.log(v)
    return energy


@pytest.mark.parametrize("variance0, times, dtype", [(0.49, (0.02, 0.97), torch.float64),
                                                     (1e-3, (1e-5, 0.05), torch.float32)])
def test_the_fokker_planck_residual_vanishes_for_the_exact_diffused_density_only(variance0, times, dtype):
    """For Gaussian data the diffused density is known in closed form: the estimate of r^2 is zero within
    SIGMA_BUDGET standard errors for it, and far from zero for a density that does not evolve with t. Also
    for narrow data (a bond's spread) at small t in float32, as training uses it, where the density changes
    fastest and the estimate is noisiest (|r| ~ 80 per sample from the probe alone)."""
    diffusion = VPDiffusion(5)
    generator = torch.Generator().manual_seed(0)
    low, high = times
    t = (low * (high / low) ** torch.rand(2000, generator=generator, dtype=torch.float64)).to(dtype)
    x0 = diffusion.noise((2000, 5, 3), generator, dtype) * variance0**0.5
    xt, _ = diffusion.diffuse(x0, t, generator)
    z = {}
    for wrong in (False, True):
        r1, r2 = diffusion.fp_residual_pair(gaussian_energy(diffusion, variance0, wrong), xt, t, generator)
        product = (r1 * r2).detach().double().numpy()
        z[wrong] = product.mean() / (product.std(ddof=1) / np.sqrt(len(product)))
    assert abs(z[False]) < SIGMA_BUDGET and z[True] > SIGMA_BUDGET, z
    # and denoising score matching scores the exact score better than the time-inconsistent one
    loss = diffusion.dsm_loss(gaussian_energy(diffusion, variance0), x0, t, generator).mean().item()
    wrong = diffusion.dsm_loss(gaussian_energy(diffusion, variance0, True), x0, t, generator).mean().item()
    assert wrong > loss


class MLPEnergy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                       torch.nn.SiLU(), torch.nn.Linear(64, 1)).double()

    def forward(self, x, t):
        from openmm_accel.score.diffusion import time_features
        return self.net(torch.cat([x[:, 0], time_features(t)], -1))[:, 0]


def test_the_metropolis_corrector_keeps_the_model_density_where_unadjusted_langevin_does_not():
    """A corrector step at a fixed t must leave q_t = exp(-E) invariant. Chains started from the exact
    Gaussian q_t (variance v per coordinate) keep mean(x^2) = v within SIGMA_BUDGET standard errors after
    20 MALA steps of step size v, where ULA (the same step without the Metropolis test: the planted bug) drifts
    to its own stationary variance v / (1 - step / 2v) = 2v. Then the whole predictor-corrector sampler on
    exact Gaussian data reproduces its variance (tolerance 3%: 8 standard errors of 20,000 samples' variance
    plus the Euler-Maruyama bias of 200 steps)."""
    diffusion = VPDiffusion(4, d=3)
    generator = torch.Generator().manual_seed(5)
    energy = gaussian_energy(diffusion, 0.49)
    t = torch.full((20000,), 0.3, dtype=torch.float64)
    v = (alpha(t[0]) ** 2 * 0.49 + sigma(t[0]) ** 2).item()
    x = diffusion.noise((20000, 4, 3), generator) * v**0.5
    value, score = diffusion._energy_score(energy, x, t)
    step = torch.tensor(v, dtype=torch.float64)
    unadjusted = x.clone()
    rates = []
    for _ in range(20):
        x, value, score, rate = diffusion._mala(energy, x, value, score, t, step, generator)
        rates.append(rate)
        _, drift = diffusion._energy_score(energy, unadjusted, t)
        unadjusted = unadjusted + step * drift + torch.sqrt(2 * step) * diffusion.noise(x.shape, generator)

    def z(samples):  # per chain: the mean of x^2 over its 9 independent centred coordinates
        square = (samples**2).sum((-1, -2)).numpy() / diffusion.dimension
        return (square.mean() - v) / (square.std(ddof=1) / np.sqrt(len(square)))
    assert 0.2 < np.mean(rates) < 0.95, rates  # a step that moves the chains, yet is often accepted
    assert abs(z(x)) < SIGMA_BUDGET and z(unadjusted) > SIGMA_BUDGET, (z(x), z(unadjusted))
    samples = diffusion.sample(energy, 20000, 200, generator, corrector_steps=1, snr=0.3)
    assert abs((samples**2).sum((-1, -2)).mean().item() / diffusion.dimension / 0.49 - 1) < 0.03
    assert len(diffusion.corrector_acceptance) == 200 and min(diffusion.corrector_acceptance) > 0.5


def test_a_small_training_on_a_two_dimensional_mixture_samples_its_modes():
    """Two Gaussian modes at (+-1.5, 0), weights 0.7 and 0.3, width 0.3: after training on 4000 points with
    the shared trainer, reverse-SDE samples, plain and with the Metropolis corrector, put 0.7 +- 0.07 of their
    mass on the heavier mode, near its centre (tolerances: ~4 binomial standard errors of 2000 samples plus
    what a short CPU training misses). 100 epochs, because the corrector samples the model's own q_t and so
    exposes energy levels a shorter training leaves wrong (after 25 epochs: 0.87 with it, 0.72 without)."""
    rng = np.random.default_rng(0)
    heavy = rng.random(4000) < 0.7
    data = np.where(heavy[:, None], [1.5, 0.0], [-1.5, 0.0]) + 0.3 * rng.normal(size=(4000, 2))
    x = torch.as_tensor(data[:, None, :])
    diffusion = VPDiffusion(1, d=2, centred=False)
    torch.manual_seed(0)
    energy = MLPEnergy()
    trainer = Trainer(energy, len(x), TrainerConfig(epochs=100, batch_size=128, learning_rate=3e-3, seed=1))

    def losses(index, training):
        t = 1e-5 + (1 - 1e-5) * torch.rand(len(index), generator=trainer.generator, dtype=torch.float64)
        loss = diffusion.dsm_loss(energy, x[torch.as_tensor(index)], t, trainer.generator).mean()
        return (loss if training else loss.detach()), {}

    trainer.fit(losses)
    for corrector_steps in (0, 1):
        samples = diffusion.sample(energy, 2000, 300, torch.Generator().manual_seed(2),
                                   corrector_steps=corrector_steps)[:, 0].numpy()
        on_heavy = samples[:, 0] > 0
        assert abs(on_heavy.mean() - 0.7) < 0.07, (corrector_steps, on_heavy.mean())
        assert abs(samples[on_heavy, 0].mean() - 1.5) < 0.15 and abs(samples[:, 1].mean()) < 0.1


def test_training_writes_a_model_file_that_refuses_another_mapping(tmp_path):
    rng = np.random.default_rng(3)
    positions = rng.normal(scale=0.1, size=(64, 5, 3)) + np.arange(5)[None, :, None] * 0.15
    config = ScoreTrainingConfig(epochs=2, batch_size=16, hidden=8, fp_weight=1e-3, seed=2)
    model, result = train_score(positions, config, metadata={"beads": ["ACE-C", "ALA-N", "ALA-CA", "ALA-C", "NME-N"]})
    assert [h["epoch"] for h in result["history"]] == [1, 2] and np.isfinite(result["history"][-1]["fp"])
    path = str(tmp_path / "score.npz")
    save(path, model)
    copy = load(path)
    x = rng.normal(scale=0.1, size=(2, 5, 3))
    np.testing.assert_array_equal(copy.energy_model().evaluate(x)[1], model.energy_model().evaluate(x)[1])
    assert copy.scale == model.scale and copy.metadata["training"]["fp_weight"] == 1e-3
    check_mapping(copy, ["ACE-C", "ALA-N", "ALA-CA", "ALA-C", "NME-N"], path)
    with pytest.raises(InputError, match="score_model: expected a molecule with the beads the model .* was made for "
                                         r"\(ACE-C, ALA-N, ALA-CA, ALA-C, NME-N\), got ACE-C, .*, ALA-O at those atoms"):
        check_mapping(copy, ["ACE-C", "ALA-N", "ALA-CA", "ALA-C", "ALA-O"], path)
    with pytest.raises(InputError, match="path: expected an existing score model file"):
        load(str(tmp_path / "missing.npz"))
    from openmm_accel.flashmd.pretrained import shipped
    with pytest.raises(InputError, match="path: expected a score model file, got .*a flashmd model file"):
        load(shipped()["ala2-amber-16fs"])


def test_time_partitioned_experts_train_in_turn_and_round_trip(tmp_path):
    """Experts (0.3 between them): each trains on its own times (with a checkpoint each, resumable), the
    energy at t is its range's expert's, MD uses the smallest times' expert, and the file round-trips."""
    from openmm_accel.score.network import TimeExperts
    rng = np.random.default_rng(4)
    positions = rng.normal(scale=0.1, size=(48, 5, 3)) + np.arange(5)[None, :, None] * 0.15
    config = ScoreTrainingConfig(epochs=1, batch_size=16, hidden=8, fp_weight=1e-3, fp_max_t=0.3, seed=2,
                                 experts=(0.3,), expert_epochs=(2, 1))
    checkpoint = str(tmp_path / "score.npz.train.chk")
    model, result = train_score(positions, config, checkpoint)
    assert isinstance(model.net, TimeExperts) and model.md_net is model.net.nets[0]
    assert [(h["expert"], h["epoch"]) for h in result["history"]] == [(0, 1), (0, 2), (1, 1)]
    assert result["history"][0]["fp"] != 0.0 and result["history"][-1]["fp"] == 0.0  # the residual only below 0.3
    assert os.path.isfile(checkpoint + ".expert0") and os.path.isfile(checkpoint + ".expert1")
    x = torch.as_tensor(rng.normal(scale=0.5, size=(4, 5, 3)))
    t = torch.tensor([1e-5, 0.2, 0.3, 0.9], dtype=torch.float64)
    expected = torch.cat([model.net.nets[0](x[:2], t[:2]), model.net.nets[1](x[2:], t[2:])])
    assert torch.equal(model.net(x, t), expected)
    path = str(tmp_path / "score.npz")
    save(path, model)
    copy = load(path)
    assert copy.net.bounds.tolist() == [0.0, 0.3, 1.0]
    assert torch.equal(copy.net(x, t), model.net(x, t))
    np.testing.assert_array_equal(copy.energy_model().evaluate(x.numpy())[1], model.energy_model().evaluate(x.numpy())[1])
    again, _ = train_score(positions, config, checkpoint)  # both experts finished: resumes to the same weights
    assert torch.equal(again.net(x, t), model.net(x, t))
    with pytest.raises(InputError, match="experts: expected increasing diffusion times strictly between 0 and 1"):
        train_score(positions, ScoreTrainingConfig(experts=(0.6, 0.1)))


class HarmonicBonds(torch.nn.Module):
    """An exact "model": E = K/2 sum (|x_(i+1) - x_i| - 1)^2 in normalised units, the same at every t."""

    def __init__(self, n: int, stiffness: float):
        super().__init__()
        self.n, self.stiffness = n, stiffness

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lengths = torch.sqrt(((x[:, 1:] - x[:, :-1]) ** 2).sum(-1))
        return 0.5 * self.stiffness * ((lengths - 1.0) ** 2).sum(-1)


@pytest.mark.parametrize("bath_k", [300.0, 450.0])
def test_coarse_grained_md_with_an_exact_model_samples_its_boltzmann_distribution(bath_k):
    """Three beads bonded by an analytic energy written as a score model (U = kT E(x / scale)): Langevin MD
    in Simulation through the TorchForce bridge gives bond lengths whose mean and spread are those of
    p(r) ~ r^2 exp(-U(r)/kT), within SIGMA_BUDGET standard errors (pymbar's statistical inefficiency).
    Planted bug: the thermostat 50 % too hot (450 K, variance 50 % high) must fail the check."""
    import openmm
    from openmm import app, unit
    from openmm_accel.analysis import standard_error
    from openmm_accel.forces import create_ml_system
    from openmm_accel.integrators import LangevinABOBAIntegrator
    scale, stiffness = 0.1, 100.0
    model = ScoreModel(HarmonicBonds(3, stiffness), scale, 300.0)
    system = create_ml_system(model.energy_model(), [12.0, 12.0, 12.0], "torchforce")
    topology = app.Topology()
    residue = topology.addResidue("CG", topology.addChain())
    for _ in range(3):
        topology.addAtom("C", app.element.carbon, residue)
    integrator = LangevinABOBAIntegrator(bath_k, 10.0, 0.002)
    integrator.setRandomNumberSeed(5)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(np.array([[0, 0, 0], [0.1, 0, 0], [0.1, 0.1, 0]]) * unit.nanometer)
    simulation.context.setVelocitiesToTemperature(bath_k, 5)
    simulation.step(2000)
    lengths = []
    for _ in range(3000):
        simulation.step(10)
        x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)._value
        lengths.append(np.linalg.norm(x[1:] - x[:-1], axis=-1) / scale)
    lengths = np.array(lengths).ravel()
    d = np.linspace(0.3, 1.7, 20001)
    weight = d**2 * np.exp(-0.5 * stiffness * (d - 1.0) ** 2)
    mean = np.trapezoid(d * weight, d) / np.trapezoid(weight, d)
    second = np.trapezoid(d**2 * weight, d) / np.trapezoid(weight, d)
    bonds = np.array(lengths).reshape(-1, 2)
    z_mean = (bonds.mean() - mean) / (standard_error(bonds.mean(1)))
    spread = ((bonds - mean) ** 2).mean(1)  # its mean is the variance of p(r)
    z_variance = (spread.mean() - (second - mean**2)) / standard_error(spread)
    passed = abs(z_mean) < SIGMA_BUDGET and abs(z_variance) < SIGMA_BUDGET
    print(f"bath {bath_k} K: z mean {z_mean:.2f}, z variance {z_variance:.2f}")
    assert passed == (bath_k == 300.0), (z_mean, z_variance)


def test_data_train_and_run_score_end_to_end(tmp_path, tiny_reference_data):
    """Reference data -> training -> sampling and a run: coarse-grained trajectories of the five backbone
    beads that mdtraj reads with phi and psi; an existing sample file is not written over; a potential given
    with the model is refused (the model brings its own); the benchmark. Through the Python API each command
    is a thin layer over."""
    import json
    import mdtraj
    from openmm_accel.score.config import ScoreBenchConfig, ScoreRunConfig, ScoreSampleConfig, TrainScoreConfig
    from openmm_accel.score.method import METHOD
    from openmm_accel.simulate import RunConfig, run
    data = tiny_reference_data
    model = str(tmp_path / "score.npz")
    assert "wrote" in METHOD.train(TrainScoreConfig(data=data, epochs=2, batch_size=16, hidden=8, fp_weight=5e-4,
                                                    experts=(0.5,), expert_epochs=(2, 1), output=model,
                                                    progress=False))
    samples = str(tmp_path / "samples.dcd")
    METHOD.sample(ScoreSampleConfig(score_model=model, count=8, sde_steps=200, output=samples))
    drawn = mdtraj.load(samples, top=samples + ".pdb")
    assert drawn.n_frames == 8 and drawn.n_atoms == 5 and np.all(np.isfinite(mdtraj.compute_psi(drawn)[1]))
    with pytest.raises(InputError, match="output: expected a new file"):
        METHOD.sample(ScoreSampleConfig(score_model=model, output=samples))
    out = str(tmp_path / "run")
    config = RunConfig(method="score", options=ScoreRunConfig(score_model=model, replicas=3), output=out,
                       progress=False, steps=20, report_interval=10, timestep_fs=2.0)
    summary = run(config)
    trajectory = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert trajectory.n_atoms == 15 and trajectory.n_frames == 2 and trajectory.n_chains == 3
    assert np.all(np.isfinite(mdtraj.compute_phi(trajectory)[1])) and mdtraj.compute_psi(trajectory)[1].shape == (2, 3)
    # without a system: the system the score method's models are made for
    assert summary["atoms"] == 15 and summary["steps_run"] == 20
    assert summary["config"]["system"] == "openmmtools:AlanineDipeptideImplicit"
    with pytest.raises(InputError, match=r"model \(--model\): expected it only with --method plain"):
        run(replace(config, model="mm", overwrite=True))
    report = str(tmp_path / "bench.json")
    METHOD.bench(ScoreBenchConfig(models=(model,), data=data, samples=20, sde_steps=20, md_duration=0.004,
                                  md_discard=1.0, replicas=2, md_start="iid", all_atom_duration=0.04, json=report))
    result = json.load(open(report))["models"][0]
    assert result["held_out_frames"] == 16 and result["md"]["frames"] == 2 * 3 and result["iid"]["frames"] == 20
    assert result["md_start"] == "iid"  # the replicas started from the model's own samples
    assert all(0 <= result[key]["js"] <= np.log(2) for key in ("iid", "md", "noise_floor", "md_noise_floor"))
    # each floor is for its own sample size, from the second halves' 8 frames (fewer than the 20 iid samples)
    assert result["compared_frames"] == 8 and result["noise_floor"]["frames"] == 8
    assert result["md_noise_floor"]["frames"] == 6
    assert os.path.getsize(str(tmp_path / "bench.png")) > 0
    markdown = open(tmp_path / "bench.md").read()
    assert "CG MD, 2 replicas" in markdown
    assert "iid (reverse SDE, 20 levels, 1 MALA corrector step per level, snr 0.3)" in markdown  # what drew them
    # all-atom speed of the data's own molecule in both solvents, made as the data were
    speeds = json.load(open(report))["all_atom"]["openmmtools:AlanineDipeptideImplicit"]
    assert [speeds[s]["system"] for s in ("implicit", "explicit")] == ["openmmtools:AlanineDipeptideImplicit",
                                                                      "openmmtools:AlanineDipeptideExplicit"]


def test_benchmark_metrics_vanish_for_equal_samples_and_measure_a_planted_difference():
    """PMF error: 0 for the same sample; doubling one basin's frames shifts its free energy by kT ln 2, which
    the weighted RMS after the best shift reports as kT ln 2 sqrt(w (1 - w)) (w: that basin's weight). Bond
    W1: 0 for the same frames, the shift itself for lengths shifted by 1 pm."""
    from openmm_accel.score.benchmark import bond_w1, pmf_error
    rng = np.random.default_rng(4)
    angles = np.concatenate([rng.normal([-1.4, 2.6], 0.2, (4000, 2)), rng.normal([-1.3, -0.7], 0.2, (2000, 2))])
    kt = 2.494
    assert pmf_error(angles, angles, kt) == pytest.approx(0.0, abs=1e-12)
    second = angles[:, 1] < 0.9
    planted = np.concatenate([angles, angles[second]])
    p = np.histogram2d(angles[:, 0], angles[:, 1], [np.linspace(-np.pi, np.pi, 65)] * 2)[0]
    f = -kt * np.log(np.where(p > 0, p, 1.0))
    region = (p > 0) & (f <= f[p > 0].min() + 4 * kt)
    lower = np.zeros_like(p, dtype=bool)
    lower[:, :np.searchsorted(np.linspace(-np.pi, np.pi, 65), 0.9) - 1] = True  # bins wholly below psi 0.9
    w = p[region & lower].sum() / p[region].sum()
    assert pmf_error(angles, planted, kt) == pytest.approx(kt * np.log(2) * np.sqrt(w * (1 - w)), rel=1e-9)
    chain = np.cumsum(rng.normal(0.15, 0.01, (500, 5, 3)), axis=1)
    assert bond_w1(chain, chain) == [0.0] * 4
    stretched = chain.copy()
    stretched[:, 1:] += 0.001 * (chain[:, 1:2] - chain[:, :1]) / np.linalg.norm(chain[:, 1:2] - chain[:, :1], axis=-1,
                                                                                    keepdims=True)
    assert bond_w1(chain, stretched)[0] == pytest.approx(0.001, rel=1e-9) and bond_w1(chain, stretched)[1] < 1e-12


@pytest.mark.parametrize("system", ["openmmtools:AlanineDipeptideImplicit", "openmmtools:AlanineDipeptideExplicit",
                                    "valine-dipeptide-implicit"])
def test_each_shipped_model_runs_its_system_with_no_model_file(tmp_path, system):
    """`run --method score --system S` picks the model shipped for S (made by `openmm-accel train score`: its
    command and wall time are in the file) and writes a CG trajectory mdtraj reads with phi and psi."""
    import mdtraj
    from openmm_accel.score.method import resolve
    from openmm_accel.simulate import RunConfig, run
    metadata = load(resolve(None, system)).metadata
    assert metadata["data"]["settings"]["system"] == system and "openmm-accel train score" in metadata["command"]
    assert metadata["wall_seconds"] > 0
    out = str(tmp_path / "run")
    run(RunConfig(method="score", system=system, steps=20, report_interval=10, timestep_fs=2.0, output=out,
                  progress=False))
    trajectory = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert trajectory.n_atoms == 5 and np.all(np.isfinite(mdtraj.compute_phi(trajectory)[1]))


class TestScoreMethod(MethodTests):
    method = "score"
    run = dict(steps=20, report_interval=10, timestep_fs=2.0)
    model = "score/ala2-implicit-backbone.npz"
    sample = dict(sde_steps=20, corrector_steps=0)
