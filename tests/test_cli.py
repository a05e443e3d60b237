"""The main job: `openmm-accel run` end to end, resume, and every bad-input path."""
import json
import os
import re

import mdtraj
import numpy as np
import pytest

from conftest import run_python
from openmm_accel import InputError, SimulationError
from openmm_accel.cli import main
from openmm_accel.flashmd.pretrained import DEFAULTS
from openmm_accel.flashmd.config import FlashMDRunConfig
from openmm_accel.simulate import RunConfig, run
from openmm_accel.speculative.config import SpeculativeConfig


def cli(*args):
    return run_python(["-m", "openmm_accel.cli", *args])


def test_default_run_and_resume(tmp_path):
    """The embedded default (alanine dipeptide, ANI-1x), then a resumed continuation without loss or duplication."""
    out = str(tmp_path / "run")
    result = cli("run", "--steps", "40", "--report-interval", "10", "--output", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "ns/day" in result.stdout
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["steps_run"] == 40 and summary["atoms"] == 22 and summary["error"] is None
    assert summary["config"]["friction_per_ps"] == 1.0  # plain dynamics: light coupling unless told
    result = cli("run", "--steps", "70", "--report-interval", "10", "--output", out, "--no-progress", "--resume")
    assert result.returncode == 0, result.stderr
    trajectory = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert trajectory.n_frames == 7
    steps = np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_array_equal(steps, np.arange(10, 71, 10))


@pytest.mark.parametrize("system", ["alanine-dipeptide-vacuum", "water-box-small"])  # DCD frames without/with box
def test_resuming_after_a_kill_drops_what_was_written_past_the_checkpoint(tmp_path, system):
    """A run killed after reporting steps 50-70 but before checkpointing them resumes from step 40 and
    writes those steps once: the DCD and the log are rewound to the checkpoint first."""
    import shutil
    out = str(tmp_path / "run")
    config = RunConfig(system=system, model="mm", steps=40, report_interval=10, output=out, progress=False)
    run(config)
    for name in ("checkpoint.chk", "checkpoint.json"):  # the checkpoint and its record, as a kill leaves them
        shutil.copy(os.path.join(out, name), str(tmp_path / name))
    run(RunConfig(**{**config.__dict__, "steps": 70, "resume": True}))
    for name in ("checkpoint.chk", "checkpoint.json"):  # the kill: step 40 is the last checkpoint
        shutil.copy(str(tmp_path / name), os.path.join(out, name))
    run(RunConfig(**{**config.__dict__, "steps": 80, "resume": True}))
    steps = np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1)[:, 0]
    np.testing.assert_array_equal(steps, np.arange(10, 81, 10))
    frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert frames.n_frames == 8 and np.all(np.isfinite(frames.xyz))
    with open(os.path.join(out, "trajectory.dcd"), "rb") as handle:  # the header counts the frames kept
        assert np.frombuffer(handle.read(24), dtype="<i4")[[2, 5]].tolist() == [8, 80]


def test_mm_and_mixed_systems_run(tmp_path):
    summary = run(RunConfig(system="alanine-dipeptide-implicit", model="mm", steps=20, report_interval=10,
                            output=str(tmp_path / "mm"), progress=False))
    assert summary["final_step"] == 20
    summary = run(RunConfig(system="alanine-dipeptide-explicit", model="ani1x", backend="pythonforce", steps=4,
                            report_interval=2, output=str(tmp_path / "mixed"), progress=False, minimize=False))
    assert summary["atoms"] > 1000 and summary["final_step"] == 4


def test_exploding_run_stops_with_the_step_and_keeps_frames(tmp_path):
    """h*omega = 9 is violently unstable: the run must stop with a clear error, frames so far kept."""
    out = str(tmp_path / "boom")
    with pytest.raises(SimulationError, match=r"exploding .* at step \d+|exploded at step \d+|OpenMM stopped near "
                                              r"step \d+"):
        run(RunConfig(system="harmonic-oscillators", model="mm", steps=5000, timestep_fs=230.0,
                      report_interval=5, output=out, progress=False, minimize=False))
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["error"] and 0 < summary["final_step"] < 5000
    dcd = os.path.join(out, "trajectory.dcd")
    if os.path.getsize(dcd) > 0:  # (the temperature guard may stop it at the first report, before a frame)
        frames = mdtraj.load(dcd, top=os.path.join(out, "topology.pdb"))
        assert np.all(np.isfinite(frames.xyz))


@pytest.mark.parametrize("args, message", [
    (["--system", "alanine-dipeptide-vacum"], "did you mean 'alanine-dipeptide-vacuum'"),
    (["--model", "ani-1x"], "did you mean 'ani1x'"),
    (["--member", "9"], "member (--member): expected an integer 0-7"),
    (["--resume"], "resume (--resume): expected an existing checkpoint"),
    (["--steps", "0"], "steps (--steps): expected a positive number"),
    (["--temperature", "-5"], "temperature (--temperature): expected a positive value"),
    (["--method", "flashmd", "--constraints", "hbonds"], "only with --method plain or drift or lsd"),
    (["--system", "harmonic-oscillators", "--model", "mm", "--constraints", "hbonds"],
     "constraints (--constraints): expected 'none' for this system"),
])
def test_bad_input_is_reported_clearly(tmp_path, capsys, args, message):
    code = main(["run", "--output", str(tmp_path / "x"), "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_elements_the_model_does_not_support(tmp_path):
    with pytest.raises(InputError, match="ANI-1x: H, C, N, O"):
        run(RunConfig(system="harmonic-oscillators", model="ani1x", steps=1, output=str(tmp_path), progress=False))


def test_listing_commands(capsys):
    assert main(["models"]) == 0 and "ani1x" in capsys.readouterr().out
    assert main(["systems"]) == 0 and "water-box" in capsys.readouterr().out


def test_lsd_main_job_and_resume_with_the_saved_draft(tmp_path):
    """`run --method lsd`: distils a draft, runs speculatively, reports acceptance; resume reuses the draft."""
    out = str(tmp_path / "lsd")
    summary = run(RunConfig(method="lsd", steps=60, report_interval=20, output=out, progress=False,
                            options=SpeculativeConfig(distill_steps=200)))
    stats = summary["speculative"]
    assert summary["final_step"] == 60 and stats["committed"] >= 60 and 0 <= stats["acceptance_rate"] <= 1
    assert os.path.isfile(os.path.join(out, "draft.npz"))
    summary = run(RunConfig(method="lsd", steps=100, report_interval=20, output=out, progress=False, resume=True))
    assert summary["final_step"] == 100
    frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    assert frames.n_frames == 5


def test_lsd_with_constraints_keeps_the_force_field_bond_lengths(tmp_path):
    """`run --method lsd --constraints hbonds` (ANI-1x target): every X-H bond of every frame has the
    force field's length (to the DCD's float32 precision)."""
    from openmm import app
    from openmm_accel import systems
    out = str(tmp_path / "lsd")
    summary = run(RunConfig(method="lsd", constraints="hbonds", steps=40, report_interval=10, output=out,
                            progress=False, options=SpeculativeConfig(distill_steps=100)))
    assert summary["final_step"] == 40
    frames = mdtraj.load(os.path.join(out, "trajectory.dcd"), top=os.path.join(out, "topology.pdb"))
    system = systems.load("alanine-dipeptide-vacuum", constraints=app.HBonds).system
    pairs = np.array([system.getConstraintParameters(k)[:2] for k in range(system.getNumConstraints())])
    lengths = np.array([system.getConstraintParameters(k)[2]._value for k in range(system.getNumConstraints())])
    assert len(pairs) == 12
    np.testing.assert_allclose(mdtraj.compute_distances(frames, pairs), np.broadcast_to(lengths, (4, 12)), atol=2e-6)


def test_lsd_needs_an_ml_target(tmp_path):
    with pytest.raises(InputError, match="an ML target for --method lsd"):
        run(RunConfig(method="lsd", model="mm", steps=5, output=str(tmp_path), progress=False))


def test_lsd_benchmark_runs(tmp_path):
    """The benchmark is not a test, but it must keep working: one tiny setting end to end."""
    from openmm_accel.speculative import benchmark as lsd
    setting = dict(lsd.SETTINGS[0])
    results = lsd.measure(steps=20, settings=[setting], drafts=[lsd.DRAFTS[3]], distill_steps=100)
    row = results["rows"][0]
    assert row["speedup"] > 0 and 0 <= row["acceptance"] <= 1 and row["js_lsd_vs_plain"] >= 0


def test_train_flashmd_then_run_it(tmp_path):
    """`train flashmd` writes a model with metadata (and resumes); `run --method flashmd` uses it, one step
    per stride of simulated time, and refuses a different reference potential."""
    model = str(tmp_path / "fm.pt")
    args = ["train", "flashmd", "--stride", "4", "--segments", "3", "--segment-steps", "80", "--epochs", "2",
            "--hidden", "16", "--input-noise", "0.002", "--rollout", "2", "--output", model, "--no-progress",
            "--threads", "1"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert "stride 4 fs" in result.stdout and os.path.isfile(model + ".data.npz")
    result = cli(*args[:-5], "--epochs", "3", "--output", model, "--no-progress", "--resume")
    assert result.returncode == 0, result.stderr
    from openmm_accel.flashmd.training import load
    assert load(model).metadata["training"]["epochs"] == 3
    runs = load(model).metadata["runs"]  # both commands, with the epochs each trained
    assert [r["epochs"] for r in runs] == [[1, 2], [3, 3]] and "--resume" in runs[1]["command"]
    assert load(model).metadata["training"]["input_noise_nm"] == 0.002
    assert load(model).metadata["training"]["rollout"] == 2
    assert load(model).force_inputs and "forces" in np.load(model + ".data.npz")  # the default: computed once
    out = str(tmp_path / "run")
    summary = run(RunConfig(method="flashmd", model="mm", steps=20, report_interval=10, output=out,
                            progress=False, options=FlashMDRunConfig(flashmd_model=model)))
    assert summary["final_step"] == 20 and summary["flashmd"]["strides"] == 20
    assert summary["config"]["friction_per_ps"] == 10.0  # a model of one's own: the FlashMD paper's friction
    times = np.loadtxt(os.path.join(out, "log.csv"), delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(times, [0.04, 0.08], rtol=1e-9)
    with pytest.raises(InputError, match="reference potential the FlashMD model was trained on"):
        run(RunConfig(method="flashmd", model="ani1x", steps=2, output=out, progress=False,
                      options=FlashMDRunConfig(flashmd_model=model)))
    with pytest.raises(InputError, match="shipped flashmd model"):
        run(RunConfig(method="flashmd", model="mm", steps=2, output=out, progress=False,
                      options=FlashMDRunConfig(flashmd_model="no-such-model")))
    # the benchmark is not a test, but it must keep working: a smoke run on this model, JSON and plot
    result = cli("bench", "flashmd", "--models", model, "--duration", "0.5", "--nve-duration", "0.2",
                 "--reference-duration", "0.25", "--friction", "20", "--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stderr
    bench = json.load(open(tmp_path / "bench.json"))["models"][0]
    assert (bench["duration_ps"], bench["reference_ps"], bench["friction_per_ps"]) == (0.5, 0.25, 20.0)
    assert set(bench["runs"]) == {"rescaled", "not rescaled"} and os.path.isfile(tmp_path / "bench.png")
    statistics = bench["runs"]["rescaled"]["statistics"]  # the fallbacks by cause add up to the fraction
    assert statistics["fallback_fraction"] == pytest.approx(sum(
        statistics[cause] for cause in statistics if cause.startswith("fallback_") and cause != "fallback_fraction")
        / statistics["strides"])
    assert set(bench["reference_run"]["element_temperature"]) == {"C", "H", "N", "O"}
    angles = np.load(tmp_path / "bench.npz")  # the sampled (phi, psi): reference every 4 fs, FlashMD every stride
    name = os.path.basename(model)
    assert angles[f"{name}/reference/phi_psi"].shape == (round(250 / 4), 2)
    assert angles[f"{name}/rescaled/phi_psi"].shape == (round(500 / 4), 2)
    assert np.abs(angles[f"{name}/rescaled/phi_psi"]).max() <= np.pi
    from openmm_accel.flashmd.benchmark import main as bench_flashmd
    from openmm_accel.flashmd.config import FlashMDBenchConfig
    with pytest.raises(InputError, match="friction: expected a positive value"):  # before any run starts
        bench_flashmd(FlashMDBenchConfig(models=(model,), friction=0.0))


@pytest.mark.parametrize("system, reference", sorted(DEFAULTS))
def test_flashmd_runs_at_once_with_the_shipped_model(tmp_path, system, reference):
    """`run --method flashmd` needs no model file for a system and potential with a shipped default: it is used,
    at the friction it was measured at, one step per stride, and its metadata record how it was made."""
    from openmm_accel.flashmd.pretrained import MEASURED_FRICTION_PER_PS, PAPER_FRICTION_PER_PS, shipped
    from openmm_accel.flashmd.training import load
    name = DEFAULTS[(system, reference)]
    metadata = load(shipped()[name]).metadata
    assert (metadata["system"], metadata["reference"]) == (system, reference)
    assert "train flashmd" in metadata["command"]
    summary = run(RunConfig(method="flashmd", system=system, model=reference, steps=3, report_interval=3,
                            output=str(tmp_path), progress=False))
    assert summary["flashmd"]["strides"] == 3
    assert summary["config"]["friction_per_ps"] == MEASURED_FRICTION_PER_PS.get(name, PAPER_FRICTION_PER_PS)
    assert abs(summary["config"]["steps"] * metadata["stride_fs"] * 1e-3 -
               np.loadtxt(os.path.join(str(tmp_path), "log.csv"), delimiter=",", skiprows=1)[1]) < 1e-9


def test_each_train_job_gets_its_own_defaults_for_options_several_declare(monkeypatch, capsys):
    """`--output`, `--hidden`, `--batch-size` ... are declared by several train jobs with different defaults
    (argparse keeps the first): each job must still see its own when the user leaves them out, and what the
    user gives; --help names each job's default."""
    from openmm_accel import cli
    from openmm_accel.drift.training import DriftTrainingConfig
    from openmm_accel.score.training import ScoreTrainingConfig
    seen = {}
    for name, job in cli._jobs("train").items():
        monkeypatch.setattr(type(job), "run", lambda self, config, name=name: seen.update({name: vars(config)}))
    assert cli.main(["train", "score", "--data", "x"]) == 0
    assert cli.main(["train", "drift", "--data", "x", "--hidden", "7"]) == 0
    score, drift = ScoreTrainingConfig(), DriftTrainingConfig()
    assert (seen["score"]["output"], seen["score"]["hidden"], seen["score"]["batch_size"]) == (
        "score.npz", score.hidden, score.batch_size)
    assert (seen["drift"]["output"], seen["drift"]["hidden"], seen["drift"]["learning_rate"]) == (
        "drift.npz", 7, drift.learning_rate)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert (f"train drift: {drift.batch_size}; train flashmd: 32; train score: {score.batch_size}" in shown)
    # one default per option, and only where a single one applies: not beside each job's own, not on a switch
    assert not re.search(r"train score: [^;( ]* \(default:", shown)


@pytest.mark.parametrize("command", [["run"], ["data"], ["train"], ["sample"], ["bench"]])
def test_every_option_says_what_it_does_and_states_at_most_one_default(command, capsys):
    """--help of each command: no option without a description; no '(default: X) (default: Y)' where the
    help already names its default; no '(default: False)' on a switch."""
    from openmm_accel import cli
    with pytest.raises(SystemExit):
        cli.main(command + ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    options = shown.split("options:", 1)[1]
    bare = re.findall(r"(--[a-z-]+) (?:[A-Z_]+ |\{[^}]*\} )?--", options)
    assert not bare, f"options without help: {bare}"
    assert not re.search(r"\(default: [^)]*\) \(default:", shown)
    assert "(default: False)" not in shown and "(default: True)" not in shown
