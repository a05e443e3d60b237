"""Standard systems build, carry no constraints, and describe what they say."""
import numpy as np
import openmm
import pytest
from openmm import unit

from openmm_accel import InputError, systems


@pytest.mark.parametrize("name", list(systems.SYSTEMS))
def test_standard_system_builds_without_constraints(name):
    molecular = systems.load(name)
    n = molecular.topology.getNumAtoms()
    assert molecular.system.getNumParticles() == n == len(molecular.positions)
    assert molecular.system.getNumConstraints() == 0
    assert np.all(molecular.masses > 0)
    context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(molecular.positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy)


def test_alanine_dipeptide_variants():
    vacuum = systems.load("alanine-dipeptide-vacuum")
    assert vacuum.topology.getNumAtoms() == 22 and vacuum.solute_atoms == list(range(22))
    implicit = systems.load("alanine-dipeptide-implicit")
    assert any(isinstance(f, (openmm.GBSAOBCForce, openmm.CustomGBForce)) for f in implicit.system.getForces())
    explicit = systems.load("alanine-dipeptide-explicit")
    assert explicit.system.usesPeriodicBoundaryConditions() and len(explicit.solute_atoms) == 22


def test_the_same_molecule_in_another_solvent():
    assert systems.in_solvent("valine-dipeptide-implicit", "explicit") == "valine-dipeptide-explicit"
    assert systems.in_solvent("alanine-dipeptide-explicit", "vacuum") == "alanine-dipeptide-vacuum"
    assert (systems.in_solvent("openmmtools:AlanineDipeptideImplicit", "explicit")
            == "openmmtools:AlanineDipeptideExplicit")
    assert systems.in_solvent("double-well", "explicit") is None
    with pytest.raises(InputError, match="solvent: expected one of vacuum, implicit, explicit"):
        systems.in_solvent("alanine-dipeptide-vacuum", "water")


def test_another_capped_dipeptide_by_mutation_and_constraints_on_request():
    """Valine dipeptide: alanine mutated by PDBFixer (side chain and hydrogens added, the same each time), same
    caps and backbone names; ``constraints=HBonds`` constrains every X-H bond, and makes water rigid."""
    from openmm import app
    valine = systems.load("valine-dipeptide-vacuum")
    assert [r.name for r in valine.topology.residues()] == ["ACE", "VAL", "NME"]
    assert valine.topology.getNumAtoms() == 28 and valine.system.getNumConstraints() == 0
    again = systems.load("valine-dipeptide-vacuum")  # the added atoms are placed the same way every time
    np.testing.assert_array_equal(again.positions.value_in_unit(unit.nanometer),
                                  valine.positions.value_in_unit(unit.nanometer))
    constrained = systems.load("valine-dipeptide-implicit", constraints=app.HBonds)
    hydrogens = sum(1 for a, b in constrained.topology.bonds() if "H" in (a.element.symbol, b.element.symbol))
    assert constrained.system.getNumConstraints() == hydrogens == 16
    water = systems.load("water-box-small", constraints=app.HBonds)
    assert water.system.getNumConstraints() == water.topology.getNumAtoms()  # 3 per rigid water
    from openmm_accel.learning.reference import ReferenceConfig, validated
    with pytest.raises(InputError, match="constraints: expected --constraints none for harmonic-oscillators"):
        validated(ReferenceConfig(system="harmonic-oscillators"))


def test_hydrogen_mass_repartitioning_keeps_total_mass():
    plain = systems.load("alanine-dipeptide-vacuum")
    heavy = systems.load("alanine-dipeptide-vacuum", hydrogen_mass=3 * unit.amu)
    hydrogens = [a.index for a in heavy.topology.atoms() if a.element.symbol == "H"]
    assert np.allclose(heavy.masses[hydrogens], 3.0)
    assert heavy.masses.sum() == pytest.approx(plain.masses.sum(), rel=1e-12)


def test_hydrogen_mass_reaches_openmmtools_systems_or_is_refused():
    """`run --system openmmtools:... --hydrogen-mass` used to be swallowed by the class's **kwargs."""
    molecular = systems.with_potential("openmmtools:AlanineDipeptideImplicit", "mm", hydrogen_mass=4.0)
    hydrogens = [a.index for a in molecular.topology.atoms() if a.element.symbol == "H"]
    assert np.allclose(molecular.masses[hydrogens], 4.0)
    with pytest.raises(InputError, match="hydrogen_mass: expected no hydrogen mass repartitioning"):
        systems.load("openmmtools:HarmonicOscillator", hydrogen_mass=4.0 * unit.amu)


def test_double_well_closed_form():
    molecular = systems.load("double-well", n_particles=2, barrier=4.0, a=0.2)
    context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.array([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]]))
    assert context.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(4.0)


def test_unknown_system_and_option():
    with pytest.raises(InputError, match="did you mean 'water-box'"):
        systems.load("waterbox")
    with pytest.raises(InputError, match="water-box"):
        systems.load("water-box", edge=3.0)


def test_openmmtools_test_systems_as_system_and_energy_model():
    """Any openmmtools test system: as an OpenMM System, and through the batched energy-model contract."""
    from openmm_accel.models.classical import OpenMMEnergyModel
    molecular = systems.load("openmmtools:HarmonicOscillator", K=100.0 * unit.kilojoule_per_mole / unit.nanometer**2)
    model = OpenMMEnergyModel(molecular.system, molecular.topology, float64=True)
    x = np.array([[[0.1, 0.0, 0.0]], [[0.0, 0.2, 0.0]]])
    energies, forces = model.evaluate(x)
    np.testing.assert_allclose(energies, [0.5, 2.0], rtol=1e-9)
    np.testing.assert_allclose(forces[1, 0], [0.0, -20.0, 0.0], rtol=1e-9)
    implicit = systems.load("openmmtools:AlanineDipeptideImplicit")
    assert implicit.system.getNumConstraints() == 0 and implicit.topology.getNumAtoms() == 22
    with pytest.raises(InputError, match="did you mean 'HarmonicOscillator'"):
        systems.load("openmmtools:HarmonicOscilator")


def test_ethanol_is_the_cgenff_molecule_at_a_sensible_geometry():
    """Ethanol (CHARMM36/CGenFF ETOH, the MD17 molecule): its built geometry is close to the minimum of its
    force field and of ANI-1x (the data's potential), so both describe the same molecule; X-H constraints on
    request."""
    ethanol = systems.load("ethanol-vacuum")
    assert [a.element.symbol for a in ethanol.topology.atoms()] == ["C", "O", "H", "H", "H", "C", "H", "H", "H"]
    assert ethanol.topology.getNumBonds() == 8
    built = ethanol.positions.value_in_unit(unit.nanometer)
    bonds = [(a.index, b.index) for a, b in ethanol.topology.bonds()]

    def minimised(system):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(ethanol.positions)
        openmm.LocalEnergyMinimizer.minimize(context, 1e-3)
        return context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def lengths(x):
        return np.array([np.linalg.norm(x[i] - x[j]) for i, j in bonds])

    charmm = minimised(ethanol.system)
    ani = minimised(systems.with_potential("ethanol-vacuum", "ani1x").system)
    # bond lengths (nm): the textbook values within 0.03 A of the force field's minimum (CGenFF's C-H are
    # 1.11 A), the two potentials' minima within 0.03 A of each other
    np.testing.assert_allclose(lengths(built), lengths(charmm), atol=0.003)
    np.testing.assert_allclose(lengths(ani), lengths(charmm), atol=0.003)
    constrained = systems.with_potential("ethanol-vacuum", "ani1x", constraints="hbonds").system
    assert constrained.getNumConstraints() == 6


def test_an_ml_potential_on_a_whole_molecule_in_implicit_solvent_keeps_its_solvation():
    """ANI-1x on every atom of alanine dipeptide in OBC2: the generalized-Born force stays beside the model
    (the ML region's internal MM terms are switched off), so the energy is ANI-1x's plus the solvation the
    force field's GB force gives at the same positions; in vacuum it is ANI-1x's alone."""
    from openmm_accel.systems import IMPLICIT_SOLVENT_FORCES
    implicit = systems.with_potential("alanine-dipeptide-implicit", "ani1x")
    vacuum = systems.with_potential("alanine-dipeptide-vacuum", "ani1x")
    mm = systems.load("alanine-dipeptide-implicit")

    def energy(system, positions, group=None):
        for force in system.getForces():
            force.setForceGroup(1 if isinstance(force, IMPLICIT_SOLVENT_FORCES) else 0)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        state = context.getState(getEnergy=True, **({} if group is None else {"groups": {group}}))
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert any(isinstance(force, IMPLICIT_SOLVENT_FORCES) for force in implicit.system.getForces())
    assert not any(isinstance(force, IMPLICIT_SOLVENT_FORCES) for force in vacuum.system.getForces())
    solvation = energy(mm.system, mm.positions, group=1)
    assert solvation < -20.0  # a polar molecule in water: tens of kJ/mol
    total = energy(implicit.system, mm.positions)
    assert total == pytest.approx(energy(vacuum.system, mm.positions) + solvation, rel=1e-9, abs=1e-6)
