"""The learned-method pipeline keeps `run`'s guarantees: nothing lost, nothing silently wrong. Each test is a
case a demanding user found with the code before these guards (issue: data, train, sample, bench), and
fails without them."""
import json
import os
import zipfile

import numpy as np
import pytest

from openmm_accel import InputError, SimulationError, devices
from openmm_accel.learning.reference import ReferenceConfig, generate, load_reference
from openmm_accel.storage import folder_lock

#: A few frames of MM data: one walker, 2 fs steps, a frame every 0.1 ps, chunks of 1 ps (10 frames).
TINY = dict(walkers=1, timestep_fs=2.0, frame_ps=0.1, chunk_ns=0.001, equilibration_ps=0.0, duration_ns=0.001,
            progress=False)


def files_of(folder) -> dict:
    """Every file below ``folder`` (but the lock) with its bytes."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            if name != ".lock":
                path = os.path.join(root, name)
                found[os.path.relpath(path, folder)] = open(path, "rb").read()
    return found


@pytest.fixture
def data(tmp_path) -> str:
    folder = str(tmp_path / "data")
    generate(ReferenceConfig(output=folder, **TINY))
    return folder


def test_overwriting_data_with_a_bad_potential_or_a_blow_up_keeps_the_earlier_data(data):
    before = files_of(data)
    with pytest.raises(InputError, match=r"^model: unknown option 'ani1xx'"):
        generate(ReferenceConfig(output=data, overwrite=True, model="ani1xx", **TINY))
    assert files_of(data) == before
    exploding = {**TINY, "timestep_fs": 50.0, "frame_ps": 1.0, "chunk_ns": 0.01, "duration_ns": 0.01}
    with pytest.raises(SimulationError, match="walker 0 blew up in chunk 0: reduce the time step"):
        generate(ReferenceConfig(output=data, overwrite=True, **exploding))
    assert files_of(data) == before  # put back whole: the new run never completed
    generate(ReferenceConfig(output=data, overwrite=True, seed=2, **TINY))  # a complete replacement replaces
    assert files_of(data) != before and not os.path.exists(os.path.join(data, ".replaced"))


def test_resume_and_overwrite_together_and_a_second_writer_are_refused(data):
    before = files_of(data)
    with pytest.raises(InputError, match="overwrite: expected not together with resume"):
        generate(ReferenceConfig(output=data, resume=True, overwrite=True, **TINY))
    with folder_lock(data):  # another process writing the folder
        with pytest.raises(InputError, match="output: expected a folder no other process is writing"):
            generate(ReferenceConfig(output=data, overwrite=True, **TINY))
    assert files_of(data) == before


@pytest.mark.parametrize("changes, message", [
    (dict(frame_ps=1e-9), "frame_interval: expected a whole multiple of the time step"),
    (dict(frame_ps=0.0031), "frame_interval: expected a whole multiple of the time step"),
    (dict(member=1), r"member \(--member\): expected it only with an ML --model"),
])
def test_settings_that_would_record_something_else_are_refused(tmp_path, changes, message):
    folder = tmp_path / "data"
    with pytest.raises(InputError, match=message):
        generate(ReferenceConfig(output=str(folder), **{**TINY, **changes}))
    assert not folder.exists() or not os.listdir(folder)


def test_a_damaged_chunk_is_made_again_and_a_gap_is_refused(data):
    """A truncated chunk is not counted as sampled: resume makes it again (the same frames, bitwise). Data
    with a missing chunk before later ones are refused by name rather than cut short."""
    chunk = os.path.join(data, "walker-00", "chunk-0000.npz")
    whole = open(chunk, "rb").read()
    with open(chunk, "r+b") as handle:
        handle.truncate(len(whole) // 2)
    summary = generate(ReferenceConfig(output=data, resume=True, **TINY))
    assert summary["chunks_written"] == 1 and zipfile.ZipFile(chunk).testzip() is None
    assert load_reference(data).positions.shape == (1, 10, 22, 3)
    generate(ReferenceConfig(output=data, resume=True, **{**TINY, "duration_ns": 0.003}))  # chunks 0, 1, 2
    os.remove(os.path.join(data, "walker-00", "chunk-0001.npz"))
    with pytest.raises(InputError, match="data: expected consecutive whole chunks .* chunk 1 of walker 0 missing"):
        load_reference(data)


def test_chunks_from_other_settings_and_a_damaged_folder_are_refused(data, tmp_path):
    other = str(tmp_path / "other")
    generate(ReferenceConfig(output=other, **{**TINY, "temperature_k": 350.0}))
    os.replace(os.path.join(other, "walker-00", "chunk-0000.npz"), os.path.join(data, "walker-00", "chunk-0000.npz"))
    with pytest.raises(InputError, match="data: expected chunks made with the settings of .* chunk 0 of walker 0"):
        load_reference(data)
    with open(os.path.join(other, "settings.json"), "w") as handle:
        handle.write("{not json")
    with pytest.raises(InputError, match="settings.json can be read"):
        load_reference(other)
    with pytest.raises(InputError, match="settings.json can be read"):
        generate(ReferenceConfig(output=other, resume=True, **TINY))
    os.remove(os.path.join(data, "topology.pdb"))
    with pytest.raises(InputError, match="data: expected the data's topology topology.pdb"):
        load_reference(data)
    assert json.load(open(os.path.join(data, "settings.json")))["settings"]["walkers"] == 1


def score_training(data, output, **changes):
    from openmm_accel.score.config import TrainScoreConfig
    settings = dict(data=data, output=str(output), epochs=1, batch_size=4, hidden=4, progress=False, threads=1)
    return TrainScoreConfig(**{**settings, **changes})


def test_overwriting_a_model_keeps_it_until_the_new_one_is_complete(data, tmp_path):
    """A diverging training started with --overwrite leaves the earlier model and checkpoint as they were;
    a completed one replaces both."""
    from openmm_accel.score.method import METHOD
    model = tmp_path / "score.npz"
    METHOD.train(score_training(data, model))
    before = files_of(tmp_path)
    with pytest.raises(SimulationError, match="training diverged"):
        METHOD.train(score_training(data, model, overwrite=True, learning_rate=1e30, epochs=3))
    kept = files_of(tmp_path)
    assert {name: kept[name] for name in before} == before
    METHOD.train(score_training(data, model, overwrite=True, epochs=2, seed=5))
    after = files_of(tmp_path)
    assert after[model.name] != before[model.name] and not [name for name in after if ".new" in name]


@pytest.mark.parametrize("changes, message", [
    (dict(held_out=0.5), r"resume: expected the settings the training .* held_out 0.5 \(was 0.2\)"),
    (dict(learning_rate=1e-4), r"resume: expected the settings .* learning_rate 0.0001 \(was 0.002\)"),
    (dict(hidden=8), r"resume: expected the settings .* hidden 8 \(was 4\)"),
    (dict(mapping="heavy"), r"resume: expected the settings .* mapping 'heavy' \(was 'backbone'\)"),
])
def test_a_resumed_training_refuses_other_settings(data, tmp_path, changes, message):
    from openmm_accel.score.method import METHOD
    model = tmp_path / "score.npz"
    METHOD.train(score_training(data, model))
    before = files_of(tmp_path)
    with pytest.raises(InputError, match=message):
        METHOD.train(score_training(data, model, resume=True, epochs=2, **changes))
    assert files_of(tmp_path) == before
    METHOD.train(score_training(data, model, resume=True, epochs=2))  # more epochs: the one change allowed


def test_a_damaged_training_checkpoint_is_refused_by_name(data, tmp_path):
    from openmm_accel.score.method import METHOD
    model = tmp_path / "score.npz"
    METHOD.train(score_training(data, model))
    checkpoint = tmp_path / "score.npz.train.chk"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(InputError, match="resume: expected a whole training checkpoint to continue from"):
        METHOD.train(score_training(data, model, resume=True, epochs=2))


@pytest.mark.parametrize("method, changes, message", [
    ("score", dict(fp_max_t=-1.0), "fp_max_t: expected a positive value"),
    ("score", dict(held_out=0.99), "held_out: expected a fraction that leaves training frames"),
    ("score", dict(seed=-1), "seed: expected an integer seed from 0 to 2147483647"),
    ("drift", dict(widths=(0.1, float("inf"))), "widths: expected positive fractions"),
    ("drift", dict(held_out=1.0), r"held_out: expected a fraction in \[0, 1\)"),
])
def test_bad_training_settings_are_refused_before_anything_is_written(data, tmp_path, method, changes, message):
    from openmm_accel.drift.config import TrainDriftConfig
    from openmm_accel.method import get_method
    output = tmp_path / "model.npz"
    config = (score_training(data, output, **changes) if method == "score" else
              TrainDriftConfig(data=data, output=str(output), epochs=1, progress=False, **changes))
    with pytest.raises(InputError, match=message):
        get_method(method).train(config)
    assert not output.exists() and not list(tmp_path.glob("model.npz*"))


def test_a_report_is_not_written_over_and_its_folder_is_checked_before_the_benchmark(tmp_path, monkeypatch):
    """`bench ... --json X` twice used to replace X.json/.md/.png/.npz without a word, and a report into a
    folder that cannot be written failed only after the whole benchmark."""
    from openmm_accel.drift.config import DriftBenchConfig
    from openmm_accel.drift.method import METHOD
    import openmm_accel.drift.benchmark as benchmark
    ran = []
    monkeypatch.setattr(benchmark, "main", lambda *args: ran.append(args))
    report = tmp_path / "bench.json"
    (tmp_path / "bench.md").write_text("an earlier table")
    with pytest.raises(InputError, match="json: expected a new report .*bench.md exist already"):
        METHOD.bench(DriftBenchConfig(json=str(report)))
    METHOD.bench(DriftBenchConfig(json=str(report), overwrite=True))
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(InputError, match="json: expected a path in a folder that can be created and written"):
        METHOD.bench(DriftBenchConfig(json=str(blocked / "bench.json")))
    assert len(ran) == 1


@pytest.mark.parametrize("output, message", [
    ("samples", "output: expected a file name with the extension of a format mdtraj writes"),
    ("samples.h5", "output: expected a file mdtraj can write here, got .*samples.h5 .*PyTables"),
    ("samples.xyzzy", "output: expected a file mdtraj can write here, got .*samples.xyzzy"),
])
def test_a_sample_file_mdtraj_cannot_write_is_refused_before_sampling(tmp_path, monkeypatch, output, message):
    """These failed only after every sample was drawn (PyTables is not installed here: .h5 cannot be
    written)."""
    import importlib.util
    if output.endswith(".h5") and importlib.util.find_spec("tables") is not None:
        pytest.skip("PyTables is installed here: .h5 can be written")
    from openmm_accel.drift.config import DriftSampleConfig
    from openmm_accel.drift.method import METHOD
    from openmm_accel.drift.model import DriftModel
    monkeypatch.setattr(DriftModel, "batches", lambda *args: pytest.fail("sampled before the format was checked"))
    with pytest.raises(InputError, match=message):
        METHOD.sample(DriftSampleConfig(output=str(tmp_path / output)))
    assert os.listdir(tmp_path) == []


def test_sampling_uses_the_threads_asked_for(tmp_path):
    import torch
    from openmm_accel.drift.config import DriftSampleConfig
    from openmm_accel.drift.method import METHOD
    torch.set_num_threads(1)
    try:
        METHOD.sample(DriftSampleConfig(count=10, threads=2, output=str(tmp_path / "samples.dcd")))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("command, said", [
    (["data", "--output", "x"], "interrupted; the chunks written so far are kept: continue with --resume"),
    (["train", "score", "--data", "x"], "interrupted; the training checkpoint of the last whole epoch is kept"),
])
def test_ctrl_c_says_what_was_kept(monkeypatch, capsys, command, said):
    """After Ctrl-C, `data` and `train` printed only 'openmm-accel: '."""
    from openmm_accel import cli
    from openmm_accel.score.method import ScoreTraining

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt()
    monkeypatch.setattr(cli, "generate", interrupted)
    monkeypatch.setattr(ScoreTraining, "run", interrupted)
    assert cli.main(command) == 130
    assert said in capsys.readouterr().err


def test_a_score_run_records_the_potential_it_used_and_only_the_files_it_wrote(tmp_path):
    """Its summary said "model": "ani1x" (the unused default) and listed a draft.npz that does not exist."""
    from openmm_accel.simulate import RunConfig, run
    summary = run(RunConfig(method="score", steps=10, report_interval=10, timestep_fs=2.0, progress=False,
                            output=str(tmp_path / "run")))
    assert summary["config"]["model"] is None and summary["recipe"]["potential"] == "score"
    assert "draft.npz" not in summary["files"] and all(os.path.exists(path) for path in summary["files"].values())
    assert summary["platform"] == devices.platform_name("auto")  # what it ran on (a TorchForce: CUDA or CPU)


@pytest.mark.parametrize("changes, message", [
    (dict(steps=0), "steps: expected an integer >= 1"),
    (dict(snr=float("nan")), "snr: expected a finite number"),
    (dict(corrector_steps=-1), "corrector_steps: expected a non-negative integer"),
])
def test_the_score_samplers_python_api_checks_what_the_command_line_checks(changes, message):
    """`ScoreModel.sample(steps=0)` returned noise and `snr=nan` turned the corrector off."""
    from openmm_accel.score.method import METHOD
    model = METHOD.load_model(os.path.join(os.path.dirname(os.path.dirname(__file__)), "openmm_accel", "data",
                                           "score", "ala2-implicit-backbone.npz"))
    with pytest.raises(InputError, match=message):
        model.sample(2, **changes)


def test_a_model_of_another_system_is_refused_where_a_system_is_named(tmp_path):
    """`sample --system A --drift-model <model of B>` ignored --system; `run --method score` with the
    explicit-water model on the implicit system was accepted (without --system the run used the method's
    default system; it now uses the model's own)."""
    from openmm_accel.drift.config import DriftSampleConfig
    from openmm_accel.drift.method import METHOD as drift
    from openmm_accel.score.config import ScoreRunConfig
    from openmm_accel.simulate import RunConfig, run
    with pytest.raises(InputError, match="drift_model: expected a drift model of --system ethanol-vacuum, got .*"
                                         "ala2-implicit.npz, made for openmmtools:AlanineDipeptideImplicit"):
        drift.sample(DriftSampleConfig(system="ethanol-vacuum", drift_model="ala2-implicit",
                                       output=str(tmp_path / "x.dcd")))
    with pytest.raises(InputError, match="score_model: expected a score model of --system "
                                         "openmmtools:AlanineDipeptideImplicit, got .*made for .*Explicit"):
        run(RunConfig(method="score", system="openmmtools:AlanineDipeptideImplicit", steps=10,
                      options=ScoreRunConfig(score_model="ala2-explicit-backbone"), output=str(tmp_path / "run"),
                      progress=False))
    assert os.listdir(tmp_path) == []
    # without --system, a named model runs on the system it was made for (not the method's default)
    summary = run(RunConfig(method="score", options=ScoreRunConfig(score_model="ala2-explicit-backbone"), steps=2,
                            report_interval=1, timestep_fs=2.0, output=str(tmp_path / "run"), progress=False))
    assert summary["config"]["system"] == "openmmtools:AlanineDipeptideExplicit"


def test_replicas_are_built_in_linear_time_with_modellers_structure():
    """`run --method score --replicas 100000` hung: each replica copied all the ones before (Modeller.add;
    2,000 replicas took 159 s, measured). The copies now have exactly the structure Modeller gives."""
    import numpy as np
    from openmm import app, unit
    from openmm_accel import systems
    from openmm_accel.score.mapping import Mapping
    from openmm_accel.score.system import replicated
    molecular = systems.load("openmmtools:AlanineDipeptideImplicit")
    mapping = Mapping.of(molecular.topology, "backbone")
    topology, positions = mapping.topology(molecular.topology), np.zeros((5, 3))
    built, _ = replicated(topology, positions, 3)
    modeller = app.Modeller(topology, positions * unit.nanometer)
    for _ in range(2):
        modeller.add(topology, positions * unit.nanometer)

    def structure(top):
        return ([(a.name, a.element.symbol, a.residue.name, a.residue.chain.index) for a in top.atoms()],
                sorted((a.index, b.index) for a, b in top.bonds()))
    assert structure(built) == structure(modeller.topology) and built.getNumChains() == 3


def test_bench_and_run_settings_that_failed_with_a_traceback_are_refused_by_name(tmp_path):
    """`bench drift --samples 1` ended in numpy's 'zero-size array'; `bench score --seed -1` was accepted;
    `run --method drift` with a model made through the Python API raised KeyError: 'data'."""
    import numpy as np
    from openmm_accel.drift.config import DriftBenchConfig, DriftRunConfig
    from openmm_accel.drift.method import METHOD as drift
    from openmm_accel.drift.model import load, save
    from openmm_accel.learning.model_file import PACKAGE_DATA
    from openmm_accel.score.config import ScoreBenchConfig
    from openmm_accel.score.method import METHOD as score
    from openmm_accel.simulate import RunConfig, run
    for bench, config in ((drift.bench, DriftBenchConfig(samples=1)), (score.bench, ScoreBenchConfig(samples=1))):
        with pytest.raises(InputError, match="samples: expected an integer >= 2"):
            bench(config)
    with pytest.raises(InputError, match="seed: expected an integer seed from 1 to"):
        score.bench(ScoreBenchConfig(seed=-1))
    model = load(os.path.join(PACKAGE_DATA, "drift", "ala2-implicit.npz"))
    model.metadata = {"elements": model.metadata["elements"]}  # as train_drift alone leaves it
    bare = str(tmp_path / "bare.npz")
    save(bare, model)
    with pytest.raises(InputError, match="model: expected a potential for the MD"):
        run(RunConfig(method="drift", options=DriftRunConfig(drift_model=bare), steps=10, progress=False,
                      output=str(tmp_path / "run")))
    summary = run(RunConfig(method="drift", options=DriftRunConfig(drift_model=bare), model="mm", steps=10,
                            report_interval=10, progress=False, output=str(tmp_path / "run")))
    assert summary["steps_run"] == 10 and np.isfinite(summary["ns_per_day"])


@pytest.mark.parametrize("given", ["angstrom", "negative temperature"])
def test_the_training_functions_check_units_and_ranges(given):
    """`train_score`/`train_drift` read positions given in Angstrom as nm and took negative temperatures."""
    import numpy as np
    from openmm import unit
    from openmm_accel.drift.training import DriftTrainingConfig, TrainingFrames, train_drift
    from openmm_accel.score.training import ScoreTrainingConfig, train_score
    frames = np.random.default_rng(1).normal(size=(8, 3, 3))
    if given == "angstrom":  # converted, not misread: the model's scale is in nm
        model, _ = train_score(frames * 10.0 * unit.angstrom, ScoreTrainingConfig(epochs=1, hidden=4))
        assert model.scale == pytest.approx(train_score(frames, ScoreTrainingConfig(epochs=1, hidden=4))[0].scale)
    else:
        with pytest.raises(InputError, match="temperature_k: expected a positive value"):
            train_score(frames, ScoreTrainingConfig(epochs=1, hidden=4), temperature_k=-300.0)
        with pytest.raises(InputError, match="temperature_k: expected a positive value"):
            train_drift(TrainingFrames(frames, -frames), -300.0, DriftTrainingConfig(epochs=1, hidden=4))


def test_a_resumed_run_refuses_other_settings(tmp_path):
    """`run --method score --resume` with another --score-model continued with another potential (any
    setting of what is simulated is now recorded with the checkpoint; how long and how it runs may change)."""
    from openmm_accel.score.config import ScoreRunConfig
    from openmm_accel.simulate import RunConfig, run
    out = str(tmp_path / "run")
    first = dict(method="score", steps=10, report_interval=10, timestep_fs=2.0, progress=False, output=out)
    run(RunConfig(**first))
    with pytest.raises(InputError, match=r"resume: expected the settings of the run being resumed .*score_model "
                                         r"'ala2-implicit-backbone-dsm' \(was None\)"):
        run(RunConfig(**{**first, "steps": 20, "resume": True},
                      options=ScoreRunConfig(score_model="ala2-implicit-backbone-dsm")))
    with pytest.raises(InputError, match=r"friction_per_ps 2.0 \(was 1.0\)"):
        run(RunConfig(**{**first, "steps": 20, "resume": True, "friction_per_ps": 2.0}))
    summary = run(RunConfig(**{**first, "steps": 20, "resume": True, "report_interval": 5}))
    assert summary["final_step"] == 20


@pytest.mark.parametrize("timestep_fs", [50.0, 1e6])
def test_a_run_whose_dynamics_explode_stops_naming_the_step(tmp_path, timestep_fs):
    """`run --method score --timestep 1e6` (positions 1e7 nm, 3e9 K) and `--timestep 50` exited 0: the README
    promises a stop when the state explodes. At the default 2 fs the same run passes the guard (its bounds
    are at least 8 standard deviations of equilibrium fluctuations away, and 3x the bath's temperature)."""
    from openmm_accel.simulate import RunConfig, run
    settings = dict(method="score", report_interval=10, progress=False)
    with pytest.raises(SimulationError, match=r"the dynamics exploded at step \d+: kinetic temperature \d+ K "
                                              "against the thermostat's 300 K"):
        run(RunConfig(steps=400, timestep_fs=timestep_fs, output=str(tmp_path / "hot"), **settings))
    assert run(RunConfig(steps=400, timestep_fs=2.0, output=str(tmp_path / "ok"), **settings))["final_step"] == 400


def test_an_lsd_run_reports_its_speed_with_the_distillation_it_needed(tmp_path):
    """LSD's reported ns/day left out the draft's distillation; the summary now has both speeds."""
    from openmm_accel.simulate import RunConfig, run
    from openmm_accel.speculative.config import SpeculativeConfig
    summary = run(RunConfig(method="lsd", steps=10, report_interval=10, progress=False, output=str(tmp_path / "r"),
                            options=SpeculativeConfig(distill_steps=100)))
    assert summary["setup_seconds"] > 0 and summary["ns_per_day_with_setup"] < summary["ns_per_day"]


def test_a_dataset_refuses_a_negative_interval():
    import numpy as np
    from openmm_accel.learning.dataset import Dataset
    with pytest.raises(InputError, match="interval_ps: expected a positive value"):
        Dataset(np.zeros((1, 2, 3, 3)), np.ones(3), -1.0)


def test_progress_shows_in_a_batch_jobs_log():
    """Progress bars vanished when standard error was not a terminal (a batch job saw nothing until the
    end); now they write a line at most once a minute there, and are off only when asked."""
    import sys
    from openmm_accel.progress import LOG_INTERVAL, progress_bar
    assert not sys.stderr.isatty()  # pytest captures it
    shown, hidden = progress_bar(total=3), progress_bar(total=3, enabled=False)
    assert not shown.disable and shown.mininterval == LOG_INTERVAL and hidden.disable
    shown.close(), hidden.close()


def test_errors_found_by_a_round_of_bad_inputs_name_the_option_given(tmp_path):
    """From a round of 101 bad inputs on data/train/sample/run/bench (the session's note lists them): an
    unknown --system in sample was reported as a missing shipped model, and model files of another method
    were refused as 'path' rather than by the option that named them."""
    from openmm_accel.drift.config import DriftSampleConfig
    from openmm_accel.drift.method import METHOD as drift
    from openmm_accel.flashmd.config import FlashMDRunConfig
    from openmm_accel.learning.model_file import PACKAGE_DATA
    from openmm_accel.score.config import ScoreBenchConfig, ScoreRunConfig
    from openmm_accel.score.method import METHOD as score
    from openmm_accel.simulate import RunConfig, run
    with pytest.raises(InputError, match="^system: unknown option 'nope'"):
        drift.sample(DriftSampleConfig(system="nope", output=str(tmp_path / "x.dcd")))
    with pytest.raises(InputError, match="^models: expected an existing score model file"):
        score.bench(ScoreBenchConfig(models=(str(tmp_path / "missing.npz"),)))
    drift_file = os.path.join(PACKAGE_DATA, "drift", "ala2-implicit.npz")
    for settings, argument in ((dict(method="score", options=ScoreRunConfig(score_model=drift_file)), "score_model"),
                               (dict(method="flashmd", model="mm", options=FlashMDRunConfig(flashmd_model=drift_file)),
                                "flashmd_model")):
        with pytest.raises(InputError, match=f"^{argument}: expected a .* model file, got .*, a drift model file"):
            run(RunConfig(steps=2, output=str(tmp_path / settings["method"]), progress=False, **settings))


def test_drift_trains_on_data_whose_validation_split_is_one_frame(data, tmp_path):
    """20 frames of one walker: the validation split is a single frame, which the drifting field refused
    ('x: expected at least 2 generated samples')."""
    from openmm_accel.drift.config import TrainDriftConfig
    from openmm_accel.drift.method import METHOD
    line = METHOD.train(TrainDriftConfig(data=data, output=str(tmp_path / "d.npz"), epochs=1, batch_size=4,
                                         hidden=4, progress=False))
    assert "wrote" in line


def flashmd_training(output, **changes):
    from openmm_accel.flashmd.config import TrainFlashMDConfig
    settings = dict(output=str(output), segments=2, segment_steps=16, record_every=4, timestep_fs=0.5,
                    stride_fs=2.0, decorrelation_steps=10, epochs=1, batch_size=4, hidden=4, layers=1,
                    progress=False, threads=1)
    return TrainFlashMDConfig(**{**settings, **changes})


def test_train_flashmd_overwrite_keeps_the_old_model_and_resume_refuses_other_data(tmp_path):
    """`train flashmd --overwrite` deleted the old model, data and checkpoint before training; `--resume`
    with other data settings trained on the stored data as if they were the new ones."""
    from openmm_accel.flashmd.method import METHOD
    model = tmp_path / "f.pt"
    METHOD.train(flashmd_training(model))
    before = files_of(tmp_path)
    with pytest.raises(SimulationError, match="training diverged"):
        METHOD.train(flashmd_training(model, overwrite=True, learning_rate=1e30, epochs=3))
    kept = files_of(tmp_path)
    assert {name: kept[name] for name in before} == before
    with pytest.raises(InputError, match="resume: expected the NVE data .* made with other segments"):
        METHOD.train(flashmd_training(model, resume=True, segments=3, epochs=2))
    METHOD.train(flashmd_training(model, overwrite=True, seed=4))
    after = files_of(tmp_path)
    assert after["f.pt"] != before["f.pt"] and after["f.pt.data.npz"] != before["f.pt.data.npz"]
    assert not [name for name in after if ".new" in name]


def test_a_perfect_samplers_score_is_the_noise_floor_for_its_sample_size():
    """A bench floor is what a perfect sampler of the same size scores. 50 independent draws of the reference
    distribution (a two-basin phi/psi mixture) against 4 walkers x 1,000 held-out frames, 20 trials: their
    mean JS (64 x 64 bins) equals the matched floor's to within 5 standard errors of the difference. The floor
    of two halves of the reference (500 frames per walker each) is far below: a perfect small run would look
    like a failure."""
    from openmm_accel.analysis import js_divergence, reference_and_floor
    rng = np.random.default_rng(33)

    def draw(*shape):
        in_first = rng.random(shape) < 0.7
        phi = np.where(in_first, rng.normal(-1.4, 0.4, shape), rng.normal(1.0, 0.3, shape))
        return (np.stack([phi, rng.normal(2.0, 0.6, shape)], -1) + np.pi) % (2 * np.pi) - np.pi
    perfect, matched, halves = [], [], []
    for _ in range(20):
        held = draw(4, 1000)
        compared, floor = reference_and_floor(held, 50)
        assert compared.shape == (2000, 2) and floor.shape == (50, 2)
        perfect.append(js_divergence(compared, draw(50), 64))
        matched.append(js_divergence(compared, floor, 64))
        halves.append(js_divergence(held[:, :500].reshape(-1, 2), held[:, 500:].reshape(-1, 2), 64))

    def gap(a, b):
        return abs(np.mean(a) - np.mean(b)), np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    difference, error = gap(perfect, matched)
    assert difference < 5 * error
    difference, error = gap(perfect, halves)
    assert difference > 5 * error and np.mean(halves) < 0.5 * np.mean(perfect)


def test_what_a_second_round_of_bad_inputs_found_is_refused_before_any_work(data, tmp_path, monkeypatch, capsys):
    """From a second round of 129 inputs (the session's note lists them): a seed beyond OpenMM's 32 bits was a
    traceback after loading the model; `bench score` with less CG MD than --md-discard failed only after its
    20,000 samples; two models of one name hid each other's rows; a report named .md or .npz would be written
    over by its own table or arrays; a model file that is a folder was offered --resume; a biased subset
    larger than the data trained on duplicates; an ML potential on a system without a solute blamed 'atoms'."""
    from openmm_accel import cli
    from openmm_accel.drift.config import DriftBenchConfig, TrainDriftConfig
    from openmm_accel.drift.method import METHOD as drift
    from openmm_accel.score.benchmark import main as never
    from openmm_accel.score.config import ScoreBenchConfig
    from openmm_accel.score.method import METHOD as score
    monkeypatch.setattr("openmm_accel.score.benchmark.main", lambda *a: pytest.fail("the benchmark started"))
    assert never is not None
    assert cli.main(["sample", "--method", "drift", "--seed", str(2**63), "--output", str(tmp_path / "x.dcd")]) == 2
    assert "seed (--seed): expected an integer seed from 1 to 2147483647" in capsys.readouterr().err
    with pytest.raises(InputError, match="md_duration: expected more than --md-discard"):
        score.bench(ScoreBenchConfig(md_duration=0.001, md_discard=5.0))
    with pytest.raises(InputError, match="models: expected model files with distinct names .* got ala2-implicit"):
        drift.bench(DriftBenchConfig(models=("ala2-implicit", "ala2-implicit")))
    for name in ("report.md", "report.npz", "report"):
        with pytest.raises(InputError, match="json: expected a file name ending in .json"):
            drift.bench(DriftBenchConfig(json=str(tmp_path / name)))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(InputError, match="output: expected a model file name, got .*a-folder', a folder"):
        drift.train(TrainDriftConfig(data=data, output=str(folder)))
    with pytest.raises(InputError, match="biased_subset: expected at most the 8 training frames"):
        drift.train(TrainDriftConfig(data=data, output=str(tmp_path / "b.npz"), biased_subset=9, epochs=1))
    with pytest.raises(InputError, match="model: expected 'mm' for water-box, which has no solute"):
        generate(ReferenceConfig(output=str(tmp_path / "water"), system="water-box", model="ani1x", **TINY))
    assert not (tmp_path / "water").exists()


def test_the_command_line_names_the_flag_and_says_what_the_data_hold(data, capsys):
    """An error names the Python field and the flag (`count (-n)`); `data --resume` with a shorter duration
    says how much the folder holds rather than only '0 ns sampled'."""
    from openmm_accel import cli
    assert cli.main(["sample", "--method", "drift", "-n", "-5"]) == 2
    assert "count (-n): expected a positive integer, got -5" in capsys.readouterr().err
    arguments = ["data", "--output", data, "--resume", "--walkers", "1", "--timestep", "2", "--frame-interval", "0.1",
                 "--chunk", "0.001", "--equilibration", "0", "--duration", "0.0005", "--no-progress"]
    assert cli.main(arguments) == 0
    assert "0 ns sampled in 0 chunks" in (said := capsys.readouterr().out) and "0.001 ns per walker" in said


def test_more_torch_threads_than_cores_are_allowed_with_a_warning():
    from openmm_accel.threads import use_torch_threads
    import torch
    before = torch.get_num_threads()
    try:
        with pytest.warns(UserWarning, match="threads: 64 torch threads on .* cores"):
            assert use_torch_threads(64) == 64
    finally:
        torch.set_num_threads(before)


def test_the_python_api_converts_quantities_numpy_numbers_and_paths_and_refuses_other_kinds(tmp_path):
    """Found by 32 calls of the Python API: a quantity (2 fs, 0.002 ps, 300 K), a numpy integer or a pathlib
    path was accepted by the checks and then crashed the job (JSON, rounding, string concatenation). Configs
    now hold plain values in the option's unit; a value of another kind is refused by name."""
    import pathlib
    from openmm import unit
    from openmm_accel.drift.config import DriftSampleConfig, TrainDriftConfig
    from openmm_accel.drift.method import METHOD as drift
    from openmm_accel.simulate import RunConfig, run
    settings = {**TINY, "timestep_fs": 0.002 * unit.picosecond, "frame_ps": 100 * unit.femtosecond,
                "temperature_k": 300 * unit.kelvin, "walkers": np.int64(1)}
    generate(ReferenceConfig(output=tmp_path / "data", **settings))
    recorded = json.load(open(tmp_path / "data" / "settings.json"))["settings"]
    assert (recorded["timestep_fs"], recorded["frame_ps"], recorded["temperature_k"]) == (2.0, 0.1, 300.0)
    summary = run(RunConfig(method="drift", steps=np.int32(4), report_interval=2, output=tmp_path / "run",
                            progress=False, temperature_k=310 * unit.kelvin, friction_per_ps=0.002 / unit.femtosecond))
    assert (summary["config"]["temperature_k"], summary["config"]["friction_per_ps"]) == (310.0, 2.0)
    drift.sample(DriftSampleConfig(count=2, output=pathlib.Path(tmp_path / "x.dcd")))
    assert (tmp_path / "x.dcd").exists()
    for config, message in ((ReferenceConfig(output=None), "output: expected a str"),
                            (RunConfig(steps=4.0), "steps: expected a positive number of steps, got 4.0"),
                            (RunConfig(friction_per_ps=1 * unit.kelvin), "friction: expected a quantity compatible"),
                            (TrainDriftConfig(data=str(tmp_path / "data"), widths=0.1),
                             "widths: expected one or more values")):
        with pytest.raises(InputError, match=message):
            (generate if isinstance(config, ReferenceConfig) else run if isinstance(config, RunConfig)
             else drift.train)(config)
