"""One value for a system: a MolecularSystem carries the Recipe that rebuilds it, recipes round-trip through
JSON, model files record the recipe of the system they were made for and refuse another."""
import glob
import json
import os

import numpy as np
import pytest
from openmm import unit

from conftest import ROOT
from openmm_accel import InputError, systems
from openmm_accel.learning.model_file import check_recipe, recipe_of
from openmm_accel.molecular import Recipe
from openmm_accel.storage import read_archive


def energy(molecular) -> float:
    import openmm
    context = openmm.Context(molecular.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecular.positions)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


@pytest.mark.parametrize("recipe", [
    Recipe("alanine-dipeptide-vacuum", potential="ani1x", potential_options={"member": 3}),
    Recipe("openmmtools:AlanineDipeptideImplicit", constraints="hbonds", hydrogen_mass_amu=4.0),
    Recipe("harmonic-oscillators", {"n_particles": 7, "k": 500.0, "mass": 4.0, "seed": 2}),
])
def test_a_recipe_round_trips_through_json_and_rebuilds_the_same_system(recipe):
    again = Recipe.from_json(json.loads(json.dumps(recipe.to_json())))
    assert again == recipe and not again.differences(recipe)
    first, second = systems.build(recipe), systems.build(again)
    assert first.recipe == recipe and second.recipe == recipe
    assert first.topology.getNumAtoms() == second.topology.getNumAtoms()
    np.testing.assert_array_equal(first.masses, second.masses)
    assert energy(first) == pytest.approx(energy(second), rel=1e-12)


def test_every_way_of_building_a_system_records_how_to_rebuild_it():
    """Builders called directly, load() by name and with_potential() give recipes that build() repeats."""
    oscillators = systems.harmonic_oscillators(n_particles=5, k=300.0, mass=2.0, seed=4)
    assert systems.build(oscillators.recipe).positions.value_in_unit(unit.nanometer).tolist() == \
        oscillators.positions.value_in_unit(unit.nanometer).tolist()
    small = systems.load("water-box-small")
    assert small.recipe == Recipe("water-box-small")
    ml = systems.with_potential("alanine-dipeptide-vacuum", "ani1x", member=0, constraints="hbonds")
    assert ml.recipe == Recipe("alanine-dipeptide-vacuum", constraints="hbonds", potential="ani1x",
                               potential_options={"member": 0}) and ml.name == "alanine-dipeptide-vacuum:ani1x"
    rebuilt = systems.build(ml.recipe)
    assert rebuilt.system.getNumConstraints() == ml.system.getNumConstraints() > 0
    assert energy(rebuilt) == pytest.approx(energy(ml), rel=1e-6)  # float32 network, two instances


def test_a_damaged_or_newer_recipe_is_refused_by_name():
    data = Recipe("double-well").to_json()
    with pytest.raises(InputError, match="recipe: expected a system recipe with the fields"):
        Recipe.from_json({**data, "solvent": "water"})
    with pytest.raises(InputError, match="recipe: expected a system recipe of version"):
        Recipe.from_json({**data, "recipe_version": 99})
    with pytest.raises(InputError, match="constraints: expected one of none, hbonds"):
        Recipe("double-well", constraints="allbonds")


def test_a_model_made_for_one_system_refuses_another_naming_the_argument():
    made_for = Recipe("alanine-dipeptide-vacuum", potential="ani1x")
    check_recipe(made_for, Recipe("alanine-dipeptide-vacuum", potential="ani1x", backend="pythonforce"), "model")
    for other, argument in ((Recipe("alanine-dipeptide-vacuum"), "model"),
                            (Recipe("alanine-dipeptide-implicit", potential="ani1x"), "system"),
                            (Recipe("alanine-dipeptide-vacuum", potential="ani1x", hydrogen_mass_amu=3.0),
                             "hydrogen_mass"),
                            (Recipe.of("alanine-dipeptide-vacuum", "ani1x", member=2), "member")):
        with pytest.raises(InputError, match=f"^{argument}: expected the .* the model was trained on"):
            check_recipe(made_for, other, "model")


def test_shipped_model_files_record_the_recipe_their_provenance_names():
    """The shipped files were given their recipe from what their metadata already said (arrays untouched):
    the two must agree, and every recipe must build."""
    paths = sorted(glob.glob(os.path.join(ROOT, "openmm_accel", "data", "*", "*.*")))
    assert len(paths) >= 10
    for path in paths:
        header, _ = read_archive(path, "openmm_accel.model", 2, "path", "model file")
        metadata = header["metadata"]
        stored = recipe_of(metadata)
        legacy = recipe_of({key: value for key, value in metadata.items() if key != "recipe"})
        assert "recipe" in metadata and stored == legacy, path
    assert systems.build(stored).topology.getNumAtoms() > 0


def test_a_recipe_read_back_from_json_builds_the_same_system():
    """A recorded recipe (JSON lists) and the one a command builds (tuples, e.g. of force-field files) are the
    same system: nothing differs (the regression: `data --resume` of a file with --forcefield was refused as
    'another source_options'); a changed option does differ."""
    built = Recipe("file:/data/trpzip2.prmtop", {"forcefield": ("amber14-all.xml",), "remove_solvent": True,
                                                 "sha256_of": {"system": "ab"}}, ml_atoms=(1, 2, 3))
    again = Recipe.from_json(json.loads(json.dumps(built.to_json())))
    assert built.differences(again) == [] and again.differences(built) == []
    other = Recipe("file:/data/trpzip2.prmtop", {"forcefield": ("amber99sbildn.xml",), "remove_solvent": True,
                                                 "sha256_of": {"system": "ab"}}, ml_atoms=(1, 2, 3))
    assert again.differences(other) == ["source_options"]
