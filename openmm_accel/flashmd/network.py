"""FlashMDNet: a small E(3)-equivariant message-passing propagator for long-stride dynamics.

Mass-scaled variables (METHODS.md 2): ``s = p / sqrt(m)`` and ``u = q sqrt(m)``. The network predicts
corrections to free flight::

    sqrt(m_i) (q'_i - q_i) = tau s_i + sum_j a_ij rhat_ij + b_i s_i + sum_j c_ij s_j
    p'_i / sqrt(m_i)       =       s_i + sum_j a'_ij rhat_ij + b'_i s_i + sum_j c'_ij s_j

with scalar coefficients computed from invariants only (element embeddings, distances, dot products of
momenta and bond directions). The outputs are therefore exactly equivariant under rotations,
reflections and translations, so no random rotations are needed at inference, and the momentum of the
centre of mass can be restored exactly by the integrator. All pairs within ``cutoff`` interact (meant
for molecules of tens of atoms; minimum-image for orthorhombic boxes when ``box`` is given).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .model import FlashMDModel


def _mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.SiLU())
    return torch.nn.Sequential(*layers)


class FlashMDNet(FlashMDModel):
    """Equivariant FlashMD propagator for one system (its elements, masses and stride are fixed)."""

    rotation_equivariant = True

    def __init__(self, atomic_numbers: Sequence[int], masses: Sequence[float], stride: float, hidden: int = 64,
                 layers: int = 2, cutoff: float = 0.6, radial: int = 16):
        super().__init__(stride, masses, atomic_numbers)
        elements = sorted(set(int(z) for z in atomic_numbers))
        self.elements = elements
        self.register_buffer("species", torch.tensor([elements.index(int(z)) for z in atomic_numbers]))
        self.hidden, self.layers_count, self.cutoff, self.radial = int(hidden), int(layers), float(cutoff), int(radial)
        self.embedding = torch.nn.Embedding(len(elements), hidden)
        pair = radial + 5
        self.node_in = _mlp([hidden + 1, hidden, hidden])
        self.messages = torch.nn.ModuleList([_mlp([2 * hidden + pair, hidden, hidden]) for _ in range(layers)])
        self.updates = torch.nn.ModuleList([_mlp([2 * hidden, hidden, hidden]) for _ in range(layers)])
        self.pair_out = _mlp([2 * hidden + pair, hidden, 4])
        self.node_out = _mlp([hidden, hidden, 2])
        # output scales learned from data at the start of training (set by the trainer)
        self.register_buffer("scale", torch.ones(2, dtype=torch.float64))
        self.register_buffer("centres", torch.linspace(0.0, cutoff, radial))

    def config(self) -> dict:
        return {"atomic_numbers": self.atomic_numbers, "masses": self.masses.tolist(), "stride": self.stride,
                "hidden": self.hidden, "layers": self.layers_count, "cutoff": self.cutoff, "radial": self.radial}

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        dtype = self.embedding.weight.dtype
        sqrt_m = self.masses.sqrt().to(dtype)[:, None]
        x, s = positions.to(dtype), momenta.to(dtype) / sqrt_m
        rij = x[:, None, :, :] - x[:, :, None, :]  # (B, i, j, 3): from i to j
        if box is not None:
            lengths = torch.diagonal(box.to(dtype), dim1=-2, dim2=-1)[:, None, None, :]
            rij = rij - lengths * torch.round(rij / lengths)
        n = x.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        d = torch.sqrt((rij * rij).sum(-1) + eye.to(dtype))  # 1 on the diagonal avoids 0/0
        rhat = rij / d[..., None]
        within = (d < self.cutoff) & ~eye
        envelope = torch.where(within, 0.5 * (torch.cos(math.pi * d / self.cutoff) + 1.0), torch.zeros_like(d))
        width = self.cutoff / self.radial
        rbf = torch.exp(-((d[..., None] - self.centres.to(dtype)) / width) ** 2)
        si, sj = s[:, :, None, :], s[:, None, :, :]
        pair = torch.cat([rbf, (si * rhat).sum(-1, keepdim=True), (sj * rhat).sum(-1, keepdim=True),
                          (si * sj).sum(-1, keepdim=True), si.norm(dim=-1, keepdim=True).expand_as(d[..., None]),
                          sj.norm(dim=-1, keepdim=True).expand_as(d[..., None])], dim=-1)
        h = self.node_in(torch.cat([self.embedding(self.species).expand(x.shape[0], -1, -1),
                                    (s * s).sum(-1, keepdim=True)], dim=-1))
        for message, update in zip(self.messages, self.updates):
            hi, hj = h[:, :, None, :].expand(-1, -1, n, -1), h[:, None, :, :].expand(-1, n, -1, -1)
            m = message(torch.cat([hi, hj, pair], dim=-1)) * envelope[..., None]
            h = h + update(torch.cat([h, m.sum(2)], dim=-1))
        hi, hj = h[:, :, None, :].expand(-1, -1, n, -1), h[:, None, :, :].expand(-1, n, -1, -1)
        coefficients = self.pair_out(torch.cat([hi, hj, pair], dim=-1)) * envelope[..., None]  # (B, i, j, 4)
        own = self.node_out(h)  # (B, i, 2)
        a, c = coefficients[..., 0:1], coefficients[..., 1:2]
        a2, c2 = coefficients[..., 2:3], coefficients[..., 3:4]
        scale = self.scale.to(dtype)
        du = self.stride * s + scale[0] * ((a * rhat).sum(2) + own[..., 0:1] * s + (c * sj).sum(2))
        s_new = s + scale[1] * ((a2 * rhat).sum(2) + own[..., 1:2] * s + (c2 * sj).sum(2))
        return (positions.to(torch.float64) + (du / sqrt_m).to(torch.float64),
                (s_new * sqrt_m).to(torch.float64))
