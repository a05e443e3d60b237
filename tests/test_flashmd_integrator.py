"""FlashMD integrator with exact and deliberately wrong "models": rescaling, policies, thermostats, COM,
rotations, checks, Simulation/checkpoints.

Statistics: 200 independent 3-D oscillators (k = 1000 kJ/mol/nm^2, m = 12 amu, omega = 9.1/ps); the
exact model is velocity Verlet with 1 fs substeps (h*omega = 0.009: its discretisation bias of ~1e-5
relative is far below the standard errors), so thermostatted FlashMD must give <K> = <U> = kT/2 per
degree of freedom within SIGMA_BUDGET standard errors, computed across the 600 degrees of freedom as
independent replicas.
"""
import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from conftest import SIGMA_BUDGET, assert_checkpoint_continues_bitwise, platform
from method_tests import MethodTests
from openmm_accel import InputError, SimulationError, systems
from openmm_accel.flashmd import (FlashMDEnsemble, FlashMDIntegrator, FlashMDModel, Safeguards, Thermostat,
                                  VerletPropagator)
from openmm_accel.models.analytic import HarmonicModel

K, MASS, T = 1000.0, 12.0, 300.0
KT = (unit.MOLAR_GAS_CONSTANT_R * T * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)


def oscillators(n=200):
    return systems.harmonic_oscillators(n_particles=n, k=K, mass=MASS)


def exact_model(n, stride=0.02, substeps=20, k=K):
    return VerletPropagator(HarmonicModel(n, k), [MASS] * n, stride, substeps)


def context_for(integrator, molecular, seed=1):
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(T, seed)
    return context


def total_energy(context):
    state = context.getState(getEnergy=True)
    return (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)


def test_rescaling_restores_the_total_energy_of_a_wrong_model():
    """Two Verlet substeps per 20 fs stride (h*omega = 0.09) drift; with rescaling H is conserved to
    round-off at every stride, without it it is not."""
    molecular = oscillators(50)
    for rescale in (True, False):
        integrator = FlashMDIntegrator(exact_model(50, substeps=2, k=1.2 * K),
                                       safeguards=Safeguards(rescale_energy=rescale), seed=1)
        context = context_for(integrator, molecular)
        start = total_energy(context)
        energies = []
        for _ in range(30):
            integrator.step(1)
            energies.append(total_energy(context))
        drift = np.max(np.abs(np.array(energies) - start)) / abs(start)
        if rescale:
            assert drift < 1e-10 and integrator.statistics["fallback_fraction"] == 0
        else:
            assert drift > 1e-3


class Scrambler(FlashMDModel):
    """A 'model' whose predictions are garbage in a chosen way."""

    def __init__(self, n, mode, stride=0.02):
        super().__init__(stride, [MASS] * n)
        self.mode = mode

    def forward(self, positions, momenta):
        # displacements in alternate directions (the integrator restores the centre of mass)
        alternate = (torch.arange(positions.shape[1]) % 2 * 2 - 1)[:, None].to(positions.dtype)
        if self.mode == "too_much_potential":  # 0.26 nm out, 13 nm/ps (34 kJ/mol each): V' > H
            return positions + 0.15 * alternate, momenta
        if self.mode == "nan":
            return positions * float("nan"), momenta
        if self.mode == "too_fast":  # finite, but 5.2 nm in 20 fs (260 nm/ps)
            return positions + 3.0 * alternate, momenta
        return positions * torch.tensor([1.01, 1.0, 1.0]), momenta  # "anisotropic": stretches along lab x


@pytest.mark.parametrize("mode, counter", [("too_much_potential", "fallback_unphysical"),
                                           ("nan", "fallback_nonfinite"), ("too_fast", "fallback_too_fast")])
def test_unphysical_predictions_fall_back_or_stop(mode, counter):
    molecular = oscillators(20)
    integrator = FlashMDIntegrator(Scrambler(20, mode), seed=1)
    context = context_for(integrator, molecular)
    start = total_energy(context)
    integrator.step(5)
    stats = integrator.statistics
    assert stats[counter] == 5 and stats["fallback_fraction"] == 1.0
    assert abs(total_energy(context) - start) < 1e-3 * abs(start)  # the fallback is reference Verlet
    stopping = FlashMDIntegrator(Scrambler(20, mode), safeguards=Safeguards(unphysical="stop"), seed=1)
    context = context_for(stopping, molecular)
    before = context.getState(getPositions=True).getPositions(asNumpy=True)._value
    with pytest.raises(SimulationError, match="FlashMD step 1"):
        stopping.step(3)
    assert np.array_equal(context.getState(getPositions=True).getPositions(asNumpy=True)._value, before)


def test_an_exploding_fallback_stops_cleanly_with_the_last_sound_state():
    """When the reference dynamics of the fallback itself blow up (here Verlet at h omega = 18, unstable:
    velocities grow ~300-fold per step), the run stops with a clear error, back at the stride's start."""
    molecular = oscillators(20)
    integrator = FlashMDIntegrator(Scrambler(20, "nan", stride=2.0), safeguards=Safeguards(fallback_substeps=1),
                                   seed=1)
    context = context_for(integrator, molecular)
    with pytest.raises(SimulationError, match="fallback to reference dynamics exploded"):
        for _ in range(20):
            before = context.getState(getPositions=True, getVelocities=True)
            integrator.step(1)
    after = context.getState(getPositions=True, getVelocities=True)
    for get in ("getPositions", "getVelocities"):
        kept = getattr(after, get)(asNumpy=True)._value
        assert np.array_equal(kept, getattr(before, get)(asNumpy=True)._value) and np.all(np.isfinite(kept))
    assert 1 < integrator.statistics["fallback_nonfinite"] < 20


def canonical_failures(thermostat, bath):
    """Checks of <K> and <U> per degree of freedom against kT/2 (SIGMA_BUDGET standard errors across the
    replicas) for thermostatted FlashMD whose bath is at ``bath``; the failed ones, and the final momentum."""
    n = 200
    molecular = oscillators(n)
    integrator = FlashMDIntegrator(exact_model(n), temperature=bath,
                                   thermostat=Thermostat(thermostat, friction=20.0, time_constant=0.05), seed=3)
    context = context_for(integrator, molecular)
    integrator.step(50)
    kinetic, potential = [], []
    for _ in range(300):
        integrator.step(2)
        state = context.getState(getPositions=True, getVelocities=True)
        x, v = state.getPositions(asNumpy=True)._value, state.getVelocities(asNumpy=True)._value
        kinetic.append(0.5 * MASS * v**2)
        potential.append(0.5 * K * x**2)
    dof = 3 * n - 3  # centre-of-mass momentum is kept at zero
    failed = []
    for name, values, expected in (("kinetic", np.array(kinetic), 0.5 * KT * dof / (3 * n)),
                                   ("potential", np.array(potential), 0.5 * KT)):
        replicas = values.mean(axis=0).ravel()
        error = replicas.std(ddof=1) / np.sqrt(replicas.size)
        if abs(replicas.mean() - expected) >= SIGMA_BUDGET * error:
            failed.append((name, replicas.mean(), expected, error))
    return failed, (MASS * context.getState(getVelocities=True).getVelocities(asNumpy=True)._value).sum(0)


@pytest.mark.parametrize("thermostat", ["langevin", "svr"])
def test_thermostatted_exact_model_samples_the_canonical_ensemble(thermostat):
    failed, momentum = canonical_failures(thermostat, T)
    assert not failed, failed
    assert np.all(np.abs(momentum) < 1e-9)


def test_canonical_checks_catch_a_bath_five_percent_too_hot():
    """Power of the checks above: a planted bug, the Langevin bath 5 % hotter than the expectation, fails
    them (measured z = 10.9 for <K>). With SVR the same checks are weak (a 10 % hotter bath: z = 2.1): a
    global thermostat exchanges no energy between independent oscillators, so each one's time average keeps
    its own energy and the spread across replicas is large."""
    failed, _ = canonical_failures("langevin", 1.05 * T)
    assert failed


def test_random_rotations_leave_an_equivariant_model_unchanged_and_isotropise_a_biased_one():
    molecular = oscillators(10)
    model = exact_model(10)
    plain = FlashMDIntegrator(model, random_rotations=False, seed=2)
    rotated = FlashMDIntegrator(model, random_rotations=True, seed=2)
    finals = []
    for integrator in (plain, rotated):
        context = context_for(integrator, molecular)
        integrator.step(10)
        finals.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_allclose(finals[0], finals[1], rtol=0, atol=1e-10)
    rng = np.random.default_rng(0)
    x, p = rng.normal(scale=0.05, size=(10, 3)), np.zeros((10, 3))
    x -= x.mean(0)
    stretch = {}
    for rotations in (False, True):
        biased = FlashMDIntegrator(Scrambler(10, "stretch"), random_rotations=rotations, seed=5)
        biased._masses = np.full(10, MASS)
        shifts = np.array([biased._predict(x, p, step)[0] - x for step in range(400)])
        stretch[rotations] = (shifts * x).sum(axis=1).mean(axis=0) / (x * x).sum(axis=0)  # per lab axis
    assert Scrambler.rotation_equivariant is False
    assert stretch[False][0] > 100 * max(stretch[False][1:])  # without rotations: only along x
    # with rotations: the average is the isotropic 0.01/3 along every axis (trace of the stretch / 3);
    # (e_x . R e_a)^2 has mean 1/3 and SD 0.3, so 400 rotations give a relative SE of 0.045: 5 SE = 0.23
    np.testing.assert_allclose(stretch[True], 0.01 / 3, rtol=0.23)


def test_wrong_stride_masses_and_atoms_fail_clearly():
    with pytest.raises(InputError, match=r"stride: expected the model's stride \(20 fs"):
        FlashMDIntegrator(exact_model(5), stride=10 * unit.femtosecond)
    for model, message in ((VerletPropagator(HarmonicModel(5, K), [1.0] * 5, 0.02, 2), "masses"),
                           (exact_model(6), "a model of 5 atoms")):
        integrator = FlashMDIntegrator(model)
        context = context_for(integrator, oscillators(5))  # noqa: F841 (keeps the Context alive)
        with pytest.raises(InputError, match=message):
            integrator.step(1)
    with pytest.raises(InputError, match="uncertainty_threshold"):
        FlashMDIntegrator(exact_model(5), safeguards=Safeguards(uncertainty_threshold=0.1))


def test_ensemble_spread_triggers_the_fallback():
    """Members that disagree (different spring constants) exceed a small threshold; agreeing ones do not."""
    molecular = oscillators(10)
    agreeing = FlashMDEnsemble([exact_model(10), exact_model(10)])
    disagreeing = FlashMDEnsemble([exact_model(10, k=0.5 * K), exact_model(10, k=2.0 * K)])
    for model, expected in ((agreeing, 0), (disagreeing, 4)):
        integrator = FlashMDIntegrator(model, safeguards=Safeguards(uncertainty_threshold=1e-4), seed=1)
        context = context_for(integrator, molecular)  # noqa: F841 (keeps the Context alive)
        integrator.step(4)
        assert integrator.statistics["fallback_uncertain"] == expected


def test_simulation_time_reporters_and_checkpoints(tmp_path):
    """One step = one stride of simulated time; checkpoints continue bitwise (thermostat noise included)."""
    molecular = oscillators(10)
    integrator = FlashMDIntegrator(exact_model(10), temperature=T, seed=4)
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform("Reference"))
    simulation.context.setPositions(molecular.positions)
    log = str(tmp_path / "log.csv")
    simulation.reporters.append(app.StateDataReporter(log, 5, step=True, time=True))
    simulation.step(20)
    rows = np.loadtxt(log, delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * 0.02, rtol=1e-9)  # ps
    assert_checkpoint_continues_bitwise(simulation, str(tmp_path / "fmd.chk"), 7)


class BoxRecorder(VerletPropagator):
    """The exact propagator, recording the box each call receives."""

    boxes: list

    def forward(self, positions, momenta, box=None):
        self.boxes.append(None if box is None else box[0].clone())
        return super().forward(positions, momenta, box)


def test_periodic_water_gets_the_box_and_a_barostat_gives_npt_moves():
    """Flexible water under PME: the model receives the Context's current box every stride, including after
    MonteCarloBarostat moves (which act once per stride), and the exact model keeps H conserved, so the
    rescaling factor stays ~1 and nothing falls back."""
    from openmm_accel.models.classical import OpenMMEnergyModel
    water = systems.load("water-box-small")
    reference = OpenMMEnergyModel(water.system, water.topology, device="cpu")
    model = BoxRecorder(reference, water.masses, 0.002, 4)
    model.boxes = []
    system = openmm.System()
    system.__setstate__(water.system.__getstate__())
    system.addForce(openmm.MonteCarloBarostat(1 * unit.bar, T * unit.kelvin, 1))
    integrator = FlashMDIntegrator(model, temperature=T, seed=3)
    context = openmm.Context(system, integrator, platform("CPU"))
    context.setPositions(water.positions)
    context.setVelocitiesToTemperature(T, 1)
    volumes = []
    for _ in range(12):
        integrator.step(1)
        box = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        volumes.append(np.linalg.det(box))
        np.testing.assert_array_equal(model.boxes[-1].numpy(), box)  # what the last stride was given
    assert len(set(volumes)) > 1  # the barostat acted (12 attempts at frequency 1; acceptance is not ~0)
    stats = integrator.statistics
    assert stats["fallback_fraction"] == 0 and abs(stats["mean_rescale_factor"] - 1) < 1e-3
    with pytest.raises(InputError, match="random_rotations"):
        FlashMDIntegrator(model, random_rotations=True).check_context(context)


def test_exact_model_gives_every_element_the_thermostat_temperature(tmp_path):
    """Alanine dipeptide (amber14) with the exact propagator at an 8 fs stride and the paper's Langevin time
    constant (100 fs): each element's kinetic temperature, counted with the degrees of freedom left by
    holding the centre-of-mass momentum at zero, as ``run --method flashmd`` reports it
    (reporters.ElementTemperatureReporter, every stride), is 300 K within SIGMA_BUDGET standard errors (from
    pymbar's statistical inefficiency of each element's series), and the reporter flags none. Planted: the
    same run seen by a reporter that takes hydrogens for 10 % heavier (they read 30 K hot, ~8 standard
    errors) flags H alone, with a warning."""
    from openmm_accel.models import create
    from openmm_accel.reporters import ElementTemperatureReporter
    ala2 = systems.load("alanine-dipeptide-vacuum")
    model = VerletPropagator(create("amber14", ala2.topology), ala2.masses, 0.008, 16)
    integrator = FlashMDIntegrator(model, temperature=T, thermostat=Thermostat(friction=10.0), seed=3)
    simulation = app.Simulation(ala2.topology, ala2.system, integrator, platform("CPU"))
    simulation.context.setPositions(ala2.positions)
    simulation.minimizeEnergy()
    simulation.context.setVelocitiesToTemperature(T, 1)
    simulation.step(200)
    symbols = [atom.element.symbol for atom in ala2.topology.atoms()]
    heavier = np.where(np.array(symbols) == "H", 1.1, 1.0) * ala2.masses
    honest, planted = (ElementTemperatureReporter(str(tmp_path / f"{name}.csv"), 1, symbols, masses, T, True)
                       for name, masses in (("honest", ala2.masses), ("planted", heavier)))
    simulation.reporters += [honest, planted]
    simulation.step(4000)
    summary = honest.summary()
    assert summary["reports"] == 4000 and summary["off"] == []
    for element, t in summary["elements"].items():
        assert abs(t["deviation_k"]) < SIGMA_BUDGET * t["standard_error_k"], (element, t)
    with pytest.warns(UserWarning, match="H atoms ran at"):
        assert planted.summary()["off"] == ["H"]


def test_force_inputs_are_the_reference_forces_at_no_extra_evaluation():
    """A model with force inputs gets F(x) at the stride's start positions: the exact propagator that uses
    them instead of evaluating its own matches the one that does (to round-off; random rotations on, so
    the forces are rotated with the system), and the System is evaluated once per stride, as without."""
    calls = []

    class Counting:
        def __call__(self, state):
            x = state.getPositions(asNumpy=True)._value
            calls.append(1)
            return 0.5 * K * float(np.sum(x**2)), -K * x

    molecular = oscillators(10)
    molecular.system.removeForce(0)
    molecular.system.addForce(openmm.PythonForce(Counting()))
    finals = []
    for takes_forces in (False, True):
        model = VerletPropagator(HarmonicModel(10, K), [MASS] * 10, 0.02, 20, force_inputs=takes_forces)
        integrator = FlashMDIntegrator(model, temperature=T, random_rotations=True, seed=4)
        context = context_for(integrator, molecular)
        integrator.step(1)
        calls.clear()
        integrator.step(10)
        assert len(calls) == 10, takes_forces
        finals.append(context.getState(getPositions=True, getVelocities=True))
    for get in ("getPositions", "getVelocities"):
        np.testing.assert_allclose(getattr(finals[1], get)(asNumpy=True)._value,
                                   getattr(finals[0], get)(asNumpy=True)._value, rtol=0, atol=1e-10)
    with pytest.raises(InputError, match="forces"):
        model.predict(np.zeros((10, 3)), np.zeros((10, 3)))


class TestFlashMDMethod(MethodTests):
    method = "flashmd"
    run = dict(system="alanine-dipeptide-vacuum", model="mm", steps=4, report_interval=2)
    model = "flashmd/ala2-amber-16fs.pt"


class Expanding(VerletPropagator):
    """Planted: velocity Verlet whose momenta come out 3 % larger - neither volume-preserving nor reversible."""

    def forward(self, positions, momenta, box=None, forces=None):
        x, p = super().forward(positions, momenta, box, forces)
        return x, 1.03 * p


class AcceptingAll(FlashMDIntegrator):
    """Planted: the Metropolis test's uniform number is always 0, so every proposal is accepted."""

    def _rng(self, step, purpose):
        return _Zero() if purpose == 4 else super()._rng(step, purpose)


class _Zero:
    def random(self):
        return 0.0


def metropolis_failures(model, integrator_class=FlashMDIntegrator, n=4, strides=20000):
    """Mean K and U per degree of freedom against kT/2 (SIGMA_BUDGET standard errors, from pymbar's statistical
    inefficiency of each series) for FlashMD with ``model`` on ``n`` oscillators; the failed checks (value in
    units of kT/2, its error) and the acceptance. A few oscillators: the acceptance of a whole-system energy
    test falls with the number of degrees of freedom."""
    from openmm_accel.analysis import standard_error
    molecular = oscillators(n)
    integrator = integrator_class(model, temperature=T, thermostat=Thermostat(friction=5.0), seed=3,
                                  metropolis=True)
    context = context_for(integrator, molecular)
    integrator.step(200)
    kinetic, potential = [], []
    for _ in range(strides):
        integrator.step(1)
        state = context.getState(getPositions=True, getVelocities=True)
        x, v = state.getPositions(asNumpy=True)._value, state.getVelocities(asNumpy=True)._value
        kinetic.append(0.5 * MASS * np.mean(v**2))
        potential.append(0.5 * K * np.mean(x**2))
    failed = []
    for name, series in (("kinetic", np.array(kinetic)), ("potential", np.array(potential))):
        error = standard_error(series)
        if abs(series.mean() - 0.5 * KT) >= SIGMA_BUDGET * error:
            failed.append((name, series.mean() / (0.5 * KT), error / (0.5 * KT)))
    return failed, integrator.statistics.get("acceptance_rate")


def test_metropolis_mode_is_exact_with_a_wrong_but_symplectic_map():
    """One velocity-Verlet step per 100 fs stride (h omega = 0.91), with the right spring constant and with a
    wrong one (0.6 k): both maps are reversible and volume-preserving, so with the Metropolis test on the true
    energy both sample <K> = <U> = kT/2 per degree of freedom within SIGMA_BUDGET standard errors; the model's
    error only costs acceptance (measured 0.75 and 0.46). Planted: the same chain with every proposal accepted
    samples the wrong spring's (discretised) distribution, <U> ~1.9 kT/2: the checks see it."""
    def verlet(k):
        return VerletPropagator(HarmonicModel(4, k), [MASS] * 4, 0.1, 1)
    for k in (K, 0.6 * K):
        failed, acceptance = metropolis_failures(verlet(k))
        assert not failed, (k, failed)
        assert 0.3 < acceptance < 1.0
    failed, acceptance = metropolis_failures(verlet(0.6 * K), AcceptingAll)
    assert "potential" in [name for name, _, _ in failed] and acceptance == 1.0


def test_metropolis_mode_cannot_save_a_map_that_is_not_volume_preserving():
    """Planted: a map that inflates momenta by 3 % per stride (Jacobian 1.03^3 per atom) is accepted or
    rejected by the same energy test and still samples the wrong distribution: the checks see it (measured:
    <K> 3.5 % high, <U> 4.6 % low, 8 standard errors each)."""
    failed, _ = metropolis_failures(Expanding(HarmonicModel(4, K), [MASS] * 4, 0.1, 1))
    assert failed


def test_metropolis_mode_needs_a_temperature_and_warns_about_a_learned_map():
    """A learned network is not volume-preserving: Metropolis mode is allowed but says it is not exact then
    (measured: the shipped 16 fs amber model, 200 strides, acceptance 0.85, every element ~60-120 K cold)."""
    from openmm_accel.flashmd.network import FlashMDNet
    with pytest.raises(InputError, match="metropolis: expected a temperature"):
        FlashMDIntegrator(exact_model(2), metropolis=True)
    net = FlashMDNet([6, 1], [12.0, 1.008], 0.008)
    with pytest.warns(UserWarning, match="not known to preserve phase-space volume"):
        FlashMDIntegrator(net, temperature=T, metropolis=True)
