"""Nothing lost, nothing silently wrong: damaged checkpoints, earlier results, interruptions, short runs, and
every bad argument of the commands and the Python API get a clear refusal naming the argument, what was
expected and what was given, and leave the files as they were."""
import json
import os
import signal
import subprocess
import sys
import time

import mdtraj
import numpy as np
import openmm
import pytest
import torch
from openmm import app, unit

from conftest import ROOT, run_python
from openmm_accel import InputError, systems
from openmm_accel.cli import main
from openmm_accel.flashmd.pretrained import shipped
from openmm_accel.flashmd.training import open_model
from openmm_accel.forces import create_ml_system, to_openmm_force
from openmm_accel.flashmd import FlashMDIntegrator
from openmm_accel.models import create
from openmm_accel.flashmd.config import FlashMDRunConfig
from openmm_accel.simulate import RunConfig, run
from openmm_accel.storage import atomic_save

MM_RUN = dict(system="alanine-dipeptide-vacuum", model="mm", report_interval=10, progress=False)


def refused(capsys, *args):
    """The command's exit code and what it printed on stderr."""
    code = main(list(args))
    return code, capsys.readouterr().err


def files_of(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture
def finished_run(tmp_path):
    """An MM run of 30 steps (checkpoint at the end) and a copy of its files."""
    out = str(tmp_path / "run")
    run(RunConfig(steps=30, output=out, **MM_RUN))
    return out, files_of(out)


# -- checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "empty", "random", "no record", "foreign"])
def test_a_damaged_checkpoint_is_refused_and_kept(finished_run, tmp_path, damage):
    out, _ = finished_run
    path = os.path.join(out, "checkpoint.chk")
    data = open(path, "rb").read()
    if damage == "foreign":  # a sound checkpoint of another system, with its own record
        other = str(tmp_path / "water")
        run(RunConfig(**{**MM_RUN, "system": "water-box-small", "steps": 10, "output": other}))
        for name in ("checkpoint.chk", "checkpoint.json"):
            os.replace(os.path.join(other, name), os.path.join(out, name))
    elif damage == "no record":
        os.remove(os.path.join(out, "checkpoint.json"))
    else:
        replacement = {"truncated": data[:len(data) // 2], "empty": b"",
                       "random": np.random.default_rng(0).bytes(len(data))}[damage]
        open(path, "wb").write(replacement)
    before = files_of(out)
    with pytest.raises(InputError, match="^resume: expected") as error:
        run(RunConfig(steps=60, output=out, resume=True, **MM_RUN))
    assert {"truncated": "damaged or replaced", "empty": "damaged or replaced", "random": "damaged or replaced",
            "no record": "cannot be verified",
            "foreign": "other system 'alanine-dipeptide-vacuum' (was 'water-box-small')"}[damage] in str(error.value)
    assert files_of(out) == before  # nothing was touched


def test_a_crash_while_writing_leaves_the_previous_file_whole(tmp_path):
    path = str(tmp_path / "checkpoint.chk")
    open(path, "wb").write(b"the previous checkpoint")

    def crashing_writer(temporary):
        open(temporary, "wb").write(b"half of a new one")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_save(path, crashing_writer)
    assert open(path, "rb").read() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == ["checkpoint.chk"]  # no temporary file left behind


# -- earlier results ----------------------------------------------------------------------------------------
def test_an_earlier_run_is_refused_then_overwritten_only_when_asked(finished_run):
    out, files = finished_run
    with pytest.raises(InputError, match="--resume.*--overwrite"):
        run(RunConfig(steps=10, output=out, **MM_RUN))
    assert files_of(out) == files
    with pytest.raises(InputError, match="flashmd_model"):  # a bad input found later still loses nothing
        run(RunConfig(**{**MM_RUN, "steps": 10, "output": out, "overwrite": True, "method": "flashmd",
                         "options": FlashMDRunConfig(flashmd_model="no-such-model")}))
    assert files_of(out) == files
    summary = run(RunConfig(steps=10, output=out, overwrite=True, **MM_RUN))
    assert summary["final_step"] == 10
    assert np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1, ndmin=2)[:, 0].tolist() == [10]


def test_a_run_shorter_than_the_report_interval_writes_its_final_state(tmp_path):
    out = str(tmp_path / "short")
    run(RunConfig(**{**MM_RUN, "steps": 20, "report_interval": 100, "output": out}))
    frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert frames.n_frames == 1 and np.all(np.isfinite(frames.xyz))
    assert np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1, ndmin=2)[:, 0].tolist() == [20]
    # resumed, it goes on from step 20 with the usual report steps, each written once
    run(RunConfig(**{**MM_RUN, "steps": 250, "report_interval": 100, "output": out, "resume": True}))
    assert np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1)[:, 0].tolist() == [20, 100, 200, 250]
    assert mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb")).n_frames == 4


# -- Ctrl-C ---------------------------------------------------------------------------------------------------
def test_ctrl_c_stops_cleanly_and_resume_goes_on(tmp_path):
    """SIGINT mid-run: exit code 130, a checkpoint at the step reached, every frame and log row up to it, a
    summary marked interrupted; --resume continues from there without a gap or a repeated step. The
    velocities (--velocities) follow the trajectory frame for frame: their kinetic energy is the log's."""
    out = str(tmp_path / "run")
    common = ["-m", "openmm_accel.cli", "run", "--system", "alanine-dipeptide-vacuum", "--model", "mm",
              "--report-interval", "10", "--checkpoint-interval", "100000", "--output", out, "--no-progress",
              "--velocities"]
    process = subprocess.Popen([sys.executable] + common + ["--steps", "10000000"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(out, "log.csv")
    deadline = time.monotonic() + 300
    while not (os.path.isfile(log) and len(open(log).readlines()) > 5) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stderr and "Traceback" not in stderr
    summary = json.load(open(os.path.join(out, "summary.json")))
    record = json.load(open(os.path.join(out, "checkpoint.json")))
    steps = np.loadtxt(log, delimiter=",", skiprows=1)[:, 0]
    assert summary["interrupted"] and summary["error"] is None
    assert record["step"] == summary["final_step"] == steps[-1] and record["outputs"]["log.csv"] == len(steps)
    resumed = subprocess.run([sys.executable] + common + ["--steps", str(int(steps[-1]) + 30), "--resume"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    after = np.loadtxt(log, delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_array_equal(after, np.arange(10, steps[-1] + 31, 10))
    frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert frames.n_frames == len(after)
    velocities = mdtraj.load(os.path.join(out, "velocities.dcd"), top=os.path.join(out, "topology.pdb")).xyz
    masses = systems.load("alanine-dipeptide-vacuum").masses
    kinetic = 0.5 * np.sum(masses[None, :, None] * velocities.astype(float) ** 2, axis=(1, 2))
    logged = np.loadtxt(log, delimiter=",", skiprows=1)[:, 3]
    np.testing.assert_allclose(kinetic, logged, rtol=1e-5)  # float32 velocities in the DCD


# -- reproducibility --------------------------------------------------------------------------------------------
def test_a_seeded_lsd_run_is_reproducible(tmp_path):
    """Error-corrected LSD with a fixed window, run twice as a user would (two processes): the same seed gives
    the same path and acceptance. (With the adaptive window the batch sizes follow the measured costs, i.e.
    the machine's load, and float32 batched forces differ by an ulp between batch sizes: such runs agree in
    distribution, not bitwise. Within one process TorchScript's re-optimisation of the models after their
    first calls moves float32 forces by an ulp, see the README.)"""
    results = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        done = run_python(["-m", "openmm_accel.cli", "run", "--method", "lsd", "--steps", "60", "--report-interval",
                           "20", "--distill-steps", "200", "--seed", "3", "--fixed-window", "--output", out,
                           "--no-progress"])
        assert done.returncode == 0, done.stderr
        frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb")).xyz
        results.append((frames, json.load(open(os.path.join(out, "summary.json")))["speculative"]["acceptance_rate"]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_plain_resume_is_bitwise_with_the_eager_backend(tmp_path):
    """With the pythonforce backend a resumed run continues bit for bit (README: with TorchForce, TorchScript
    re-optimises the model after its first calls in a new process, which moves float32 results by an ulp)."""
    options = dict(backend="pythonforce", platform="Reference", report_interval=10, progress=False)
    run(RunConfig(steps=40, output=str(tmp_path / "whole"), **options))
    run(RunConfig(steps=20, output=str(tmp_path / "parts"), **options))
    run(RunConfig(steps=40, output=str(tmp_path / "parts"), resume=True, **options))
    whole, parts = (mdtraj.load(str(tmp_path / name / "trajectory.dcd"), top=str(tmp_path / name / "topology.pdb"))
                    for name in ("whole", "parts"))
    np.testing.assert_array_equal(whole.xyz, parts.xyz)


# -- command-line arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--report-interval", "0"], "report_interval (--report-interval): expected a positive integer, got 0"),
    (["--report-interval", "-3"], "report_interval (--report-interval): expected a positive integer, got -3"),
    (["--checkpoint-interval", "0"], "checkpoint_interval (--checkpoint-interval): expected a positive integer, got 0"),
    (["--threads", "0"], "threads (--threads): expected a positive number of torch threads, got 0"),
    (["--hydrogen-mass", "-1"], "hydrogen_mass (--hydrogen-mass): expected a positive value, got -1"),
    (["--seed", "0"], "seed (--seed): expected an integer seed from 1 to 2147483647 (OpenMM reads 0 as 'from the "
                      "clock'), got 0"),
    (["--model", "mm", "--member", "2"], "member (--member): expected it only with an ML --model"),
    (["--model", "mm", "--backend", "pythonforce"], "backend (--backend): expected it only with an ML --model"),
    (["--method", "flashmd", "--timestep", "1"], "timestep_fs (--timestep): expected it only with --method plain or drift or lsd or score"),
    (["--window", "4"], "window (--window): expected it only with --method lsd"),
    (["--method", "lsd", "--workers", "3"], "workers (--workers): expected it only with --method lsd --scheduler ray"),
    (["--thermostat", "svr"], "thermostat (--thermostat): expected it only with --method flashmd"),
])
def test_bad_run_arguments_are_refused(tmp_path, capsys, args, message):
    out = str(tmp_path / "x")
    code, err = refused(capsys, "run", "--output", out, "--no-progress", *args)
    assert code == 2 and message in err, err
    assert not os.path.exists(out) or not os.listdir(out)  # refused before anything was written


def test_bad_output_folders_are_refused(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for output, message in ((str(afile), "which is a file"), (str(afile / "run"), "can be created and written"),
                            ("/proc/openmm_accel_run", "can be created and written")):
        code, err = refused(capsys, "run", "--output", output, "--no-progress")
        assert code == 2 and "output (--output): expected" in err and message in err, err
    assert afile.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "epochs (--epochs): expected a positive integer, got 0"),
    (["--segments", "0"], "segments (--segments): expected a positive integer, got 0"),
    (["--batch-size", "0"], "batch_size (--batch-size): expected a positive integer, got 0"),
    (["--timestep", "0"], "timestep (--timestep): expected a positive value, got 0"),
    (["--record-every", "0"], "record_every (--record-every): expected a positive integer, got 0"),
    (["--learning-rate", "-1"], "learning_rate (--learning-rate): expected a positive value, got -1"),
    (["--hidden", "0"], "hidden (--hidden): expected a positive integer, got 0"),
    (["--cutoff", "-1"], "cutoff (--cutoff): expected a positive value, got -1"),
    (["--decorrelation-steps", "-5"],
     "decorrelation_steps (--decorrelation-steps): expected a non-negative integer, got -5"),
    (["--threads", "0"], "threads (--threads): expected a positive number of torch threads, got 0"),
    (["--member", "1"], "member (--member): expected it only with an ML reference --model"),
    (["--resume"], "resume (--resume): expected the data"),
    (["--ema", "1.5"], "ema_decay (--ema): expected a decay between 0 and 1 (exclusive), got 1.5"),
])
def test_bad_train_arguments_are_refused(tmp_path, capsys, args, message):
    output = str(tmp_path / "model.pt")
    code, err = refused(capsys, "train", "flashmd", "--output", output, "--no-progress", *args)
    assert code == 2 and message in err, err
    assert os.listdir(tmp_path) == []


def test_train_refuses_an_output_under_a_file_and_an_earlier_model(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, err = refused(capsys, "train", "flashmd", "--output", str(afile / "x.pt"), "--no-progress")
    assert code == 2 and "output (--output): expected a path in a folder that can be created and written" in err, err
    model = tmp_path / "model.pt"
    model.write_bytes(b"an earlier model")
    code, err = refused(capsys, "train", "flashmd", "--output", str(model), "--no-progress")
    assert code == 2 and "--resume" in err and "--overwrite" in err, err
    assert model.read_bytes() == b"an earlier model" and afile.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["lsd", "--models", "x"], "--models: expected it only with bench drift or flashmd or score, got it with bench lsd"),
    (["lsd", "--replicas", "2"], "--replicas: expected it only with bench score, got it with bench lsd"),
    (["score", "--md-duration", "0"], "md_duration (--md-duration): expected a positive value, got 0.0"),
    (["models", "--steps", "10"], "--steps: expected it only with bench lsd, got it with bench models"),
    (["flashmd", "--duration", "-1"], "duration (--duration): expected a positive value, got -1.0"),
    (["models", "--threads", "0"], "threads (--threads): expected positive numbers of torch threads, got 0"),
    (["lsd", "--steps", "0"], "steps (--steps): expected a positive integer, got 0"),
    (["score", "--corrector-steps", "-1"],
     "corrector_steps (--corrector-steps): expected a non-negative integer, got -1"),
    (["score", "--snr", "0"], "snr (--snr): expected a positive value, got 0.0"),
])
def test_bad_bench_arguments_are_refused(capsys, args, message):
    code, err = refused(capsys, "bench", *args)
    assert code == 2 and message in err, err


# -- the Python API ----------------------------------------------------------------------------------------------
def test_energy_models_convert_units_and_refuse_bad_batches(alanine):
    model = create("ani1x", alanine.topology)
    in_nm = model.evaluate(alanine.positions.value_in_unit(unit.nanometer))
    in_angstrom = model.evaluate(alanine.positions.in_units_of(unit.angstrom))
    assert in_angstrom[0] == in_nm[0]
    np.testing.assert_array_equal(in_angstrom[1], in_nm[1])
    with pytest.raises(InputError, match="positions: expected values in nanometer.*kelvin"):
        model.evaluate(np.zeros((22, 3)) * unit.kelvin)
    with pytest.raises(InputError, match="positions: expected at least one configuration"):
        model.evaluate(np.zeros((0, 22, 3)))
    with pytest.raises(ValueError, match=r"positions: expected a batch of shape \(B, 22, 3\).*got shape \[22, 3\]"):
        model(torch.zeros(22, 3))
    with pytest.raises(InputError, match="topology: expected at least one atom"):
        create("ani1x", app.Topology())


@pytest.mark.parametrize("backend", ["torchforce", "pythonforce"])
def test_an_ml_region_beyond_the_system_fails_clearly(alanine, backend):
    """A Force made without its System (it cannot be judged then) and added by hand: the first evaluation
    stops with a clear message instead of reading undefined coordinates (PythonForce did)."""
    force = to_openmm_force(create("ani1x", alanine.topology), backend, atoms=list(range(21)) + [40])
    system = create_ml_system(create("harmonic", alanine.topology), alanine.masses, "pythonforce")
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(alanine.positions)
    with pytest.raises(Exception, match="names particle 40, beyond the System"):
        context.getState(getEnergy=True)


def test_forces_and_systems_refuse_atoms_and_masses_that_cannot_be(alanine):
    model = create("ani1x", alanine.topology)
    region = create("ani1x", alanine.topology, atoms=list(range(10)))
    with pytest.raises(InputError, match="atoms: expected the atoms the model was created for"):
        to_openmm_force(region, "pythonforce", atoms=list(range(1, 11)))
    with pytest.raises(InputError, match="masses: expected positive, finite masses in amu, got -1.008"):
        create_ml_system(model, -alanine.masses)


def test_flashmd_models_refuse_a_system_they_were_not_trained_for(alanine):
    numbers = [atom.element.atomic_number for atom in alanine.topology.atoms()]
    path = shipped()["ala2-ani1x-8fs"]
    with pytest.raises(InputError, match="path: expected a FlashMD model trained with the System's masses"):
        open_model(path, numbers, alanine.masses * 1.5)
    with pytest.raises(InputError, match="path: expected a FlashMD model of the System's 22 atoms and elements"):
        open_model(path, [6] + numbers[1:], alanine.masses)
    model = open_model(path, numbers, alanine.masses)
    integrator = FlashMDIntegrator(model, temperature=300, seed=1)
    context = openmm.Context(alanine.system, integrator, openmm.Platform.getPlatformByName("Reference"))  # amber
    context.setPositions(alanine.positions)
    with pytest.raises(InputError, match="model: expected a System with the reference potential the FlashMD model "
                                         "was trained with \\('ani1x'"):
        integrator.step(1)
    assert context.getStepCount() == 0
