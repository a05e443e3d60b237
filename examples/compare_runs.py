"""Compare finished `openmm-accel run` folders side by side: speed, structure and, where recorded, the kinetic
temperature of each element (FlashMD runs report it; any run with --velocities can be measured).

    python examples/compare_runs.py RUN [RUN ...] [--json PATH]

For each run: simulated ns/day, the mean C-alpha RMSD from its first frame and radius of gyration (proteins;
all heavy atoms otherwise), and per-element temperatures with standard errors. The speed ratios are only
meaningful for runs made side by side on one machine.
"""
import argparse
import json
import os

import mdtraj
import numpy as np

from openmm_accel.analysis import element_temperatures


def describe(folder: str) -> dict:
    summary = json.load(open(os.path.join(folder, "summary.json")))
    top = os.path.join(folder, "topology.pdb")
    frames = mdtraj.load(os.path.join(folder, "trajectory.dcd"), top=top)
    atoms = frames.topology.select("name CA")
    atoms = atoms if len(atoms) >= 3 else frames.topology.select("not element H")
    rmsd = mdtraj.rmsd(frames, frames, 0, atom_indices=atoms)
    row = {"run": folder, "method": summary["config"]["method"], "ns_per_day": summary["ns_per_day"],
           "frames": frames.n_frames, "rmsd_nm": float(rmsd.mean()),
           "radius_of_gyration_nm": float(mdtraj.compute_rg(frames.atom_slice(atoms)).mean())}
    statistics = summary.get("flashmd") or {}
    if statistics.get("element_temperatures"):
        row["element_temperatures"] = {element: (t["mean_k"], t["standard_error_k"]) for element, t in
                                       statistics["element_temperatures"]["elements"].items()}
    elif os.path.isfile(os.path.join(folder, "velocities.dcd")):
        velocities = mdtraj.load(os.path.join(folder, "velocities.dcd"), top=top).xyz.astype(float)
        masses = np.array([atom.element.mass for atom in frames.topology.atoms])  # amu (mdtraj's elements)
        symbols = [atom.element.symbol for atom in frames.topology.atoms]
        row["element_temperatures"] = element_temperatures(velocities, masses, symbols, com_removed=False)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = [describe(folder) for folder in args.runs]
    for row in rows:
        temperatures = ", ".join(f"{e} {m:.1f}" + ("" if s is None else f" +- {s:.1f}") + " K"
                                 for e, (m, s) in row.get("element_temperatures", {}).items())
        print(f"{row['run']} ({row['method']}): {row['ns_per_day']:.3f} ns/day, {row['frames']} frames, RMSD from "
              f"start {row['rmsd_nm']:.3f} nm, Rg {row['radius_of_gyration_nm']:.3f} nm"
              + (f"; {temperatures}" if temperatures else ""))
    if len(rows) > 1:
        print("speed of each against the first: " + ", ".join(f"{r['ns_per_day'] / rows[0]['ns_per_day']:.2f}x"
                                                            for r in rows[1:]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
