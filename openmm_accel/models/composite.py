"""Sums of energy models on subsets of atoms (e.g. MM on everything plus ML on a solute).

Speculative dynamics looks inside a :class:`ModelSum`: terms that the draft and the target share (the
same model object on the same atoms) are evaluated once, in the draft, and the verifier evaluates only
the target's own terms. With a mechanical-embedding target (MM + ML on the solute) and a draft that
shares the MM part, only the solute's forces differ, whatever the size of the water box.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..validation import fail
from .base import EnergyModel

Term = Tuple[EnergyModel, Optional[Tuple[int, ...]]]


def as_terms(model: EnergyModel) -> List[Term]:
    """The terms of a model: its own for a :class:`ModelSum`, else the model on all atoms."""
    return list(model.terms) if isinstance(model, ModelSum) else [(model, None)]


class ModelSum(EnergyModel):
    """``E(x) = sum_t E_t(x[atoms_t])`` over terms ``(model, atoms)``; ``atoms=None`` means all atoms."""

    def __init__(self, n_atoms: int, terms: Sequence[Tuple[EnergyModel, Optional[Sequence[int]]]]):
        super().__init__(n_atoms, periodic=any(model.periodic for model, _ in terms))
        if not terms:
            raise fail("terms", "at least one (model, atoms) term", "none")
        self.terms: List[Term] = []
        for model, atoms in terms:
            atoms = None if atoms is None else tuple(int(i) for i in atoms)
            expected = n_atoms if atoms is None else len(atoms)
            if model.n_atoms != expected:
                raise fail("terms", f"a model of {expected} atoms for its atom list", f"{model.n_atoms} atoms")
            if atoms is not None and (min(atoms) < 0 or max(atoms) >= n_atoms):
                raise fail("terms", f"atom indices in 0..{n_atoms - 1}", f"{min(atoms)}..{max(atoms)}")
            self.terms.append((model, atoms))
        self.models = torch.nn.ModuleList([model for model, _ in self.terms])

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        total = None
        for model, atoms in self.terms:
            selected = positions if atoms is None else positions[:, list(atoms)]
            energies = model(selected, box if model.periodic else None)
            total = energies if total is None else total + energies.to(total.dtype)
        return total

    def energies_and_forces(self, positions: Tensor, box: Optional[Tensor] = None):
        energies = torch.zeros(positions.shape[0], dtype=torch.float64)
        forces = torch.zeros(positions.shape, dtype=torch.float64)
        for model, atoms in self.terms:
            selected = positions if atoms is None else positions[:, list(atoms)]
            e, f = model.energies_and_forces(selected.to(model.dtype), box if model.periodic else None)
            energies += e.detach().cpu().double()
            if atoms is None:
                forces += f.detach().cpu().double()
            else:
                forces[:, list(atoms)] += f.detach().cpu().double()
        return energies, forces

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64


def split_shared(draft: EnergyModel, target: EnergyModel):
    """``(shared, draft_only, target_only)`` term lists: shared terms are the same object on the same atoms."""
    draft_terms, target_terms = as_terms(draft), as_terms(target)
    shared = [t for t in draft_terms if any(t[0] is u[0] and t[1] == u[1] for u in target_terms)]
    draft_only = [t for t in draft_terms if t not in shared]
    target_only = [t for t in target_terms if not any(t[0] is u[0] and t[1] == u[1] for u in shared)]
    return shared, draft_only, target_only


def sum_of(n_atoms: int, terms: List[Term]) -> Optional[EnergyModel]:
    """A model for a term list: None if empty, the model itself for one all-atom term, else a ModelSum."""
    if not terms:
        return None
    if len(terms) == 1 and terms[0][1] is None:
        return terms[0][0]
    return ModelSum(n_atoms, terms)

