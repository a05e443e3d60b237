"""Langevin speculative dynamics: exact one-step coupling, exact chains, schedulers, checkpoints, errors.

Sigma budget and power are those of tests/harmonic.py (SIGMA_BUDGET = 5 standard errors per check). The
planted-bug tests show the chain checks reject a coupling without reflection (z ~ 30 observed) and plain
draft dynamics (z ~ 30), so an implementation with either bug cannot pass.
"""
import json
import os
import subprocess
import sys

import numpy as np
import openmm
import pytest
from openmm import app, unit
from scipy import stats

import openmm_accel.speculative.engine as engine_module
from conftest import SIGMA_BUDGET, platform
from method_tests import MethodTests
from openmm_accel.speculative.config import SpeculativeConfig
from openmm_accel.analysis import standard_error
from harmonic import GAMMA, H, K, KT, TEMPERATURE, failures, harmonic_checks, sample
from openmm_accel import InputError, SimulationError, systems
from openmm_accel.forces import create_ml_system
from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.speculative import SpeculativeLangevinIntegrator, Verification
from openmm_accel.models import create
from openmm_accel.models.analytic import DoubleWellModel, HarmonicModel
from openmm_accel.speculative.coupling import CouplingResult, acceptance_probability, couple
from openmm_accel.speculative.engine import ABOBAParameters, SpeculativeEngine
from openmm_accel.speculative.schedulers import BatchedScheduler
from openmm_accel.speculative.theory import (approximate_rejection, best_window, expected_committed,
                                             predicted_rejection)

ANI_FRICTION = 50.0  # 1/ps, of the ANI-1x trajectory test (see ani1x_series)
PLANTED_HOT_BATH = 380.0  # K: its planted bug
METHODS_WORKED_NUMBERS = {5: 0.17, 10: 0.33, 20: 0.60, 50: 0.97}  # meV/A -> beta (the LSD paper, arXiv:2606.02455)


def test_theory_reproduces_the_worked_numbers():
    masses = systems.load("alanine-dipeptide-vacuum").masses
    for mev_per_angstrom, beta in METHODS_WORKED_NUMBERS.items():
        rms = mev_per_angstrom * 0.964853  # kJ/mol/nm
        assert approximate_rejection(rms, masses, 300.0, 1.0, 0.001) == pytest.approx(beta, abs=0.01)
        errors = np.random.default_rng(0).normal(scale=rms, size=(4000, 22, 3))
        assert predicted_rejection(errors, masses, 300.0, 1.0, 0.001) == pytest.approx(beta, abs=0.015)
    # the synchronous arithmetic of METHODS 1.6: K = 16, 0.4 ms drafts, 18 ms target, 28 ms for 16 at once:
    # 3x needs ~5.7 committed steps per 34 ms round, i.e. acceptance ~0.85
    cost = lambda k: 0.018 + (0.028 - 0.018) * (k - 1) / 15  # noqa: E731
    assert expected_committed(0.85, 16) == pytest.approx(6.17, abs=0.01)
    assert 3 * (16 * 0.0004 + cost(16)) / 0.018 == pytest.approx(5.7, abs=0.05)
    at_16 = expected_committed(0.85, 16) / (16 * 0.0004 + cost(16)) * 0.018
    assert best_window(0.85, 0.0004, cost, 16).speedup >= at_16


def test_the_speculative_ceiling_of_measured_costs():
    """``bench models``' bound from measured batched costs: free batching (T(K) = T(1)) and every draft
    accepted commit the whole largest window per plain step's time; acceptance 0.9 commits
    (1 - 0.9^32)/0.1 of it; without any batching gain (T(K) = K T(1)) nothing beats plain MD."""
    from openmm_accel.benchmarks.models import TARGET, speculative_ceiling

    def rows(cost):
        step = {"model": f"{TARGET} ABOBA step (TorchForce)", "threads": 1, "batch": 1, "ms_per_call": 10}
        return [step] + [{"model": TARGET, "threads": 1, "batch": k, "ms_per_call": cost(k)} for k in (1, 8, 32)]
    free = {row["acceptance"]: row for row in speculative_ceiling(rows(lambda k: 10.0), (0.9, 1.0))}
    assert free[1.0]["window"] == 32 and free[1.0]["speedup_bound"] == pytest.approx(32)
    assert free[0.9]["speedup_bound"] == pytest.approx((1 - 0.9**32) / 0.1)
    assert speculative_ceiling(rows(lambda k: 10.0 * k), (1.0,))[0]["speedup_bound"] == pytest.approx(1)


def whitened_samples(coupling, delta_norm, n=20000, dim=6, seed=0):
    """Couple n draws for one fixed pair of means; return whitened committed velocities and acceptances."""
    rng = np.random.default_rng(seed)
    sigma = np.linspace(0.5, 2.0, dim)
    mu_q = rng.normal(size=dim)
    direction = rng.normal(size=dim)
    delta = delta_norm * direction / np.linalg.norm(direction)
    mu_p = mu_q + sigma * delta
    out, accepted = np.empty((n, dim)), np.empty(n, dtype=bool)
    for i in range(n):
        z = rng.standard_normal(dim)
        result = coupling(z, delta, mu_p, sigma, mu_q + sigma * z, np.log(rng.random()))
        out[i], accepted[i] = (result.velocity - mu_p) / sigma, result.accepted
    return out, accepted, delta / delta_norm


@pytest.mark.parametrize("delta_norm", [0.3, 1.5, 3.0])
def test_one_step_coupling_gives_the_target_gaussian(delta_norm):
    """20,000 couplings: acceptance = 2 Phi(-|delta|/2) within 5 binomial sigma; the committed velocity,
    whitened with the TARGET mean, is standard normal (moments within 5 SE, KS p > 1e-4 along delta and
    across it). A KS test on 20,000 samples detects a 0.03 shift of the CDF with power ~1."""
    w, accepted, e = whitened_samples(couple, delta_norm)
    n = len(w)
    expected = float(acceptance_probability(delta_norm))
    assert abs(accepted.mean() - expected) < SIGMA_BUDGET * np.sqrt(expected * (1 - expected) / n)
    assert np.all(np.abs(w.mean(axis=0)) < SIGMA_BUDGET / np.sqrt(n))
    assert np.all(np.abs(w.var(axis=0) - 1) < SIGMA_BUDGET * np.sqrt(2 / n))
    along = w @ e
    across = w @ np.linalg.qr(np.column_stack([e, np.ones_like(e)]))[0][:, 1]
    assert stats.kstest(along, "norm").pvalue > 1e-4
    assert stats.kstest(across, "norm").pvalue > 1e-4


def test_one_step_check_catches_a_missing_reflection():
    def no_reflection(z, delta, mu_p, sigma, v, log_u):
        result = couple(z, delta, mu_p, sigma, v, log_u)
        return result if result.accepted else CouplingResult(mu_p + sigma * z, False, result.log_ratio, 0.0)
    w, _, e = whitened_samples(no_reflection, 1.5)
    assert stats.kstest(w @ e, "norm").pvalue < 1e-6


def test_engine_step_is_exact_from_a_fixed_state():
    """The engine's draft/verify path for one step from one state, over 20,000 noise indices."""
    n = 3
    masses = np.array([1.0, 4.0, 12.0])
    params = ABOBAParameters.create(KT, GAMMA, H, masses)
    engine = SpeculativeEngine(HarmonicModel(n, 0.5 * K), HarmonicModel(n, K), params, seed=5,
                               error_correction=False)
    x = np.array([[0.05, -0.02, 0.01], [0.0, 0.03, -0.04], [0.02, 0.02, 0.02]])
    v = np.array([[0.5, -1.0, 0.2], [0.1, 0.3, -0.2], [0.05, 0.0, 0.1]])
    midpoint = x + 0.5 * H * v
    mu_p = params.a * v + params.c * (-K * midpoint) * params.inverse_mass
    w, accepted = [], []
    for index in range(20000):
        step = engine.draft_step(index, x, v, np.zeros_like(x))
        verified = engine.verify(step, -K * midpoint)
        np.testing.assert_allclose(verified.position, midpoint + 0.5 * H * verified.velocity, rtol=1e-12)
        w.append(((verified.velocity - mu_p) / params.sigma).ravel())
        accepted.append(verified.accepted)
    w = np.array(w)
    assert np.all(np.abs(w.mean(axis=0)) < SIGMA_BUDGET / np.sqrt(len(w)))
    assert np.all(np.abs(w.var(axis=0) - 1) < SIGMA_BUDGET * np.sqrt(2 / len(w)))
    assert stats.kstest(w.ravel()[::9], "norm").pvalue > 1e-4
    expected = engine.statistics.predicted_acceptance
    assert abs(np.mean(accepted) - expected) < SIGMA_BUDGET * np.sqrt(expected * (1 - expected) / len(w))


def speculative(n, draft_k=0.8 * K, window=8, adaptive_window=False, max_window=32, seed=3, **verification):
    """LSD on oscillators, with a fixed window unless a test says otherwise (``verification``: the settings of
    :class:`Verification`)."""
    return SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=HarmonicModel(n, draft_k),
                                         target=HarmonicModel(n, K),
                                         scheduler=BatchedScheduler(window, adaptive_window, max_window), seed=seed,
                                         verification=Verification(**verification))


@pytest.mark.parametrize("error_correction", [True, False])
def test_batched_chain_reproduces_exact_aboba_statistics(error_correction):
    """40 oscillators, draft spring 20% too soft (acceptance ~0.6): stationary moments and the lag-1
    velocity autocovariance equal the exact discrete ABOBA values."""
    integrator = speculative(40, error_correction=error_correction)
    checks = harmonic_checks(*sample(integrator, "Reference", n=40, samples=3000, stride=2))
    assert not failures(checks), "\n".join(failures(checks))
    statistics = integrator.statistics
    assert 0.15 < statistics["acceptance_rate"] < 0.9  # both branches of the coupling are exercised
    assert statistics["committed"] >= 6000 and statistics["rounds"] < statistics["committed"]
    n_verified = statistics["verified"]
    p = statistics["predicted_acceptance"]  # measured acceptance agrees with the force-error prediction
    assert abs(statistics["acceptance_rate"] - p) < SIGMA_BUDGET * np.sqrt(p * (1 - p) / n_verified) * 3


def planted_coupling(bug):
    """The coupling with a planted bug: no reflection of a rejected draw, or every draft accepted."""
    def planted(z, delta, mu_p, sigma, v, log_u):
        result = couple(z, delta, mu_p, sigma, v, log_u)
        if bug == "draft_dynamics":
            return CouplingResult(v, True, result.log_ratio, result.delta_norm)
        return result if result.accepted else CouplingResult(mu_p + sigma * z, False, 0.0, result.delta_norm)
    return planted


@pytest.mark.parametrize("bug", ["no_reflection", "draft_dynamics"])
def test_chain_checks_catch_planted_bugs(monkeypatch, bug):
    monkeypatch.setattr(engine_module, "couple", planted_coupling(bug))
    checks = harmonic_checks(*sample(speculative(40, window=2), "Reference", n=40, samples=1500, stride=2))
    assert len(failures(checks)) >= 4


def crossings(xs, a):
    """Barrier crossings per particle: transitions between x < -a/2 and x > a/2 (with hysteresis)."""
    side = np.where(xs > a / 2, 1, np.where(xs < -a / 2, -1, 0))
    counts = np.zeros(xs.shape[1])
    for j in range(xs.shape[1]):
        visited = side[:, j][side[:, j] != 0]
        counts[j] = np.count_nonzero(np.diff(visited))
    return counts


def double_well_run(integrator, n, steps, seed):
    molecular = systems.double_well(n_particles=n, barrier=4.0, a=0.1, k_perp=1000.0, mass=4.0, seed=seed)
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(TEMPERATURE, seed)
    xs = []
    for _ in range(steps):
        integrator.step(1)
        xs.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value[:, 0])
    return np.array(xs)


@pytest.mark.parametrize("bug", [None, "no_reflection"])
def test_double_well_crossing_rate_and_populations_match_plain_aboba(monkeypatch, bug):
    """32 independent double wells (barrier 4 kJ/mol ~ 1.6 kT) with a draft whose barrier is 50% too low:
    LSD and the plain ABOBA program give the same crossing rate and <x^2> (two-sample z-test over particles,
    5 sigma). Time correlations enter through the crossing rate. Power: with a planted bug (a rejected draw
    not reflected), the crossing rate differs beyond the bound (measured z = 7.2; 1.1 at most without it)."""
    if bug:
        monkeypatch.setattr(engine_module, "couple", planted_coupling(bug))
    n, steps = 32, 3000
    target = DoubleWellModel(n, 4.0, 0.1, 1000.0)
    lsd = SpeculativeLangevinIntegrator(TEMPERATURE, 2.0, 0.004, draft=DoubleWellModel(n, 2.0, 0.1, 1000.0),
                                        target=target, seed=8)
    plain = LangevinABOBAIntegrator(TEMPERATURE, 2.0, 0.004)
    plain.setRandomNumberSeed(9)
    runs = {"lsd": double_well_run(lsd, n, steps, 1), "plain": double_well_run(plain, n, steps, 2)}
    z = []
    for observable in (lambda xs: crossings(xs, 0.1), lambda xs: (xs**2).mean(axis=0)):
        a, b = observable(runs["lsd"]), observable(runs["plain"])
        z.append((a.mean() - b.mean()) / np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n))
    if bug:
        assert max(np.abs(z)) > SIGMA_BUDGET, z
        return
    assert max(np.abs(z)) < SIGMA_BUDGET, z
    assert crossings(runs["plain"], 0.1).mean() > 5  # the observable is informative
    assert 0.05 < lsd.acceptance_rate < 0.95


def trajectory(integrator, molecular, steps, chunk=7, name="Reference"):
    context = openmm.Context(molecular.system, integrator, platform(name))
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(TEMPERATURE, 4)
    frames = []
    for _ in range(steps // chunk):
        integrator.step(chunk)
        state = context.getState(getPositions=True, getVelocities=True)
        frames.append(np.concatenate([state.getPositions(asNumpy=True)._value,
                                      state.getVelocities(asNumpy=True)._value]))
    return np.array(frames), context


def test_window_and_look_ahead_do_not_change_the_trajectory():
    """Without error correction the committed path is a function of the seed alone: any window, and any
    split of the steps into step() calls, gives the same trajectory."""
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    a, _ = trajectory(speculative(10, error_correction=False, window=3, adaptive_window=False), molecular, 70, 7)
    b, _ = trajectory(speculative(10, error_correction=False, window=16, adaptive_window=False), molecular, 70, 14)
    np.testing.assert_allclose(a[1::2], b, rtol=1e-12, atol=1e-14)  # frames at steps 14, 28, ..., 70


def test_the_target_as_its_own_draft_is_plain_aboba_with_every_step_accepted():
    """One model object passed as draft and target (a sanity check users run, and the driver-overhead
    bench): every draft is accepted and the path is the one an equal but separate draft gives (the shared-
    term split once counted that model twice in both forces: a different path, at twice the forces)."""
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    model = HarmonicModel(10, K)
    same = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=model, target=model, seed=3)
    equal = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=HarmonicModel(10, K), target=model, seed=3)
    a, _ = trajectory(same, molecular, 70)
    b, _ = trajectory(equal, molecular, 70)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert same.statistics["acceptance_rate"] == 1.0


def test_driver_overhead_bench_accepts_every_step_and_splits_its_time():
    """`bench lsd`'s overhead row: the trivial target as its own draft commits every draft, and the time
    per committed step is split into model calls and the driver (figures, not asserted: a benchmark)."""
    from openmm_accel.speculative.benchmark import driver_overhead
    row = driver_overhead(steps=200, window=8)
    assert row["acceptance"] == 1.0 and row["models_ms"] > 0
    assert row["models_ms"] + row["driver_ms"] == pytest.approx(row["ms_per_committed_step"])


class FakeClock:
    """``time.perf_counter`` for the engine whose target calls cost ``target_cost(K)`` seconds for a batch
    of K (the adaptive window follows measured costs: here they are made to differ between runs)."""

    def __init__(self, target_cost):
        self.now, self.target_cost, self.pending, self.started = 0.0, target_cost, None, False

    def __call__(self):  # a target call reads the clock twice: the batch's cost passes between the two
        if self.pending is not None and self.started:
            self.now += self.target_cost(self.pending)
            self.pending, self.started = None, False
        elif self.pending is not None:
            self.started = True
        else:
            self.now += 1e-4  # a draft call
        return self.now


def adaptive_path(monkeypatch, target_cost, **options):
    """Frames of a seeded, error-corrected, adaptive-window LSD run whose target costs ``target_cost(K)``,
    and the windows its rounds used."""
    clock = FakeClock(target_cost)
    monkeypatch.setattr(engine_module.time, "perf_counter", clock)
    integrator = speculative(10, draft_k=0.95 * K, adaptive_window=True, window=4, max_window=16, **options)
    windows = []
    original = SpeculativeEngine.target_forces

    def timed(engine, steps):
        windows.append(len(steps))
        clock.pending = len(steps)
        return original(engine, steps)
    monkeypatch.setattr(SpeculativeEngine, "target_forces", timed)
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    frames, _ = trajectory(integrator, molecular, 700, 7)
    return frames, windows


@pytest.mark.parametrize("bug", [False, True])
def test_error_corrected_path_depends_only_on_the_seed(monkeypatch, bug):
    """Seeded, error-corrected and adaptive: a run whose target is cheap (long windows) and one whose target
    is dear (short windows) commit the same path bit for bit, because which correction a draft uses is set
    by the committed history alone. Planted bug: the old rule (each round takes the correction of the last
    committed step) makes the path follow the windows, so the same comparison finds different paths."""
    if bug:
        monkeypatch.setattr(engine_module.Correction, "after",
                            lambda self, step: engine_module.Correction(step.index + 1, step.offset, self.period))
    cheap, cheap_windows = adaptive_path(monkeypatch, lambda k: 1e-3 + 1e-5 * k)
    dear, dear_windows = adaptive_path(monkeypatch, lambda k: 1e-3 + 1e-3 * k)
    assert cheap_windows != dear_windows  # the schedules really differ
    assert np.array_equal(cheap, dear) != bug


def test_simulation_reporters_and_checkpoint_continue_bitwise(tmp_path):
    """Inside Simulation (with error correction and a look-ahead buffer spanning reports), a checkpoint
    restores everything: the continuation equals the uninterrupted run exactly; step count and time are
    physical; statistics survive."""
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    simulation = app.Simulation(molecular.topology, molecular.system,
                                speculative(10, window=12, adaptive_window=False), platform("Reference"))
    simulation.context.setPositions(molecular.positions)
    simulation.context.setVelocitiesToTemperature(TEMPERATURE, 1)
    log = str(tmp_path / "log.csv")
    simulation.reporters.append(app.StateDataReporter(log, 5, step=True, time=True))
    simulation.step(33)
    checkpoint = str(tmp_path / "lsd.chk")
    simulation.saveCheckpoint(checkpoint)
    statistics = simulation.integrator.statistics
    simulation.step(40)
    expected = simulation.context.getState(getPositions=True, getVelocities=True)
    simulation.loadCheckpoint(checkpoint)
    assert simulation.currentStep == 33 and simulation.integrator.statistics["committed"] == statistics["committed"]
    simulation.step(40)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    np.testing.assert_array_equal(state.getPositions(asNumpy=True), expected.getPositions(asNumpy=True))
    np.testing.assert_array_equal(state.getVelocities(asNumpy=True), expected.getVelocities(asNumpy=True))
    assert simulation.currentStep == 73
    assert state.getTime().value_in_unit(unit.picosecond) == pytest.approx(73 * H)
    steps = np.loadtxt(log, delimiter=",", skiprows=1)[:, 0]
    assert list(steps[:6]) == [5, 10, 15, 20, 25, 30]


def test_changing_temperature_flushes_the_look_ahead():
    """A run with a 16-step look-ahead and one without (window 1) must agree after a temperature change:
    without error correction the path is a function of the seed and the per-step kernels only."""
    molecular = systems.harmonic_oscillators(n_particles=5, k=K, mass=4.0)
    finals = []
    for window in (16, 1):
        integrator = speculative(5, error_correction=False, window=window, adaptive_window=False)
        _, context = trajectory(integrator, molecular, 7)
        if window == 16:
            assert len(integrator._buffer) > 0  # look-ahead was pending when the temperature changed
        integrator.setTemperature(600.0)
        integrator.step(10)
        assert integrator.engine.params.kt == pytest.approx(2 * KT)
        finals.append(context.getState(getVelocities=True).getVelocities(asNumpy=True)._value)
    np.testing.assert_array_equal(finals[0], finals[1])


# -- bad input --------------------------------------------------------------------------------------------
class NaNAfter(HarmonicModel):
    """A harmonic model whose forces become NaN after `calls` evaluations."""

    def __init__(self, n, calls):
        super().__init__(n, K)
        self.calls, self.remaining = calls, calls

    def forward(self, positions, box=None):
        self.remaining -= 1
        energies = super().forward(positions, box)
        return energies * float("nan") if self.remaining < 0 else energies


@pytest.mark.parametrize("role", ["draft", "target"])
def test_nan_forces_stop_with_model_and_step_and_keep_the_trajectory(role):
    molecular = systems.harmonic_oscillators(n_particles=5, k=K, mass=4.0)
    models = {"draft": HarmonicModel(5, 0.9 * K), "target": HarmonicModel(5, K)}
    models[role] = NaNAfter(5, 30)
    integrator = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=models["draft"], target=models["target"],
                                               seed=1, scheduler=BatchedScheduler(4, adaptive=False))
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    with pytest.raises(SimulationError, match=rf"the {role} model returned non-finite forces at step \d+"):
        integrator.step(500)
    committed = integrator.statistics["committed"]
    state = context.getState(getPositions=True, getVelocities=True)
    assert np.all(np.isfinite(state.getPositions(asNumpy=True)._value))
    assert 0 < context.getStepCount() <= committed


def test_mismatched_draft_and_target_are_refused():
    molecular = systems.harmonic_oscillators(n_particles=5, k=K, mass=4.0)

    def bind(**kwargs):
        integrator = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, seed=1, **kwargs)
        context = openmm.Context(molecular.system, integrator, platform("Reference"))
        context.setPositions(molecular.positions)
        integrator.step(1)

    with pytest.raises(InputError, match="draft: expected a model of 5 atoms"):
        bind(draft=HarmonicModel(6, K), target=HarmonicModel(5, K))
    other_masses = systems.harmonic_oscillators(n_particles=5, k=K, mass=12.0).system
    with pytest.raises(InputError, match="draft: expected a System with the same particle masses"):
        bind(draft=other_masses, target=HarmonicModel(5, K))
    with pytest.raises(InputError, match="target: expected the Simulation's own potential"):
        bind(draft=HarmonicModel(5, K), target=HarmonicModel(5, 2 * K))
    with pytest.raises(InputError, match="draft: expected a draft model"):
        SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H)
    with pytest.raises(InputError, match="friction: expected a positive value"):
        SpeculativeLangevinIntegrator(TEMPERATURE, 0.0, H, draft=HarmonicModel(5, K))


def test_system_draft_and_default_target():
    """A draft given as an OpenMM System and the target defaulting to the Simulation's own System."""
    molecular = systems.harmonic_oscillators(n_particles=5, k=K, mass=4.0)
    draft_system = systems.harmonic_oscillators(n_particles=5, k=0.9 * K, mass=4.0).system
    integrator = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=draft_system, seed=2)
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    integrator.step(50)
    assert context.getStepCount() == 50 and integrator.statistics["committed"] >= 50
    assert 0 < integrator.acceptance_rate <= 1


def test_slack_is_labelled_biased():
    with pytest.warns(UserWarning, match="BIASED"):
        speculative(5, slack=10.0)


def ani1x_series(lsd_temperature=300.0):
    """Potential energy and kinetic temperature every 5 steps over 2,000 steps of plain ABOBA with the
    ANI-1x ensemble and of LSD (single-network draft, error correction, fixed window) from one seeded,
    equilibrated state at 300 K, h = 0.5 fs; LSD's bath at ``lsd_temperature``. The friction, 50/ps, makes
    the kinetic energy decorrelate within ~20 fs: at 10/ps its slow tail (measured: blocks of 0.4 ps still
    vary by 20 K) is beyond what a 1 ps series can estimate, and its standard error would be too small."""
    ala2 = systems.load("alanine-dipeptide-vacuum")
    target = create("ani1x", ala2.topology)
    system = create_ml_system(target, ala2.masses)
    equilibration = LangevinABOBAIntegrator(300, ANI_FRICTION, 0.0005)
    equilibration.setRandomNumberSeed(2)
    context = openmm.Context(system, equilibration, platform("Reference"))
    context.setPositions(ala2.positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
    context.setVelocitiesToTemperature(300, 3)
    equilibration.step(1000)
    start = context.getState(getPositions=True, getVelocities=True)
    dof = 3 * 22
    gas_constant = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    results = {}
    for name in ("plain", "lsd"):
        if name == "plain":
            integrator = LangevinABOBAIntegrator(300, ANI_FRICTION, 0.0005)
            integrator.setRandomNumberSeed(5)
        else:
            integrator = SpeculativeLangevinIntegrator(lsd_temperature, ANI_FRICTION, 0.0005, seed=6, target=target,
                                                       scheduler=BatchedScheduler(4, adaptive=False),
                                                       draft=create("ani1x", ala2.topology, member=0))
        run = openmm.Context(system, integrator, platform("Reference"))
        run.setState(start)
        energies, temperatures = [], []
        for _ in range(400):
            integrator.step(5)
            state = run.getState(getEnergy=True)
            energies.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            temperatures.append(2 * kinetic / (dof * gas_constant))
        results[name] = (np.array(energies), np.array(temperatures))
        if name == "lsd":
            assert integrator.statistics["verified"] >= 2000
            assert 0.05 < integrator.acceptance_rate < 0.95  # both branches of the coupling are exercised
    return results


def ani1x_z_scores(results):
    """z of LSD against plain for each observable (two-sample, standard errors from each series' statistical
    inefficiency), and of LSD's mean temperature against the bath's 300 K."""
    z = {}
    for i, observable in enumerate(("potential energy", "temperature")):
        a, b = results["plain"][i], results["lsd"][i]
        z[observable] = (b.mean() - a.mean()) / np.hypot(standard_error(a), standard_error(b))
    temperatures = results["lsd"][1]
    z["temperature against the bath"] = (temperatures.mean() - 300.0) / standard_error(temperatures)
    return z


@pytest.mark.parametrize("lsd_temperature", [300.0, PLANTED_HOT_BATH])
def test_alanine_dipeptide_ani1x_lsd_matches_plain_target(lsd_temperature):
    """LSD with the real models gives the plain target's mean potential energy and temperature, and the
    bath's temperature, each within SIGMA_BUDGET standard errors (from the statistical inefficiency; the
    potential energy decorrelates slowly, so its check is weak but honest). Every random source is seeded,
    equilibration included. Power: a planted bug, LSD's bath at PLANTED_HOT_BATH K instead of 300 K (one
    standard error of a mean temperature is ~7 K here), fails the checks (measured: z = 6.9 against the bath at 360 K)."""
    z = ani1x_z_scores(ani1x_series(lsd_temperature))
    if lsd_temperature == 300.0:
        assert all(abs(value) < SIGMA_BUDGET for value in z.values()), z
    else:
        assert max(abs(value) for value in z.values()) > SIGMA_BUDGET, z  # the checks reject the bug


@pytest.fixture(scope="module")
def ani1x_drafts():
    """4,000 drafted LSD steps from one alanine-dipeptide state (different noise indices, single-network
    draft, no error correction) and the ANI-1x ensemble's force at their common midpoint."""
    ala2 = systems.load("alanine-dipeptide-vacuum")
    target = create("ani1x", ala2.topology, dtype="float64")
    draft = create("ani1x", ala2.topology, member=0, dtype="float64")
    params = ABOBAParameters.create(KT, 10.0, 0.0005, ala2.masses)
    engine = SpeculativeEngine(draft, target, params, seed=2, error_correction=False)
    x = ala2.positions.value_in_unit(unit.nanometer)
    v = np.random.default_rng(0).normal(size=x.shape) * np.sqrt(KT / ala2.masses)[:, None]
    steps = [engine.draft_step(i, x, v, np.zeros_like(x)) for i in range(4000)]
    force = engine.target_forces(steps[:1])[0]  # the same midpoint for every step
    return engine, steps, force, params.a * v + params.c * force * params.inverse_mass


def whitened_commits(engine, steps, force, mu_p):
    """Committed velocities whitened by the target's Gaussian, and the unit vector along delta (the same
    for every step: one midpoint)."""
    p = engine.params
    w = np.array([((engine.verify(s, force).velocity - mu_p) / p.sigma).ravel() for s in steps])
    delta = ((mu_p - steps[0].mean) / p.sigma).ravel()
    return w, delta / np.linalg.norm(delta)


def test_one_ani1x_step_is_the_target_gaussian(ani1x_drafts):
    """The kernel-level check with the real models: the 4,000 steps commit velocities distributed exactly
    as ABOBA's Gaussian with the ANI-1x ensemble's force (moments within 5 SE, KS p > 1e-4, also along
    delta, where a coupling error shows)."""
    engine, steps, force, mu_p = ani1x_drafts
    engine.statistics = type(engine.statistics)()
    w, along = whitened_commits(engine, steps, force, mu_p)
    assert np.all(np.abs(w.mean(axis=0)) < SIGMA_BUDGET / np.sqrt(len(w)))
    assert np.all(np.abs(w.var(axis=0) - 1) < SIGMA_BUDGET * np.sqrt(2 / len(w)))
    assert stats.kstest(w.ravel()[::7], "norm").pvalue > 1e-4
    assert stats.kstest(w @ along, "norm").pvalue > 1e-4
    assert 0.05 < engine.statistics.acceptance_rate < 0.95


def test_one_ani1x_step_check_catches_a_missing_reflection(ani1x_drafts, monkeypatch):
    """Power: with the same drafts, a coupling that does not reflect rejected draws fails the check along
    delta (measured: KS p underflows to 0, against 0.92 for the exact coupling; acceptance 0.49)."""
    monkeypatch.setattr(engine_module, "couple", planted_coupling("no_reflection"))
    w, along = whitened_commits(*ani1x_drafts)
    assert stats.kstest(w @ along, "norm").pvalue < 1e-6


def test_mlmm_in_water_acceptance_does_not_fall_with_box_size():
    """Mechanical-embedding target (ANI-1x on the solute, TIP3P around) and the all-MM draft share the MM
    term, so only the 22 solute atoms contribute to |delta|: acceptance in a 1,450-atom and a 2,641-atom
    box agree (two-proportion z-test, 5 sigma), and the verifier evaluates only the solute."""
    from openmm_accel.forces import create_mixed_system
    from openmm_accel.speculative.mlmm import embedding_pair, region_force_field_model
    rates = []
    for box in (2.5, 3.1):
        molecular = systems.load("alanine-dipeptide-explicit", box_size=box)
        solute = molecular.solute_atoms
        ani = create("ani1x", molecular.topology, atoms=solute)
        draft, target = embedding_pair(molecular.system, solute, ani,
                                       region_force_field_model(molecular.system, molecular.topology, solute))
        integrator = SpeculativeLangevinIntegrator(300, 10.0, 0.0005, draft=draft, target=target, seed=1)
        context = openmm.Context(create_mixed_system(molecular.system, ani, solute, backend="pythonforce"),
                                 integrator, platform("CPU"))
        context.setPositions(molecular.positions)
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=100)
        context.setVelocitiesToTemperature(300, 1)
        integrator.step(150)
        verified_terms = integrator.engine.target.model.terms  # the MM term is not re-evaluated by the verifier
        assert len(verified_terms) == 1 and verified_terms[0][0] is ani
        statistics = integrator.statistics
        rates.append((statistics["accepted"], statistics["verified"]))
    (a1, n1), (a2, n2) = rates
    pooled = (a1 + a2) / (n1 + n2)
    error = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert abs(a1 / n1 - a2 / n2) < SIGMA_BUDGET * error
    assert 0.2 < pooled < 0.95


class WanderingDraft:
    """A 'trainer' that changes the draft after every round as a function of the verified target forces,
    the situation online distillation creates."""

    def __init__(self, model):
        self.model, self.changes = model, 0

    def observe(self, midpoints, target_forces):
        self.model.k = K * (0.6 + 0.4 * (float(np.abs(target_forces[-1]).sum()) % 1.0))
        self.changes += 1
        return True


def test_a_draft_that_changes_between_rounds_keeps_the_chain_exact():
    draft = HarmonicModel(40, 0.8 * K)
    trainer = WanderingDraft(draft)
    integrator = SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=draft, target=HarmonicModel(40, K),
                                               seed=4, verification=Verification(online=trainer))
    checks = harmonic_checks(*sample(integrator, "Reference", n=40, samples=3000, stride=2))
    assert not failures(checks), "\n".join(failures(checks))
    assert trainer.changes > 100 and integrator.engine.draft_version == trainer.changes


def test_online_force_matching_refits_from_verified_forces():
    """Distil a draft of the amber14 alanine dipeptide from 200 steps, then let verification data refine it."""
    from openmm_accel.speculative.force_matched import OnlineForceMatching
    from openmm_accel.speculative.distill import distill
    ala2 = systems.load("alanine-dipeptide-vacuum")
    target = create("amber14", ala2.topology, device="cpu")
    context = openmm.Context(ala2.system, LangevinABOBAIntegrator(300, 1.0, 0.001), platform("CPU"))
    context.setPositions(ala2.positions)
    context.setVelocitiesToTemperature(300, 1)
    distilled = distill(target, ala2, context.getState(getPositions=True, getVelocities=True), steps=400, stride=2,
                        device="cpu")
    assert distilled.train_rms < 60.0  # amber's own functional form is close to the basis
    trainer = OnlineForceMatching(distilled.model, every=1, refit_every=20)
    trainer.start(distilled.midpoints, distilled.target_forces)
    before = distilled.model.params.clone()
    integrator = SpeculativeLangevinIntegrator(300, 1.0, 0.001, draft=distilled.model, target=target, seed=3,
                                               verification=Verification(online=trainer))
    run = openmm.Context(ala2.system, integrator, platform("CPU"))
    run.setState(distilled.final_state)
    integrator.step(100)
    assert trainer.refits >= 4 and integrator.engine.draft_version == trainer.refits
    assert not np.array_equal(before.numpy(), distilled.model.params.numpy())
    assert integrator.acceptance_rate > 0.2


@pytest.mark.parametrize("name", ["Reference", "CPU"])
def test_default_target_is_the_simulations_own_system_on_its_platform(name):
    """target=None evaluates the Simulation's System itself, where the Simulation runs (a TorchForce System
    on Reference or on the CPU platform, with one thread there), and so does a System draft."""
    ala2 = systems.load("alanine-dipeptide-vacuum")
    system = create_ml_system(create("ani1x", ala2.topology), ala2.masses)
    integrator = SpeculativeLangevinIntegrator(300, 10.0, 0.0005, draft=ala2.system, seed=1)
    context = openmm.Context(system, integrator, platform(name))
    context.setPositions(ala2.positions)
    context.setVelocitiesToTemperature(300, 1)
    integrator.step(10)
    assert context.getStepCount() == 10
    for model in (integrator.target_model, integrator.draft_model):
        assert model.where.platform_name == name and model.where.threads == (1 if name == "CPU" else None)
        assert model._context.getPlatform().getName() == name


def test_the_run_summary_says_why_a_run_is_fast_or_slow():
    """`run --method lsd` prints the measured costs and the bound 1/(c + beta) they imply, and a hint when
    rounds are short (here c = 0.1 ms / 10 ms = 0.01, beta = 0.49: bound 2.00x)."""
    from openmm_accel.speculative.method import describe
    stats = {"acceptance_rate": 0.51, "predicted_acceptance": 0.5, "mean_streak": 3.0, "draft_seconds": 0.001,
             "draft_calls": 10, "target_seconds": 0.05, "target_calls": 5, "target_configurations": 20}
    line = describe(stats)
    assert "c = 0.010" in line and "1/(c + beta) = 2.00x" in line and "4.0 configurations" in line
    assert "limits the speed" not in line and "limits the speed" in describe({**stats, "mean_streak": 1.4})


class TestSpeculativeMethod(MethodTests):
    method = "lsd"
    run = dict(system="alanine-dipeptide-vacuum", model="ani1x", steps=10, report_interval=5, timestep_fs=0.5,
               friction_per_ps=10.0)
    options = SpeculativeConfig(draft="member", window=4, adaptive_window=False)


def test_the_distilled_draft_grows_linearly_with_the_atoms():
    """Bonded terms and 1-4 pairs have their own coefficients, farther pairs one per pair of atom types: one,
    two and three copies of alanine dipeptide (22, 44, 66 atoms) add the same number of parameters per copy, and
    as many parameters act on each atom of a copy as on the molecule alone (the normal equations' entries, at
    most the sum of their squares, grow linearly)."""
    from openmm_accel.speculative.force_matched import ForceMatchedModel
    ala2 = systems.load("alanine-dipeptide-vacuum")
    modeller = app.Modeller(ala2.topology, ala2.positions)
    models = [ForceMatchedModel(modeller.topology)]
    for copy in (1, 2):
        modeller.add(ala2.topology, ala2.positions + copy * 2.0 * unit.nanometer)
        models.append(ForceMatchedModel(modeller.topology))
    sizes = [model.n_parameters for model in models]
    assert sizes[2] - sizes[1] == sizes[1] - sizes[0] > 0 and sizes[0] == 948
    assert np.array_equal(models[2].columns_per_atom(), np.tile(models[0].columns_per_atom(), 3))


def test_a_distilled_draft_whose_fit_would_not_fit_is_refused_before_sampling(monkeypatch):
    """The fit's memory is bounded before the distillation run samples anything (measured peaks in
    ForceMatchedModel.fit_memory). openmmtools' 156-atom host-guest complex needs ~1.5 GiB (10,378 parameters):
    with 2 GiB available (a fit may take half) it is refused by name, with what to use instead; alanine
    dipeptide's (~0.05 GiB) goes ahead."""
    from openmm_accel.speculative import distill as distill_module, force_matched
    monkeypatch.setattr(force_matched, "available_memory", lambda: 2 * 2**30)
    sampled = []

    def sample_midpoints(*args):
        sampled.append(args)
        raise RuntimeError("sampled")

    monkeypatch.setattr(distill_module, "sample_midpoints", sample_midpoints)
    host_guest = systems.load("openmmtools:HostGuestVacuum", constrained=True)
    with pytest.raises(InputError, match=r"draft: expected a distilled draft whose fit fits in memory .* use --draft "
                                         r"mm .* got a fit needing ~1\.\d GiB \(10,378 parameters on 156 atoms\)"):
        distill_module.distill(None, host_guest, None)
    assert not sampled
    ala2 = systems.load("alanine-dipeptide-vacuum")
    assert force_matched.ForceMatchedModel(ala2.topology).fit_memory() < 2**28
    with pytest.raises(RuntimeError, match="sampled"):  # past the check, into the distillation run
        distill_module.distill(None, ala2, None)
    assert len(sampled) == 1


#: The whole process's peak resident memory allowed for LSD on the 156-atom host-guest complex with a distilled
#: draft (measured: 1.9 GB with 200 distillation steps, 1.1 GB with one ANI-1x network as draft).
HOST_GUEST_MEMORY = 3 * 2**30


def test_lsd_runs_on_a_156_atom_host_guest_complex_with_a_distilled_draft_within_its_memory_bound(tmp_path):
    """openmmtools' cucurbit[7]uril host-guest complex (156 atoms, X-H constrained): LSD with one ANI-1x network
    as draft, and with the distilled draft (10,378 parameters, fitted here on 50 configurations) in a process of
    its own whose peak memory stays under HOST_GUEST_MEMORY (the all-pairs draft this one replaced needed ~57
    GiB)."""
    from openmm_accel.simulate import RunConfig, run
    from openmm_accel.speculative.config import SpeculativeConfig
    common = dict(method="lsd", system="openmmtools:HostGuestVacuum", constraints="hbonds", steps=10,
                  report_interval=10, timestep_fs=1.0, progress=False)
    summary = run(RunConfig(output=str(tmp_path / "member"), options=SpeculativeConfig(draft="member"), **common))
    assert summary["atoms"] == 156 and summary["final_step"] == 10
    assert 0.0 < summary["speculative"]["acceptance_rate"] <= 1.0
    script = ("import json, resource, sys; from openmm_accel.simulate import RunConfig, run; "
              "from openmm_accel.speculative.config import SpeculativeConfig; "
              f"s = run(RunConfig(output=sys.argv[1], options=SpeculativeConfig(distill_steps=100), **{common!r})); "
              "print(json.dumps([s['final_step'], s['speculative']['acceptance_rate'], "
              "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]))")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "distilled")], capture_output=True,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    final_step, acceptance, peak = json.loads(result.stdout.strip().splitlines()[-1])
    assert final_step == 10 and 0.0 <= acceptance <= 1.0 and peak < HOST_GUEST_MEMORY


def test_lsd_runs_on_a_solvated_protein_with_a_distilled_draft_of_its_ml_residue(tmp_path):
    """openmmtools' trpzip2 hairpin in TIP3P (11,034 atoms, Amber files, PME): ANI-1x on its first residue, the
    rest Amber (mechanical embedding), X-H constrained; LSD with the residue's distilled draft sharing the MM
    embedding runs, commits every step, keeps the constraints and writes a trajectory mdtraj reads."""
    import mdtraj
    from openmm_accel.simulate import RunConfig, run
    from openmm_accel.systems import _package_file
    from openmm_accel.speculative.config import SpeculativeConfig
    folder = os.path.dirname(_package_file("openmmtools", "data", "trpzip2-explicit", "trpzip2.prmtop"))
    output = str(tmp_path / "trpzip2")
    summary = run(RunConfig(system=os.path.join(folder, "trpzip2.prmtop"),
                            coordinates=os.path.join(folder, "trpzip2.crd"), model="ani1x", ml_atoms="resid 0", method="lsd", constraints="hbonds", steps=10,
                            report_interval=5, timestep_fs=1.0, friction_per_ps=10.0, seed=1, minimize=False,
                            options=SpeculativeConfig(distill_steps=40), output=output, progress=False))
    assert summary["atoms"] == 11034 and summary["final_step"] == 10
    assert summary["speculative"]["committed"] == 10
    trajectory = mdtraj.load(os.path.join(output, "trajectory.dcd"), top=os.path.join(output, "topology.pdb"))
    assert trajectory.n_frames == 2 and trajectory.n_atoms == 11034
