"""Check the ML/MM energy of a T4 lysozyme L99A run (``examples/your_own_system.sh``) against an evaluation
that shares none of the package's ML/MM code.

    python examples/check_mlmm_energy.py RUN_FOLDER [--json OUT]

Mechanical embedding: E = E_MM(complex, Amber + OBC2) - E_MM(ligand alone, in vacuum) + E_ANI-1x(ligand),
the ligand's internal force-field terms replaced by ANI-1x, everything between ligand and protein and all of
the solvation kept. Here each term comes from elsewhere: the complex's and the ligand's Amber files that
openmmtools ships, read by OpenMM's own AmberPrmtopFile, and ANI-1x from torchani's own model. The package's
figure is the energy of the System its recipe builds (``summary.json``), at the last frame of the run.
"""
import argparse
import json
import os

import mdtraj
import numpy as np
import openmm
import torch
from openmm import app, unit

from openmm_accel.molecular import Recipe
from openmm_accel.systems import build

HARTREE_KJ_MOL = 2625.499638755248


def energy(system: openmm.System, positions_nm: np.ndarray) -> float:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def ani1x(elements, positions_nm: np.ndarray) -> float:
    """ANI-1x's energy (kJ/mol), assembled the way torchani's documentation loads a NeuroChem ensemble, from
    the files its wheel ships (``torchani.models.ANI1x()`` would try to download them)."""
    import glob
    import torchani
    from torchani import neurochem
    folder = os.path.join(os.path.dirname(torchani.__file__), "resources", "ani-1x_8x")
    constants = neurochem.Constants(glob.glob(os.path.join(folder, "*.params"))[0])
    model = torchani.nn.Sequential(torchani.AEVComputer(**constants),
                                   neurochem.load_model_ensemble(constants.species, os.path.join(folder, "train"), 8),
                                   neurochem.load_sae(os.path.join(folder, "sae_linfit.dat"))).double()
    species = constants.species_to_tensor([element.symbol for element in elements]).unsqueeze(0)
    coordinates = torch.tensor(positions_nm[None] * 10.0, dtype=torch.float64)
    return float(model((species, coordinates)).energies.item()) * HARTREE_KJ_MOL


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--json")
    args = parser.parse_args()
    with open(os.path.join(args.run, "summary.json")) as handle:
        recipe = Recipe.from_json(json.load(handle)["recipe"])
    folder = os.path.dirname(recipe.source[len("file:"):])
    last = mdtraj.load(os.path.join(args.run, "trajectory.dcd"), top=os.path.join(args.run, "topology.pdb"))[-1]
    x = last.xyz[0].astype(np.float64)
    package = energy(build(recipe).system, x)
    complex_ = app.AmberPrmtopFile(os.path.join(folder, "complex.prmtop"))
    ligand = app.AmberPrmtopFile(os.path.join(folder, "ligand.prmtop"))
    atoms = [atom.index for atom in complex_.topology.atoms() if atom.residue.name == "TMP"]
    elements = [atom.element for atom in complex_.topology.atoms()]
    if [a.element for a in ligand.topology.atoms()] != [elements[i] for i in atoms]:
        raise SystemExit("the ligand's prmtop does not list the complex's TMP atoms in order")
    parts = {"mm_complex": energy(complex_.createSystem(nonbondedMethod=app.NoCutoff, implicitSolvent=app.OBC2), x),
             "mm_ligand_vacuum": energy(ligand.createSystem(nonbondedMethod=app.NoCutoff), x[atoms]),
             "ani1x_ligand": ani1x([a.element for a in ligand.topology.atoms()], x[atoms])}
    independent = parts["mm_complex"] - parts["mm_ligand_vacuum"] + parts["ani1x_ligand"]
    result = {"package_kj_mol": package, "independent_kj_mol": independent, "difference_kj_mol": package - independent,
              "parts_kj_mol": parts, "frame": "last frame of " + args.run}
    print(f"package {package:.4f} kJ/mol, independent {independent:.4f} kJ/mol, difference "
          f"{package - independent:.2e} kJ/mol ({', '.join(f'{k} {v:.3f}' for k, v in parts.items())})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
