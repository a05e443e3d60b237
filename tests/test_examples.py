"""Every example runs (in a short setting), and the analysis reads what the simulation wrote."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, run_python

EXAMPLES = os.path.join(ROOT, "examples")


@pytest.mark.parametrize("model", ["ani1x", "amber14"])
def test_simulate_then_analyze(tmp_path, model):
    out = str(tmp_path / model)
    result = run_python([os.path.join(EXAMPLES, "simulate_alanine_dipeptide.py"), "--steps", "200",
                         "--output", out, "--model", model])
    assert result.returncode == 0, result.stderr
    result = run_python([os.path.join(EXAMPLES, "analyze_trajectory.py"), out])
    assert result.returncode == 0, result.stderr
    assert "frames: 100, atoms: 22" in result.stdout
    assert os.path.getsize(os.path.join(out, "ramachandran.png")) > 1000


def test_openmm_ml_script_runs_with_one_import_changed(tmp_path):
    result = run_python([os.path.join(EXAMPLES, "openmm_ml_script.py"), "--steps", "20"], cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "ML/MM: 712 atoms, 22 of them ML" in result.stdout
    assert (tmp_path / "ml.csv").read_text().count("\n") == 11


def test_the_ml_mm_energy_of_a_t4_lysozyme_run_agrees_with_an_independent_evaluation(tmp_path):
    """examples/check_mlmm_energy.py on a short run of T4 lysozyme L99A with ANI-1x on its ligand: the package's
    ML/MM energy equals Amber(complex) - Amber(ligand in vacuum) + torchani's ANI-1x(ligand), each from files
    and code outside the package's ML/MM path, within 8 float32 steps of ANI's energy (the package's ANI runs
    in float32: one step of -311 Hartree is 3e-5 Hartree, 0.08 kJ/mol; measured after 2,000 steps: 0.02
    kJ/mol). A missed ligand-ligand term would be off by its Amber energy, tens of kJ/mol."""
    from openmm_accel.simulate import RunConfig, run
    from openmm_accel.systems import _package_file
    folder = os.path.dirname(_package_file("openmmtools", "data", "T4-lysozyme-L99A-implicit", "complex.prmtop"))
    run(RunConfig(system=os.path.join(folder, "complex.prmtop"), coordinates=os.path.join(folder, "complex.crd"),
                  implicit_solvent="obc2", model="ani1x", ml_atoms="resname TMP", steps=2, report_interval=2,
                  timestep_fs=0.5, seed=1, platform="CPU", minimize=False, output=str(tmp_path / "t4"),
                  progress=False))
    result = run_python([os.path.join(EXAMPLES, "check_mlmm_energy.py"), str(tmp_path / "t4"), "--json",
                         str(tmp_path / "check.json")])
    assert result.returncode == 0, result.stderr
    check = json.load(open(tmp_path / "check.json"))
    from openmm_accel.models.ani import HARTREE_TO_KJ_PER_MOL as hartree
    ani = check["parts_kj_mol"]["ani1x_ligand"]
    assert ani < -1e5  # ANI's absolute energies (Hartree scale)
    step = float(np.spacing(np.float32(abs(ani) / hartree))) * hartree
    assert abs(check["difference_kj_mol"]) < 8 * step


def test_every_example_is_tested():
    tested = {"simulate_alanine_dipeptide.py", "analyze_trajectory.py", "openmm_ml_script.py",
              "check_mlmm_energy.py", "compare_runs.py",  # here
              "compare_to_held_out.py"}  # in test_import.py
    assert {f for f in os.listdir(EXAMPLES) if f.endswith(".py")} == tested


def test_readme_python_examples_run(tmp_path):
    """The README's Python examples (the first two blocks) are documentation that runs."""
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = [block.split("```", 1)[0] for block in text.split("```python\n")[1:3]]
    for number, code in enumerate(blocks):
        script = tmp_path / f"readme_example_{number}.py"
        script.write_text(code)
        result = run_python([str(script)], cwd=str(tmp_path))
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "log.csv").read_text().count("\n") == 11
    assert json.load(open(tmp_path / "lsd-run" / "summary.json"))["final_step"] == 20
    assert "100 conformations" in result.stdout and (tmp_path / "samples.dcd").exists()


def test_compare_runs_reads_a_plain_run_with_velocities_and_a_flashmd_run(tmp_path):
    """examples/compare_runs.py: speed, structure and per-element temperatures of run folders (the plain run's
    from its velocities.dcd, the FlashMD run's from its summary)."""
    from openmm_accel.simulate import RunConfig, run
    from openmm_accel.flashmd.config import FlashMDRunConfig
    plain, flash = str(tmp_path / "plain"), str(tmp_path / "flash")
    run(RunConfig(model="mm", steps=40, report_interval=10, timestep_fs=0.5, velocities=True, output=plain,
                  progress=False))
    run(RunConfig(method="flashmd", model="mm", steps=4, report_interval=2, output=flash, progress=False,
                  options=FlashMDRunConfig()))
    result = run_python([os.path.join(EXAMPLES, "compare_runs.py"), plain, flash, "--json",
                         str(tmp_path / "rows.json")])
    assert result.returncode == 0, result.stderr
    rows = json.load(open(tmp_path / "rows.json"))
    assert [row["method"] for row in rows] == ["plain", "flashmd"] and all(row["ns_per_day"] > 0 for row in rows)
    assert set(rows[0]["element_temperatures"]) == set(rows[1]["element_temperatures"]) == {"C", "H", "N", "O"}
    assert "speed of each against the first" in result.stdout
