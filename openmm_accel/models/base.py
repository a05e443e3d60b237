"""The one energy-model contract shared by every learned and classical model in ``openmm_accel``.

An energy model is a :class:`torch.nn.Module` that maps a *batch* of configurations to energies:

* ``positions``: tensor ``(B, N, 3)`` in nm;
* ``box`` (optional): tensor ``(B, 3, 3)`` of periodic box vectors in nm (rows are vectors), or ``None``;
* returns: tensor ``(B,)`` of potential energies in kJ/mol.

Forces (kJ/mol/nm) come from autograd, ``F = -dE/dx``, unless a model overrides
:meth:`EnergyModel.energies_and_forces`. Batching is part of the contract, not an option: speculative
verification scores many drafted configurations in one call and training needs minibatches.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from openmm import unit
from torch import Tensor

from ..progress import progress_bar
from ..devices import CPU
from ..validation import SimulationError, as_array, fail


class EnergyModel(torch.nn.Module):
    """Base class of batched energy models (see the module docstring for the contract).

    Parameters
    ----------
    n_atoms : int
        Number of atoms the model describes.
    atomic_numbers : sequence of int, optional
        Elements of the atoms, when the model depends on them (``None`` for analytic potentials).
    periodic : bool
        Whether the model needs box vectors.
    """

    #: Set to True by models whose ``energies_and_forces`` is cheaper than autograd and TorchScript-able.
    provides_forces: bool = False
    #: Set by :func:`~openmm_accel.models.create`: the indices of the model's atoms in the Topology it was
    #: created for (None: all of them, in order); ``to_openmm_force`` uses and checks them.
    region: Optional[list] = None
    __jit_ignored_attributes__ = ["region"]

    def __init__(self, n_atoms: int, atomic_numbers: Optional[Sequence[int]] = None, periodic: bool = False):
        super().__init__()
        self.n_atoms = int(n_atoms)
        self.periodic = bool(periodic)
        self.atomic_numbers = None if atomic_numbers is None else [int(z) for z in atomic_numbers]
        if self.atomic_numbers is not None and len(self.atomic_numbers) != self.n_atoms:
            raise fail("atomic_numbers", f"{self.n_atoms} entries", len(self.atomic_numbers))

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def check_batch(self, positions: Tensor) -> None:
        """Raise a clear error unless ``positions`` is a non-empty batch ``(B, n_atoms, 3)`` (call it first in
        ``forward``: the contract is batched, and a single ``(N, 3)`` configuration would otherwise fail
        deep inside the model, or silently be read as N configurations)."""
        if positions.dim() != 3 or positions.shape[1] != self.n_atoms or positions.shape[2] != 3:
            raise ValueError("positions: expected a batch of shape (B, " + str(self.n_atoms) + ", 3) in nm, got "
                             "shape " + str(list(positions.shape)) + " (add a batch axis: positions[None])")
        if positions.shape[0] == 0:
            raise ValueError("positions: expected at least one configuration, got an empty batch")

    @torch.jit.unused
    def energies_and_forces(self, positions: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Energies ``(B,)`` in kJ/mol and forces ``(B, N, 3)`` in kJ/mol/nm (by autograd)."""
        with torch.enable_grad():
            positions = positions.detach().requires_grad_(True)
            energies = self(positions, box)
            (gradient,) = torch.autograd.grad(energies.sum(), positions)
        return energies.detach(), -gradient

    @torch.jit.unused
    def evaluate(self, positions, box=None) -> Tuple[np.ndarray, np.ndarray]:
        """Validate and evaluate NumPy input: ``(N, 3)`` or ``(B, N, 3)`` nm -> energies, forces (float64).

        Positions and box may be ``openmm.unit`` quantities (converted to nm); plain numbers are in nm. This
        is the convenient entry point for scripts; hot paths call the module directly with tensors.
        """
        array = as_array(positions, unit.nanometer, "positions")
        given = array.shape
        single = array.ndim == 2
        if single:
            array = array[None]
        if array.ndim != 3 or array.shape[1:] != (self.n_atoms, 3):
            raise fail("positions", f"shape (B, {self.n_atoms}, 3) or ({self.n_atoms}, 3) in nm", f"shape {given}")
        if len(array) == 0:
            raise fail("positions", "at least one configuration", "an empty batch (0, ...)")
        if not np.all(np.isfinite(array)):
            raise fail("positions", "finite coordinates", "NaN or infinite values")
        dtype = self.dtype
        tensor = torch.as_tensor(array, dtype=dtype, device=self.device)
        box_tensor = None
        if box is not None:
            box_array = as_array(box, unit.nanometer, "box")
            if box_array.shape not in ((3, 3), (1, 3, 3), (len(array), 3, 3)):
                raise fail("box", f"box vectors of shape (3, 3) or ({len(array)}, 3, 3) in nm",
                           f"shape {box_array.shape}")
            box_array = box_array.reshape(-1, 3, 3)
            box_tensor = torch.as_tensor(box_array, dtype=dtype, device=self.device).expand(len(array), 3, 3)
        elif self.periodic:
            raise fail("box", "periodic box vectors for a periodic model", None)
        energies, forces = self.energies_and_forces(tensor, box_tensor)
        energies = energies.detach().cpu().double().numpy()
        forces = forces.detach().cpu().double().numpy()
        return (energies[0], forces[0]) if single else (energies, forces)

    @property
    @torch.jit.unused
    def dtype(self) -> torch.dtype:
        """Floating-point type the model computes in (of its first parameter or buffer; float64 if none)."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float64

    @property
    @torch.jit.unused
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device(CPU)

    __jit_unused_properties__ = ["dtype", "device"]


class ComputedEnergies(torch.autograd.Function):
    """Energies a model computes outside torch (``model.compute(positions, box)`` in NumPy, float64, returning
    energies and forces) as an autograd function: the forces are the gradient in backward."""

    @staticmethod
    def forward(ctx, positions: Tensor, box: Optional[Tensor], model: EnergyModel):
        energies, forces = model.compute(positions.detach().cpu().double().numpy(),
                                         None if box is None else box.detach().cpu().double().numpy())
        ctx.save_for_backward(torch.as_tensor(forces, dtype=positions.dtype, device=positions.device))
        return torch.as_tensor(energies, dtype=torch.float64, device=positions.device)

    @staticmethod
    def backward(ctx, grad_energies):
        (forces,) = ctx.saved_tensors
        return -forces * grad_energies.to(forces.dtype)[:, None, None], None, None


def label_forces(model: EnergyModel, positions, box=None, batch: int = 64, progress: bool = False,
                 role: str = "reference") -> np.ndarray:
    """Forces (kJ/mol/nm, float64) of ``model`` at configurations ``(M, N, 3)`` nm, in batches of ``batch``
    (a tqdm bar if ``progress``): the one way learned methods label their data. ``box``: ``(3, 3)`` or
    ``(M, 3, 3)`` nm for a periodic model; Quantities are converted. A non-finite force raises
    :class:`~openmm_accel.validation.SimulationError` naming the configuration."""
    frames = as_array(positions, unit.nanometer, "positions")
    if frames.ndim != 3 or frames.shape[1:] != (model.n_atoms, 3):
        raise fail("positions", f"configurations of shape (M, {model.n_atoms}, 3) in nm", f"shape {frames.shape}")
    boxes = None if box is None else np.broadcast_to(as_array(box, unit.nanometer, "box"), (len(frames), 3, 3))
    out = np.empty_like(frames)
    for start in progress_bar(range(0, len(frames), batch), progress, desc=f"{role} forces", unit="batch"):
        chunk = torch.as_tensor(frames[start:start + batch], dtype=model.dtype, device=model.device)
        cell = None if boxes is None else torch.as_tensor(np.array(boxes[start:start + batch]),  # a writable copy
                                                          dtype=model.dtype, device=model.device)
        out[start:start + len(chunk)] = model.energies_and_forces(chunk, cell)[1].detach().double().cpu().numpy()
    bad = np.flatnonzero(~np.all(np.isfinite(out), axis=(1, 2)))
    if len(bad):
        raise SimulationError(f"the {role} model returned non-finite forces at configuration {bad[0]} of "
                              f"{len(frames)}")
    return out
