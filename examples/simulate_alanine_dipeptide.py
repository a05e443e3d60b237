"""Alanine dipeptide with the ANI-1x potential and the ABOBA Langevin integrator, in a plain OpenMM script.

    python examples/simulate_alanine_dipeptide.py --steps 5000 --output ala2_ani

Writes ala2_ani/{topology.pdb, trajectory.dcd, log.csv, checkpoint.chk}; analyse them with
examples/analyze_trajectory.py.
"""
import argparse
import os

import openmm
import torch
from openmm import app, unit

from openmm_accel import systems
from openmm_accel.forces import create_ml_system
from openmm_accel.integrators import LangevinABOBAIntegrator
from openmm_accel.models import create

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=5000)
parser.add_argument("--output", default="ala2_ani")
parser.add_argument("--model", default="ani1x", help="'ani1x' or 'amber14' (the classical force field)")
args = parser.parse_args()
os.makedirs(args.output, exist_ok=True)
torch.set_num_threads(1)  # on small molecules one thread is faster than two (see the README)

# 1. A System whose potential is the ANI-1x ensemble (or amber14), built from the standard structure.
ala2 = systems.load("alanine-dipeptide-vacuum")
if args.model == "ani1x":
    system = create_ml_system(create("ani1x", ala2.topology), ala2.masses)
    platform = openmm.Platform.getPlatformByName("Reference")  # openmmtorch has no CPU-platform kernel
else:
    system = ala2.system
    platform = openmm.Platform.getPlatformByName("CPU")

# 2. The ABOBA integrator is an ordinary OpenMM integrator: Simulation, reporters and checkpoints just work.
integrator = LangevinABOBAIntegrator(300 * unit.kelvin, 1.0 / unit.picosecond, 1.0 * unit.femtosecond)
simulation = app.Simulation(ala2.topology, system, integrator, platform)
simulation.context.setPositions(ala2.positions)
simulation.minimizeEnergy(maxIterations=200)
simulation.context.setVelocitiesToTemperature(300 * unit.kelvin)
with open(os.path.join(args.output, "topology.pdb"), "w") as handle:
    app.PDBFile.writeFile(ala2.topology, simulation.context.getState(getPositions=True).getPositions(), handle)

interval = max(1, args.steps // 100)
simulation.reporters.append(app.DCDReporter(os.path.join(args.output, "trajectory.dcd"), interval))
simulation.reporters.append(app.StateDataReporter(os.path.join(args.output, "log.csv"), interval, step=True,
                                                  time=True, potentialEnergy=True, temperature=True, speed=True))
simulation.reporters.append(app.CheckpointReporter(os.path.join(args.output, "checkpoint.chk"), 10 * interval))
simulation.step(args.steps)
print(f"ran {args.steps} steps; files in {args.output}/")
