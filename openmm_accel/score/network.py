"""The energy network of score-based forces: ``E(x, t) = sum_i h_i(x, t)``, one scalar per bead.

Inputs are rotation- and translation-invariant, so the energy is too and its score (the forces) rotates
with the molecule exactly, without the random-rotation augmentation a network on raw coordinates needs:
all bead-bead distances (Gaussian radial basis) and, for every four consecutive beads, the two smooth
invariants of their dihedral, ``(b1 x b2).(b2 x b3)`` and the triple product ``b1.(b2 x b3)``, divided by
bond lengths so that they stay bounded. The triple
product changes sign under reflection, which the coarse-grained free energy needs: the 5-bead backbone of
L-alanine has lost the atoms that carry its chirality, and a distance-only energy would give phi and -phi
the same weight. Beads are told apart by a learned embedding (a mapping's beads are distinct atoms).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .diffusion import time_features


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


class EnergyNet(nn.Module):
    """Energy of ``n`` beads in normalised coordinates ``(B, n, 3)`` at diffusion times ``(B,)``."""

    def __init__(self, n: int, hidden: int = 96, layers: int = 2, radial: int = 24, reach: float = 5.0):
        super().__init__()
        self.n, self.hidden, self.layers_count, self.radial, self.reach = n, hidden, layers, radial, reach
        self.quadruples = max(n - 3, 0)
        self.register_buffer("centres", torch.linspace(0.0, reach, radial, dtype=torch.float64))
        self.width = reach / radial
        self.embedding = nn.Parameter(torch.randn(n, hidden, dtype=torch.float64) * 0.1)
        context = 4 + 2 * self.quadruples
        self.messages = nn.ModuleList([_mlp(radial + hidden + context, hidden, hidden) for _ in range(layers)])
        self.updates = nn.ModuleList([_mlp(2 * hidden + context, hidden, hidden) for _ in range(layers)])
        self.readout = _mlp(hidden + context, hidden, 1)
        self.double()

    def config(self) -> dict:
        return {"n": self.n, "hidden": self.hidden, "layers": self.layers_count, "radial": self.radial,
                "reach": self.reach}

    def dihedral_invariants(self, x: Tensor) -> Tensor:
        """``(B, 2 (n - 3))``: per consecutive quadruple the dihedral's cosine-like and sine-like invariants."""
        if self.quadruples == 0:
            return x.new_zeros((x.shape[0], 0))
        b1, b2, b3 = x[:, 1:-2] - x[:, :-3], x[:, 2:-1] - x[:, 1:-2], x[:, 3:] - x[:, 2:-1]
        n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
        l1, l2, l3 = (torch.sqrt((b**2).sum(-1) + 1e-4) for b in (b1, b2, b3))
        # divided by bond lengths: cos(phi) and sin(phi) times the two bond angles' sines, bounded in [-1, 1],
        # so that no feature (and no force) grows without bound as noise stretches the molecule
        return torch.cat([(n1 * n2).sum(-1) / (l1 * l2 * l2 * l3), (b1 * n2).sum(-1) / (l1 * l2 * l3)], dim=-1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        batch = x.shape[0]
        context = torch.cat([time_features(t.to(x.dtype)), self.dihedral_invariants(x)], dim=-1)  # (B, C)
        difference = x[:, :, None, :] - x[:, None, :, :]
        distance = torch.sqrt((difference**2).sum(-1) + 1e-12)  # (B, n, n)
        basis = torch.exp(-((distance[..., None] - self.centres) / self.width) ** 2)  # (B, n, n, R)
        others = 1.0 - torch.eye(self.n, dtype=x.dtype, device=x.device)[None, :, :, None]
        h = self.embedding[None].expand(batch, self.n, self.hidden)
        pair_context = context[:, None, None, :].expand(batch, self.n, self.n, context.shape[-1])
        node_context = context[:, None, :].expand(batch, self.n, context.shape[-1])
        for message, update in zip(self.messages, self.updates):
            senders = h[:, None, :, :].expand(batch, self.n, self.n, self.hidden)
            m = (message(torch.cat([basis, senders, pair_context], dim=-1)) * others).sum(2)  # (B, n, H)
            h = h + update(torch.cat([h, m, node_context], dim=-1))
        return self.readout(torch.cat([h, node_context], dim=-1))[..., 0].sum(-1)
