"""One versioned file format for every learned model (FlashMD propagators, distilled LSD drafts, and the
methods to come): an ``.npz`` archive of the model's arrays with a JSON header that records

* ``method`` (what reads it) and ``format_version``; the package version that wrote it;
* ``config``: what rebuilds the model (architecture, stride, atom selection ...);
* ``metadata``: what it was trained on - elements, masses (amu), temperature (K), the system and reference
  potential, normalisation, and provenance (every command that trained it and its wall time);
* ``units``: the units of every array (OpenMM's: nm, ps, amu, kJ/mol).

Loading needs no pickle, and :func:`check_system` refuses a model made for other atoms by name. The system a
model was made for is its ``metadata``'s ``recipe`` (:class:`openmm_accel.molecular.Recipe`; files written
before recipes existed name it by ``system``, ``reference`` and ``member``: :func:`recipe_of` reads both) and
:func:`check_recipe` refuses a system with another one.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from openmm import unit

from .._version import __version__
from ..molecular import MM_MODEL, Recipe
from ..systems import canonical_source, check_name
from ..storage import read_archive, save_archive
from ..validation import as_array, closest_name, fail

FORMAT = "openmm_accel.model"
FORMAT_VERSION = 2  # 1 was FlashMD's torch.save files, no longer read
UNITS = {"length": "nm", "time": "ps", "mass": "amu", "energy": "kJ/mol", "temperature": "K"}
PACKAGE_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


class ShippedModels:
    """The model files a method ships in ``openmm_accel/data/<method>/`` (by name: the file name without its
    extension) and the one a run uses when the user names none: ``defaults`` maps what chooses it (the
    ``--system``, or a tuple such as ``(--system, --model)``) to a shipped model's name. The one registry of
    shipped models of every method."""

    def __init__(self, method: str, defaults: Dict, extension: str = ".npz"):
        self.method, self.defaults, self.extension = method, defaults, extension
        self.directory = os.path.join(PACKAGE_DATA, method)

    def __call__(self) -> Dict[str, str]:
        """Paths of the shipped models, by name."""
        if not os.path.isdir(self.directory):
            return {}
        return {name[:-len(self.extension)]: os.path.join(self.directory, name)
                for name in sorted(os.listdir(self.directory)) if name.endswith(self.extension)}

    def find(self, given: str) -> str:
        """The file a user named: a path, or a shipped model's name (a near miss gets "did you mean")."""
        models = self()
        if given in models and not os.path.exists(given):
            return models[given]
        if os.path.exists(given) or os.sep in given or given.endswith(self.extension):
            return given  # a path: loading it reports a missing file
        raise closest_name(given, models, f"{self.method}_model", f"shipped {self.method} model (or missing file)")

    def resolve(self, given: Optional[str], *chosen_by: str) -> str:
        """The model file: ``given`` as a path or shipped name, else the shipped default for ``chosen_by``
        (the ``--system``, and the ``--model`` for a method whose defaults depend on it)."""
        if given:
            return self.find(given)
        models = self()
        key = chosen_by[0] if len(chosen_by) == 1 else tuple(chosen_by)
        if self.defaults.get(key) in models:
            return models[self.defaults[key]]
        shipped_for = ", ".join(" with --model ".join(k) if isinstance(k, tuple) else k for k in self.defaults)
        wanted = " with --model ".join(chosen_by)
        raise fail(f"{self.method}_model", f"a {self.method} model file (models are shipped for --system "
                   f"{shipped_for}; make one for {wanted} with 'openmm-accel train {self.method}')", None)

    def pick(self, given: Optional[str], system: Optional[str], default_system: str, load) -> tuple:
        """``(path, model)`` of the model a job uses: ``given`` (a path or shipped name), else the one shipped
        for ``system`` (None: ``default_system``), read with the method's ``load(path, argument)``. An unknown
        ``system`` is refused by name, and so is a model made for another system than the one named."""
        argument = f"{self.method}_model"
        if system:
            check_name(system)
        path = self.resolve(given, system or default_system)
        model = load(path, argument)
        check_source(model.metadata, system, path, f"{self.method} model", argument)
        return path, model

    def system_of(self, given: Optional[str], default_system: str) -> str:
        """The system a job uses when ``--system`` is not given: the one a named model file was made for (its
        recipe's source: a file's path, say), else the method's ``default_system``."""
        path = self.find(given) if given else None
        if path is not None and os.path.isfile(path):
            header = read_archive(path, FORMAT, FORMAT_VERSION, f"{self.method}_model", f"{self.method} model")[0]
            made_for = recipe_of(header.get("metadata", {}))
            if made_for is not None:
                return made_for.source
        return default_system


def save_model(path: str, method: str, arrays: Dict[str, np.ndarray], config: dict, metadata: dict) -> None:
    """Write a model file atomically (``config`` and ``metadata`` must be JSON)."""
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": method, "package_version": __version__,
              "units": UNITS, "config": config, "metadata": metadata}
    save_archive(path, header, {name: np.asarray(value) for name, value in arrays.items()})


def read_model(path: str, method: str, what: str, argument: str = "path") -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(header, arrays)`` of a model file of ``method`` (``what`` names it in errors); a missing, damaged,
    foreign or newer file, or one of another method, is refused naming ``argument``."""
    header, arrays = read_archive(path, FORMAT, FORMAT_VERSION, argument, what)
    if header.get("method") != method:
        raise fail(argument, f"a {what}", f"{path}, a {header.get('method')} model file")
    return header, arrays


def check_system(metadata: dict, atomic_numbers: Sequence[int], masses, path: str, what: str,
                 argument: str = "path") -> None:
    """Refuse a model whose ``metadata`` name other elements or masses than the System's."""
    elements = metadata.get("elements")
    if elements is not None and [int(z) for z in elements] != [int(z) for z in atomic_numbers]:
        raise fail(argument, f"a {what} of the System's {len(atomic_numbers)} atoms and elements",
                   f"{path}, made for {len(elements)} atoms with other elements")
    trained = metadata.get("masses")
    masses = as_array(masses, unit.amu, "masses")
    if trained is not None and (np.shape(trained) != masses.shape or not np.allclose(trained, masses, rtol=1e-6)):
        raise fail(argument, f"a {what} trained with the System's masses (the same hydrogen mass repartitioning, "
                   "if any)", f"{path}, trained with other masses")


#: What each part of a recipe is, and the argument that chooses it (how a mismatch is reported).
RECIPE_PARTS = {"source": "system", "source_options": "system's options", "potential": "reference potential",
                "potential_options": "reference potential's options", "constraints": "constraints",
                "hydrogen_mass_amu": "hydrogen mass", "ml_atoms": "ML region"}
RECIPE_ARGUMENTS = {"source": "system", "source_options": "system", "potential": "model",
                    "potential_options": "member", "constraints": "constraints",
                    "hydrogen_mass_amu": "hydrogen_mass", "ml_atoms": "ml_atoms"}


def recipe_of(metadata: dict) -> Optional[Recipe]:
    """The recipe of the system a model was made for: ``metadata["recipe"]``, or what the keys of a file
    written before recipes existed say (``system``, the potential as ``reference`` or ``model``, ``member``,
    ``constraints``, ``hydrogen_mass_amu``, of the model or of the data it learned from); None if the file
    names no system."""
    if "recipe" in metadata:
        return Recipe.from_json(metadata["recipe"], "recipe")
    named = metadata.get("data", {}).get("settings") or metadata  # a learned method's data, or the model itself
    if not named.get("system"):
        return None
    return Recipe.of(named["system"], named.get("reference", named.get("model", MM_MODEL)), named.get("member"),
                     constraints=named.get("constraints") or "none", hydrogen_mass_amu=named.get("hydrogen_mass_amu"))


def check_source(metadata: dict, system: Optional[str], path: str, what: str, argument: str) -> None:
    """Refuse a model made from another system's data than ``system`` (None: not asked for), naming
    ``argument``."""
    made_for = recipe_of(metadata)
    if system and made_for is not None and canonical_source(made_for.source) != canonical_source(system):
        raise fail(argument, f"a {what} of --system {system}", f"{path}, made for {made_for.source}")


def check_recipe(made_for: Optional[Recipe], used_on: Recipe, what: str) -> None:
    """Refuse to use a model made for the system ``made_for`` on another (``used_on``): the error names the
    argument that chose the first differing part and what the model was made with."""
    if made_for is None:
        return
    for part in made_for.differences(used_on):
        made, used = made_for.physics()[part], used_on.physics()[part]
        raise fail(RECIPE_ARGUMENTS.get(part, part), f"the {RECIPE_PARTS.get(part, part)} the {what} was trained "
                   f"on ({made!r})", used)
