"""Analyse a run with mdtraj: backbone dihedrals, a Ramachandran plot and the temperature from the log.

    python examples/analyze_trajectory.py ala2_ani

Works on the output of examples/simulate_alanine_dipeptide.py and of ``openmm-accel run``.
"""
import argparse
import os

import matplotlib
import mdtraj
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("directory", help="directory with topology.pdb, trajectory.dcd and log.csv")
args = parser.parse_args()

trajectory = mdtraj.load(os.path.join(args.directory, "trajectory.dcd"),
                         top=os.path.join(args.directory, "topology.pdb"))
_, phi = mdtraj.compute_phi(trajectory)
_, psi = mdtraj.compute_psi(trajectory)
phi, psi = np.degrees(phi[:, 0]), np.degrees(psi[:, 0])

figure, axis = plt.subplots(figsize=(4.5, 4))
axis.scatter(phi, psi, s=6, c=np.arange(len(phi)), cmap="viridis")
axis.set(xlim=(-180, 180), ylim=(-180, 180), xlabel=r"$\phi$ (deg)", ylabel=r"$\psi$ (deg)",
         title=f"{trajectory.n_frames} frames")
figure.tight_layout()
plot = os.path.join(args.directory, "ramachandran.png")
figure.savefig(plot, dpi=120)

with open(os.path.join(args.directory, "log.csv")) as handle:
    header = [name.strip('#"') for name in handle.readline().strip().split(",")]
log = np.loadtxt(os.path.join(args.directory, "log.csv"), delimiter=",", skiprows=1, ndmin=2)
temperature = log[:, header.index("Temperature (K)")]
print(f"frames: {trajectory.n_frames}, atoms: {trajectory.n_atoms}")
print(f"phi mean {phi.mean():.1f} deg, psi mean {psi.mean():.1f} deg; plot: {plot}")
print(f"temperature: {temperature.mean():.1f} +- {temperature.std():.1f} K over {len(temperature)} reports")
