"""The model bridge: both Force routes against direct torch evaluation; subsets; ML/MM; errors."""
import copy

import numpy as np
import openmm
import pytest
import torch
from openmm import unit

from conftest import RTOL, platform, relative_error
from openmm_accel import InputError, systems
from openmm_accel.forces import add_to_system, create_mixed_system, to_openmm_force
from openmm_accel.models import create


def state_of(system, positions, name="Reference", groups=-1):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform(name))
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def bare_system(n, masses=12.0):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(masses)
    return system


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
@pytest.mark.parametrize("subset", [False, True])
def test_both_routes_reproduce_direct_evaluation(alanine, backend, subset):
    """Reference platform works in float64, so with a float64 model the routes agree to round-off."""
    model = create("ani1x", alanine.topology, dtype="float64")
    x = alanine.positions.value_in_unit(unit.nanometer)
    expected_e, expected_f = model.evaluate(x)
    extra = 4 if subset else 0  # four MM-only particles before the ML region
    system = bare_system(22 + extra)
    atoms = list(range(extra, extra + 22)) if subset else None
    add_to_system(system, model, backend, atoms=atoms)
    positions = np.concatenate([np.ones((extra, 3)), x]) if subset else x
    energy, forces = state_of(system, positions)
    assert abs(energy - expected_e) <= RTOL[torch.float64] * abs(expected_e)
    assert relative_error(forces[extra:], expected_f) < RTOL[torch.float64]
    assert np.all(forces[:extra] == 0.0)


def test_pythonforce_runs_non_torchscript_models_on_cpu_platform(alanine):
    """An OpenMM-backed model cannot be scripted; the PythonForce route runs it, on any platform."""
    model = create("amber14", alanine.topology, float64=True)
    system = bare_system(22)
    add_to_system(system, model, "pythonforce")
    x = alanine.positions.value_in_unit(unit.nanometer)
    energy, forces = state_of(system, x, "CPU")
    expected_e, expected_f = state_of(alanine.system, x)
    assert energy == pytest.approx(expected_e, rel=1e-12)
    assert relative_error(forces, expected_f) < 1e-6  # CPU platform accumulates forces in float32
    with pytest.raises(InputError, match="TorchScript-compatible model.*pythonforce"):
        to_openmm_force(model, "torchforce")


def test_force_group_separates_the_model(alanine):
    model = create("ani1x", alanine.topology, dtype="float64")
    system = copy.deepcopy(alanine.system)
    add_to_system(system, model, force_group=5)
    x = alanine.positions.value_in_unit(unit.nanometer)
    ml_energy, _ = state_of(system, x, groups={5})
    assert ml_energy == pytest.approx(model.evaluate(x)[0], rel=1e-12)
    mm_energy, _ = state_of(system, x, groups=set(range(5)))
    assert mm_energy == pytest.approx(state_of(alanine.system, x)[0], rel=1e-12)


def test_mixed_system_with_exact_region_model_reproduces_mm():
    """If the 'ML' model is the MM force field itself on the whole region, ML/MM must equal pure MM."""
    molecular = systems.load("alanine-dipeptide-vacuum")
    model = create("amber14", molecular.topology, float64=True)
    mixed = create_mixed_system(molecular.system, model, list(range(22)), backend="pythonforce")
    x = molecular.positions.value_in_unit(unit.nanometer)
    energy, forces = state_of(mixed, x)
    expected_e, expected_f = state_of(molecular.system, x)
    assert energy == pytest.approx(expected_e, rel=1e-10)
    assert relative_error(forces, expected_f) < 1e-10


def test_mixed_system_leaves_solvent_forces_unchanged():
    """Mechanical embedding only replaces solute-internal terms, so forces on water atoms are the MM ones."""
    molecular = systems.load("alanine-dipeptide-explicit")
    solute = molecular.solute_atoms
    model = create("ani1x", molecular.topology, atoms=solute, dtype="float64")
    mixed = create_mixed_system(molecular.system, model, solute)
    x = molecular.positions.value_in_unit(unit.nanometer)
    _, forces = state_of(mixed, x)
    _, mm_forces = state_of(molecular.system, x)
    water = np.setdiff1d(np.arange(len(x)), solute)
    # PME on the Reference platform is double precision; the reciprocal-space sum is identical in both
    # Systems (the charges are unchanged), so differences are round-off of the exclusion corrections.
    assert relative_error(forces[water], mm_forces[water]) < 1e-8
    assert relative_error(forces[solute], mm_forces[solute]) > 1e-2  # the solute really is ML now


# -- bad input -----------------------------------------------------------------------------------------
def test_atom_count_mismatch_is_caught_when_adding(alanine):
    model = create("ani1x", alanine.topology)
    with pytest.raises(InputError, match="model: expected a model of 25 atoms.*got a model of 22 atoms"):
        add_to_system(bare_system(25), model)
    with pytest.raises(InputError, match="atoms: expected 22 atom indices.*got 21 indices"):
        to_openmm_force(model, atoms=range(21))
    with pytest.raises(InputError, match="atoms: expected indices below 30"):
        add_to_system(bare_system(30), model, atoms=range(10, 32))


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_atom_count_mismatch_at_run_time_names_the_fix(alanine, backend):
    """A Force built without a System check still fails with a clear message inside OpenMM."""
    model = create("ani1x", alanine.topology)
    system = bare_system(23)
    system.addForce(to_openmm_force(model, backend))
    with pytest.raises(Exception, match="model describes 22 atoms"):
        state_of(system, np.zeros((23, 3)))


def test_unknown_backend(alanine):
    with pytest.raises(InputError, match="did you mean 'torchforce'"):
        to_openmm_force(create("ani1x", alanine.topology), "torchfroce")
