"""FlashMD models from metatrain (metatomic format) in OpenMM.

The model under test is tests/data/metatrain-flashmd-ala2-4fs.pt: a deliberately small metatrain
``experimental.flashmd`` model trained here on OpenMM NVE data of alanine dipeptide (amber14, pairs 4 fs
apart) by tests/data/make_metatrain_flashmd.py (no published FlashMD weights can be downloaded here).
"""
import os

import numpy as np
import openmm
import pytest
from openmm import app, unit

from conftest import platform
from openmm_accel import InputError, systems
from openmm_accel.devices import Placement
from openmm_accel.flashmd.training import generate_nve, open_model
from openmm_accel.learning.sampling import NVEPlan
from openmm_accel.flashmd import FlashMDIntegrator

pytest.importorskip("metatomic.torch", reason="optional dependency: pip install 'openmm_accel[metatomic]'")
MODEL = os.path.join(os.path.dirname(__file__), "data", "metatrain-flashmd-ala2-4fs.pt")


@pytest.fixture(scope="module")
def ala2():
    return systems.load("alanine-dipeptide-vacuum")


def numbers(molecular):
    return [a.element.atomic_number for a in molecular.topology.atoms()]


def test_model_file_is_recognised_with_its_stride_and_masses(ala2):
    model = open_model(MODEL, numbers(ala2), ala2.masses)
    assert abs(model.stride - 0.004) < 1e-12 and not model.rotation_equivariant
    heavy = ala2.masses.copy()
    heavy[numbers(ala2).index(1)] = 3.0  # hydrogen mass repartitioning is another system for FlashMD
    with pytest.raises(InputError, match="masses the model was trained with"):
        open_model(MODEL, numbers(ala2), heavy)
    with pytest.raises(InputError, match="elements the model knows"):
        open_model(MODEL, [16] + numbers(ala2)[1:], ala2.masses)
    from openmm_accel.flashmd.metatomic import MetatomicFlashMD
    with pytest.raises(InputError, match="the model's stride"):
        MetatomicFlashMD(MODEL, numbers(ala2), ala2.masses, stride=0.008)
    with pytest.raises(InputError, match="an exported metatomic FlashMD model file"):
        MetatomicFlashMD(MODEL + ".missing", numbers(ala2), ala2.masses)


def test_predictions_beat_free_flight_on_fresh_openmm_data(ala2):
    """End-to-end units check: on NVE pairs the model never saw (another seed), the model's mass-weighted
    errors are well below those of free flight (q + tau p/m, p); a wrong length or momentum unit makes
    them larger than free flight's by orders of magnitude."""
    data = generate_nve(ala2.system, ala2.positions, NVEPlan(300.0, segments=2, segment_steps=64, record_every=4,
                                                             decorrelation_steps=500, seed=101), Placement("cpu"))
    x0, p0, x1, p1, _, _ = data.pairs(0.004)
    model = open_model(MODEL, numbers(ala2), ala2.masses)
    x, p = model.predict(x0, p0)
    sqrt_m = np.sqrt(ala2.masses)[None, :, None]

    def error(xp, pp):
        return np.sqrt(np.mean(((xp - x1) * sqrt_m / 0.004) ** 2) + np.mean(((pp - p1) / sqrt_m) ** 2))

    free = error(x0 + 0.004 * p0 / ala2.masses[None, :, None], p0)
    assert error(x, p) < 0.7 * free


def test_runs_inside_simulation_with_rescaling_and_random_rotations(ala2, tmp_path):
    model = open_model(MODEL, numbers(ala2), ala2.masses)
    integrator = FlashMDIntegrator(model, temperature=300 * unit.kelvin, seed=5)
    assert integrator.random_rotations
    simulation = app.Simulation(ala2.topology, ala2.system, integrator, platform("CPU"))
    simulation.context.setPositions(ala2.positions)
    openmm.LocalEnergyMinimizer.minimize(simulation.context, maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300, 2)
    log = str(tmp_path / "log.csv")
    simulation.reporters.append(app.StateDataReporter(log, 5, time=True, potentialEnergy=True, temperature=True))
    simulation.step(20)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    assert np.all(np.isfinite(state.getPositions(asNumpy=True)._value))
    times = np.loadtxt(log, delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_allclose(times, [0.02, 0.04, 0.06, 0.08], rtol=1e-9)  # ps: 4 fs per step
    assert integrator.statistics["strides"] == 20
