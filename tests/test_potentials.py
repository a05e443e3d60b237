"""MLPotential, the openmm-ml facade: the Systems it makes are the package's own, and integrators take it."""
import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from conftest import RTOL, platform, relative_error
from openmm_accel import InputError, MLPotential, systems
from openmm_accel.forces import create_mixed_system, create_ml_system
from openmm_accel.models import create
from openmm_accel.speculative.integrator import SpeculativeLangevinIntegrator
from openmm_accel.speculative.schedulers import BatchedScheduler


def energy_and_forces(system, positions):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform("Reference"))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def test_create_system_is_the_model_alone_with_element_masses(alanine):
    system = MLPotential("ani1x", dtype="float64").createSystem(alanine.topology)
    expected = create_ml_system(create("ani1x", alanine.topology, dtype="float64"), alanine.masses)
    (e, f), (e0, f0) = energy_and_forces(system, alanine.positions), energy_and_forces(expected, alanine.positions)
    assert abs(e - e0) <= RTOL[torch.float64] * abs(e0)
    assert relative_error(f, f0) < 1e-9
    masses = [system.getParticleMass(i).value_in_unit(unit.amu) for i in range(22)]
    np.testing.assert_allclose(masses, [atom.element.mass.value_in_unit(unit.amu) for atom in alanine.topology.atoms()])
    assert any(isinstance(force, openmm.CMMotionRemover) for force in system.getForces())


def test_create_mixed_system_is_the_package_ml_mm(tmp_path):
    water = systems.load("alanine-dipeptide-explicit", box_size=2.5)
    solute = water.solute_atoms
    mixed = MLPotential("ani1x").createMixedSystem(water.topology, water.system, solute)
    expected = create_mixed_system(water.system, create("ani1x", water.topology, atoms=solute), solute)
    (e, f), (e0, f0) = energy_and_forces(mixed, water.positions), energy_and_forces(expected, water.positions)
    assert e == pytest.approx(e0, rel=1e-9) and relative_error(f, f0) < 1e-6


def test_bad_names_and_options_are_refused(alanine):
    with pytest.raises(InputError, match="did you mean 'ani1x'"):
        MLPotential("ani1xx")
    with pytest.raises(InputError, match="did you mean 'member'"):
        MLPotential("ani1x", membr=0).createSystem(alanine.topology)
    with pytest.raises(InputError, match="createSystem"):
        MLPotential("ani1x").createSystem(alanine.topology, precision="single")
    with pytest.raises(InputError, match="interpolate: expected False"):
        MLPotential("ani1x").createMixedSystem(alanine.topology, alanine.system, range(5), interpolate=True)


def test_speculative_integrator_takes_potentials_for_draft_and_target(alanine):
    target = MLPotential("ani1x")
    system = target.createSystem(alanine.topology, removeCMMotion=False)
    integrator = SpeculativeLangevinIntegrator(300, 10.0, 0.0005, draft=MLPotential("ani1x", member=0),
                                               target=target, seed=1, scheduler=BatchedScheduler(4, adaptive=False))
    context = openmm.Context(system, integrator, platform("Reference"))
    context.setPositions(alanine.positions)
    context.setVelocitiesToTemperature(300, 1)
    integrator.step(20)  # the first step checks that the target is the System's potential
    assert context.getStepCount() == 20 and integrator.draft_model.member == 0
    with pytest.raises(InputError, match="draft: expected an MLPotential that has made the Simulation's System"):
        SpeculativeLangevinIntegrator(300, 10.0, 0.0005, draft=MLPotential("ani1x", member=0), seed=1)


def test_openmm_ml_finds_the_packages_ani1x_through_its_own_entry_point():
    """openmm-ml 1.8 has no ani1x: with openmm_accel installed, `openmmml.MLPotential("ani1x")` is the package's
    (openmm-ml's `openmmml.potentials` entry point), and openmm-ml's createSystem and its own mechanical
    embedding give the energies of the package's MLPotential (float64 Reference sums)."""
    import openmmml
    from openmm_accel import systems
    vacuum, water = systems.load("alanine-dipeptide-vacuum"), systems.load("alanine-dipeptide-explicit")

    def energy(system, positions):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    theirs = openmmml.MLPotential("ani1x", member=0).createSystem(vacuum.topology)
    ours = MLPotential("ani1x", member=0).createSystem(vacuum.topology)
    assert energy(theirs, vacuum.positions) == pytest.approx(energy(ours, vacuum.positions), rel=1e-12)
    solute = list(range(22))
    theirs = openmmml.MLPotential("ani1x").createMixedSystem(water.topology, water.system, solute)
    ours = MLPotential("ani1x").createMixedSystem(water.topology, water.system, solute)
    assert energy(theirs, water.positions) == pytest.approx(energy(ours, water.positions), rel=1e-12)
