"""Independent harmonic oscillators with the exact stationary statistics of the discrete ABOBA chain.

Statistical design (shared by the ABOBA and speculative tests): N independent 3-D oscillators in one
System (half with mass 1 amu, half 4 amu), started from the *exact* stationary distribution of the
discrete ABOBA chain, so every sample is stationary. Each degree of freedom's time average is one
independent replica; standard errors come from the spread across the replicas of a mass class. A check
passes within SIGMA_BUDGET standard errors.
"""
import numpy as np
import openmm
from openmm import unit

from conftest import SIGMA_BUDGET, platform
from openmm_accel.integrators.aboba import harmonic_transition, stationary_harmonic_covariance

K, H, GAMMA, TEMPERATURE = 1000.0, 0.015, 5.0, 300.0
KT = (unit.MOLAR_GAS_CONSTANT_R * TEMPERATURE * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
MASSES = (1.0, 4.0)


def oscillators(n):
    system = openmm.System()
    force = openmm.CustomExternalForce(f"0.5*{K}*(x^2+y^2+z^2)")
    masses = np.array([MASSES[i % 2] for i in range(n)])
    for i, m in enumerate(masses):
        system.addParticle(m)
        force.addParticle(i, [])
    system.addForce(force)
    return system, masses


def stationary_start(masses, seed):
    rng = np.random.default_rng(seed)
    x, v = np.empty((len(masses), 3)), np.empty((len(masses), 3))
    for m in MASSES:
        sel = masses == m
        cov = stationary_harmonic_covariance(K, m, KT, GAMMA, H)
        sample = rng.multivariate_normal([0, 0], cov, size=(sel.sum(), 3))
        x[sel], v[sel] = sample[..., 0], sample[..., 1]
    return x, v


def sample(integrator, platform_name, n=1000, samples=300, stride=4, seed=7, system=None):
    system, masses = oscillators(n) if system is None else (system, oscillators(n)[1])
    if hasattr(integrator, "setRandomNumberSeed"):
        integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, platform(platform_name))
    x, v = stationary_start(masses, seed)
    context.setPositions(x)
    context.setVelocities(v)
    xs, vs, vs_next = [], [], []
    for _ in range(samples):
        state = context.getState(getPositions=True, getVelocities=True)
        xs.append(state.getPositions(asNumpy=True)._value)
        vs.append(state.getVelocities(asNumpy=True)._value)
        integrator.step(1)
        vs_next.append(context.getState(getVelocities=True).getVelocities(asNumpy=True)._value)
        integrator.step(stride - 1)
    return masses, np.array(xs), np.array(vs), np.array(vs_next)


def harmonic_checks(masses, xs, vs, vs_next):
    """(name, observed, expected, standard error) for every moment the test suite checks."""
    checks = []
    for m in MASSES:
        sel = masses == m
        cov = stationary_harmonic_covariance(K, m, KT, GAMMA, H)
        lag1 = harmonic_transition(K, m, GAMMA, H) @ cov
        per_dof = {
            "potential energy mean": (0.5 * K * xs[:, sel] ** 2, 0.5 * K * cov[0, 0]),
            "kinetic energy mean": (0.5 * m * vs[:, sel] ** 2, 0.5 * m * cov[1, 1]),
            "potential energy second moment": ((0.5 * K * xs[:, sel] ** 2) ** 2, 3 * (0.5 * K * cov[0, 0]) ** 2),
            "kinetic energy second moment": ((0.5 * m * vs[:, sel] ** 2) ** 2, 3 * (0.5 * m * cov[1, 1]) ** 2),
            "velocity lag-1 covariance": (vs_next[:, sel] * vs[:, sel], lag1[1, 1]),
            "position-velocity covariance": (xs[:, sel] * vs[:, sel], cov[0, 1]),
        }
        for name, (values, expected) in per_dof.items():
            replica_means = values.mean(axis=0).ravel()  # one independent replica per degree of freedom
            error = replica_means.std(ddof=1) / np.sqrt(replica_means.size)
            checks.append((f"{name} (m={m})", replica_means.mean(), expected, error))
    return checks


def failures(checks):
    return [f"{name}: observed {obs:.6g}, expected {exp:.6g}, sigma {err:.3g}, z={(obs - exp) / err:.1f}"
            for name, obs, exp, err in checks if abs(obs - exp) > SIGMA_BUDGET * err]


