"""Holonomic constraints: RATTLE projections, the constrained ABOBA reference and exact constrained LSD.

Statistical design: tests/rigid.py's independent molecules (flexible: two constraints sharing an atom;
rigid: a triangle) are the replicas; per-molecule time averages of two runs are compared with two-sample
z-scores, SIGMA_BUDGET (5) standard errors per check. The drafts err both along the constrained bonds
(springs, absorbed by the constraints) and across them (softer wells). Power is shown by planted bugs:
a coupling on the unprojected mean difference (one step) and a missing reflection (chain).
"""
import numpy as np
import openmm
import pytest
from openmm import app, unit
from scipy import stats

import openmm_accel.speculative.engine as engine_module
from conftest import SIGMA_BUDGET, platform
from test_speculative import planted_coupling
from rigid import (BOND, MASSES, WELL, WellModel, anchors, max_violation, observables, rigid_molecules, trajectory,
                   two_sample_z)
from openmm_accel import InputError, systems
from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.speculative import SpeculativeLangevinIntegrator
from openmm_accel.speculative.schedulers import BatchedScheduler
from openmm_accel.integrators.constraints import Constraints
from openmm_accel.speculative.engine import ABOBAParameters, SpeculativeEngine

TEMPERATURE, FRICTION, STEP = 300.0, 5.0, 0.004  # K, 1/ps, ps (h omega = 0.13 for a light atom's well)
KT = (unit.MOLAR_GAS_CONSTANT_R * TEMPERATURE * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


#: The chain test's draft: 20% softer wells and a spring along every constrained heavy-light bond
#: (rest length 10% short, ~30 kJ/mol/nm along the bond, absorbed by the constraints): acceptance ~0.8.
CHAIN_DRAFT = dict(well=0.8 * WELL, bond_k=3e3, bond_rest=0.9 * BOND)


def unprojected_kick(self, force, projector):
    """Planted bug: the velocity mean without the tangent projection."""
    return self.params.c * force * self.params.inverse_mass


# -- the projections -----------------------------------------------------------------------------------
def test_projections_satisfy_the_constraints_and_match_openmm():
    """Alanine dipeptide with X-H constraints in TIP3P (rigid water): position projection exact to 1e-10,
    velocity projection equal to OpenMM's (within its 1e-12 tolerance), idempotent and self-adjoint in
    the mass metric (an orthogonal projection there)."""
    molecular = systems.load("alanine-dipeptide-explicit", constraints=app.HBonds)
    system = molecular.system
    constraints = Constraints.from_system(system)
    assert len(constraints) == system.getNumConstraints() > 600
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform("Reference"))
    context.setPositions(molecular.positions)
    context.applyConstraints(1e-12)
    x0 = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    rng = np.random.default_rng(0)
    x = constraints.positions(x0, x0 + rng.normal(scale=0.002, size=x0.shape))
    i, j = constraints.pairs.T
    assert np.max(np.abs(np.linalg.norm(x[i] - x[j], axis=1) / constraints.distances - 1)) < 1e-10
    v = rng.normal(size=x.shape)
    projected = constraints.velocities(x, v)
    context.setPositions(x)
    context.setVelocities(v)
    context.applyVelocityConstraints(1e-12)
    expected = context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
    np.testing.assert_allclose(projected, expected, atol=1e-9 * np.abs(v).max())
    project = constraints.projector(x)
    np.testing.assert_allclose(project(projected), projected, atol=1e-12 * np.abs(v).max())
    masses = 1.0 / constraints.inverse_mass[:, None]
    w = rng.normal(size=x.shape)
    assert np.sum(project(v) * masses * w) == pytest.approx(np.sum(v * masses * project(w)), rel=1e-10)


def test_constraints_refuse_bad_input():
    with pytest.raises(InputError, match="distances: expected one length per constrained pair"):
        Constraints([(0, 1)], [0.1, 0.2], [1.0, 1.0])
    with pytest.raises(InputError, match="system: expected constraints between particles with mass"):
        Constraints([(0, 1)], [0.1], [1.0, 0.0])
    with pytest.raises(InputError, match="pairs: expected particle indices in 0..1"):
        Constraints([(0, 2)], [0.1], [1.0, 1.0])


# -- the constrained ABOBA reference -------------------------------------------------------------------
class DriftWithoutVelocityCorrection(LangevinABOBAIntegrator):
    """Planted bug: the half drift constrains positions but forgets RATTLE's velocity correction."""

    def add_drift(self):
        self.addComputePerDof("x", "x + 0.5*dt*v")
        self.addConstrainPositions()
        self.addConstrainVelocities()


@pytest.mark.parametrize("integrator_class", [LangevinABOBAIntegrator, DriftWithoutVelocityCorrection])
def test_constrained_aboba_samples_what_langevin_middle_samples(integrator_class):
    """The constrained ABOBA program against OpenMM's own constrained LangevinMiddleIntegrator (BAOAB),
    48 molecules, 10,000 steps each: the same configurational averages (potential energy per kind, bond
    angle) and constraints held to the program's tolerance. The O(h^2) difference of the two schemes is
    below the standard errors (measured |z| <= 1.3 here, <= 1.6 over 5 seed pairs at 3,000 steps). Power:
    a drift without the velocity correction cools the molecules (measured z = -8.0 here)."""
    n = 48
    aboba = integrator_class(TEMPERATURE, FRICTION, STEP)
    aboba.setRandomNumberSeed(5)
    middle = openmm.LangevinMiddleIntegrator(TEMPERATURE, FRICTION, STEP)
    middle.setRandomNumberSeed(6)
    middle.setConstraintTolerance(1e-8)
    runs = [trajectory(integrator, n, 10000, seed) for integrator, seed in ((aboba, 1), (middle, 2))]
    assert max_violation(runs[0][0], n) < 1e-7
    z = two_sample_z(*(observables(xs, vs) for xs, vs in runs))
    configurational = {name: z[name] for name in
                       ("potential energy (flexible)", "potential energy (rigid)", "angle cosine (flexible)")}
    worst = max(abs(value) for value in configurational.values())
    assert (worst > SIGMA_BUDGET) == (integrator_class is DriftWithoutVelocityCorrection), configurational


# -- exact speculative dynamics with constraints ---------------------------------------------------------
def one_step_outcomes(draft, n_samples=4000, seed=4):
    """Couple ``n_samples`` steps from one fixed constrained state of 4 molecules (noise indices differ).

    Returns the committed Gaussian draws whitened with the target's mean, ``(sample - mu_p) / sigma``
    (read where the second half drift starts), an orthonormal basis of the whitened tangent space (3N, d),
    the whitened mean difference delta, the acceptances and the predicted acceptance."""
    n = 4
    constraints = Constraints.from_system(rigid_molecules(n))
    masses = np.tile(MASSES, n)
    params = ABOBAParameters.create(KT, FRICTION, STEP, masses, constraints)
    target = WellModel(n)
    engine = SpeculativeEngine(draft, target, params, seed=seed, error_correction=False)
    rng = np.random.default_rng(seed)
    x = constraints.positions(anchors(n), anchors(n) + rng.normal(scale=0.02, size=(3 * n, 3)))
    v = constraints.velocities(x, rng.normal(size=x.shape) * np.sqrt(KT / masses)[:, None])
    drift, started = params.drift, []
    params.drift = lambda position, velocity: started.append(velocity) or drift(position, velocity)
    whitened, accepted = [], []
    for index in range(n_samples):
        step = engine.draft_step(index, x, v, np.zeros_like(x))
        force = engine.target_forces([step])[0]
        verified = engine.verify(step, force)
        mu_target = params.a * step.velocity + step.projector(params.c * force * params.inverse_mass)
        whitened.append(((started[-1] - mu_target) / params.sigma).ravel())
        accepted.append(verified.accepted)
    delta = ((mu_target - step.mean) / params.sigma).ravel()
    sigma = params.sigma * np.ones_like(x)
    projection = np.array([(step.projector((unit_vector.reshape(x.shape)) * sigma) / sigma).ravel()
                           for unit_vector in np.eye(x.size)])
    values, vectors = np.linalg.eigh(0.5 * (projection + projection.T))
    return (np.array(whitened), vectors[:, values > 0.5], delta, np.array(accepted),
            engine.statistics.predicted_acceptance)


def one_step_failures(whitened, basis, delta):
    """The committed draws must be standard normal on the tangent space (zero off it): per tangent
    coordinate mean and variance within the budget, and a KS test (p > 1e-4) along delta, where a
    wrong coupling shows first."""
    bad = []
    off = whitened - whitened @ basis @ basis.T
    if np.max(np.abs(off)) > 1e-8:
        bad.append(f"off the tangent space by {np.max(np.abs(off)):.1e}")
    coordinates = whitened @ basis
    n = len(whitened)
    for k, column in enumerate(coordinates.T):
        if abs(column.mean()) > SIGMA_BUDGET / np.sqrt(n):
            bad.append(f"tangent coordinate {k}: mean {column.mean():.3f}")
        if abs(column.var() - 1) > SIGMA_BUDGET * np.sqrt(2 / n):
            bad.append(f"tangent coordinate {k}: variance {column.var():.3f}")
    along = whitened @ (delta / np.linalg.norm(delta))
    if stats.kstest(along, "norm").pvalue < 1e-4:
        bad.append(f"along delta: KS p = {stats.kstest(along, 'norm').pvalue:.1e}, variance {along.var():.3f}")
    return bad


ONE_STEP_DRAFT = dict(well=0.5 * WELL, bond_k=3e3, bond_rest=0.9 * BOND)  # acceptance ~0.8, ~0.4 if unprojected


def test_one_constrained_step_is_the_target_gaussian():
    """4,000 coupled steps from one state: the committed draws are standard normal on the tangent space
    around the target's mean; acceptance matches 2 Phi(-|delta|/2); the springs along the bonds change
    nothing (the same delta as a draft without them: they are absorbed by the constraints)."""
    whitened, basis, delta, accepted, predicted = one_step_outcomes(WellModel(4, **ONE_STEP_DRAFT))
    assert not one_step_failures(whitened, basis, delta)
    assert abs(accepted.mean() - predicted) < SIGMA_BUDGET * np.sqrt(predicted * (1 - predicted) / accepted.size)
    without_springs = one_step_outcomes(WellModel(4, ONE_STEP_DRAFT["well"]), n_samples=10)
    np.testing.assert_allclose(without_springs[2], delta, atol=1e-9 * np.abs(delta).max())


def test_one_constrained_step_check_catches_an_unprojected_coupling(monkeypatch):
    """Power: a coupling on the unprojected means (acceptance ~0.5) leaves draws off the tangent space
    and shrinks the variance along delta to ~0.45 (KS p < 1e-200 over seeds 4-6)."""
    monkeypatch.setattr(SpeculativeEngine, "_kick", unprojected_kick)
    whitened, basis, delta, accepted, _ = one_step_outcomes(WellModel(4, **ONE_STEP_DRAFT))
    assert one_step_failures(whitened, basis, delta)


def lsd_versus_plain(n=48, steps=3000):
    lsd = SpeculativeLangevinIntegrator(TEMPERATURE, FRICTION, STEP, draft=WellModel(n, **CHAIN_DRAFT),
                                        target=WellModel(n), seed=3, scheduler=BatchedScheduler(adaptive=False))
    plain = LangevinABOBAIntegrator(TEMPERATURE, FRICTION, STEP)
    plain.setRandomNumberSeed(5)
    runs = [trajectory(integrator, n, steps, seed) for integrator, seed in ((lsd, 1), (plain, 2))]
    return two_sample_z(*(observables(xs, vs) for xs, vs in runs)), lsd, max_violation(runs[0][0], n)


@pytest.mark.parametrize("bug", [None, "no_reflection"])
def test_constrained_lsd_chain_matches_the_constrained_aboba_program(monkeypatch, bug):
    """48 molecules, 3,000 steps, error correction on: LSD's potential and kinetic energies, lag-1 velocity
    autocovariance and bond angle equal those of the plain constrained ABOBA program (7 two-sample checks;
    measured |z| <= 1.8); its constraints hold to 1e-10. Power: a rejected draw not reflected fails them
    (measured z = 10.2). (The unprojected coupling is caught by the one-step test: in a chain whose
    along-bond error dominates, its wrong reflections are nearly the identity.)"""
    if bug:
        monkeypatch.setattr(engine_module, "couple", planted_coupling(bug))
    z, lsd, violation = lsd_versus_plain()
    worst = max(abs(value) for value in z.values())
    if bug:
        assert worst > SIGMA_BUDGET, z
        return
    assert worst < SIGMA_BUDGET, z
    assert violation < 1e-10
    assert 0.6 < lsd.acceptance_rate < 0.95


def test_a_wild_draft_that_breaks_the_constraints_only_costs_acceptance():
    """A draft whose velocities cannot be constrained (wells 1e7 times too stiff: atoms fly ~50 nm per half
    step) is rejected step by step; the run goes on with the target's steps and keeps every constraint."""
    n = 4
    lsd = SpeculativeLangevinIntegrator(TEMPERATURE, FRICTION, STEP, draft=WellModel(n, 1e7 * WELL),
                                        target=WellModel(n), seed=3, scheduler=BatchedScheduler(adaptive=False))
    xs, _ = trajectory(lsd, n, 30, seed=1, equilibration=0)
    assert lsd.acceptance_rate == 0.0 and lsd.statistics["committed"] == 30
    assert max_violation(xs, n) < 1e-10


def test_the_acceptance_metric_is_the_couplings_delta():
    """Distilled drafts are fitted in AcceptanceMetric; its norm of a force difference must be the
    coupling's |delta| (up to the constant c / (s sqrt(mean mass))), with and without constraints."""
    from openmm_accel.speculative.force_matched import AcceptanceMetric
    n = 4
    masses = np.tile(MASSES, n)
    for constraints in (Constraints.from_system(rigid_molecules(n)), None):
        params = ABOBAParameters.create(KT, FRICTION, STEP, masses, constraints)
        draft, target = WellModel(n, **ONE_STEP_DRAFT), WellModel(n)
        engine = SpeculativeEngine(draft, target, params, seed=1, error_correction=False)
        x = anchors(n) + np.random.default_rng(2).normal(scale=0.01, size=(3 * n, 3))
        if constraints is not None:
            x = constraints.positions(anchors(n), x)
        step = engine.draft_step(0, x, np.zeros_like(x), np.zeros_like(x))
        target_force = engine.target_forces([step])[0]
        delta = engine.verify(step, target_force).delta_norm
        metric = AcceptanceMetric(masses, constraints)
        weighted = metric.matrix(step.midpoint) @ (target_force - step.draft_force).ravel()
        s = np.sqrt(KT * (1 - params.a**2))
        assert np.linalg.norm(weighted) * params.c / (s * np.sqrt(masses.mean())) == pytest.approx(delta, rel=1e-9)
