"""Analytic potentials with known answers, for tests, examples and toy speculative runs.

Both act independently on every particle, so one System of N particles is N independent replicas:
cheap, sharp statistics for integrator tests.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..validation import positive
from openmm import unit
from .base import EnergyModel

_ENERGY_PER_AREA = unit.kilojoule_per_mole / unit.nanometer**2


class HarmonicModel(EnergyModel):
    """``U = sum_i k/2 |x_i|^2`` with spring constant ``k`` (kJ/mol/nm^2)."""

    def __init__(self, n_atoms: int, k=1000.0):
        super().__init__(n_atoms)
        self.k = positive(k, _ENERGY_PER_AREA, "k")
        self.register_buffer("_dtype_anchor", torch.zeros((), dtype=torch.float64))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        return 0.5 * self.k * (positions.to(self._dtype_anchor.dtype) ** 2).sum(dim=(1, 2))

    def openmm_expression(self) -> str:
        """The same potential as a ``CustomExternalForce`` energy expression."""
        return f"0.5*{self.k!r}*(x^2+y^2+z^2)"


class DoubleWellModel(EnergyModel):
    """``U = sum_i barrier ((x_i/a)^2 - 1)^2 + k_perp/2 (y_i^2 + z_i^2)``: minima at ``x = +-a``.

    ``barrier`` in kJ/mol, ``a`` in nm, ``k_perp`` in kJ/mol/nm^2.
    """

    def __init__(self, n_atoms: int, barrier=5.0, a=0.1, k_perp=1000.0):
        super().__init__(n_atoms)
        self.barrier = positive(barrier, unit.kilojoule_per_mole, "barrier")
        self.a = positive(a, unit.nanometer, "a")
        self.k_perp = positive(k_perp, _ENERGY_PER_AREA, "k_perp")
        self.register_buffer("_dtype_anchor", torch.zeros((), dtype=torch.float64))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        x = positions.to(self._dtype_anchor.dtype)
        well = self.barrier * ((x[..., 0] / self.a) ** 2 - 1.0) ** 2
        return (well + 0.5 * self.k_perp * (x[..., 1] ** 2 + x[..., 2] ** 2)).sum(dim=1)

    def openmm_expression(self) -> str:
        """The same potential as a ``CustomExternalForce`` energy expression."""
        return f"{self.barrier!r}*((x/{self.a!r})^2-1)^2+0.5*{self.k_perp!r}*(y^2+z^2)"


def create_harmonic(topology, k=1000.0) -> HarmonicModel:
    """Registered factory ``"harmonic"``: independent 3-D oscillators, one per atom, centred at the origin."""
    return HarmonicModel(topology.getNumAtoms(), k)


def create_double_well(topology, barrier=5.0, a=0.1, k_perp=1000.0) -> DoubleWellModel:
    """Registered factory ``"double_well"``: an independent double well along x for every atom."""
    return DoubleWellModel(topology.getNumAtoms(), barrier, a, k_perp)
