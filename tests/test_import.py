"""A lab's own trajectories as data (`openmm-accel data --import`): a structure and trajectories the test makes
itself become the package's dataset, with the user's forces (units converted) or forces computed here, and
go on to a Ca score model and a drift model; bad inputs are refused by name with nothing written."""
import json
import os
import random

import numpy as np
import openmm
import pytest
from openmm import app, unit

from openmm_accel import InputError
from openmm_accel.cli import main
from openmm_accel.learning.imported import ImportConfig, import_trajectories
from openmm_accel.learning.reference import load_reference
from openmm_accel.systems import _alanine_dipeptide_path

STEPS_PER_FRAME = 40  # 2 fs steps: a frame every 0.08 ps


@pytest.fixture(scope="module")
def peptide(tmp_path_factory):
    """ACE-(ALA)3-NME (42 atoms; two alanines added to openmmtools' alanine dipeptide by PDBFixer), and 100
    frames each of two seeded Langevin runs of it in vacuum (Amber14, X-H constraints) as DCD and XTC."""
    from pdbfixer import PDBFixer
    folder = tmp_path_factory.mktemp("peptide")
    fixer = PDBFixer(filename=_alanine_dipeptide_path())
    fixer.missingResidues = {(0, 2): ["ALA", "ALA"]}
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=1)
    state = random.getstate()
    random.seed(1)  # Modeller places hydrogens with Python's global random numbers
    fixer.addMissingHydrogens(7.0)
    random.setstate(state)
    system = app.ForceField("amber14-all.xml").createSystem(fixer.topology, nonbondedMethod=app.NoCutoff,
                                                            constraints=app.HBonds)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 2 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    simulation = app.Simulation(fixer.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"))
    simulation.context.setPositions(fixer.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    simulation.step(1000)
    structure = str(folder / "peptide.pdb")
    with open(structure, "w") as handle:
        app.PDBFile.writeFile(fixer.topology, simulation.context.getState(getPositions=True).getPositions(), handle)
    import mdtraj
    for name in ("run-1.dcd", "run-2.xtc"):
        path = str(folder / name)
        reporter = (app.DCDReporter(path, STEPS_PER_FRAME) if name.endswith(".dcd")
                    else mdtraj.reporters.XTCReporter(path, STEPS_PER_FRAME))
        simulation.reporters = [reporter]
        simulation.step(100 * STEPS_PER_FRAME)
        if hasattr(reporter, "close"):
            reporter.close()
        else:
            reporter._out.close()
    return {"pdb": structure, "dcd": str(folder / "run-1.dcd"), "xtc": str(folder / "run-2.xtc")}


def imported(peptide, output, *extra) -> int:
    return main(["data", "--import", peptide["dcd"], peptide["xtc"], "--topology", peptide["pdb"],
                 "--temperature", "300", "--frame-interval", "0.08", "--output", str(output), "--no-progress",
                 *extra])


def mm_forces(pdb: str, positions: np.ndarray) -> np.ndarray:
    """Amber14 forces (kJ/mol/nm) of one frame, evaluated independently of the package."""
    structure = app.PDBFile(pdb)
    system = app.ForceField("amber14-all.xml").createSystem(structure.topology, nonbondedMethod=app.NoCutoff)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions * unit.nanometer)
    forces = context.getState(getForces=True).getForces(asNumpy=True)
    return forces.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)


@pytest.fixture(scope="module")
def labelled(peptide, tmp_path_factory):
    """The two runs imported with Amber14 forces computed on the PDB."""
    output = tmp_path_factory.mktemp("labelled") / "data"
    assert imported(peptide, output, "--label-forces", "mm") == 0
    return str(output)


def test_imported_frames_and_computed_forces_are_the_trajectories_and_the_force_field(peptide, labelled):
    import mdtraj
    data = load_reference(labelled)
    first = mdtraj.load(peptide["dcd"], top=peptide["pdb"])
    assert data.positions.shape == (2, 100, 42, 3) and data.interval_ps == pytest.approx(0.08)
    np.testing.assert_allclose(data.positions[0], first.xyz, atol=1e-6)
    # DCD holds float32 angstroms; forces stored in float32
    expected = mm_forces(peptide["pdb"], data.positions[1, 50].astype(np.float64))
    np.testing.assert_allclose(data.forces[1, 50], expected, rtol=1e-5, atol=1e-3 * np.abs(expected).max())
    assert data.metadata["temperature_k"] == 300 and data.metadata["recipe"]["potential"] == "mm"
    settings = json.load(open(os.path.join(labelled, "settings.json")))["settings"]
    assert [entry["path"] for entry in settings["imported"]["trajectories"]] == [peptide["dcd"], peptide["xtc"]]
    assert mdtraj.load(os.path.join(labelled, "topology.pdb")).n_atoms == 42


def test_the_users_forces_are_converted_from_their_unit(peptide, labelled, tmp_path):
    data = load_reference(labelled)
    files = []
    for walker in range(2):  # kcal/mol/A: the labelled forces / 41.84
        files.append(str(tmp_path / f"forces-{walker}.npy"))
        np.save(files[-1], data.forces[walker].astype(np.float64) / 41.84)
    assert imported(peptide, tmp_path / "given", "--forces", *files, "--forces-unit", "kcal/mol/A") == 0
    given = load_reference(str(tmp_path / "given"))
    np.testing.assert_allclose(given.forces, data.forces, rtol=1e-6, atol=1e-3)
    assert given.potential is None and "recipe" not in given.metadata
    # --atoms: the heavy atoms' frames and forces only (the trajectories read as such)
    assert imported(peptide, tmp_path / "heavy", "--forces", *files, "--forces-unit", "kcal/mol/A",
                    "--atoms", "not element H") == 0
    heavy = load_reference(str(tmp_path / "heavy"))
    index = [atom.index for atom in data.topology.atoms() if atom.element.symbol != "H"]
    assert heavy.positions.shape[2] == len(index) == heavy.topology.getNumAtoms() == 20
    np.testing.assert_allclose(heavy.positions, data.positions[:, :, index], atol=1e-6)
    np.testing.assert_allclose(heavy.forces, data.forces[:, :, index], rtol=1e-6, atol=1e-3)


def test_the_time_of_xtc_frames_gives_the_interval_and_a_dcd_needs_it_stated(peptide, tmp_path):
    config = ImportConfig(trajectories=(peptide["xtc"],), topology=peptide["pdb"], temperature_k=300.0,
                          output=str(tmp_path / "xtc"), progress=False, stride=2)
    summary = import_trajectories(config)
    assert summary["frames_per_walker"] == 50
    assert load_reference(summary["output"]).interval_ps == pytest.approx(2 * STEPS_PER_FRAME * 0.002, rel=1e-4)
    with pytest.raises(InputError, match="frame_interval.*run-1.dcd"):
        import_trajectories(ImportConfig(trajectories=(peptide["dcd"],), topology=peptide["pdb"],
                                         temperature_k=300.0, output=str(tmp_path / "dcd")))
    assert not os.path.exists(tmp_path / "dcd")


def test_a_ca_score_model_learns_from_imported_trajectories_without_forces(peptide, tmp_path):
    assert imported(peptide, tmp_path / "data") == 0
    model = str(tmp_path / "ca.pt")
    assert main(["train", "score", "--data", str(tmp_path / "data"), "--mapping", "ca", "--epochs", "2",
                 "--output", model, "--no-progress"]) == 0
    import mdtraj
    assert main(["sample", "--method", "score", "--score-model", model, "-n", "5",
                 "--output", str(tmp_path / "ca.dcd")]) == 0
    samples = mdtraj.load(str(tmp_path / "ca.dcd"), top=str(tmp_path / "ca.dcd.pdb"))
    assert samples.n_atoms == 3 and [a.name for a in samples.topology.atoms] == ["CA"] * 3
    assert main(["run", "--method", "score", "--score-model", model, "--system", peptide["pdb"], "--steps", "20",
                 "--output", str(tmp_path / "run"), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert mdtraj.load(str(run / "trajectory.dcd"), top=str(run / "topology.pdb")).n_atoms == 3
    # drift learns from forces: refused by name, nothing written
    assert main(["train", "drift", "--data", str(tmp_path / "data"), "--epochs", "1", "--output",
                 str(tmp_path / "drift.pt")]) == 2
    assert not os.path.exists(tmp_path / "drift.pt")


def test_a_drift_model_learns_from_imported_trajectories_with_computed_forces(labelled, tmp_path, capsys):
    model = str(tmp_path / "drift.pt")
    assert main(["train", "drift", "--data", labelled, "--epochs", "20", "--generator", "internal",
                 "--output", model, "--no-progress"]) == 0
    assert main(["sample", "--method", "drift", "--drift-model", model, "-n", "20",
                 "--output", str(tmp_path / "drift.dcd"), "--no-progress"]) == 0
    assert "bonds ok 100.00 %" in capsys.readouterr().out  # the internal generator keeps the bond graph
    # the model's system is the labelling one, rebuilt from its recipe (no --system)
    assert main(["run", "--method", "drift", "--drift-model", model, "--steps", "20", "--output",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    summary = json.load(open(tmp_path / "run" / "summary.json"))
    assert summary["atoms"] == 42
    # examples/compare_to_held_out.py: the drift samples and a Ca score model's against the held-out frames
    score = str(tmp_path / "ca.npz")
    assert main(["train", "score", "--data", labelled, "--mapping", "ca", "--epochs", "2", "--output", score,
                 "--no-progress"]) == 0
    assert main(["sample", "--method", "score", "--score-model", score, "-n", "20",
                 "--output", str(tmp_path / "ca.dcd")]) == 0
    from conftest import ROOT, run_python
    result = run_python([os.path.join(ROOT, "examples", "compare_to_held_out.py"), labelled, score,
                         str(tmp_path / "ca.dcd"), model, str(tmp_path / "drift.dcd"), "--json",
                         str(tmp_path / "comparison.json")])
    assert result.returncode == 0, result.stderr
    comparison = json.load(open(tmp_path / "comparison.json"))
    for method in ("score", "drift"):
        assert comparison[method]["samples"] == 20 and 0 <= comparison[method]["ca_distance_tvd"] <= 1
        assert 0 <= comparison[method]["noise_floor"]["contact_map_mad"] <= 1


def test_resume_continues_an_interrupted_import_and_refuses_other_files(peptide, labelled, tmp_path):
    import shutil
    copy = tmp_path / "data"
    shutil.copytree(labelled, copy)
    shutil.rmtree(copy / "walker-01")  # as if stopped after the first trajectory
    assert imported(peptide, copy, "--label-forces", "mm", "--resume") == 0
    np.testing.assert_array_equal(load_reference(str(copy)).forces, load_reference(labelled).forces)
    assert imported(peptide, copy, "--label-forces", "mm", "--resume", "--stride", "2") == 2
    assert imported(peptide, copy, "--label-forces", "mm") == 2  # earlier data are never written over


def test_bad_imports_are_refused_by_name_with_nothing_written(peptide, tmp_path, capsys):
    import mdtraj
    out = tmp_path / "never"
    ala = mdtraj.load(_alanine_dipeptide_path())
    ala.save_dcd(str(tmp_path / "alanine.dcd"))
    shuffled = mdtraj.load(peptide["dcd"], top=peptide["pdb"])
    shuffled.xyz = shuffled.xyz[:, np.random.default_rng(1).permutation(42)]
    shuffled.save_dcd(str(tmp_path / "shuffled.dcd"))
    np.save(tmp_path / "short.npy", np.zeros((5, 42, 3)))
    cases = {
        "another molecule's atom count": (["--import", str(tmp_path / "alanine.dcd")], "trajectories.*42 atoms"),
        "another molecule's atoms": (["--import", str(tmp_path / "shuffled.dcd")], "bonded atoms"),
        "a missing file": (["--import", str(tmp_path / "none.dcd")], "trajectories.*existing file"),
        "forces of too few frames": (["--forces", str(tmp_path / "short.npy"), str(tmp_path / "short.npy")],
                                     "forces.*every frame"),
        "one force file for two": (["--forces", str(tmp_path / "short.npy")], "forces.*one file per trajectory"),
        "forces given and labelled": (["--forces", str(tmp_path / "short.npy"), str(tmp_path / "short.npy"),
                                       "--label-forces", "mm"], "label_forces.*not both"),
        "a system without a label": (["--system", peptide["pdb"]], "system.*--label-forces"),
        "an option of sampling": (["--walkers", "3"], "walkers.*without --import"),
        "an unknown potential": (["--label-forces", "nonsense"], "label_forces.*nonsense"),
        "a selection matching nothing": (["--atoms", "resname LIG"], "atoms.*matches none"),
        "an ML region with the force field": (["--label-forces", "mm", "--ml-atoms", "protein"], "ml_atoms"),
        "no temperature": (None, "temperature"),
    }
    for name, (extra, message) in cases.items():
        if extra is None:
            code = main(["data", "--import", peptide["dcd"], "--topology", peptide["pdb"], "--frame-interval",
                         "0.08", "--output", str(out)])
        elif extra[0] == "--import":
            code = main(["data", *extra, "--topology", peptide["pdb"], "--temperature", "300",
                         "--frame-interval", "0.08", "--output", str(out)])
        else:
            code = imported(peptide, out, *extra)
        error = capsys.readouterr().err
        assert code == 2, name
        assert __import__("re").search(message, error), (name, error)
        assert not os.path.exists(out), name
