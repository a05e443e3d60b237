"""An openmm-ml script that runs with openmm_accel after changing one import.

    python examples/openmm_ml_script.py --steps 1000

Alanine dipeptide (the PDB file openmmtools ships) with ANI-1x alone, then the same molecule in a water
box with ANI-1x on it and amber14/TIP3P around it (ML/MM), each in an ordinary Simulation with OpenMM's
own LangevinMiddleIntegrator and reporters. Every line but the marked import is openmm-ml usage.
"""
import argparse
import os

import openmmtools
import torch
from openmm import LangevinMiddleIntegrator, Platform, app, unit

from openmm_accel import MLPotential  # with openmm-ml: from openmmml import MLPotential

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=1000)
args = parser.parse_args()
torch.set_num_threads(1)  # one thread is fastest for a molecule this small (see the README)
platform = Platform.getPlatformByName("Reference")  # TorchForce has no CPU kernel in openmmtorch 1.5

pdb = app.PDBFile(os.path.join(os.path.dirname(openmmtools.__file__), "data", "alanine-dipeptide-gbsa",
                               "alanine-dipeptide.pdb"))
potential = MLPotential("ani1x")

# 1. The molecule with ANI-1x as its only potential.
system = potential.createSystem(pdb.topology)
simulation = app.Simulation(pdb.topology, system, LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                                           0.5 * unit.femtosecond), platform)
simulation.context.setPositions(pdb.positions)
simulation.minimizeEnergy(maxIterations=100)
simulation.reporters.append(app.StateDataReporter("ml.csv", max(args.steps // 10, 1), step=True,
                                                  potentialEnergy=True, temperature=True))
simulation.step(args.steps)

# 2. ML/MM: ANI-1x on the peptide, amber14 and TIP3P (flexible, no constraints here) for the water.
forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
modeller = app.Modeller(pdb.topology, pdb.positions)
modeller.addSolvent(forcefield, padding=1.0 * unit.nanometer)
mm_system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer,
                                    constraints=None, rigidWater=False)
ml_atoms = [atom.index for atom in modeller.topology.atoms() if atom.residue.name != "HOH"]
mixed = potential.createMixedSystem(modeller.topology, mm_system, ml_atoms)
simulation = app.Simulation(modeller.topology, mixed, LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                                               0.5 * unit.femtosecond), platform)
simulation.context.setPositions(modeller.positions)
simulation.minimizeEnergy(maxIterations=100)
simulation.reporters.append(app.StateDataReporter("mlmm.csv", max(args.steps // 100, 1), step=True,
                                                  potentialEnergy=True, temperature=True))
simulation.step(max(args.steps // 10, 1))
print(f"ML: {system.getNumParticles()} atoms; ML/MM: {mixed.getNumParticles()} atoms, {len(ml_atoms)} of them ML")
