"""Internal coordinates of molecules (bond lengths, angles, torsions) and atoms placed from them, batched in
torch: shared by the standard systems built from textbook geometry and the drift method's internal-coordinate
generator."""
from __future__ import annotations

import torch
from torch import Tensor


def bond_angle(u: Tensor, w: Tensor) -> Tensor:
    """The angle between vectors ``u`` and ``w`` (radians; atan2 keeps it accurate near 0 and pi)."""
    return torch.atan2(torch.linalg.cross(u, w).norm(dim=-1), (u * w).sum(-1))


def perpendicular(vector: Tensor, axis: Tensor) -> Tensor:
    """The part of ``vector`` perpendicular to the unit ``axis``."""
    return vector - (vector * axis).sum(-1, keepdim=True) * axis


def internal_coordinates(x: Tensor, rows: Tensor) -> Tensor:
    """``(B, M, 3)``: bond length ``i-j``, angle ``i-j-k`` and torsion ``l-k-j-i`` (radians) of each placement
    row ``(i, j, k, l)`` of positions ``(B, N, 3)``."""
    i, j, k, l = (x[:, rows[:, c]] for c in range(4))
    axis = (j - k) / (j - k).norm(dim=-1, keepdim=True)
    v, t = perpendicular(l - k, axis), perpendicular(i - j, axis)
    torsion = torch.atan2((torch.linalg.cross(axis, v) * t).sum(-1), (v * t).sum(-1))
    return torch.stack([(i - j).norm(dim=-1), bond_angle(i - j, k - j), torsion], -1)


def place(j: Tensor, k: Tensor, l: Tensor, bond: Tensor, angle: Tensor, torsion: Tensor) -> Tensor:
    """The atom ``i`` at ``bond`` from ``j``, with angle ``i-j-k`` and torsion ``l-k-j-i`` (batched; the inverse
    of :func:`internal_coordinates`)."""
    axis = (j - k) / (j - k).norm(dim=-1, keepdim=True)
    v = perpendicular(l - k, axis)
    v = v / v.norm(dim=-1, keepdim=True)
    side = torch.linalg.cross(axis, v)
    radial = torch.cos(torsion)[:, None] * v + torch.sin(torsion)[:, None] * side
    return j + bond[:, None] * (-torch.cos(angle)[:, None] * axis + torch.sin(angle)[:, None] * radial)
