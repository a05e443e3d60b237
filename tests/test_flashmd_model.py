"""FlashMD models and training: equivariance, data pairs and time reversal, learning, model files."""
import dataclasses

import numpy as np
import pytest
import torch
from openmm import unit
from scipy.spatial.transform import Rotation

from openmm_accel import InputError, systems
from openmm_accel.devices import Placement
from openmm_accel.flashmd import VerletPropagator
from openmm_accel.flashmd.network import FlashMDNet
from openmm_accel.flashmd.training import (TrainingConfig, evaluate, generate_nve, load, reference_forces, save,
                                           train)
from openmm_accel.learning.sampling import NVEPlan
from openmm_accel.models import create


@pytest.fixture(scope="module")
def ala2():
    return systems.load("alanine-dipeptide-vacuum")


@pytest.fixture(scope="module")
def nve_data(ala2):
    return generate_nve(ala2.system, ala2.positions, NVEPlan(300.0, segments=8, segment_steps=96, record_every=4,
                                                             decorrelation_steps=200), Placement(float64=True))


def numbers(molecular):
    return [a.element.atomic_number for a in molecular.topology.atoms()]


@pytest.mark.parametrize("force_inputs", [False, True])
def test_network_is_equivariant(ala2, force_inputs):
    """Rotation + translation of the input rotates/translates the output (float32 network: 1e-5 relative);
    forces, when the network takes them, rotate with the system and do change the prediction."""
    torch.manual_seed(0)
    net = FlashMDNet(numbers(ala2), ala2.masses, 0.008, force_inputs=force_inputs)
    x = torch.as_tensor(ala2.positions._value)[None]
    p = torch.randn(1, 22, 3, dtype=torch.float64) * 5
    f = torch.randn(1, 22, 3, dtype=torch.float64) * 500 if force_inputs else None
    if force_inputs:  # the force scale, as training sets it: inputs of order one
        net.scale[2] = float((f / torch.as_tensor(ala2.masses).sqrt()[:, None]).pow(2).mean().sqrt())
    rotation = torch.as_tensor(Rotation.random(random_state=3).as_matrix())
    with torch.no_grad():
        x1, p1 = net.call(x, p, None, f)
        x2, p2 = net.call(x @ rotation.T + 0.7, p @ rotation.T, None, None if f is None else f @ rotation.T)
    torch.testing.assert_close(x2, x1 @ rotation.T + 0.7, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(p2, p1 @ rotation.T, rtol=1e-5, atol=1e-4)
    if force_inputs:
        with torch.no_grad():
            assert (net(x, p, None, 2 * f)[1] - p1).abs().max() > 1e-3
        with pytest.raises(InputError, match="forces"):
            net.call(x, p)


def test_network_sees_periodic_images():
    """In a box, moving atoms by lattice vectors changes nothing but their own position (minimum image), and
    the edge-list network equals the all-pairs definition: the same outputs in both boxes."""
    water = systems.load("water-box-small")
    torch.manual_seed(1)
    net = FlashMDNet(numbers(water), water.masses, 0.004, hidden=16)
    box = torch.as_tensor(water.system.getDefaultPeriodicBoxVectors()[0][0].value_in_unit(unit.nanometer) *
                          np.eye(3))[None]
    x = torch.as_tensor(water.positions._value)[None]
    p = torch.randn(1, x.shape[1], 3, dtype=torch.float64) * 5
    images = torch.zeros_like(x)
    images[0, ::7, 0] = box[0, 0, 0]
    images[0, ::11, 2] = -2 * box[0, 2, 2]
    with torch.no_grad():
        x1, p1 = net(x, p, box)
        x2, p2 = net(x + images, p, box)
        x3, _ = net(x, p)  # without the box, atoms across the boundary no longer interact
    # float32 network on coordinates of up to ~5 nm: 1e-4 nm absolute (displacements per stride are ~1e-2 nm;
    # a missed image changes them at that scale, as the box-less call shows)
    torch.testing.assert_close(x2 - images, x1, rtol=0, atol=1e-4)
    torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-3)
    assert (x3 - x1).abs().max() > 1e-4


def test_nve_data_conserve_energy_and_pairs_are_time_reversible(ala2, nve_data):
    kinetic = (nve_data.momenta**2 / (2 * nve_data.masses[None, None, :, None])).sum((-1, -2))
    total = nve_data.potential + kinetic
    # Verlet at 0.5 fs: bounded shadow-energy fluctuations (stiff X-H stretches) of a few kJ/mol, no drift;
    # a unit or mass mistake would give errors of the order of the kinetic energy itself
    assert np.max(np.abs(total - total[:, :1])) < 0.1 * kinetic.mean()
    x0, p0, x1, p1, h, _ = nve_data.pairs(0.008)
    half = len(x0) // 2
    np.testing.assert_array_equal(x0[half:], x1[:half])
    np.testing.assert_array_equal(p0[half:], -p1[:half])
    # velocity Verlet is time-reversible: the exact propagator maps a reversed pair back (to round-off)
    exact = VerletPropagator(create("amber14", ala2.topology, float64=True), ala2.masses, 0.008, 16)
    xr, pr = exact.predict(x0[half], p0[half])
    # (float64 on both sides; the only difference is the summation order of forces: 1e-9 relative)
    np.testing.assert_allclose(xr, x1[half], rtol=0, atol=1e-9)
    np.testing.assert_allclose(pr, p1[half], rtol=0, atol=1e-8 * np.abs(p1[half]).max())
    with pytest.raises(InputError, match="multiple of the record interval"):
        nve_data.pairs(0.003)
    # reference forces: every pair carries the forces at its own start (x1 for the reversed half)
    amber = create("amber14", ala2.topology, float64=True)
    with_forces = dataclasses.replace(nve_data, forces=reference_forces(amber, nve_data))
    *_, f0 = with_forces.pairs(0.008)
    for index in (0, half - 1, half, len(x0) - 1):
        expected = amber.energies_and_forces(torch.as_tensor(x0[index:index + 1]))[1][0].numpy()
        np.testing.assert_allclose(f0[index], expected, rtol=1e-9, atol=1e-6)


def test_evaluate_scores_the_exact_propagator_as_exact(ala2, nve_data):
    """Held-out scoring: the exact propagator has round-off errors, no excess energy beyond Verlet's own
    fluctuation and no unphysical predictions; free flight is scored alongside and is far off."""
    amber = create("amber14", ala2.topology, float64=True)
    exact = VerletPropagator(amber, ala2.masses, 0.008, 16)
    elements = [a.element.symbol for a in ala2.topology.atoms()]
    scores = evaluate(exact, nve_data, amber, elements)
    assert scores["pairs"] == 8 * (25 - 4) and set(scores["model"]["per_element"]) == {"C", "H", "N", "O"}
    for name, errors in scores["model"]["per_element"].items():
        assert errors["position_rms_nm"] < 1e-8 and errors["velocity_rms_nm_per_ps"] < 1e-5, name
        assert scores["free_flight"]["per_element"][name]["position_rms_nm"] > 1e-4, name
    # Verlet at 0.5 fs conserves H to a few kJ/mol (see the data test above); free flight does not
    assert abs(scores["model"]["excess_potential_mean"]) < 1e-6
    assert scores["model"]["energy_error_rms"] < 0.1 * scores["free_flight"]["energy_error_rms"]
    assert scores["model"]["unphysical_fraction"] == 0


def test_nve_data_are_reproducible(ala2):
    """Same seed, same data: on Reference every CustomIntegrator Context reseeds one process-wide generator."""
    def generate():
        plan = NVEPlan(300.0, segments=1, segment_steps=8, record_every=4, decorrelation_steps=10)
        return generate_nve(ala2.system, ala2.positions, plan, Placement(float64=True)).positions
    np.testing.assert_array_equal(generate(), generate())


def test_training_learns_and_resumes_and_files_round_trip(ala2, nve_data, tmp_path):
    torch.manual_seed(0)
    net = FlashMDNet(numbers(ala2), ala2.masses, 0.004, hidden=32)
    checkpoint = str(tmp_path / "train.chk")
    first = train(net, nve_data, TrainingConfig(epochs=4, batch_size=8), checkpoint=checkpoint, command="first")
    resumed = train(net, nve_data, TrainingConfig(epochs=12, batch_size=8), checkpoint=checkpoint,
                    command="resumed")
    losses = [h["validation_loss"] for h in resumed["history"]]
    assert len(losses) == 12 and losses[:4] == [h["validation_loss"] for h in first["history"]]
    # each epoch keeps the command that ran it; the wall time adds up over the two runs
    assert [h["command"] for h in resumed["history"]] == ["first"] * 4 + ["resumed"] * 8
    seconds = [h["seconds"] for h in resumed["history"]]
    assert seconds == sorted(seconds) and seconds[3] == first["seconds"] < resumed["seconds"] == seconds[-1]
    # the loss is normalised by the spread of the data around free flight, so predicting free flight
    # (q' = q + tau p/m, p' = p) scores 2.0; the trained network must do clearly better, and improve
    assert losses[-1] < 0.7 * 2.0 and losses[-1] < losses[0]
    path = str(tmp_path / "model.pt")
    save(path, net, {"reference": "amber14", "system": "alanine-dipeptide-vacuum"})
    copy = load(path)
    assert copy.stride == net.stride and copy.metadata["reference"] == "amber14"
    x, p = nve_data.positions[0, 0], nve_data.momenta[0, 0]
    np.testing.assert_array_equal(copy.predict(x, p)[0], net.predict(x, p)[0])
    with pytest.raises(InputError, match="an existing FlashMD model file"):
        load(str(tmp_path / "missing.pt"))
    torch.save({"something": "else"}, str(tmp_path / "foreign.pt"))
    with pytest.raises(InputError, match="written by openmm_accel"):
        load(str(tmp_path / "foreign.pt"))


def test_input_noise_perturbs_training_inputs_by_mass_and_recomputes_their_forces(ala2, nve_data):
    """Every pair starts from one frame, so each training input minus that frame is the drawn noise."""
    from openmm_accel.models.classical import OpenMMEnergyModel
    reference = OpenMMEnergyModel(ala2.system, ala2.topology, float64=True)
    frame = lambda a: np.repeat(a[:1, :1], 48, axis=0).repeat(2, axis=1)  # noqa: E731  (48 segments, 2 records)
    data = dataclasses.replace(nve_data, positions=frame(nve_data.positions), momenta=frame(nve_data.momenta),
                               potential=frame(nve_data.potential), forces=None)
    data.forces = reference_forces(reference, data)
    net = FlashMDNet(numbers(ala2), ala2.masses, data.interval, hidden=16, force_inputs=True)
    seen = []
    call = net.call
    net.call = lambda x, p, box, forces: seen.append((net.training, x, forces)) or call(x, p, box, forces)
    config = TrainingConfig(epochs=2, batch_size=8, input_noise=0.004)
    train(net, data, config, reference=reference)
    x_true, f_true = data.positions[0, 0], data.forces[0, 0]
    noisy = [(x.numpy(), f.numpy()) for training, x, f in seen if training]
    clean = [(x.numpy(), f.numpy()) for training, x, f in seen if not training]
    for x, f in clean:  # validation sees the exact inputs
        np.testing.assert_array_equal(x, np.broadcast_to(x_true, x.shape))
        np.testing.assert_array_equal(f, np.broadcast_to(f_true, f.shape))
    x = np.concatenate([x for x, _ in noisy])
    forces = np.concatenate([f for _, f in noisy])
    np.testing.assert_allclose(forces, reference.energies_and_forces(torch.as_tensor(x))[1].numpy(), rtol=1e-9,
                               atol=1e-9 * np.abs(forces).max())
    # RMS displacement of each atom, mass-scaled to hydrogen, is the input noise: 174 inputs x 12 H atoms and
    # x 10 heavy atoms are chi-square samples with >= 5000 degrees of freedom, so the relative standard error
    # of each RMS is <= 1 %; 5 % is a 5-sigma budget
    scaled = (x - x_true) * np.sqrt(ala2.masses / 1.008)[None, :, None]
    hydrogen = np.array(numbers(ala2)) == 1
    for atoms in (hydrogen, ~hydrogen):
        assert np.sqrt(np.mean(scaled[:, atoms] ** 2) * 3) == pytest.approx(0.004, rel=0.05)
    assert np.all(np.abs(forces - f_true).max((1, 2)) > 1.0)  # the forces moved with the positions
    with pytest.raises(InputError, match="need the forces"):
        train(net, data, config)
    with pytest.raises(InputError, match="non-negative"):
        train(net, data, dataclasses.replace(config, input_noise=-1.0), reference=reference)


def test_an_interrupted_and_resumed_training_is_the_uninterrupted_one(ala2, nve_data, tmp_path, monkeypatch):
    """The checkpoint keeps the shuffling and noise generators, so stopping does not change the result."""
    def trained(checkpoint):
        torch.manual_seed(0)
        net = FlashMDNet(numbers(ala2), ala2.masses, 0.004, hidden=16)
        train(net, nve_data, TrainingConfig(epochs=4, batch_size=8, input_noise=0.002), checkpoint=checkpoint)
        return net
    checkpoint, saves, save_file = str(tmp_path / "train.chk"), [], torch.save

    def interrupt_after_two_epochs(obj, path):
        if len(saves) == 2:
            raise KeyboardInterrupt
        saves.append(path)
        save_file(obj, path)
    monkeypatch.setattr(torch, "save", interrupt_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        trained(checkpoint)
    monkeypatch.undo()
    resumed = trained(checkpoint)
    whole = trained(None)
    for a, b in zip(resumed.parameters(), whole.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_training_resumed_with_more_epochs_follows_the_longer_schedule(ala2, nve_data, tmp_path):
    """Extending a finished 2-epoch training to 4 epochs gives the learning rates of a 4-epoch training."""
    def learning_rates(epochs, checkpoint):
        net = FlashMDNet(numbers(ala2), ala2.masses, 0.004, hidden=8)
        history = train(net, nve_data, TrainingConfig(epochs=epochs, batch_size=64), checkpoint=checkpoint)["history"]
        return [entry["learning_rate"] for entry in history]
    checkpoint = str(tmp_path / "train.chk")
    learning_rates(2, checkpoint)
    extended, whole = learning_rates(4, checkpoint), learning_rates(4, None)
    assert len(extended) == 4 and extended[2:] == pytest.approx(whole[2:], rel=1e-12)
    assert extended[:2] == pytest.approx([2e-3, 1e-3], rel=1e-12)  # the 2-epoch schedule it started on


def test_rollout_training_feeds_each_prediction_to_the_next_stride(ala2, nve_data):
    """Windows are K strides of the data (time-reversed too); in training each stride after the first starts
    from the previous prediction, with the reference forces there, and the gradient flows through it."""
    from openmm_accel.models.classical import OpenMMEnergyModel
    reference = OpenMMEnergyModel(ala2.system, ala2.topology, float64=True)
    data = dataclasses.replace(nve_data, forces=reference_forces(reference, nve_data))
    x, p, h, f = data.windows(0.004, 3)  # lag 2 records, 25 records per segment: 19 windows per segment
    assert x.shape == (2 * 8 * 19, 4, 22, 3) and h.shape == (2 * 8 * 19,)
    np.testing.assert_array_equal(x[20], data.positions[1, [1, 3, 5, 7]])  # segment 1, start 1
    np.testing.assert_array_equal(x[152 + 20], data.positions[1, [7, 5, 3, 1]])  # the same run reversed
    np.testing.assert_array_equal(p[152 + 20], -data.momenta[1, [7, 5, 3, 1]])
    np.testing.assert_array_equal(f[20], data.forces[1, 1])
    np.testing.assert_array_equal(f[152 + 20], data.forces[1, 7])
    net = FlashMDNet(numbers(ala2), ala2.masses, 0.004, hidden=8, force_inputs=True)
    with torch.no_grad():  # start at free flight: a random network fed its own predictions diverges (loss ~1e46,
        for head in (net.pair_out[-1], net.node_out[-1]):  # which the trainer now refuses as it turns non-finite)
            head.weight.zero_()
            head.bias.zero_()
    calls = []
    call = net.call

    def recorded(x, p, box, forces):
        out = call(x, p, box, forces)
        calls.append((net.training, x, p, forces, out))
        return out
    net.call = recorded
    train(net, data, TrainingConfig(epochs=1, batch_size=64, rollout=3), reference=reference)
    training = [c for c in calls if c[0]]
    assert len(training) % 3 == 0 and len([c for c in calls if not c[0]]) == 1  # validation: one stride
    for first, second, third in zip(training[0::3], training[1::3], training[2::3]):
        for before, after in ((first, second), (second, third)):
            assert after[1] is before[4][0] and after[2] is before[4][1] and after[1].requires_grad
            expected = reference.energies_and_forces(after[1].detach())[1].numpy()
            np.testing.assert_allclose(after[3].numpy(), expected, rtol=1e-9, atol=1e-6)
    with pytest.raises(InputError, match="positive number of strides"):
        train(net, data, TrainingConfig(epochs=1, rollout=0), reference=reference)
    with pytest.raises(InputError, match="shorter than a segment"):
        train(net, data, TrainingConfig(epochs=1, rollout=13), reference=reference)  # 13 x 2 records > 24
    with pytest.raises(InputError, match="need the forces"):
        train(net, data, TrainingConfig(epochs=1, rollout=2))
    with pytest.raises(InputError, match="energy loss evaluates it"):
        train(net, data, TrainingConfig(epochs=1, energy_weight=0.1))


def test_nve_segments_start_from_the_given_frames(ala2, tmp_path):
    """Segment k thermalises from frame k F / segments: two starts 1 nm apart give two pairs of segments
    whose centres are 1 nm apart (10 fs of Langevin move a centre by ~1 pm); frames come from a DCD read
    with the system's topology; wrong shapes, atom counts and missing files fail clearly."""
    import mdtraj
    from openmm_accel.flashmd.pipeline import load_starts
    x = np.asarray(ala2.positions.value_in_unit(unit.nanometer))
    topology = mdtraj.Topology.from_openmm(ala2.topology)
    path = str(tmp_path / "starts.dcd")
    mdtraj.Trajectory(np.stack([x, x + 1.0]).astype(np.float32), topology).save_dcd(path)
    starts = load_starts(path, ala2.topology)
    np.testing.assert_allclose(starts, np.stack([x, x + 1.0]), atol=1e-5)
    plan = NVEPlan(300.0, segments=4, segment_steps=8, record_every=4, decorrelation_steps=20)
    data = generate_nve(ala2.system, ala2.positions, plan, Placement(float64=True), starts=starts)
    centres = data.positions[:, 0].mean(axis=1) - x.mean(axis=0)
    np.testing.assert_allclose(centres, [[0.0] * 3, [0.0] * 3, [1.0] * 3, [1.0] * 3], atol=0.01)
    with pytest.raises(InputError, match="starts"):
        generate_nve(ala2.system, ala2.positions, NVEPlan(300.0, segments=1, segment_steps=8), starts=starts[:, :10])
    small = str(tmp_path / "small.dcd")
    mdtraj.Trajectory(np.stack([x[:10]]).astype(np.float32), topology.subset(range(10))).save_dcd(small)
    with pytest.raises(InputError, match="22-atom"):
        load_starts(small, ala2.topology)
    with pytest.raises(InputError, match="existing"):
        load_starts(str(tmp_path / "missing.dcd"), ala2.topology)


def test_kinetic_loss_is_each_elements_kinetic_energy_error(ala2, nve_data):
    """With the learning rate at 0 the validation 'kinetic' term is sum_e <(K_e' - K_e) / N_e kT>^2 (mean over
    the validation windows) of the untrained network on them (the first 10 % of the seeded permutation), computed here
    by hand; it enters the loss with its weight, and a negative weight is refused."""
    torch.manual_seed(0)
    net = FlashMDNet(numbers(ala2), ala2.masses, 0.004, hidden=8)
    config = TrainingConfig(epochs=1, batch_size=64, learning_rate=0.0, kinetic_weight=2.0)
    history = train(net, nve_data, config, kt=2.5)["history"][0]
    x, p, _, _ = nve_data.windows(0.004, 1)
    val = np.random.default_rng(0).permutation(len(x))[:int(0.1 * len(x))]
    _, predicted = net.predict(x[val, 0], p[val, 0])
    masses, z = np.asarray(nve_data.masses), np.asarray(numbers(ala2))
    kinetic = lambda q: (q**2).sum(-1) / (2 * masses)  # noqa: E731
    error = sum(((kinetic(predicted) - kinetic(p[val, 1]))[:, z == e].sum(-1).mean() / ((z == e).sum() * 2.5)) ** 2
                for e in np.unique(z))
    assert history["kinetic"] == pytest.approx(error, rel=1e-6) and error > 0
    assert history["validation_loss"] == pytest.approx(history["position"] + history["momentum"] + 2 * error)
    from openmm_accel.models.classical import OpenMMEnergyModel  # with the energy loss too: both terms kept apart
    reference = OpenMMEnergyModel(ala2.system, ala2.topology, float64=True)
    both = train(net, nve_data, dataclasses.replace(config, energy_weight=0.5), reference=reference,
                 kt=2.5)["history"][0]
    assert both["kinetic"] == pytest.approx(error, rel=1e-6) and both["energy"] > 0
    assert both["validation_loss"] == pytest.approx(both["position"] + both["momentum"] + 0.5 * both["energy"]
                                                    + 2 * error)
    with pytest.raises(InputError, match="non-negative"):
        train(net, nve_data, dataclasses.replace(config, kinetic_weight=-1.0))
