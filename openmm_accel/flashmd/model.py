"""The FlashMD model contract, an exact reference propagator, and ensembles for uncertainty.

A FlashMD model maps a batch of states one *stride* ahead:

* input: positions ``(B, N, 3)`` nm, momenta ``(B, N, 3)`` amu nm/ps;
* output: positions and momenta after ``stride`` ps (same shapes and units);
* ``box``: for periodic systems the box vectors ``(B, 3, 3)`` nm (rows a, b, c), else None.

* ``forces``: for models with ``force_inputs`` the reference forces at the input positions ``(B, N, 3)``
  kJ/mol/nm (the integrator has them at no extra model cost: the energy rescaling evaluates the reference
  potential at every new position anyway).

Models know their ``stride`` (ps), ``masses`` (amu) and ``atomic_numbers``, so an integrator can refuse
a model trained for another system or stride. ``rotation_equivariant`` tells the integrator whether
random rotations at inference are needed.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from openmm import unit
from torch import Tensor

from ..models.base import EnergyModel
from ..validation import as_array, fail


class FlashMDModel(torch.nn.Module):
    """Base class: ``forward(positions, momenta) -> (positions', momenta')`` over ``stride`` ps."""

    rotation_equivariant: bool = False
    # its stride map preserves phase-space volume and is reversible (Metropolis mode is then exact)
    volume_preserving: bool = False
    force_inputs: bool = False
    # training compares fit_prediction, made from both ends of a stride (no rollouts), not the map's own call
    fitted_on_midpoints: bool = False
    # whether the last call reached its result (an implicit map's solver may stop short)
    converged: bool = True

    def __init__(self, stride: float, masses: Sequence[float], atomic_numbers: Optional[Sequence[int]] = None):
        super().__init__()
        if not stride > 0:
            raise fail("stride", "a positive stride in ps", stride)
        self.stride = float(stride)
        self.register_buffer("masses", torch.as_tensor(np.asarray(masses, dtype=np.float64)))
        self.atomic_numbers = None if atomic_numbers is None else [int(z) for z in atomic_numbers]

    @property
    def n_atoms(self) -> int:
        return int(self.masses.shape[0])

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def call(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
             forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """``forward`` with only the arguments this model takes (models without force inputs, such as
        metatomic ones, are called as ``model(positions, momenta[, box])``)."""
        if self.force_inputs:
            if forces is None:
                raise fail("forces", "the reference forces at the input positions (the model takes them)", None)
            return self(positions, momenta, box, forces)
        return self(positions, momenta) if box is None else self(positions, momenta, box)

    def fit_prediction(self, positions: Tensor, momenta: Tensor, target_positions: Tensor, target_momenta: Tensor,
                       box: Optional[Tensor] = None, forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The prediction training compares with the targets: :meth:`call` (a model defined implicitly
        through both ends of a stride uses the targets to avoid its solver)."""
        return self.call(positions, momenta, box, forces)

    def predict(self, positions: np.ndarray, momenta: np.ndarray, box=None,
                forces=None) -> Tuple[np.ndarray, np.ndarray]:
        """NumPy convenience: one state ``(N, 3)`` (box ``(3, 3)``) or a batch ``(B, N, 3)``; float64 out.
        Positions and box in nm, momenta in amu nm/ps, forces in kJ/mol/nm (Quantities are converted)."""
        positions = as_array(positions, unit.nanometer, "positions")
        single = positions.ndim == 2
        batch = lambda a: torch.as_tensor(a[None] if single else a)  # noqa: E731
        x = batch(positions)
        p = batch(as_array(momenta, unit.amu * unit.nanometer / unit.picosecond, "momenta"))
        if x.shape != p.shape or x.shape[1:] != (self.n_atoms, 3):
            raise fail("positions/momenta", f"equal shapes ({self.n_atoms}, 3) or (B, {self.n_atoms}, 3)",
                       f"{tuple(x.shape)}, {tuple(p.shape)}")
        forces = None if forces is None else batch(as_array(forces, unit.kilojoule_per_mole / unit.nanometer,
                                                            "forces"))
        if box is not None:
            box = torch.as_tensor(as_array(box, unit.nanometer, "box")).expand(x.shape[0], 3, 3)
        with torch.no_grad():
            x_new, p_new = self.call(x, p, box, forces)
        x_new, p_new = x_new.double().numpy(), p_new.double().numpy()
        return (x_new[0], p_new[0]) if single else (x_new, p_new)


class VerletPropagator(FlashMDModel):
    """The exact "FlashMD model": velocity Verlet with a reference potential, ``substeps`` per stride.

    It is what a trained model approximates, the source of training pairs, and the reference in tests.
    With ``force_inputs`` it takes the forces at the input positions instead of evaluating them.
    """

    rotation_equivariant = True
    volume_preserving = True  # velocity Verlet: symplectic and time-reversible whatever the potential

    def __init__(self, potential: EnergyModel, masses: Sequence[float], stride: float, substeps: int,
                 force_inputs: bool = False):
        super().__init__(stride, masses, potential.atomic_numbers)
        self.force_inputs = bool(force_inputs)
        if potential.n_atoms != len(masses):
            raise fail("masses", f"{potential.n_atoms} masses (the potential's atoms)", len(masses))
        if int(substeps) < 1:
            raise fail("substeps", "a positive integer", substeps)
        self.potential = potential
        self.substeps = int(substeps)

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        h = self.stride / self.substeps
        m = self.masses[:, None]
        x, p = positions.double(), momenta.double()
        force = (forces.double() if self.force_inputs and forces is not None
                 else self.potential.energies_and_forces(x.to(self.potential.dtype), box)[1].double())
        for _ in range(self.substeps):
            p = p + 0.5 * h * force
            x = x + h * p / m
            force = self.potential.energies_and_forces(x.to(self.potential.dtype), box)[1].double()
            p = p + 0.5 * h * force
        return x, p


class FlashMDEnsemble(FlashMDModel):
    """Several FlashMD models of one system and stride: the mean prediction and its spread.

    The spread (RMS over atoms of the members' standard deviation of the mass-scaled displacement
    ``sqrt(m) dq``, in sqrt(amu) nm) flags predictions that leave the training distribution.
    """

    def __init__(self, members: Sequence[FlashMDModel]):
        members = list(members)
        if len(members) < 2:
            raise fail("members", "at least two FlashMD models", len(members))
        first = members[0]
        for member in members[1:]:
            if member.stride != first.stride or not torch.equal(member.masses, first.masses):
                raise fail("members", "models of the same stride and masses", "different strides or masses")
        super().__init__(first.stride, first.masses.numpy(), first.atomic_numbers)
        self.members = torch.nn.ModuleList(members)
        self.rotation_equivariant = all(m.rotation_equivariant for m in members)
        self.force_inputs = any(m.force_inputs for m in members)

    def forward_with_spread(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                            forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        outputs = [member.call(positions, momenta, box, forces) for member in self.members]
        xs = torch.stack([x.double() for x, _ in outputs])
        ps = torch.stack([p.double() for _, p in outputs])
        scaled = (xs - positions.double()) * self.masses.sqrt()[:, None]
        spread = scaled.std(dim=0).pow(2).sum(-1).mean(-1).sqrt()
        return xs.mean(0), ps.mean(0), spread

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        x, p, _ = self.forward_with_spread(positions, momenta, box, forces)
        return x, p
