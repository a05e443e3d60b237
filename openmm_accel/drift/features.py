"""The two spaces drifting works in (docs/drift.md), each carrying the Boltzmann score ``F / kT`` of the data:

* **coordinates**: every frame centred and rotated onto one reference structure (Kabsch), forces rotated
  with it, flattened and divided by one scale. A generator then produces molecules in that frame; rotations
  need no network symmetry because the data no longer contain them.
* **distances**: all interatomic distances divided by one scale, invariant to rotations and translations.
  They are blind to reflections too: a generator trained only on them could turn a chiral molecule into its
  mirror image, which the validity check (docs/drift.md) has to catch. The score in distance space is the
  minimal-norm ``s_d`` whose pull-back ``J^T s_d`` is the Cartesian score (``J = dd/dx``): exact for every
  change of the distances the atoms can make (``s_d . dd = s_x . dx``), and blind to the volume factor of the
  change of variables (the metric correction).

Positions in nm, forces in kJ/mol/nm, ``kT`` in kJ/mol; features and scores are dimensionless.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..validation import fail


def kabsch_rotations(mobile: Tensor, reference: Tensor) -> Tensor:
    """Proper rotations ``R`` (B, 3, 3) minimising ``|mobile_b R - reference|`` for centred ``mobile`` (B, N, 3)
    and centred ``reference`` (N, 3) (row vectors: rotated = mobile @ R)."""
    covariance = mobile.transpose(1, 2) @ reference                      # (B, 3, 3)
    u, _, vh = torch.linalg.svd(covariance)
    sign = torch.sign(torch.linalg.det(u @ vh))                          # no reflections
    flip = torch.ones_like(covariance[:, 0])
    flip[:, 2] = sign
    return (u * flip[:, None, :]) @ vh


def centred(positions: Tensor) -> Tensor:
    return positions - positions.mean(dim=-2, keepdim=True)


def align(positions: Tensor, forces: Tensor, iterations: int = 3) -> Tuple[Tensor, Tensor, Tensor]:
    """Frames ``(B, N, 3)`` and their forces rotated onto a common reference: the mean structure of the
    aligned frames, refined ``iterations`` times from the first frame. Returns (positions, forces, reference)."""
    if positions.ndim != 3 or positions.shape[-1] != 3 or forces.shape != positions.shape:
        raise fail("positions", "frames (B, N, 3) with forces of the same shape",
                   f"{tuple(positions.shape)} and {tuple(forces.shape)}")
    x = centred(positions)
    reference = x[0]
    for _ in range(iterations):
        rotations = kabsch_rotations(x, reference)
        reference = centred((x @ rotations).mean(0, keepdim=True))[0]
    rotations = kabsch_rotations(x, reference)
    return x @ rotations, forces @ rotations, reference


def pairs(atoms: int) -> Tensor:
    """``(P, 2)``: every pair i < j."""
    return torch.triu_indices(atoms, atoms, offset=1).T


def distances(positions: Tensor, pair_index: Tensor) -> Tensor:
    """``(B, P)`` distances of ``pair_index`` pairs of ``(B, N, 3)`` positions."""
    return (positions[:, pair_index[:, 0]] - positions[:, pair_index[:, 1]]).norm(dim=-1)


def length_jacobian(positions: Tensor, pair_index: Tensor) -> Tensor:
    """``(B, P, 3N)``: the gradients of the ``pair_index`` distances of ``(B, N, 3)`` positions (each row the
    unit vector of its pair, with opposite signs on its two atoms)."""
    batch, atoms = positions.shape[:2]
    vectors = positions[:, pair_index[:, 0]] - positions[:, pair_index[:, 1]]
    units = vectors / vectors.norm(dim=-1, keepdim=True)                 # (B, P, 3)
    jacobian = positions.new_zeros(batch, len(pair_index), atoms, 3)
    rows = torch.arange(len(pair_index))
    jacobian[:, rows, pair_index[:, 0]] = units
    jacobian[:, rows, pair_index[:, 1]] = -units
    return jacobian.reshape(batch, len(pair_index), 3 * atoms)


def distance_scores(positions: Tensor, scores: Tensor, pair_index: Tensor) -> Tensor:
    """The minimal-norm distance-space score ``s_d`` (B, P) with ``J^T s_d = s_x`` (Cartesian scores ``s_x``
    (B, N, 3)); ``J`` has rank 3N - 6, so the equation holds exactly for scores without net force or torque."""
    transposed = length_jacobian(positions, pair_index).transpose(1, 2)  # (B, 3N, P)
    solution = torch.linalg.pinv(transposed, hermitian=False) @ scores.reshape(len(positions), -1, 1)
    return solution[..., 0]


def signed_volumes(positions: Tensor, quadruples: Tensor) -> Tensor:
    """``(B, Q)`` signed volumes ``(b - a) . ((c - a) x (d - a))`` of atom quadruples ``(a, b, c, d)``: their
    sign is the handedness of a chiral centre ``a`` with neighbours ``b, c, d``, which every distance is blind to."""
    a, b, c, d = (positions[:, quadruples[:, k]] for k in range(4))
    return ((b - a) * torch.linalg.cross(c - a, d - a)).sum(-1)


def tangent_projector(positions: Tensor, pairs: Tensor) -> Tensor:
    """``(B, 3N, 3N)``: the Euclidean projection ``I - J^+ J`` onto the directions that keep the lengths of the
    atom pairs ``pairs`` ``(K, 2)`` (``J``: their :func:`length_jacobian`; the pseudo-inverse allows redundant
    pairs, e.g. every 1-3 pair of a tetrahedral centre)."""
    jacobian = length_jacobian(positions, pairs)
    eye = torch.eye(jacobian.shape[-1], dtype=positions.dtype, device=positions.device)
    return eye - torch.linalg.pinv(jacobian) @ jacobian


def tangent_forces(positions: Tensor, forces: Tensor, bonds: Tensor) -> Tensor:
    """Forces ``(B, N, 3)`` without their components that would change the lengths of the atom pairs ``bonds``
    (:func:`tangent_projector`). Used for X-H bonds the data were sampled with constrained (along them the
    forces are not the data's score: the constraint forces that cancel them are not recorded), and for the
    stiff bond lengths and angles that force guidance leaves alone (docs/drift.md)."""
    flat = forces.reshape(len(forces), -1, 1)
    return (tangent_projector(positions, bonds) @ flat).reshape(forces.shape)
