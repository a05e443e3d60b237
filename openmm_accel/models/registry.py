"""Name-keyed front end over the model factories registered as ``openmm_accel.models`` entry points.

A factory is ``factory(topology, **options) -> EnergyModel``. Third-party packages add models by
declaring an entry point in that group; nothing in this package needs to change.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import List, Optional, Sequence

from ..registry import load, registered
from ..storage import file_sha256
from ..validation import closest_name, fail

ENTRY_POINT_GROUP = "openmm_accel.models"
#: The prefix of a lab's own TorchScript model file as a model name (:mod:`.scripted`).
TORCHSCRIPT = "torchscript:"
#: The prefix of a MACE model file (:mod:`.mace`, mace-torch's format).
MACE = "mace:"
#: Prefixes of model files as model names, with the module and factory that read them.
FILE_MODELS = {TORCHSCRIPT: ("openmm_accel.models.scripted", "create_scripted", "TorchScript"),
               MACE: ("openmm_accel.models.mace", "create_mace", "MACE")}


def checked_model_file(prefix: str, path: str, sha256: Optional[str] = None, argument: str = "model") -> str:
    """``path`` of a model file named with ``prefix``, refused (naming ``argument``) if it does not exist or,
    given the ``sha256`` a recipe recorded, if it changed since."""
    kind = FILE_MODELS[prefix][2]
    if not isinstance(path, str) or not os.path.isfile(path):
        raise fail(argument, f"an existing {kind} file after '{prefix}'", path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise fail(argument, f"the {kind} file this recipe was made with, unchanged (SHA-256 {sha256[:12]}...)",
                   f"{path}, which changed")
    return path


def model_file(name) -> Optional[tuple]:
    """(prefix, path) of a model file named as a model (``"torchscript:PATH"``, ``"mace:PATH"``), else None."""
    if isinstance(name, str):
        for prefix in FILE_MODELS:
            if name.startswith(prefix):
                return prefix, name[len(prefix):]
    return None


def available() -> List[str]:
    """Names accepted by :func:`create`."""
    return sorted(registered(ENTRY_POINT_GROUP))


def create(name: str, topology=None, **options):
    """Build the registered energy model ``name`` for ``topology``.

    Parameters
    ----------
    name : str
        A registered model name, e.g. ``"ani1x"``, ``"amber14"``, ``"harmonic"`` (see :func:`available`), or
        ``"torchscript:PATH"``: a TorchScript file with the energy-model contract (:mod:`.scripted`), or
        ``"mace:PATH"``: a MACE model file (:mod:`.mace`).
    topology : openmm.app.Topology
        The atoms the model describes (``atoms=[...]`` in ``options`` selects a subset: an ML region).
    **options
        Model-specific options; misspelled or unknown ones raise :class:`InputError`.

    Examples
    --------
    >>> ensemble = create("ani1x", topology)            # doctest: +SKIP
    >>> draft = create("ani1x", topology, member=0)     # doctest: +SKIP
    """
    if model_file(name):  # a lab's own model file
        prefix, path = model_file(name)
        module, function, _ = FILE_MODELS[prefix]
        factory = functools.partial(getattr(importlib.import_module(module), function), path)
    else:
        factory = load(ENTRY_POINT_GROUP, name, "name", "model")
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        known = [p for p in parameters if p != "topology"]
        for option in options:
            if option not in known:
                raise closest_name(option, known, f"create({name!r}, ...)", "option")
    model = factory(topology, **options)
    if options.get("atoms") is not None:
        model.region = [int(i) for i in options["atoms"]]
    return model


def atomic_numbers_of(topology, atoms: Optional[Sequence[int]] = None) -> List[int]:
    """Atomic numbers of ``topology`` (or of the atoms with indices ``atoms``), checking every atom."""
    if topology is None:
        raise fail("topology", "an openmm.app.Topology", None)
    every = list(topology.atoms())
    if atoms is None:
        selected = every
    else:
        indices = [int(i) for i in atoms]
        bad = [i for i in indices if not 0 <= i < len(every)]
        if bad:
            raise fail("atoms", f"indices in 0..{len(every) - 1}", bad[:5])
        if len(set(indices)) != len(indices):
            raise fail("atoms", "distinct atom indices", "repeated indices")
        selected = [every[i] for i in indices]
    if not selected:
        raise fail("atoms" if atoms is not None else "topology", "at least one atom",
                   "an empty selection" if atoms is not None else "a Topology without atoms")
    missing = [a.index for a in selected if a.element is None]
    if missing:
        raise fail("topology", "an element for every atom", f"no element on atoms {missing[:5]}")
    return [a.element.atomic_number for a in selected]
