"""ABOBA reference integrator: exact harmonic statistics, one force call per step, exposed Gaussian.

Statistics as described in tests/harmonic.py, with 1,000 oscillators (1,500 replicas per mass class).
h*omega = 0.47 (m = 1) makes the discretisation visible: BAOAB's <v^2> differs from ABOBA's by
5.6% at m = 1, about 13 standard errors here, so a wrong splitting cannot pass (power ~1; see
test_baoab_fails_the_same_checks).
"""
import numpy as np
import openmm
import pytest
from openmm import unit
from scipy import stats

from conftest import platform
from harmonic import GAMMA, H, K, KT, TEMPERATURE, failures, harmonic_checks, oscillators, sample, stationary_start
from openmm_accel import InputError
from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.integrators.aboba import stationary_harmonic_covariance

@pytest.mark.parametrize("platform_name", ["Reference", "CPU"])
def test_harmonic_statistics_are_exact(platform_name):
    integrator = LangevinABOBAIntegrator(TEMPERATURE * unit.kelvin, GAMMA / unit.picosecond, H * unit.picosecond)
    checks = harmonic_checks(*sample(integrator, platform_name))
    assert not failures(checks), "\n".join(failures(checks))


def test_baoab_fails_the_same_checks():
    """The checks have power: OpenMM's BAOAB (LangevinMiddleIntegrator) does not pass them."""
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, GAMMA, H)
    bad = failures(harmonic_checks(*sample(integrator, "CPU", samples=150)))
    assert any("kinetic energy mean (m=1.0)" in line for line in bad), bad


def test_continuous_limit():
    """At h*omega -> 0 the exact ABOBA covariance tends to equipartition (a check of the helper itself)."""
    cov = stationary_harmonic_covariance(K, 1.0, KT, GAMMA, 1e-5)
    assert cov[0, 0] == pytest.approx(KT / K, rel=1e-6)
    assert cov[1, 1] == pytest.approx(KT / 1.0, rel=1e-6)


def test_exposed_gaussian_and_one_force_evaluation_per_step():
    """mean/sigma are the step's Gaussian; positions follow the A-BOB-A formulas; one force call per step."""
    calls = []

    class Counting:
        def __call__(self, state):
            x = state.getPositions(asNumpy=True)._value
            calls.append(x.copy())
            return 0.5 * K * float(np.sum(x**2)), -K * x

    n = 2000
    system, masses = oscillators(n)
    system.removeForce(0)
    system.addForce(openmm.PythonForce(Counting()))
    integrator = LangevinABOBAIntegrator(TEMPERATURE, GAMMA, H)
    integrator.setRandomNumberSeed(3)
    context = openmm.Context(system, integrator, platform("Reference"))
    x0, v0 = stationary_start(masses, 3)
    context.setPositions(x0)
    context.setVelocities(v0)
    integrator.step(1)
    assert len(calls) == 1
    a = np.exp(-GAMMA * H)
    midpoint = x0 + 0.5 * H * v0
    np.testing.assert_allclose(calls[0], midpoint, rtol=1e-12)  # the force is evaluated at x' only
    mean = a * v0 + (1 + a) * 0.5 * H * (-K * midpoint) / masses[:, None]
    sigma = np.sqrt(KT * (1 - a * a) / masses)[:, None] * np.ones((1, 3))
    np.testing.assert_allclose(integrator.getVelocityMean().value_in_unit(unit.nanometer / unit.picosecond),
                               mean, rtol=1e-10)
    np.testing.assert_allclose(integrator.getVelocityStd()._value, sigma, rtol=1e-10)
    state = context.getState(getPositions=True, getVelocities=True)
    v1, x1 = state.getVelocities(asNumpy=True)._value, state.getPositions(asNumpy=True)._value
    np.testing.assert_allclose(x1, midpoint + 0.5 * H * v1, rtol=1e-10, atol=1e-14)
    z = ((v1 - mean) / sigma).ravel()
    # 6000 standard normals: the KS test at the 1e-4 level rejects a sigma off by 5% with power > 0.99
    assert stats.kstest(z, "norm").pvalue > 1e-4
    integrator.step(9)
    assert len(calls) == 10


def test_setters_and_units():
    integrator = LangevinABOBAIntegrator(310 * unit.kelvin, 2 / unit.picosecond, 0.5 * unit.femtosecond)
    assert integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(310)
    assert integrator.getFriction().value_in_unit(unit.picosecond**-1) == pytest.approx(2)
    assert integrator.getStepSize().value_in_unit(unit.femtosecond) == pytest.approx(0.5)
    integrator.setTemperature(350.0)
    integrator.setFriction(0.1 / unit.femtosecond)
    assert integrator.getTemperature().value_in_unit(unit.kelvin) == pytest.approx(350)
    assert integrator.getFriction().value_in_unit(unit.picosecond**-1) == pytest.approx(100)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1.0}, "temperature: expected a positive value"),
    ({"friction": 1 * unit.kelvin}, "friction: expected a quantity compatible with"),
    ({"timestep": float("nan")}, "timestep: expected a finite number"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(InputError, match=match):
        LangevinABOBAIntegrator(**kwargs)
