"""One contract for every integrator of the package, as openmmtools does for its own: each
``openmm.CustomIntegrator`` subclass defined in ``openmm_accel`` is discovered by importing the package,
must have a builder here (a new integrator without one fails ``test_every_integrator_is_covered``), and
passes the same generic tests: a stable run, a run inside ``app.Simulation`` with standard reporters
whose files mdtraj loads, a checkpoint round trip that continues bit for bit with its statistics, and,
where the method promises ABOBA's distribution, the exact harmonic-oscillator statistics of
``tests/harmonic.py`` within SIGMA_BUDGET standard errors.
"""
import importlib
import pkgutil

import mdtraj
import numpy as np
import openmm
import pytest
import ray
from openmm import app, unit

import openmm_accel
from conftest import assert_checkpoint_continues_bitwise, platform
from harmonic import GAMMA, H, K, TEMPERATURE, failures, harmonic_checks, sample
from openmm_accel import InputError, systems
from openmm_accel.flashmd import VerletPropagator
from openmm_accel.flashmd.integrator import FlashMDIntegrator, Thermostat
from openmm_accel.integrators import LangevinABOBAIntegrator, PythonStepIntegrator, VelocityVerletIntegrator
from openmm_accel.models.analytic import HarmonicModel
from openmm_accel.speculative.integrator import SpeculativeLangevinIntegrator
from openmm_accel.speculative.schedulers import create_scheduler

MASS = 4.0  # amu, of the contract's oscillators


def aboba(n):
    integrator = LangevinABOBAIntegrator(TEMPERATURE, GAMMA, H)
    integrator.setRandomNumberSeed(3)
    return integrator


def lsd(scheduler):
    def build(n):
        options = {"workers": 2, "chunk": 8} if scheduler == "ray" else {"window": 4}
        return SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=HarmonicModel(n, 0.8 * K),
                                             target=HarmonicModel(n, K), seed=3,
                                             scheduler=create_scheduler(scheduler, **options))
    return build


def flashmd(n):
    exact = VerletPropagator(HarmonicModel(n, K), np.full(n, MASS), 4 * H, 4)
    return FlashMDIntegrator(exact, temperature=TEMPERATURE, thermostat=Thermostat(friction=GAMMA), seed=3)


def verlet(n):
    return VelocityVerletIntegrator(H)


#: name -> (integrator class, builder for n oscillators, whether it promises ABOBA's exact distribution)
CONTRACT = {
    "aboba": (LangevinABOBAIntegrator, aboba, True),
    "lsd-batched": (SpeculativeLangevinIntegrator, lsd("batched"), True),
    "lsd-ray": (SpeculativeLangevinIntegrator, lsd("ray"), True),
    "flashmd": (FlashMDIntegrator, flashmd, False),
    "verlet": (VelocityVerletIntegrator, verlet, False),
}
#: Integrators that refuse constraints (with a clear error) instead of keeping them.
REFUSE_CONSTRAINTS = {"flashmd"}
#: Bases that are not integrators to run on their own.
ABSTRACT = {PythonStepIntegrator}


def discovered():
    """Every CustomIntegrator subclass defined in the package (all modules imported)."""
    for module in pkgutil.walk_packages(openmm_accel.__path__, "openmm_accel."):
        importlib.import_module(module.name)
    found, stack = set(), [openmm.CustomIntegrator]
    while stack:
        for subclass in stack.pop().__subclasses__():
            stack.append(subclass)
            if subclass.__module__.startswith("openmm_accel."):
                found.add(subclass)
    return found


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_every_integrator_is_covered():
    covered = {cls for cls, _, _ in CONTRACT.values()} | ABSTRACT
    missing = discovered() - covered
    assert not missing, f"add a builder to CONTRACT for {sorted(cls.__name__ for cls in missing)}"


#: (i, j) of the constrained variant: two dumbbells and a triangle sharing wells at the origin
CONSTRAINED_PAIRS = ((0, 1), (2, 3), (4, 5), (5, 6), (4, 6))
CONSTRAINED_LENGTH = 0.1  # nm


def oscillator_simulation(name, n=10, constrained=False):
    molecular = systems.harmonic_oscillators(n_particles=n, k=K, mass=MASS)
    if constrained:
        for i, j in CONSTRAINED_PAIRS:
            molecular.system.addConstraint(i, j, CONSTRAINED_LENGTH)
    integrator = CONTRACT[name][1](n)
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform("Reference"))
    simulation.context.setPositions(molecular.positions)
    simulation.context.setVelocitiesToTemperature(TEMPERATURE, 5)
    if constrained:
        simulation.context.applyConstraints(1e-10)
        simulation.context.applyVelocityConstraints(1e-10)
    return simulation, molecular


def close(integrator):
    if hasattr(integrator, "close"):
        integrator.close()


@pytest.mark.parametrize("name", CONTRACT)
def test_stable(name):
    """300 steps stay finite and bounded: no atom leaves a few thermal widths of its well."""
    simulation, _ = oscillator_simulation(name)
    try:
        simulation.step(300)
        state = simulation.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        x = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        width = np.sqrt(TEMPERATURE * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin) / K)
        assert np.all(np.isfinite(x)) and np.all(np.abs(x) < 10 * width)
        assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    finally:
        close(simulation.integrator)


@pytest.mark.parametrize("name", CONTRACT)
def test_runs_in_simulation_with_reporters(tmp_path, name):
    """Step count and time are physical; DCD and CSV reporters write what mdtraj and numpy read back."""
    simulation, molecular = oscillator_simulation(name)
    pdb, dcd, log = (str(tmp_path / f) for f in ("top.pdb", "traj.dcd", "log.csv"))
    app.PDBFile.writeFile(molecular.topology, molecular.positions, open(pdb, "w"))
    simulation.reporters += [app.DCDReporter(dcd, 5),
                             app.StateDataReporter(log, 5, step=True, time=True, potentialEnergy=True)]
    try:
        simulation.step(20)
    finally:
        close(simulation.integrator)
    del simulation.reporters[:]
    step_size = simulation.integrator.getStepSize().value_in_unit(unit.picosecond)
    assert simulation.currentStep == 20
    assert simulation.context.getTime().value_in_unit(unit.picosecond) == pytest.approx(20 * step_size)
    assert mdtraj.load(dcd, top=pdb).n_frames == 4
    rows = np.loadtxt(log, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(rows[:, 0], [5, 10, 15, 20])
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * step_size, rtol=1e-9)


@pytest.mark.parametrize("name", CONTRACT)
def test_checkpoint_continues_bitwise_with_its_statistics(tmp_path, name):
    simulation, _ = oscillator_simulation(name)
    try:
        simulation.step(13)
        before = getattr(simulation.integrator, "statistics", None)
        path = str(tmp_path / "state.chk")
        assert_checkpoint_continues_bitwise(simulation, path, 17)
        if before is not None:  # the reloaded state's counters are those saved with it (not the adaptive
            simulation.loadCheckpoint(path)  # window: a scheduler setting, which the path does not depend on)
            after = simulation.integrator.statistics
            assert {k: v for k, v in after.items() if k != "window"} == {k: v for k, v in before.items() if k != "window"}
    finally:
        close(simulation.integrator)


@pytest.mark.parametrize("name", [name for name, (_, _, exact) in CONTRACT.items() if exact])
def test_exact_harmonic_statistics(name):
    """Stationary moments and the lag-1 velocity autocovariance of 40 oscillators equal the exact discrete
    ABOBA values (power: tests/test_aboba.py and tests/test_speculative.py plant BAOAB, a missing
    reflection and draft dynamics, which fail these checks)."""
    integrator = CONTRACT[name][1](40)
    try:
        checks = harmonic_checks(*sample(integrator, "Reference", n=40, samples=1500, stride=2))
    finally:
        close(integrator)
    assert not failures(checks), "\n".join(failures(checks))


@pytest.mark.parametrize("name", CONTRACT)
def test_keeps_constraints_or_refuses_them(name):
    """With distance constraints (dumbbells and a rigid triangle), 100 steps in a Simulation keep every
    length to 1e-7 (OpenMM's programs work to their 1e-8 tolerance); an integrator that cannot keep them
    says so before anything moves."""
    simulation, _ = oscillator_simulation(name, constrained=True)
    try:
        if name in REFUSE_CONSTRAINTS:
            with pytest.raises(InputError, match="expected a System without constraints"):
                simulation.step(1)
            assert simulation.currentStep == 0
            return
        simulation.step(100)
    finally:
        close(simulation.integrator)
    x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    pairs = np.array(CONSTRAINED_PAIRS)
    lengths = np.linalg.norm(x[pairs[:, 0]] - x[pairs[:, 1]], axis=1)
    np.testing.assert_allclose(lengths, CONSTRAINED_LENGTH, rtol=1e-7)
    assert simulation.currentStep == 100
