"""A lab's own files as systems (openmm_accel.structures): every input kind OpenMM's app layer reads runs
`openmm-accel run`; the recipe rebuilds the same system and refuses a changed file; bad inputs are refused
by name before anything is written."""
import json
import os

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_accel import InputError, systems
from openmm_accel.learning.reference import ReferenceConfig, generate, load_reference
from openmm_accel.molecular import Recipe
from openmm_accel.simulate import RunConfig, run
from openmm_accel.systems import _package_file

ALANINE = os.path.join("alanine-dipeptide-gbsa", "alanine-dipeptide")

#: One flexible water model (Amber TIP3P numbers) in each program's own format, two molecules.
GROMACS_TOP = """; two flexible TIP3P waters
[ defaults ]
1 2 yes 0.5 0.8333
[ atomtypes ]
OW 8 15.9994 0.0 A 0.315061 0.636386
HW 1 1.008 0.0 A 0.0 0.0
[ moleculetype ]
HOH 2
[ atoms ]
1 OW 1 HOH O 1 -0.834 15.9994
2 HW 1 HOH H1 1 0.417 1.008
3 HW 1 HOH H2 1 0.417 1.008
[ bonds ]
1 2 1 0.09572 462750.4
1 3 1 0.09572 462750.4
[ angles ]
2 1 3 1 104.52 836.8
[ system ]
water
[ molecules ]
HOH 2
"""
WATERS = np.array([[0.126, 0.639, 0.322], [0.187, 0.713, 0.320], [0.170, 0.568, 0.277],
                   [1.326, 1.639, 1.322], [1.387, 1.713, 1.320], [1.370, 1.568, 1.277]])
CHARMM_PRM = """* TIP3P water (CHARMM), flexible
*
ATOMS
MASS 1 HT 1.00800
MASS 2 OT 15.99940

BONDS
OT HT 450.000 0.9572

ANGLES
HT OT HT 55.000 104.5200

NONBONDED nbxmod 5 atom cdiel fshift vatom vdistance vfswitch -
cutnb 14.0 ctofnb 12.0 ctonnb 10.0 eps 1.0 e14fac 1.0 wmin 1.5
HT 0.0 -0.046 0.2245
OT 0.0 -0.1521 1.7682

END
"""


def gro(path, box_nm=3.0) -> str:
    lines = ["two waters", f"{len(WATERS):5d}"]
    for k, (x, y, z) in enumerate(WATERS):
        lines.append(f"{k // 3 + 1:5d}{'HOH':<5}{['O', 'H1', 'H2'][k % 3]:>5}{k + 1:5d}{x:8.3f}{y:8.3f}{z:8.3f}")
    lines.append(f"{box_nm:10.5f}{box_nm:10.5f}{box_nm:10.5f}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def psf(path) -> str:
    atoms = "".join(f"{k + 1:10d} W        {k // 3 + 1:<8d} TIP3     {['OH2', 'H1', 'H2'][k % 3]:<8} "
                    f"{['OT', 'HT', 'HT'][k % 3]:<6}{[-0.834, 0.417, 0.417][k % 3]:14.6f}"
                    f"{[15.9994, 1.008, 1.008][k % 3]:14.4f}           0\n" for k in range(6))
    path.write_text("PSF EXT\n\n         1 !NTITLE\n* two flexible TIP3 waters\n\n         6 !NATOM\n" + atoms +
                    "\n         4 !NBOND: bonds\n         1         2         1         3         4         5"
                    "         4         6\n\n         2 !NTHETA: angles\n         2         1         3         5"
                    "         4         6\n\n" + "".join(f"         0 !{name}\n\n\n" for name in (
                        "NPHI: dihedrals", "NIMPHI: impropers", "NDON: donors", "NACC: acceptors", "NNB")) +
                    "         1         0 !NGRP NST2\n         0         0         0\n\n")
    return str(path)


def charmm_crd(path) -> str:
    rows = "".join(f"{k + 1:10d}{k // 3 + 1:10d}  TIP3      {['OH2', 'H1', 'H2'][k % 3]:<8}"
                   f"{10 * x:20.10f}{10 * y:20.10f}{10 * z:20.10f}  W         {k // 3 + 1:<8d}{0.0:20.10f}\n"
                   for k, (x, y, z) in enumerate(WATERS))
    path.write_text("* two waters\n*\n    6  EXT\n" + rows)
    return str(path)


def inputs(kind: str, folder) -> dict:
    """RunConfig settings of a system of ``kind`` made from files in ``folder``."""
    pdb = _package_file("openmmtools", "data", ALANINE + ".pdb")
    if kind == "pdb":
        return dict(system=pdb)
    if kind == "cif":
        structure = app.PDBFile(pdb)
        with open(folder / "alanine.cif", "w") as handle:
            app.PDBxFile.writeFile(structure.topology, structure.positions, handle)
        return dict(system=str(folder / "alanine.cif"), implicit_solvent="obc2")
    if kind == "amber":
        return dict(system=_package_file("openmmtools", "data", ALANINE + ".prmtop"),
                    coordinates=_package_file("openmmtools", "data", ALANINE + ".crd"), implicit_solvent="obc2")
    if kind == "gromacs":
        (folder / "water.top").write_text(GROMACS_TOP)
        return dict(system=str(folder / "water.top"), coordinates=gro(folder / "water.gro"), timestep_fs=0.5)
    if kind == "charmm":
        (folder / "water.prm").write_text(CHARMM_PRM)
        return dict(system=psf(folder / "water.psf"), coordinates=charmm_crd(folder / "water.crd"),
                    forcefield=(str(folder / "water.prm"),), timestep_fs=0.5)
    assert kind == "xml"
    molecular = systems.load("alanine-dipeptide-implicit")
    (folder / "system.xml").write_text(openmm.XmlSerializer.serialize(molecular.system))
    return dict(system=str(folder / "system.xml"), coordinates=pdb)


@pytest.mark.parametrize("kind, atoms", [("pdb", 22), ("cif", 22), ("amber", 22), ("gromacs", 6), ("charmm", 6),
                                         ("xml", 22)])
def test_every_input_kind_runs_and_its_recipe_rebuilds_it(tmp_path, kind, atoms):
    """PDB and mmCIF (Amber14, OBC2 for the mmCIF), an Amber prmtop + crd (OBC2), a GROMACS top + gro, a CHARMM
    psf + crd + parameters and a serialized System + PDB each run 10 steps of plain MD with their own force
    field; the recipe in summary.json rebuilds a system with the same energy (to float32 round-off of
    OpenMM's CPU platform: 1e-4 relative), and records each file's SHA-256."""
    settings = inputs(kind, tmp_path)
    summary = run(RunConfig(model="mm", steps=10, report_interval=5, output=str(tmp_path / "run"), progress=False,
                            **settings))
    assert summary["atoms"] == atoms and summary["steps_run"] == 10
    recipe = Recipe.from_json(summary["recipe"])
    assert recipe.source == "file:" + os.path.abspath(settings["system"])
    assert set(dict(recipe.source_options)["sha256_of"]) >= {"system"} | ({"coordinates"} if "coordinates" in
                                                                          settings else set())
    first, again = systems.build(recipe), systems.with_potential(settings["system"], source_options={
        k: v for k, v in settings.items() if k not in ("system", "timestep_fs")})

    def energy(molecular):
        context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(molecular.positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy(first)) and abs(energy(first) - energy(again)) <= 1e-9 * max(1.0, abs(energy(first)))
    assert first.recipe.differences(again.recipe) == []


def test_trpzip2_in_the_amber_format_before_amber_7_loses_its_water_for_implicit_solvent(tmp_path):
    """openmmtools' trpzip2 prmtop predates %FLAG sections (OpenMM cannot read it; ParmEd converts it). Without
    its 10,816 atoms of water and its chloride, with Amber14 and OBC2: the 12-residue hairpin, 218 atoms."""
    folder = os.path.dirname(_package_file("openmmtools", "data", "trpzip2-explicit", "trpzip2.prmtop"))
    solvated = systems.with_potential(os.path.join(folder, "trpzip2.prmtop"), source_options=dict(
        coordinates=os.path.join(folder, "trpzip2.crd")))
    assert solvated.topology.getNumAtoms() == 11034 and solvated.box is not None
    bare = systems.with_potential(os.path.join(folder, "trpzip2.prmtop"), source_options=dict(
        coordinates=os.path.join(folder, "trpzip2.crd"), remove_solvent=True, forcefield=("amber14-all.xml",),
        implicit_solvent="obc2"))
    assert bare.topology.getNumAtoms() == 218 and bare.box is None and bare.topology.getNumResidues() == 12
    assert any(type(force).__name__ == "GBSAOBCForce" or "CustomGB" in type(force).__name__
               for force in bare.system.getForces())


def test_bad_files_are_refused_by_name_before_anything_is_written(tmp_path):
    """A residue no template matches, coordinates of another molecule, an element the ML potential lacks,
    solvent removal without a force field, file options with a standard system: each refused by name, and no
    output folder made."""
    pdb = _package_file("openmmtools", "data", ALANINE + ".pdb")
    with_ligand = tmp_path / "ligand.pdb"
    structure = app.PDBFile(pdb)
    modeller = app.Modeller(structure.topology, structure.positions)
    ligand = app.Topology()
    ligand.addAtom("C1", app.element.carbon, ligand.addResidue("LIG", ligand.addChain()))
    modeller.add(ligand, [openmm.Vec3(2.0, 2.0, 2.0)] * unit.nanometer)
    with open(with_ligand, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle)
    (tmp_path / "water.top").write_text(GROMACS_TOP)
    sulfide = tmp_path / "sulfide.top"
    sulfide.write_text(GROMACS_TOP.replace("OW 8 15.9994", "OW 16 32.06").replace("-0.834 15.9994", "-0.834 32.06")
                       .replace("HOH", "H2S"))
    cases = [
        (dict(system=str(with_ligand), model="mm"), r"forcefield: expected templates for every residue .*\(LIG\)"),
        (dict(system=_package_file("openmmtools", "data", ALANINE + ".prmtop"), coordinates=gro(tmp_path / "w.gro"),
              model="mm"), "coordinates: expected 22 positions, one per atom of the topology, got 6"),
        (dict(system=str(sulfide), coordinates=gro(tmp_path / "s.gro"), model="ani1x"),
         r"model: expected a potential for every element .* got ANI-1x on atoms with S$"),
        (dict(system=_package_file("openmmtools", "data", ALANINE + ".prmtop"), model="mm", remove_solvent=True,
              coordinates=_package_file("openmmtools", "data", ALANINE + ".crd")),
         "forcefield: expected force-field XMLs with --remove-solvent"),
        (dict(system="alanine-dipeptide-vacuum", coordinates=pdb), "coordinates: expected it only with a structure"),
        (dict(system=str(tmp_path / "missing.pdb")), "system: expected an existing structure or topology file"),
        (dict(system=str(tmp_path / "water.top"), model="mm"), "coordinates: expected a coordinate file for water.top"),
    ]
    for settings, message in cases:
        with pytest.raises(InputError, match=message):
            run(RunConfig(steps=2, output=str(tmp_path / "never"), progress=False, **settings))
        assert not (tmp_path / "never").exists()


def test_a_changed_file_is_refused_by_the_recipe_made_from_it(tmp_path):
    (tmp_path / "water.top").write_text(GROMACS_TOP)
    made = systems.with_potential(str(tmp_path / "water.top"), source_options=dict(coordinates=gro(tmp_path / "w.gro")))
    gro(tmp_path / "w.gro", box_nm=3.5)
    with pytest.raises(InputError, match="the files this recipe was made from, unchanged .*coordinates"):
        systems.build(made.recipe)


def test_reference_data_of_a_file(tmp_path):
    """`data --system FILE`: the data's settings record the file's recipe, and the frames load."""
    generate(ReferenceConfig(output=str(tmp_path / "data"), system=_package_file("openmmtools", "data", ALANINE + ".prmtop"),
                             coordinates=_package_file("openmmtools", "data", ALANINE + ".crd"), implicit_solvent="obc2",
                             walkers=1, timestep_fs=2.0, frame_ps=0.1, chunk_ns=0.001, equilibration_ps=0.0,
                             duration_ns=0.001, progress=False))
    recorded = json.load(open(tmp_path / "data" / "settings.json"))["recipe"]
    assert recorded["source"].startswith("file:") and recorded["source_options"]["implicit_solvent"] == "obc2"
    assert load_reference(str(tmp_path / "data")).positions.shape == (1, 10, 22, 3)
