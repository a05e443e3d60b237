"""The shared learning layer: datasets with their topology, resumable reference sampling, the trainer
(checkpoint/resume, EMA) and the versioned model-file format."""
import numpy as np
import openmm
from openmm import unit
import pytest
import torch

from openmm_accel import InputError, systems
from openmm_accel.devices import Placement
from openmm_accel.learning import dataset as dataset_module
from openmm_accel.learning.dataset import Dataset
from openmm_accel.learning.model_file import check_system, read_model, save_model
from openmm_accel.integrators import Langevin
from openmm_accel.learning.sampling import NVEPlan, sample_langevin, sample_nve
from openmm_accel.learning.trainer import Trainer, TrainerConfig


@pytest.fixture(scope="module")
def ala2():
    return systems.load("alanine-dipeptide-vacuum")


def nve(ala2, **options):
    return sample_nve(ala2.system, ala2.positions, NVEPlan(300.0, segments=3, segment_steps=8, record_every=4,
                                                           timestep_fs=0.5, decorrelation_steps=20, seed=5), **options)


def test_a_dataset_keeps_its_arrays_topology_and_units_and_loads_in_mdtraj(ala2, tmp_path):
    data = nve(ala2)
    assert data.positions.shape == (3, 3, 22, 3) and data.potential.shape == (3, 3)
    data = data.with_forces(np.ones((9, 22, 3)))
    data = Dataset(**{**data.__dict__, "topology": ala2.topology})
    path = str(tmp_path / "data.npz")
    data.save(path)
    copy = Dataset.load(path)
    for name in dataset_module.ARRAYS:
        np.testing.assert_array_equal(getattr(copy, name), getattr(data, name)) if getattr(data, name) is not None \
            else None
    assert copy.interval_ps == data.interval_ps and copy.metadata["kind"] == "nve"
    assert [a.name for a in copy.topology.atoms()] == [a.name for a in ala2.topology.atoms()]
    trajectory = copy.to_mdtraj()
    assert trajectory.n_frames == 9 and trajectory.n_residues == 3
    np.testing.assert_allclose(trajectory.xyz, data.frames(), atol=1e-6)
    np.save(tmp_path / "foreign.npy", np.zeros(3))
    np.savez(tmp_path / "foreign.npz", positions=np.zeros(3))
    with pytest.raises(InputError, match="data: expected a dataset file written by openmm_accel"):
        Dataset.load(str(tmp_path / "foreign.npz"))
    with pytest.raises(InputError, match="forces: expected the shape of the positions"):
        Dataset(data.positions, data.masses, 0.002, forces=np.zeros((2, 22, 3)))


def test_interrupted_nve_sampling_continues_to_the_same_data(ala2, tmp_path, monkeypatch):
    """Killed after its second segment, a resumed call gives bitwise the data of an uninterrupted one (the
    thermostat's random state travels in the checkpoint)."""
    whole = nve(ala2)
    checkpoint = str(tmp_path / "partial.npz")
    saved, save = [], Dataset.save

    def save_then_stop(self, path):
        save(self, path)
        saved.append(path)
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Dataset, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        nve(ala2, checkpoint=checkpoint)
    monkeypatch.setattr(Dataset, "save", save)
    assert Dataset.load(checkpoint, "checkpoint").positions.shape[0] == 2
    resumed = nve(ala2, checkpoint=checkpoint)
    np.testing.assert_array_equal(resumed.positions, whole.positions)
    np.testing.assert_array_equal(resumed.velocities, whole.velocities)
    assert not (tmp_path / "partial.npz").exists()  # complete: the partial data are gone
    # a partial file of other settings is refused, not mixed in
    monkeypatch.setattr(Dataset, "save", save_then_stop)
    saved.clear()
    with pytest.raises(KeyboardInterrupt):
        nve(ala2, checkpoint=checkpoint)
    monkeypatch.setattr(Dataset, "save", save)
    with pytest.raises(InputError, match="checkpoint: expected the partial data of the same sampling settings"):
        sample_nve(ala2.system, ala2.positions, NVEPlan(310.0, segments=3, segment_steps=8, record_every=4,
                                                        timestep_fs=0.5, decorrelation_steps=20, seed=5),
                   checkpoint=checkpoint)


def test_langevin_frames_carry_the_forces_of_the_system(ala2):
    context = openmm.Context(ala2.system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2.positions)
    context.setVelocitiesToTemperature(300, 1)
    data = sample_langevin(ala2.system, context.getState(getPositions=True, getVelocities=True),
                           Langevin(300.0, 1.0, 1.0, seed=2), frames=4, every=5, placement=Placement(float64=True))
    context.setPositions(data.frames()[-1])
    forces = context.getState(getForces=True).getForces(asNumpy=True)._value
    np.testing.assert_allclose(data.frames("forces")[-1], forces, rtol=1e-10)
    assert data.potential.shape == (1, 4) and data.interval_ps == pytest.approx(0.005)


def regression(seed=0):
    """A linear model y = x w + noise to train on."""
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.normal(size=(200, 4)))
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + 0.3 * torch.as_tensor(rng.normal(size=200))
    model = torch.nn.Linear(4, 1).double()

    def losses(index, training):
        with torch.set_grad_enabled(training):
            loss = ((model(x[index])[:, 0] - y[index]) ** 2).mean()
        return loss, {"mse": loss.item()}
    return model, losses


@pytest.mark.parametrize("ema", [None, 0.9])
def test_a_training_killed_midway_resumes_to_the_same_weights(tmp_path, ema):
    """Killed in its fourth epoch and resumed in a fresh model, training ends bitwise where an uninterrupted
    run does (weights, optimiser, schedule, EMA and random streams are in the checkpoint)."""
    config = TrainerConfig(epochs=6, batch_size=16, learning_rate=0.3, seed=3, ema_decay=ema)
    torch.manual_seed(0)
    model, losses = regression()
    whole = Trainer(model, 200, config).fit(losses)
    final = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    model, losses = regression()
    checkpoint = str(tmp_path / "train.chk")
    calls = []

    def killed_in_epoch_four(index, training):
        calls.append(training)
        if calls.count(False) == 3 and training:  # three epochs validated: the fourth is under way
            raise KeyboardInterrupt
        return losses(index, training)

    with pytest.raises(KeyboardInterrupt):
        Trainer(model, 200, config, checkpoint).fit(killed_in_epoch_four, command="first")
    torch.manual_seed(99)  # a fresh process builds the model anew
    model, losses = regression()
    trainer = Trainer(model, 200, config, checkpoint)
    assert trainer.resumed and trainer.epoch == 3
    resumed = trainer.fit(losses, command="resumed")
    assert [h["command"] for h in resumed["history"]] == ["first"] * 3 + ["resumed"] * 3
    assert [h["mse"] for h in resumed["history"]] == [h["mse"] for h in whole["history"]]
    assert all(torch.equal(p, q) for p, q in zip(final, model.parameters()))
    assert whole["history"][-1]["mse"] < 0.2  # noise variance 0.09: it has learnt the weights
    if ema:  # the model ends with the averaged weights, not the last iterate
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), trainer.average.module.parameters()))


def test_validation_in_batches_is_the_validation_of_all_samples_at_once():
    """validation_batch bounds the memory of validation (FlashMD on a protein): for a loss that is a mean over
    samples, batches weighted by their sizes give the loss of all samples in one call (20 samples in batches of
    8, 8 and 4), and no validation call exceeds the batch."""
    config = TrainerConfig(epochs=2, batch_size=16, learning_rate=0.3, seed=3)
    histories = []
    for batch in (None, 8):
        torch.manual_seed(0)
        model, losses = regression()
        sizes = []

        def recorded(index, training):
            if not training:
                sizes.append(len(index))
            return losses(index, training)

        trainer = Trainer(model, 200, config, validation_batch=batch)
        histories.append(trainer.fit(recorded)["history"])
        assert max(sizes) == (20 if batch is None else 8)
    for whole, batched in zip(*histories):
        assert batched["validation_loss"] == pytest.approx(whole["validation_loss"], rel=1e-12)
        assert batched["mse"] == pytest.approx(whole["mse"], rel=1e-12)


def test_training_on_the_cpu_and_on_auto_is_the_same_training():
    """The trainer puts the model and its seeded generator on config.device: on a machine without a GPU, cpu and
    auto train to the same weights; a device torch cannot see is refused by name."""
    weights = []
    for device in ("cpu", "auto"):
        torch.manual_seed(0)
        model, losses = regression()
        Trainer(model, 200, TrainerConfig(epochs=2, batch_size=16, seed=3, device=device)).fit(losses)
        weights.append([p.detach().clone() for p in model.parameters()])
    if not torch.cuda.is_available():
        assert all(torch.equal(a, b) for a, b in zip(*weights))
        with pytest.raises(InputError, match="device: expected a CUDA device torch can see"):
            Trainer(regression()[0], 200, TrainerConfig(device="cuda"))


def test_model_files_record_what_they_are_and_refuse_the_wrong_system(tmp_path):
    path = str(tmp_path / "model.npz")
    save_model(path, "toy", {"weights": np.arange(3.0)}, {"hidden": 4}, {"elements": [6, 1], "masses": [12.0, 1.0]})
    header, arrays = read_model(path, "toy", "toy model file")
    assert header["units"]["length"] == "nm" and header["config"] == {"hidden": 4}
    np.testing.assert_array_equal(arrays["weights"], np.arange(3.0))
    with pytest.raises(InputError, match="path: expected a FlashMD model file, got .*a toy model file"):
        read_model(path, "flashmd", "FlashMD model file")
    check_system(header["metadata"], [6, 1], [12.0, 1.0], path, "toy model")
    with pytest.raises(InputError, match="the System's 2 atoms and elements"):
        check_system(header["metadata"], [6, 8], [12.0, 1.0], path, "toy model")
    with pytest.raises(InputError, match="trained with the System's masses"):
        check_system(header["metadata"], [6, 1], [12.0, 3.0], path, "toy model")
    with open(path, "r+b") as handle:  # damaged
        handle.truncate(40)
    with pytest.raises(InputError, match="path: expected a readable toy model file"):
        read_model(path, "toy", "toy model file")


def reference_config(folder, **changes):
    """Tiny reference data: frames every 10 fs, chunks of 10 frames (the unit of resumption)."""
    from openmm_accel.learning.reference import ReferenceConfig
    settings = dict(frame_ps=0.01, chunk_ns=0.0001, equilibration_ps=0.1, duration_ns=0.0003, walkers=2,
                    progress=False, output=str(folder))
    return ReferenceConfig(**{**settings, **changes})


def test_reference_data_stopped_and_continued_are_the_data_of_one_run(tmp_path):
    """Walkers sampled in one go on two processes, and one chunk at a time in one process with resumes
    (the duration extended each time), give bitwise the same frames; changed settings are refused, and a
    damaged chunk is not continued from but made again, bitwise as it was."""
    import mdtraj
    from openmm_accel.learning.reference import generate, load_reference
    whole = generate(reference_config(tmp_path / "whole", processes=2))
    assert whole["chunks_written"] == 6
    generate(reference_config(tmp_path / "parts", duration_ns=0.0001))
    with pytest.raises(InputError, match="output: expected a folder without earlier data, or --resume"):
        generate(reference_config(tmp_path / "parts"))
    with pytest.raises(InputError, match="resume: expected the settings of the data .* other temperature_k"):
        generate(reference_config(tmp_path / "parts", temperature_k=310.0, resume=True))
    for ns in (0.0002, 0.0003):
        generate(reference_config(tmp_path / "parts", duration_ns=ns, resume=True))
    a, b = load_reference(str(tmp_path / "whole")), load_reference(str(tmp_path / "parts"))
    assert a.positions.shape == (2, 30, 22, 3) and a.positions.dtype == np.float32
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.forces, b.forces)
    assert not np.array_equal(a.positions[0], a.positions[1])  # the walkers are independent
    phi = mdtraj.compute_phi(a.to_mdtraj())[1]
    assert phi.shape == (60, 1) and np.all(np.isfinite(phi))
    chunk = tmp_path / "parts" / "walker-00" / "chunk-0002.npz"
    chunk.write_bytes(chunk.read_bytes()[:200])  # damaged: never continued from, made again from chunk 1
    summary = generate(reference_config(tmp_path / "parts", duration_ns=0.0004, resume=True))
    assert summary["chunks_written"] == 3  # walker 0's chunks 2 and 3, walker 1's chunk 3
    again = load_reference(str(tmp_path / "parts"))
    np.testing.assert_array_equal(again.positions[:, :30], a.positions)


def test_solute_only_data_of_a_solvated_peptide(tmp_path):
    """`--record solute`: explicit water is simulated (rigid, X-H constrained) but only the peptide's frames,
    forces, masses and topology are kept; data of an all-atom run keep their settings (no `record` entry)."""
    import json
    from openmm_accel.learning.reference import generate, load_reference
    generate(reference_config(tmp_path / "solvated", system="openmmtools:AlanineDipeptideExplicit", walkers=1,
                              duration_ns=0.0001, equilibration_ps=0.02, record="solute"))
    data = load_reference(str(tmp_path / "solvated"))
    assert data.positions.shape == (1, 10, 22, 3) and data.forces.shape == (1, 10, 22, 3)
    assert data.topology.getNumAtoms() == 22 and len(data.masses) == 22 and data.box is not None
    assert np.all(np.isfinite(data.forces))
    generate(reference_config(tmp_path / "all", walkers=1, duration_ns=0.0001))
    assert "record" not in json.load(open(tmp_path / "all" / "settings.json"))["settings"]


def test_ml_potential_data_keep_x_h_constraints_on_one_torch_thread(tmp_path, monkeypatch):
    """Data with an ML potential (ANI-1x on ethanol) keep X-H bonds at the force field's lengths, and the
    walker runs on one torch thread (the count is given back afterwards)."""
    import torch
    from openmm_accel.learning import reference
    seen = []
    original = reference._run_chunk
    monkeypatch.setattr(reference, "_run_chunk", lambda *a: seen.append(torch.get_num_threads()) or original(*a))
    before = torch.get_num_threads()
    reference.generate(reference_config(tmp_path / "ethanol", system="ethanol-vacuum", model="ani1x",
                                        timestep_fs=0.5, walkers=1, duration_ns=0.0001, equilibration_ps=0.01))
    assert seen == [1] and torch.get_num_threads() == before
    data = reference.load_reference(str(tmp_path / "ethanol"))
    system = reference.build(reference.settings_config(data.metadata)).system
    x = data.positions[0]
    for k in range(system.getNumConstraints()):
        i, j, length = system.getConstraintParameters(k)
        np.testing.assert_allclose(np.linalg.norm(x[:, i] - x[:, j], axis=-1), length.value_in_unit(unit.nanometer),
                                   rtol=1e-5)  # float32 frames
    assert system.getNumConstraints() == 6


def test_a_diverging_training_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from openmm_accel import SimulationError
    model, losses = regression()
    checkpoint = tmp_path / "train.chk"
    calls = []

    def nan_in_epoch_three(index, training):
        calls.append(training)
        loss, parts = losses(index, training)
        return (loss * float("nan"), parts) if calls.count(False) == 2 and training else (loss, parts)

    with pytest.raises(SimulationError, match="loss became nan in epoch 3; the checkpoint of epoch 2 is kept"):
        Trainer(model, 200, TrainerConfig(epochs=5, batch_size=16, seed=1), str(checkpoint)).fit(nan_in_epoch_three)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 2
