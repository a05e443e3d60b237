"""Shared fixtures and the one tolerance table of the test suite."""
import os
import sys

# OpenMM's CPU platform with several threads gives results that vary in the last bits from run to run
# (measured: a checkpoint continuation differed by 6e-11 nm in 2 of 3 tries, with or without its
# DeterministicForces property); with one thread it repeats bit for bit. The thread count is read when
# openmm is imported, so this comes first; child processes of the tests inherit it.
os.environ.setdefault("OPENMM_CPU_THREADS", "1")

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Relative tolerances per floating-point type of the computation being checked. float64: sums of
# O(1e3) terms carry ~1e-13 relative round-off; 1e-9 leaves room for different summation orders
# (OpenMM vs torch) without hiding real errors, which are >= 1e-6. float32: 1.2e-7 machine epsilon
# times the ~1e3 terms of an ANI energy/force sum gives ~1e-4.
RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}

# Statistical tests pass within this many standard errors. With ~10 independent checks per test the
# chance of a false failure is ~1e-5; the planted-bug tests show that real errors exceed it many times.
SIGMA_BUDGET = 5.0

PLATFORMS = ["Reference", "CPU"]


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    torch.set_num_threads(1)  # deterministic and, on 2 cores, fastest for these small models


@pytest.fixture(scope="session")
def alanine():
    from openmm_accel import systems
    return systems.load("alanine-dipeptide-vacuum")


def platform(name: str) -> openmm.Platform:
    return openmm.Platform.getPlatformByName(name)


def relative_error(actual, expected) -> float:
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def run_python(args, cwd=None, timeout=900):
    import subprocess
    return subprocess.run([sys.executable] + list(args), cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout)


def state_arrays(simulation):
    """Positions and velocities of a Simulation's Context as arrays."""
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    return state.getPositions(asNumpy=True)._value, state.getVelocities(asNumpy=True)._value


def assert_checkpoint_continues_bitwise(simulation, path: str, steps: int) -> None:
    """Save a checkpoint, run on, reload, run again: the two continuations must be identical."""
    start = simulation.currentStep
    simulation.saveCheckpoint(path)
    simulation.step(steps)
    expected = state_arrays(simulation)
    simulation.loadCheckpoint(path)
    assert simulation.currentStep == start
    simulation.step(steps)
    assert simulation.currentStep == start + steps
    for actual, wanted in zip(state_arrays(simulation), expected):
        np.testing.assert_array_equal(actual, wanted)


@pytest.fixture(scope="session")
def tiny_reference_data(tmp_path_factory) -> str:
    """A few frames of reference MD (alanine dipeptide, implicit solvent, the `data` defaults otherwise: two
    walkers of 0.4 ps, frames every 10 fs after 0.1 ps), shared by the learned methods' end-to-end tests."""
    from openmm_accel.learning.reference import ReferenceConfig, generate
    folder = str(tmp_path_factory.mktemp("reference") / "data")
    generate(ReferenceConfig(output=folder, frame_ps=0.01, chunk_ns=0.0002, duration_ns=0.0004, equilibration_ps=0.1,
                             progress=False))
    return folder
