"""The Ray scheduler: same trajectories as the batched scheduler, worker failure, and ANI-1x on alanine dipeptide."""
import numpy as np
import openmm
import pytest

from conftest import platform
from harmonic import GAMMA, H, K, TEMPERATURE, failures, harmonic_checks, sample
from openmm_accel import SimulationError, systems
from openmm_accel.forces import create_ml_system
from openmm_accel.speculative import SpeculativeLangevinIntegrator, Verification
from openmm_accel.speculative.schedulers import BatchedScheduler, create_scheduler
from openmm_accel.models import create
from openmm_accel.models.analytic import HarmonicModel

ray = pytest.importorskip("ray", reason="the Ray scheduler needs ray (pip install 'openmm_accel[ray]')")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def speculative(n, scheduler, window=8, workers=2, adaptive_window=True, **verification):
    """LSD on oscillators: ``scheduler`` with ``window`` drafts per round (Ray: steps per pipeline run)."""
    chosen = (BatchedScheduler(window, adaptive_window) if scheduler == "batched" else
              create_scheduler("ray", workers=workers, chunk=window))
    return SpeculativeLangevinIntegrator(TEMPERATURE, GAMMA, H, draft=HarmonicModel(n, 0.8 * K),
                                         target=HarmonicModel(n, K), scheduler=chosen, seed=3,
                                         verification=Verification(**verification))


def run(integrator, molecular, chunks, chunk=9):
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(TEMPERATURE, 4)
    frames = []
    for _ in range(chunks):
        integrator.step(chunk)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    return np.array(frames)


def test_ray_and_batched_give_the_same_trajectory():
    """Without error correction the path depends only on the seed: out-of-order verification on two
    workers must reproduce the batched scheduler's trajectory exactly."""
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    batched = speculative(10, "batched", error_correction=False, window=5)
    distributed = speculative(10, "ray", error_correction=False, workers=2, window=16)
    try:
        np.testing.assert_array_equal(run(batched, molecular, 12), run(distributed, molecular, 12))
    finally:
        distributed.close()


def test_ray_and_batched_give_the_same_error_corrected_trajectory():
    """With error correction too, the path depends only on the seed and the correction period: the Ray
    pipeline (out of order, timing-dependent) commits the batched scheduler's trajectory exactly."""
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    batched = speculative(10, "batched", window=6, adaptive_window=False)
    distributed = speculative(10, "ray", workers=2, window=16, correction_period=6)
    try:
        np.testing.assert_array_equal(run(batched, molecular, 12), run(distributed, molecular, 12))
    finally:
        distributed.close()


def test_ray_chain_with_error_correction_is_exact():
    """The error-corrected Ray chain reproduces the exact ABOBA statistics."""
    integrator = speculative(40, "ray", workers=2, window=32)
    try:
        checks = harmonic_checks(*sample(integrator, "Reference", n=40, samples=1200, stride=2))
    finally:
        integrator.close()
    assert not failures(checks), "\n".join(failures(checks))


def test_a_dying_worker_changes_nothing_and_losing_all_stops_cleanly():
    molecular = systems.harmonic_oscillators(n_particles=10, k=K, mass=4.0)
    reference = run(speculative(10, "batched", error_correction=False), molecular, 8)
    integrator = speculative(10, "ray", error_correction=False, workers=2, window=8)
    context = openmm.Context(molecular.system, integrator, platform("Reference"))
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(TEMPERATURE, 4)
    frames = []
    for i in range(8):
        if i == 3:
            ray.kill(integrator.scheduler.workers[0])
        integrator.step(9)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
    np.testing.assert_array_equal(np.array(frames), reference)  # never silently wrong
    assert len(integrator.scheduler.workers) == 1
    ray.kill(integrator.scheduler.workers[0])
    with pytest.raises(SimulationError, match="all Ray target workers died"):
        integrator.step(50)
    assert context.getStepCount() >= 72
    assert np.all(np.isfinite(context.getState(getPositions=True).getPositions(asNumpy=True)._value))


def test_alanine_dipeptide_ani1x_ray_matches_batched():
    """ANI-1x ensemble target, single-network draft, two local Ray workers: identical to batched up to
    float64 round-off (one configuration per worker call vs K per batched call changes summation order)."""
    ala2 = systems.load("alanine-dipeptide-vacuum")
    target = create("ani1x", ala2.topology, dtype="float64")
    draft = create("ani1x", ala2.topology, member=0, dtype="float64")
    system = create_ml_system(target, ala2.masses)
    finals = []
    for scheduler in ("batched", "ray"):
        integrator = SpeculativeLangevinIntegrator(300, 10.0, 0.0005, draft=draft, target=target, seed=7,
                                                   scheduler=create_scheduler(scheduler, **(
                                                       {"workers": 2} if scheduler == "ray" else {})),
                                                   verification=Verification(error_correction=False))
        context = openmm.Context(system, integrator, platform("Reference"))
        context.setPositions(ala2.positions)
        context.setVelocitiesToTemperature(300, 1)
        integrator.step(30)
        finals.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        integrator.close()
    np.testing.assert_allclose(finals[0], finals[1], rtol=0, atol=1e-10)
