"""A lab's own energy model from a TorchScript file: ``--model torchscript:PATH``.

The file is a ``torch.jit.save``-d module with the package's energy-model contract::

    forward(positions: Tensor, box: Optional[Tensor] = None) -> Tensor
    # positions (B, N, 3), box (B, 3, 3) or None; returns (B,) energies

in nm and kJ/mol unless the archive says otherwise in an extra file ``openmm_accel.json`` (``torch.jit.save(
module, path, _extra_files={"openmm_accel.json": json.dumps({...})})``) with any of ``"length"`` (``"nm"`` or
``"angstrom"``), ``"energy"`` (``"kJ/mol"``, ``"kcal/mol"``, ``"eV"`` or ``"hartree"``) and
``"atomic_numbers"`` (the elements it was made for, checked against the atoms it is put on). Forces come
from autograd. The recipe records the file's path and SHA-256.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..devices import CPU
from ..validation import fail
from .base import EnergyModel
from .registry import TORCHSCRIPT as PREFIX, atomic_numbers_of, checked_model_file

UNITS_FILE = "openmm_accel.json"
#: Model length units per nm, and kJ/mol per model energy unit.
LENGTHS = {"nm": 1.0, "angstrom": 10.0}
ENERGIES = {"kJ/mol": 1.0, "kcal/mol": 4.184, "eV": 96.48533212331002, "hartree": 2625.499638755248}


class ScriptedModel(EnergyModel):
    """A user's TorchScript module as an :class:`EnergyModel` (units converted at the boundary)."""

    def __init__(self, module: torch.jit.ScriptModule, atomic_numbers: Sequence[int], length_per_nm: float = 1.0,
                 kj_per_energy: float = 1.0, periodic: bool = False):
        super().__init__(len(atomic_numbers), atomic_numbers, periodic)
        self.module = module
        self.length_per_nm = float(length_per_nm)
        self.kj_per_energy = float(kj_per_energy)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        scaled_box: Optional[Tensor] = None
        if box is not None:
            scaled_box = box * self.length_per_nm
        energies = self.module(positions * self.length_per_nm, scaled_box)
        return energies * self.kj_per_energy


def create_scripted(path: str, topology, atoms: Optional[Sequence[int]] = None, sha256: Optional[str] = None,
                    periodic: bool = False) -> ScriptedModel:
    """The TorchScript energy model in ``path`` on the atoms ``atoms`` of ``topology`` (default: all);
    ``sha256``: the digest a recipe recorded (a changed file is refused)."""
    checked_model_file(PREFIX, path, sha256)
    extra = {UNITS_FILE: ""}
    try:
        module = torch.jit.load(path, map_location=CPU, _extra_files=extra)
    except Exception as error:
        raise fail("model", "a TorchScript file (torch.jit.save of a scripted module)",
                   f"{path} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    arguments = [argument.name for argument in module.forward.schema.arguments][1:]
    if len(arguments) != 2:
        raise fail("model", "a module whose forward takes (positions, box: Optional[Tensor] = None)",
                   f"{path}, whose forward takes ({', '.join(arguments)})")
    try:
        units = json.loads(extra[UNITS_FILE] or "{}")
        length, energy = LENGTHS[units.get("length", "nm")], ENERGIES[units.get("energy", "kJ/mol")]
    except (ValueError, KeyError, AttributeError) as error:
        raise fail("model", f"{UNITS_FILE} in the archive with length one of {', '.join(LENGTHS)} and energy one "
                   f"of {', '.join(ENERGIES)}", f"{path} ({error})") from None
    numbers = atomic_numbers_of(topology, atoms)
    made_for = units.get("atomic_numbers")
    if made_for is not None and [int(z) for z in made_for] != numbers:
        raise fail("model", f"a TorchScript model made for these {len(numbers)} atoms (its {UNITS_FILE} lists "
                   "their elements)", f"{path}, made for {len(made_for)} atoms of other elements or order")
    return ScriptedModel(module, numbers, length, energy, periodic)


__all__ = ["ENERGIES", "LENGTHS", "PREFIX", "ScriptedModel", "UNITS_FILE", "create_scripted"]
