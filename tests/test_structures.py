"""A lab's own files as systems (openmm_accel.structures): every input kind OpenMM's app layer reads runs
`openmm-accel run`; the recipe rebuilds the same system and refuses a changed file; bad inputs are refused
by name before anything is written."""
import json
import os
from typing import Optional

import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from openmm_accel import InputError, SimulationError, systems
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
    generate(ReferenceConfig(output=str(tmp_path / "data"),
                             system=_package_file("openmmtools", "data", ALANINE + ".prmtop"),
                             coordinates=_package_file("openmmtools", "data", ALANINE + ".crd"),
                             implicit_solvent="obc2",
                             walkers=1, timestep_fs=2.0, frame_ps=0.1, chunk_ns=0.001, equilibration_ps=0.0,
                             duration_ns=0.001, progress=False))
    recorded = json.load(open(tmp_path / "data" / "settings.json"))["recipe"]
    assert recorded["source"].startswith("file:") and recorded["source_options"]["implicit_solvent"] == "obc2"
    assert load_reference(str(tmp_path / "data")).positions.shape == (1, 10, 22, 3)


def test_the_ml_region_is_an_mdtraj_selection(tmp_path):
    """`--ml-atoms "resname ALA"` on the dipeptide's PDB: ANI-1x on the 10 alanine atoms, the force field on
    the caps (ML/MM); the recipe records the indices, which rebuild the same energy. A selection matching
    nothing, one mdtraj cannot parse, or one with the ML potential off is refused by name."""
    import mdtraj
    pdb = _package_file("openmmtools", "data", ALANINE + ".pdb")
    molecular = systems.with_potential(pdb, "ani1x", ml_atoms="resname ALA")
    expected = [int(i) for i in mdtraj.load(pdb).topology.select("resname ALA")]
    assert len(expected) == 10 and molecular.region == expected and molecular.recipe.ml_atoms == tuple(expected)
    again = systems.build(molecular.recipe)

    def energy(system):
        context = openmm.Context(system.system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(system.positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy(again) == pytest.approx(energy(molecular), rel=1e-12)
    summary = run(RunConfig(system=pdb, model="ani1x", ml_atoms="resname ALA", steps=4, report_interval=2,
                            output=str(tmp_path / "run"), progress=False))
    assert summary["recipe"]["ml_atoms"] == expected
    for settings, message in ((dict(model="ani1x", ml_atoms="resname XYZ"), "ml_atoms: expected a selection that "
                               "matches atoms of the system, got 'resname XYZ', which matches none"),
                              (dict(model="ani1x", ml_atoms="resname =="), "ml_atoms: expected a selection in "
                               "mdtraj's language"),
                              (dict(model="mm", ml_atoms="resname ALA"), r"ml_atoms \(--ml-atoms\): expected it "
                               "only with an ML --model")):
        with pytest.raises(InputError, match=message):
            run(RunConfig(system=pdb, steps=2, output=str(tmp_path / "never"), progress=False, **settings))
        assert not (tmp_path / "never").exists()


class Springs(torch.nn.Module):
    """A test's own energy model: harmonic springs on given atom pairs, in Angstrom and kcal/mol."""

    def __init__(self, pairs, k: float, length: float):
        super().__init__()
        self.register_buffer("pairs", torch.as_tensor(pairs, dtype=torch.long))
        self.k, self.length = k, length

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        d = torch.linalg.vector_norm(positions[:, self.pairs[:, 0]] - positions[:, self.pairs[:, 1]], dim=-1)
        return (0.5 * self.k * (d - self.length) ** 2).sum(-1)


def test_a_torchscript_file_is_a_potential_with_its_stated_units(tmp_path):
    """`--model torchscript:PATH`: a module saved with the energy-model contract and its units (Angstrom,
    kcal/mol, in the archive's openmm_accel.json) runs as the potential of the dipeptide's PDB; its energy in
    OpenMM is the springs' closed form converted to kJ/mol. A changed file, a module with another forward
    and one made for other elements are refused by name."""
    pdb = _package_file("openmmtools", "data", ALANINE + ".pdb")
    structure = app.PDBFile(pdb)
    pairs = [(a.index, b.index) for a, b in structure.topology.bonds()]
    numbers = [atom.element.atomic_number for atom in structure.topology.atoms()]
    path = tmp_path / "springs.pt"
    units = json.dumps({"length": "angstrom", "energy": "kcal/mol", "atomic_numbers": numbers})
    torch.jit.save(torch.jit.script(Springs(pairs, 300.0, 1.2)), str(path), _extra_files={"openmm_accel.json": units})
    molecular = systems.with_potential(pdb, f"torchscript:{path}")
    x = np.array(structure.positions.value_in_unit(unit.nanometer))
    d = 10 * np.linalg.norm(x[[i for i, _ in pairs]] - x[[j for _, j in pairs]], axis=1)
    context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(structure.positions)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(4.184 * np.sum(0.5 * 300.0 * (d - 1.2) ** 2), rel=1e-5)  # float32 module
    assert dict(molecular.recipe.potential_options)["sha256"] and molecular.recipe.potential == f"torchscript:{path}"
    summary = run(RunConfig(system=pdb, model=f"torchscript:{path}", steps=4, report_interval=2, timestep_fs=0.5,
                            output=str(tmp_path / "run"), progress=False))
    assert summary["steps_run"] == 4
    torch.jit.save(torch.jit.script(Springs(pairs, 100.0, 1.2)), str(path))
    with pytest.raises(InputError, match="model: expected the TorchScript file this recipe was made with, unchanged"):
        systems.build(molecular.recipe)

    class PositionsOnly(torch.nn.Module):
        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return positions.sum((1, 2))
    torch.jit.save(torch.jit.script(PositionsOnly()), str(tmp_path / "other.pt"))
    torch.jit.save(torch.jit.script(Springs(pairs, 1.0, 1.0)), str(tmp_path / "water.pt"),
                   _extra_files={"openmm_accel.json": json.dumps({"atomic_numbers": [8, 1, 1]})})
    for name, message, extra in (("other.pt", r"model: expected a module whose forward takes \(positions, box", {}),
                                 ("water.pt", "model: expected a TorchScript model made for these 22 atoms", {}),
                                 ("missing.pt", "model: expected an existing TorchScript file", {}),
                                 ("springs.pt", "unknown option 'member'", {"member": 2})):  # was a TypeError
        with pytest.raises(InputError, match=message):
            run(RunConfig(system=pdb, model=f"torchscript:{tmp_path / name}", steps=2,
                          output=str(tmp_path / "never"), progress=False, **extra))
        assert not (tmp_path / "never").exists()


def test_flashmd_trains_on_a_file_and_runs_only_on_that_file(tmp_path):
    """`train flashmd --system water.top --coordinates water.gro`: NVE data of the file's force field and a
    model whose recipe is the file's; `run --method flashmd` with it runs on that file and refuses another."""
    from openmm_accel.flashmd.config import FlashMDRunConfig, TrainFlashMDConfig
    from openmm_accel.flashmd.method import METHOD as flashmd
    (tmp_path / "water.top").write_text(GROMACS_TOP)
    files = dict(system=str(tmp_path / "water.top"), coordinates=gro(tmp_path / "water.gro"))
    model = str(tmp_path / "water.pt")
    flashmd.train(TrainFlashMDConfig(output=model, segments=2, segment_steps=16, record_every=4, timestep_fs=0.5,
                                     stride_fs=2.0, decorrelation_steps=10, epochs=1, batch_size=4, hidden=4,
                                     layers=1, progress=False, threads=1, **files))
    summary = run(RunConfig(method="flashmd", model="mm", steps=2, report_interval=1, output=str(tmp_path / "run"),
                            progress=False, options=FlashMDRunConfig(flashmd_model=model), **files))
    assert summary["steps_run"] == 2 and summary["recipe"]["source"] == "file:" + files["system"]
    (tmp_path / "other.top").write_text(GROMACS_TOP.replace("0.09572 462750.4", "0.1 462750.4"))
    with pytest.raises(InputError, match="system: expected the system the FlashMD model was trained on"):
        run(RunConfig(method="flashmd", model="mm", steps=2, output=str(tmp_path / "never"), progress=False,
                      options=FlashMDRunConfig(flashmd_model=model), system=str(tmp_path / "other.top"),
                      coordinates=files["coordinates"]))


@pytest.fixture(scope="module")
def trpzip2_data(tmp_path_factory) -> str:
    """20 frames of trpzip2 without its water, in OBC2 with Amber14: `data` of the Amber file openmmtools ships."""
    folder = os.path.dirname(_package_file("openmmtools", "data", "trpzip2-explicit", "trpzip2.prmtop"))
    data = str(tmp_path_factory.mktemp("trpzip2") / "data")
    generate(ReferenceConfig(output=data, system=os.path.join(folder, "trpzip2.prmtop"),
                             coordinates=os.path.join(folder, "trpzip2.crd"), remove_solvent=True,
                             forcefield=("amber14-all.xml",), implicit_solvent="obc2", walkers=1, timestep_fs=2.0,
                             frame_ps=0.1, chunk_ns=0.001, equilibration_ps=0.0, duration_ns=0.002, progress=False))
    return data


def test_a_ca_score_model_of_trpzip2_from_data_of_its_file(tmp_path, trpzip2_data):
    """`data --system trpzip2.prmtop ... --remove-solvent` -> `train score --mapping ca` (one bead per alpha
    carbon: 12) -> `sample` and `run --method score`: mdtraj reads both, with the CG topology's 12 CA atoms;
    an mdtraj selection as the mapping and a mapping matching nothing are handled by name."""
    import mdtraj
    from openmm_accel.score.config import ScoreRunConfig, ScoreSampleConfig, TrainScoreConfig
    from openmm_accel.score.method import METHOD as score
    data = trpzip2_data
    model = str(tmp_path / "ca.npz")
    score.train(TrainScoreConfig(data=data, output=model, mapping="ca", epochs=1, hidden=4, batch_size=4,
                                 progress=False))
    samples = str(tmp_path / "samples.dcd")
    score.sample(ScoreSampleConfig(score_model=model, count=3, sde_steps=5, output=samples))
    drawn = mdtraj.load(samples, top=samples + ".pdb")
    assert drawn.n_atoms == 12 and drawn.n_frames == 3 and {a.name for a in drawn.topology.atoms} == {"CA"}
    assert np.all(np.isfinite(drawn.xyz))
    summary = run(RunConfig(method="score", options=ScoreRunConfig(score_model=model), steps=4, report_interval=2,
                            timestep_fs=2.0, output=str(tmp_path / "run"), progress=False))
    assert summary["atoms"] == 12 and summary["steps_run"] == 4
    selection = str(tmp_path / "selection.npz")
    score.train(TrainScoreConfig(data=data, output=selection, mapping="name CA and resid 0 to 5", epochs=1, hidden=4,
                                 batch_size=4, progress=False))
    with pytest.raises(InputError, match="mapping: expected a selection that matches atoms"):
        score.train(TrainScoreConfig(data=data, output=str(tmp_path / "none.npz"), mapping="name XYZ", epochs=1))


def test_a_drift_model_of_trpzip2_samples_and_runs_on_its_file(tmp_path, trpzip2_data):
    """`train drift` on the file's data -> `sample --method drift` (mdtraj reads 218 atoms) and `run --method
    drift` with no --system: plain MD of the file's system, rebuilt from the model's recipe (coordinates,
    force field, solvent removed), from a generated conformation."""
    import mdtraj
    from openmm_accel.drift.config import DriftRunConfig, DriftSampleConfig, TrainDriftConfig
    from openmm_accel.drift.method import METHOD as drift
    model = str(tmp_path / "drift.npz")
    drift.train(TrainDriftConfig(data=trpzip2_data, output=model, epochs=1, hidden=4, batch_size=4, progress=False))
    samples = str(tmp_path / "samples.dcd")
    drift.sample(DriftSampleConfig(drift_model=model, count=2, output=samples))
    assert mdtraj.load(samples, top=samples + ".pdb").n_atoms == 218
    # a one-epoch generator draws a poor start, from which the file's MD blows up at once: stopped by the guard,
    # with the summary of what ran (the file's system, its potential)
    with pytest.raises(SimulationError, match="the dynamics exploded at step"):
        run(RunConfig(method="drift", options=DriftRunConfig(drift_model=model), steps=4, report_interval=2,
                      output=str(tmp_path / "run"), progress=False))
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["atoms"] == 218 and summary["config"]["model"] == "mm"
    assert summary["recipe"]["source_options"]["remove_solvent"] is True
    assert summary["recipe"]["source"] == "file:" + os.path.join(os.path.dirname(_package_file(
        "openmmtools", "data", "trpzip2-explicit", "trpzip2.prmtop")), "trpzip2.prmtop")


def test_data_of_a_file_refuse_to_continue_after_the_file_changed(tmp_path):
    """`data --resume` on a file's data: the coordinates edited since the first chunk are refused by name (the
    recipe's SHA-256), so no data set mixes two systems; unchanged files continue."""
    (tmp_path / "water.top").write_text(GROMACS_TOP)
    settings = dict(output=str(tmp_path / "data"), system=str(tmp_path / "water.top"),
                    coordinates=gro(tmp_path / "water.gro"), constraints="none", walkers=1, timestep_fs=0.5,
                    frame_ps=0.1, chunk_ns=0.0001, equilibration_ps=0.0, duration_ns=0.0001, progress=False)
    generate(ReferenceConfig(**settings))
    generate(ReferenceConfig(**{**settings, "duration_ns": 0.0002, "resume": True}))
    gro(tmp_path / "water.gro", box_nm=3.5)
    with pytest.raises(InputError, match="resume: expected the system the data were made of .* got another "
                                         "source_options"):
        generate(ReferenceConfig(**{**settings, "duration_ns": 0.0003, "resume": True}))
    assert load_reference(str(tmp_path / "data")).positions.shape[1] == 2


def test_bench_lsd_on_a_file_measures_its_own_settings(tmp_path):
    """`bench lsd --system FILE`: the file's two settings (0.5 fs; X-H constraints, 1 fs) with its target, LSD
    beside plain ABOBA from one state, the peptide's pooled (phi, psi) agreement in the report; file options
    without --system are refused by name before anything runs."""
    from openmm_accel.speculative.method import METHOD as lsd, SpeculativeBenchConfig
    report = str(tmp_path / "lsd.json")
    lsd.bench(SpeculativeBenchConfig(system=_package_file("openmmtools", "data", ALANINE + ".prmtop"),
                                     coordinates=_package_file("openmmtools", "data", ALANINE + ".crd"),
                                     steps=20, quick=True, drafts="1 ANI", json=report))
    rows = json.load(open(report))["rows"]
    assert [row["setting"] for row in rows] == ["alanine-dipeptide.prmtop, 0.5 fs, 10/ps"]
    assert rows[0]["steps"] == 20 and 0.0 <= rows[0]["acceptance"] <= 1.0 and rows[0]["js_lsd_vs_plain"] >= 0.0
    with pytest.raises(InputError, match="coordinates: expected it only with --system"):
        lsd.bench(SpeculativeBenchConfig(coordinates="x.inpcrd", steps=20, quick=True))


def test_the_all_mm_draft_of_a_ligand_comes_from_the_files_own_parameters(tmp_path):
    """ML/MM LSD with `--draft mm` on T4 lysozyme L99A (ANI-1x on its ligand TMP, which no standard force field
    has a template for): the draft's region term is the prmtop's own ligand parameters, whose energy is that
    of the ligand's own Amber file in vacuum (openmmtools ships it); for alanine dipeptide in water it is what
    Amber14 gives the solute alone. The LSD run commits its steps."""
    from openmm_accel.forces import region_mm_system
    from openmm_accel.models.classical import create_force_field_system
    from openmm_accel.speculative.config import SpeculativeConfig
    from openmm_accel.systems import subset_topology

    def energy(system, positions):
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    folder = os.path.dirname(_package_file("openmmtools", "data", "T4-lysozyme-L99A-implicit", "complex.prmtop"))
    files = dict(system=os.path.join(folder, "complex.prmtop"), coordinates=os.path.join(folder, "complex.crd"),
                 implicit_solvent="obc2")
    complex_ = systems.load(files["system"], coordinates=files["coordinates"], implicit_solvent="obc2")
    ligand = [atom.index for atom in complex_.topology.atoms() if atom.residue.name == "TMP"]
    x = complex_.positions.value_in_unit(unit.nanometer)[ligand]
    own = app.AmberPrmtopFile(os.path.join(folder, "ligand.prmtop")).createSystem(nonbondedMethod=app.NoCutoff)
    assert energy(region_mm_system(complex_.system, ligand), x) == pytest.approx(energy(own, x), rel=1e-9)
    water = systems.load("alanine-dipeptide-explicit")
    solute = water.solute_atoms
    amber14 = create_force_field_system(subset_topology(water.topology, solute), "amber14")
    y = water.positions.value_in_unit(unit.nanometer)[solute]
    assert energy(region_mm_system(water.system, solute), y) == pytest.approx(energy(amber14, y), rel=1e-9)
    summary = run(RunConfig(method="lsd", options=SpeculativeConfig(draft="mm"), model="ani1x", ml_atoms="resname TMP",
                            steps=4, report_interval=2, timestep_fs=0.5, friction_per_ps=10.0, platform="CPU",
                            minimize=False, output=str(tmp_path / "lsd"), progress=False, **files))
    assert summary["steps_run"] == 4 and summary["speculative"]["committed"] >= 4


def test_a_system_built_in_a_script_becomes_a_rebuildable_system(tmp_path):
    """structures.from_openmm: a Topology, System and positions from a script (here alanine dipeptide in OBC2
    with a restraint no force field file has) are written as system.xml + structure.pdb; the MolecularSystem's
    energy is the script's, its recipe rebuilds it, and a folder that has them already is refused."""
    from openmm_accel.structures import from_openmm
    made = systems.load("alanine-dipeptide-implicit")
    restraint = openmm.CustomExternalForce("100*(x-x0)^2")
    restraint.addPerParticleParameter("x0")
    restraint.addParticle(0, [0.5])
    made.system.addForce(restraint)

    def energy(molecular):
        context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(molecular.positions)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    molecular = from_openmm(made.topology, made.system, made.positions, str(tmp_path / "mine"))
    assert energy(molecular) == pytest.approx(energy(made), rel=1e-6)  # PDB positions: 1e-4 nm
    rebuilt = systems.build(molecular.recipe)
    assert energy(rebuilt) == pytest.approx(energy(molecular), rel=1e-12)
    with pytest.raises(InputError, match="folder: expected a folder without system.xml"):
        from_openmm(made.topology, made.system, made.positions, str(tmp_path / "mine"))
