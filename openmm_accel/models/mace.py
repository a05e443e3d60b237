"""A MACE potential from a local model file: ``--model mace:PATH`` (optional extra: ``pip install
'openmm_accel[mace]'``, which brings mace-torch).

The file is what mace-torch writes (``torch.save`` of the whole model, e.g. ``run.model`` after ``mace_run_train``
or a foundation model saved to disk). It is a pickle: loading it runs code from it, so use files you trust,
as with ``torch.load``. MACE works in angstrom and eV; positions are converted from nm and energies to kJ/mol.
Each configuration is one graph whose edges are every pair of the model's atoms closer than its cutoff
``r_max`` (the nearest periodic image when there is a box, which must then be wider than twice the cutoff).
The model is compiled for TorchScript with e3nn's own compiler, so it serves ``backend="torchforce"`` as well as
PythonForce. The recipe records the file's path and SHA-256.

mace-torch 0.3.16 pins e3nn 0.4.4, which reads its constants with ``torch.load`` in a way torch >= 2.6
refuses by default (``weights_only``): ``slice`` is allowed as a safe global before e3nn is imported.
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from ..devices import CPU
from ..validation import fail
from .base import EnergyModel
from .registry import MACE, atomic_numbers_of, checked_model_file

#: kJ/mol per eV, and angstrom per nm.
KJ_PER_EV = 96.48533212331002
ANGSTROM_PER_NM = 10.0


def _import_mace():
    torch.serialization.add_safe_globals([slice])  # e3nn 0.4.4's constants (see the module)
    try:
        import mace.modules
        from e3nn.util import jit
        del mace  # imported for its classes, which the model file's pickle names
    except ImportError:
        raise fail("model", "mace-torch installed for a 'mace:' model (pip install 'openmm_accel[mace]')",
                   "no mace package") from None
    return jit


class MaceModel(EnergyModel):
    """A mace-torch model as an :class:`EnergyModel` on fixed atoms (units converted at the boundary)."""

    def __init__(self, module, atomic_numbers: Sequence[int], periodic: bool = False):
        super().__init__(len(atomic_numbers), atomic_numbers, periodic)
        table = [int(z) for z in module.atomic_numbers.tolist()]
        self.module = module
        self.angstrom_per_nm, self.kj_per_ev = ANGSTROM_PER_NM, KJ_PER_EV  # TorchScript reads no module globals
        self.cutoff = float(module.r_max) / ANGSTROM_PER_NM  # nm
        one_hot = torch.zeros(len(atomic_numbers), len(table), dtype=torch.float64)
        one_hot[torch.arange(len(atomic_numbers)), torch.tensor([table.index(z) for z in atomic_numbers])] = 1.0
        self.register_buffer("node_attrs", one_hot)
        first, second = torch.meshgrid(torch.arange(self.n_atoms), torch.arange(self.n_atoms), indexing="ij")
        distinct = first != second
        self.register_buffer("pairs", torch.stack([first[distinct], second[distinct]]))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        batch, n = positions.shape[0], self.n_atoms
        x = positions.to(self.node_attrs.dtype)
        i, j = self.pairs[0], self.pairs[1]
        vectors = x[:, j] - x[:, i]  # (B, P, 3) nm
        unit_shifts = torch.zeros_like(vectors)
        cells = torch.zeros(batch, 3, 3, dtype=x.dtype, device=x.device)
        if box is not None:
            cells = box.to(x.dtype)
            fractional = torch.linalg.solve(cells.transpose(1, 2), vectors.transpose(1, 2)).transpose(1, 2)
            unit_shifts = -torch.round(fractional)
            vectors = vectors + unit_shifts @ cells
        near = torch.linalg.vector_norm(vectors, dim=-1) < self.cutoff  # (B, P)
        found = near.nonzero()
        graph, pair = found[:, 0], found[:, 1]
        offset = graph * n
        edge_index = torch.stack([i[pair] + offset, j[pair] + offset])
        shifts = (unit_shifts @ cells)[graph, pair] * self.angstrom_per_nm
        data: Dict[str, Tensor] = {
            "positions": x.reshape(-1, 3) * self.angstrom_per_nm,
            "node_attrs": self.node_attrs.repeat(batch, 1),
            "edge_index": edge_index, "shifts": shifts, "unit_shifts": unit_shifts[graph, pair],
            "cell": cells.reshape(-1, 3) * self.angstrom_per_nm,
            "batch": torch.arange(batch, device=x.device).repeat_interleave(n),
            "ptr": torch.arange(batch + 1, device=x.device) * n,
            "head": torch.zeros(batch, dtype=torch.long, device=x.device)}
        energy = self.module(data, training=False, compute_force=False)["energy"]
        assert energy is not None
        return energy.to(positions.dtype) * self.kj_per_ev


def create_mace(path: str, topology, atoms: Optional[Sequence[int]] = None, sha256: Optional[str] = None,
                periodic: bool = False) -> MaceModel:
    """The MACE model in ``path`` on the atoms ``atoms`` of ``topology`` (default: all), in float64; ``sha256``:
    the digest a recipe recorded (a changed file is refused); an element the model lacks is refused by name."""
    checked_model_file(MACE, path, sha256)
    jit = _import_mace()
    try:
        module = torch.load(path, map_location=CPU, weights_only=False)
        table = [int(z) for z in module.atomic_numbers.tolist()]
        float(module.r_max)
    except Exception as error:
        raise fail("model", "a MACE model file (torch.save of a mace-torch model)",
                   f"{path} ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None
    numbers = atomic_numbers_of(topology, atoms)
    missing = sorted(set(numbers) - set(table))
    if missing:
        from openmm.app import element
        names = ", ".join(element.Element.getByAtomicNumber(z).symbol for z in missing)
        raise fail("model", f"a MACE model for every element of its atoms (this one knows "
                   f"{', '.join(element.Element.getByAtomicNumber(z).symbol for z in table)})",
                   f"{path}, without {names}")
    with warnings.catch_warnings():  # one per e3nn block, about annotations TorchScript handles anyway
        warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support")
        module = jit.compile(module.double().eval())
    return MaceModel(module, numbers, periodic)


__all__ = ["MaceModel", "create_mace"]
