"""Energy models: ANI-1x against an independent torchani evaluation, batching, classical models, errors."""
import os

import numpy as np
import pytest
import torch
from openmm import app, unit

from conftest import RTOL, platform, relative_error
from openmm_accel import InputError, systems
from openmm_accel.models import EnergyModel, available, create
from openmm_accel.models.ani import HARTREE_TO_KJ_PER_MOL, resource_dir


def perturbed(alanine, n, scale=0.005, seed=0):
    x = alanine.positions.value_in_unit(unit.nanometer)
    return x[None] + np.random.default_rng(seed).normal(scale=scale, size=(n,) + x.shape)


def test_builtin_models_are_registered():
    assert {"ani1x", "amber14", "amber99sbildn", "harmonic", "double_well"} <= set(available())


def torchani_reference(positions_nm, numbers, member=None):
    """Independent ANI-1x: torchani's own pipeline in Angstrom/Hartree, float64, one molecule at a time."""
    import torchani
    from torchani import neurochem
    path = resource_dir()
    consts = neurochem.Constants(os.path.join(path, "rHCNO-5.2R_16-3.5A_a4-8.params"))
    networks = (neurochem.load_model_ensemble(consts.species, os.path.join(path, "train"), 8) if member is None
                else neurochem.load_model(consts.species, os.path.join(path, f"train{member}", "networks")))
    model = torchani.nn.Sequential(torchani.AEVComputer(**consts), networks,
                                   neurochem.load_sae(os.path.join(path, "sae_linfit.dat"))).double()
    species = consts.species_to_tensor([{1: "H", 6: "C", 7: "N", 8: "O"}[z] for z in numbers]).unsqueeze(0)
    energies, forces = [], []
    for x in positions_nm:
        coordinates = torch.tensor(x * 10.0, dtype=torch.float64, requires_grad=True).unsqueeze(0)
        hartree = model((species, coordinates)).energies
        (gradient,) = torch.autograd.grad(hartree.sum(), coordinates)
        energies.append(hartree.item() * torchani.units.hartree2kjoulemol(1.0))
        forces.append(-gradient[0].numpy() * torchani.units.hartree2kjoulemol(1.0) * 10.0)
    return np.array(energies), np.array(forces)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("member", [None, 3])
def test_ani1x_matches_independent_torchani(alanine, member, fused):
    """Both network paths (the stacked ensemble, the default, and torchani's modules) give torchani's own
    energies and forces."""
    model = create("ani1x", alanine.topology, member=member, dtype="float64", fused=fused)
    x = perturbed(alanine, 3)
    energies, forces = model.evaluate(x)
    ref_e, ref_f = torchani_reference(x, model.atomic_numbers, member)
    assert HARTREE_TO_KJ_PER_MOL == pytest.approx(2625.499638, rel=1e-9)
    assert relative_error(energies, ref_e) < RTOL[torch.float64]
    assert relative_error(forces, ref_f) < RTOL[torch.float64]


def test_ani_parameters_come_from_the_wheel_or_a_named_folder_and_placeholders_are_refused(alanine, tmp_path,
                                                                                          monkeypatch):
    """ANI-2x and ANI-1ccx are registered, but the torchani 2.2.4 wheel ships their files as 0-byte
    placeholders: creating them says so and what to do. With ``OPENMM_ACCEL_ANI_RESOURCES`` naming a folder
    of complete NeuroChem folders, the models come from there (a copy of ANI-1x's gives its energies)."""
    import shutil
    from openmm_accel.models.ani import RESOURCES_VARIABLE
    from openmm_accel.systems import capped_dipeptide
    assert {"ani1ccx", "ani2x"} <= set(available())
    cysteine = capped_dipeptide("CYS", "vacuum")
    for name, title in (("ani2x", "ANI-2x"), ("ani1ccx", "ANI-1ccx")):
        if os.path.getsize(os.path.join(os.path.dirname(resource_dir()), f"{name[:3]}-{name[3:]}_8x",
                                        "sae_linfit.dat")) == 0:
            with pytest.raises(InputError, match=f"model: expected the {title} parameter files .* got empty "
                                                 f"placeholders .* set {RESOURCES_VARIABLE}"):
                create(name, cysteine.topology)
    x = perturbed(alanine, 2)
    expected = create("ani1x", alanine.topology, dtype="float64").evaluate(x)[0]
    shutil.copytree(resource_dir(), tmp_path / "ani-1x_8x")
    monkeypatch.setenv(RESOURCES_VARIABLE, str(tmp_path))
    assert resource_dir() == str(tmp_path / "ani-1x_8x")
    np.testing.assert_array_equal(create("ani1x", alanine.topology, dtype="float64").evaluate(x)[0], expected)
    with pytest.raises(InputError, match="ANI-2x parameter files .* got missing"):
        create("ani2x", cysteine.topology)


def test_ani1x_ensemble_is_mean_of_members(alanine):
    x = perturbed(alanine, 2)
    ensemble = create("ani1x", alanine.topology, dtype="float64").evaluate(x)[0]
    members = np.mean([create("ani1x", alanine.topology, member=i, dtype="float64").evaluate(x)[0]
                       for i in range(8)], axis=0)
    assert relative_error(ensemble, members) < RTOL[torch.float64]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_equals_single_evaluation(alanine, dtype):
    model = create("ani1x", alanine.topology, dtype=dtype)
    x = perturbed(alanine, 5)
    batch_e, batch_f = model.evaluate(x)
    for i in range(len(x)):
        e, f = model.evaluate(x[i])
        assert abs(e - batch_e[i]) <= RTOL[getattr(torch, dtype)] * abs(e)
        assert relative_error(f, batch_f[i]) < RTOL[getattr(torch, dtype)]


def test_fused_ani1x_equals_the_modules_in_float32_and_in_a_periodic_box():
    """The stacked networks sum the same products in another order: float32 results agree with torchani's
    modules to float32 rounding, also for periodic boxes (water: O and H only, one element missing)."""
    water = systems.load("water-box-small")
    x = water.positions.value_in_unit(unit.nanometer)[None] + 0.002 * np.random.default_rng(3).normal(size=(2, 1, 3))
    vectors = water.system.getDefaultPeriodicBoxVectors()
    box = np.repeat(np.array([v.value_in_unit(unit.nanometer) for v in vectors])[None], 2, axis=0)
    results = [create("ani1x", water.topology, periodic=True, fused=fused).evaluate(x, box) for fused in (True, False)]
    # by default the ensemble is stacked and a single member (nothing to stack) uses the modules
    assert create("ani1x", water.topology).fused and not create("ani1x", water.topology, member=2).fused
    assert relative_error(results[0][0], results[1][0]) < RTOL[torch.float32]
    assert relative_error(results[0][1], results[1][1]) < RTOL[torch.float32]


def test_float32_ani_forces_close_to_float64(alanine):
    x = perturbed(alanine, 2)
    f32 = create("ani1x", alanine.topology).evaluate(x)[1]
    f64 = create("ani1x", alanine.topology, dtype="float64").evaluate(x)[1]
    assert relative_error(f32, f64) < RTOL[torch.float32]


def test_autograd_forces_match_finite_differences(alanine):
    model = create("ani1x", alanine.topology, dtype="float64")
    x = perturbed(alanine, 1)[0]
    _, forces = model.evaluate(x)
    eps = 1e-6  # nm; central differences are accurate to O(eps^2 * third derivative) ~ 1e-8 relative
    for atom, axis in [(0, 0), (7, 1), (14, 2)]:
        plus, minus = x.copy(), x.copy()
        plus[atom, axis] += eps
        minus[atom, axis] -= eps
        numeric = -(model.evaluate(plus)[0] - model.evaluate(minus)[0]) / (2 * eps)
        assert numeric == pytest.approx(forces[atom, axis], rel=1e-5, abs=1e-3)


def test_classical_model_matches_openmm_context(alanine):
    import openmm
    model = create("amber14", alanine.topology, float64=True)
    x = perturbed(alanine, 3)
    energies, forces = model.evaluate(x)
    context = openmm.Context(alanine.system, openmm.VerletIntegrator(0.001), platform("Reference"))
    for i in range(3):
        context.setPositions(x[i])
        state = context.getState(getEnergy=True, getForces=True)
        assert energies[i] == pytest.approx(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                                            rel=1e-12)
        assert relative_error(forces[i], state.getForces(asNumpy=True)._value) < 1e-12
    # autograd through the torch wrapper returns OpenMM's forces
    positions = torch.tensor(x, requires_grad=True)
    model(positions).sum().backward()
    assert relative_error(-positions.grad.numpy(), forces) < 1e-12


def test_analytic_models_have_their_closed_forms():
    topology = app.Topology()
    chain = topology.addChain()
    for _ in range(4):
        topology.addAtom("P", app.Element.getBySymbol("Ar"), topology.addResidue("PRT", chain))
    x = np.random.default_rng(1).normal(scale=0.1, size=(4, 3))
    e, f = create("harmonic", topology, k=500.0).evaluate(x)
    assert e == pytest.approx(250.0 * np.sum(x**2), rel=1e-12)
    assert relative_error(f, -500.0 * x) < 1e-12
    e, f = create("double_well", topology, barrier=4.0, a=0.2, k_perp=300.0).evaluate(x)
    u = 4.0 * ((x[:, 0] / 0.2) ** 2 - 1) ** 2 + 150.0 * (x[:, 1] ** 2 + x[:, 2] ** 2)
    assert e == pytest.approx(u.sum(), rel=1e-12)
    assert relative_error(f[:, 0], -4.0 * 2 * ((x[:, 0] / 0.2) ** 2 - 1) * 2 * x[:, 0] / 0.04) < 1e-12


# -- bad input ----------------------------------------------------------------------------------------
def test_unknown_model_name_suggests_closest(alanine):
    with pytest.raises(InputError, match="did you mean 'ani1x'"):
        create("ani1", alanine.topology)


def test_unknown_option_suggests_closest(alanine):
    with pytest.raises(InputError, match="did you mean 'member'"):
        create("ani1x", alanine.topology, membr=0)


def test_unsupported_elements_are_named():
    from openmm_accel import systems
    oscillators = systems.load("harmonic-oscillators", n_particles=3)
    with pytest.raises(InputError, match=r"ANI-1x: H, C, N, O\), got ANI-1x on atoms with Ar"):
        create("ani1x", oscillators.topology)


@pytest.mark.parametrize("member", [8, -1, "0"])
def test_bad_member(alanine, member):
    with pytest.raises(InputError, match="member"):
        create("ani1x", alanine.topology, member=member)


def test_wrong_position_shape_and_nan(alanine):
    model = create("ani1x", alanine.topology)
    with pytest.raises(InputError, match=r"positions: expected .*\(B, 22, 3\).*shape \(21, 3\)"):
        model.evaluate(np.zeros((21, 3)))
    x = alanine.positions.value_in_unit(unit.nanometer).copy()
    x[4, 1] = np.nan
    with pytest.raises(InputError, match="finite"):
        model.evaluate(x)


def test_energy_model_is_the_base_of_every_builtin(alanine):
    assert isinstance(create("ani1x", alanine.topology), EnergyModel)
    assert isinstance(create("amber99sbildn", alanine.topology), EnergyModel)


def test_force_matched_model_analytic_forces_equal_autograd(alanine, tmp_path):
    """Every parameter block's closed-form derivative against autograd through the basis (float64)."""
    from openmm_accel.speculative.force_matched import ForceMatchedModel
    model = ForceMatchedModel(alanine.topology)
    x = perturbed(alanine, 3, scale=0.01)
    model.set_reference(x)
    model.params.copy_(torch.as_tensor(np.random.default_rng(2).normal(size=model.n_parameters) * 1e-3))
    model.fitted = True
    positions = torch.as_tensor(x)
    energies, forces = model.energies_and_forces(positions)
    reference_e, reference_f = EnergyModel.energies_and_forces(model, positions)
    assert relative_error(energies, reference_e) < RTOL[torch.float64]
    assert relative_error(forces, reference_f) < RTOL[torch.float64]
    path = str(tmp_path / "draft.npz")
    model.save(path)
    copy = ForceMatchedModel(alanine.topology)
    copy.load(path)
    np.testing.assert_array_equal(copy.evaluate(x)[1], model.evaluate(x)[1])
    from openmm_accel import systems
    other = systems.load("water-box")
    with pytest.raises(InputError, match="same molecule"):
        ForceMatchedModel(other.topology, atoms=range(21)).load(path)  # seven waters


def test_force_matched_fit_recovers_a_potential_inside_its_basis(alanine):
    """amber14 (harmonic bonds/angles, torsions, LJ + Coulomb) lies almost inside the basis: the fit is close."""
    from openmm_accel.speculative.force_matched import ForceMatchedModel
    x = perturbed(alanine, 300, scale=0.01, seed=3)
    forces = create("amber14", alanine.topology, float64=True).evaluate(x)[1]
    model = ForceMatchedModel(alanine.topology)
    rms = model.fit(x[:200], forces[:200])
    held_out = model.rms_error(x[200:], forces[200:])
    assert rms < 0.05 * np.sqrt(np.mean(forces**2)) and held_out < 2 * rms + 1.0


def tiny_mace(path, atomic_numbers=(1, 6, 7, 8), seed=3) -> str:
    """A small MACE model (two interactions, 8 channels, r_max 4 A, random weights, mace-torch's own
    classes), saved as mace-torch saves models."""
    torch.serialization.add_safe_globals([slice])  # e3nn 0.4.4 on torch >= 2.6 (see openmm_accel.models.mace)
    from e3nn import o3
    from mace import modules
    torch.manual_seed(seed)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.0, num_bessel=4, num_polynomial_cutoff=3, max_ell=2, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=len(atomic_numbers),
        hidden_irreps=o3.Irreps("8x0e+8x1o"), MLP_irreps=o3.Irreps("8x0e"),
        atomic_energies=np.linspace(-10.0, -2000.0, len(atomic_numbers)), avg_num_neighbors=8.0,
        atomic_numbers=list(atomic_numbers), correlation=2, gate=torch.nn.functional.silu, atomic_inter_scale=1.0,
        atomic_inter_shift=0.0).double()
    torch.save(model, path)
    return str(path)


def mace_reference(path, topology, positions_nm: np.ndarray):
    """Energy (eV) and forces (eV/A) of one configuration by mace-torch itself: every pair within r_max."""
    model = torch.load(path, weights_only=False)
    table = model.atomic_numbers.tolist()
    numbers = [atom.element.atomic_number for atom in topology.atoms()]
    n = len(numbers)
    x = torch.tensor(positions_nm * 10.0)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    near = np.linalg.norm(positions_nm[j] - positions_nm[i], axis=-1) * 10.0 < float(model.r_max)
    edges = torch.tensor(np.stack([i[near], j[near]]))
    data = {"positions": x, "node_attrs": torch.nn.functional.one_hot(torch.tensor([table.index(z) for z in numbers]),
                                                                      len(table)).double(),
            "edge_index": edges, "shifts": torch.zeros(edges.shape[1], 3),
            "unit_shifts": torch.zeros(edges.shape[1], 3),
            "cell": torch.zeros(3, 3), "batch": torch.zeros(n, dtype=torch.long), "ptr": torch.tensor([0, n]),
            "head": torch.zeros(1, dtype=torch.long)}
    out = model(data, compute_force=True)
    return out["energy"].detach().item(), out["forces"].detach().numpy()


def test_a_mace_model_file_is_a_potential_in_the_package_units(alanine, tmp_path):
    """`mace:PATH`: energies and forces of mace-torch's own evaluation, converted (eV -> kJ/mol, eV/A -> kJ/mol/
    nm; float64), for a batch; the same in a periodic box with the molecule split across it (nearest images);
    an element the model lacks refused by name; `run --model mace:PATH` with TorchForce records the file."""
    import json
    from openmm_accel.models.mace import KJ_PER_EV
    from openmm_accel.simulate import RunConfig, run
    path = tiny_mace(tmp_path / "tiny.model")
    model = create(f"mace:{path}", alanine.topology)
    x = alanine.positions.value_in_unit(unit.nanometer)
    batch = np.stack([x, x + 0.01 * np.random.default_rng(4).standard_normal(x.shape)])
    energies, forces = model.evaluate(batch)
    for k in range(2):
        energy, force = mace_reference(path, alanine.topology, batch[k])
        assert energies[k] == pytest.approx(energy * KJ_PER_EV, rel=RTOL[torch.float64])
        assert relative_error(forces[k], force * KJ_PER_EV * 10.0) < 1e-9
    box = np.diag([3.0, 3.0, 3.0])
    periodic = create(f"mace:{path}", alanine.topology, periodic=True)
    split = x.copy()
    split[:5] += box[0]  # five atoms one box length away: the same molecule by the nearest images
    assert float(periodic.evaluate(split, box)[0]) == pytest.approx(energies[0], rel=RTOL[torch.float64])
    with pytest.raises(InputError, match="model: expected a MACE model for every element.*without N"):
        create(f"mace:{tiny_mace(tmp_path / 'no-n.model', (1, 6, 8))}", alanine.topology)
    summary = run(RunConfig(system="alanine-dipeptide-vacuum", model=f"mace:{path}", steps=4, report_interval=2,
                            timestep_fs=0.5, output=str(tmp_path / "run"), progress=False))
    assert summary["steps_run"] == 4
    recorded = json.load(open(tmp_path / "run" / "summary.json"))["recipe"]
    assert recorded["potential"] == f"mace:{os.path.abspath(path)}" and "sha256" in recorded["potential_options"]
