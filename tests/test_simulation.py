"""Integrators inside openmm.app.Simulation: reporters, checkpoints, states, mdtraj, the Python-step pattern."""

import mdtraj
import numpy as np
import pytest
from openmm import app, unit

from conftest import assert_checkpoint_continues_bitwise, platform, state_arrays
from openmm_accel.integrators import LangevinABOBAIntegrator, PythonStepIntegrator
from openmm_accel.integrators.base import refuse_constraints
from openmm_accel.models import create


def simulation_of(molecular, integrator, name="Reference"):
    simulation = app.Simulation(molecular.topology, molecular.system, integrator, platform(name))
    simulation.context.setPositions(molecular.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 5)
    return simulation


@pytest.mark.parametrize("platform_name", ["Reference", "CPU"])
def test_reporters_write_files_mdtraj_can_load(tmp_path, alanine, platform_name):
    integrator = LangevinABOBAIntegrator(300, 1, 0.001)
    integrator.setRandomNumberSeed(2)
    simulation = simulation_of(alanine, integrator, platform_name)
    pdb, dcd, log = (str(tmp_path / name) for name in ("top.pdb", "traj.dcd", "log.csv"))
    app.PDBFile.writeFile(alanine.topology, alanine.positions, open(pdb, "w"))
    simulation.reporters.append(app.DCDReporter(dcd, 10))
    simulation.reporters.append(app.StateDataReporter(log, 10, step=True, time=True, temperature=True))
    simulation.step(50)
    del simulation.reporters[:]  # closes the DCD file
    trajectory = mdtraj.load(dcd, top=pdb)
    assert trajectory.n_frames == 5 and trajectory.n_atoms == 22
    rows = np.loadtxt(log, delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 0], [10, 20, 30, 40, 50])
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * 0.001, rtol=1e-9)


@pytest.mark.parametrize("platform_name", ["Reference", "CPU"])
def test_checkpoint_round_trip_is_bitwise(tmp_path, alanine, platform_name):
    """A checkpoint restores positions, velocities, step, time and the RNG: the continuation is identical."""
    integrator = LangevinABOBAIntegrator(300, 1, 0.001)
    integrator.setRandomNumberSeed(11)
    simulation = simulation_of(alanine, integrator, platform_name)
    simulation.step(20)
    assert_checkpoint_continues_bitwise(simulation, str(tmp_path / "run.chk"), 30)


def test_save_state_and_load_state(tmp_path, alanine):
    integrator = LangevinABOBAIntegrator(300, 1, 0.001)
    integrator.setRandomNumberSeed(13)
    simulation = simulation_of(alanine, integrator)
    simulation.step(10)
    path = str(tmp_path / "state.xml")
    simulation.saveState(path)
    saved = state_arrays(simulation)
    simulation.step(10)
    simulation.loadState(path)
    assert simulation.currentStep == 10
    assert simulation.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(0.010)
    for a, b in zip(state_arrays(simulation), saved):
        np.testing.assert_array_equal(a, b)


class PythonForceABOBA(PythonStepIntegrator):
    """The documented pattern in miniature: ABOBA whose force comes from a Python model, in two stages."""

    def __init__(self, model, temperature, friction, timestep):
        super().__init__(timestep)
        self.model = model
        self.addGlobalVariable("kT", (unit.MOLAR_GAS_CONSTANT_R * temperature * unit.kelvin)
                               .value_in_unit(unit.kilojoule_per_mole))
        self.addGlobalVariable("friction", friction)
        self.addPerDofVariable("fmodel", 0.0)
        self.addPerDofVariable("xmid", 0.0)
        self.addGlobalVariable("a", 0.0)
        with self.stage("drift"):
            self.addComputePerDof("x", "x + 0.5*dt*v")
            self.addComputePerDof("xmid", "x")
        with self.stage("finish"):
            self.addComputeGlobal("a", "exp(-friction*dt)")
            self.addComputePerDof("v", "a*v + (1 + a)*0.5*dt*fmodel/m + sqrt(kT*(1 - a*a)/m)*gaussian")
            self.addComputePerDof("x", "x + 0.5*dt*v")

    def check_context(self, context):
        refuse_constraints(context, type(self).__name__)

    def advance(self, max_steps):
        self.run_stage("drift")
        _, forces = self.model.evaluate(self.per_dof("xmid"))
        self.set_per_dof("fmodel", forces)
        self.run_stage("finish")
        return 1


def test_python_step_pattern_matches_the_program_and_keeps_time(tmp_path, alanine):
    """Without friction both are deterministic: the staged Python integrator (force from a Python model)
    follows the ABOBA program's trajectory, and Simulation's step count, time, reporters and checkpoints
    see physical steps although every step runs two programs."""
    model = create("amber14", alanine.topology, float64=True)
    reference = simulation_of(alanine, LangevinABOBAIntegrator(300, 0, 0.001))
    staged_integrator = PythonForceABOBA(model, 300, 0.0, 0.001)
    staged = simulation_of(alanine, staged_integrator)
    log = str(tmp_path / "log.csv")
    staged.reporters.append(app.StateDataReporter(log, 5, step=True, time=True))
    reference.step(25)
    staged.step(25)
    assert staged.currentStep == 25
    assert staged.context.getState().getTime().value_in_unit(unit.picosecond) == pytest.approx(0.025)
    for a, b in zip(state_arrays(staged), state_arrays(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)  # chaotic growth of 1e-16 force round-off
    rows = np.loadtxt(log, delimiter=",", skiprows=1)
    np.testing.assert_allclose(rows[:, 0], [5, 10, 15, 20, 25])
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * 0.001, rtol=1e-9)
    staged.integrator.setGlobalVariableByName("friction", 1.0)  # now stochastic: the RNG must be restored
    assert_checkpoint_continues_bitwise(staged, str(tmp_path / "staged.chk"), 5)


def test_unbound_integrator_says_so():
    with pytest.raises(RuntimeError, match="not bound to an openmm.Context"):
        LangevinABOBAIntegrator().step(1)
