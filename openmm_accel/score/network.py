"""The energy network of score-based forces: ``E(x, t) = sum_i h_i(x, t)``, one scalar per bead.

Each bead ``i`` has its own small MLP (all beads evaluated at once by batched matrix products) that sees
the bead's distances to every other bead (raw and in a Gaussian radial basis), the diffusion time and, for
every four consecutive beads, the two smooth invariants of their dihedral, ``(b1 x b2).(b2 x b3)`` and the
triple product ``b1.(b2 x b3)``, divided by bond lengths so that they stay bounded. The inputs are rotation-
and translation-invariant, so the energy is too and its score (the forces) rotates with the molecule
exactly, without the random-rotation augmentation a network on raw coordinates needs. The triple product
changes sign under reflection, which the coarse-grained free energy needs: the 5-bead backbone of
L-alanine has lost the atoms that carry its chirality, and a distance-only energy would give phi and -phi
the same weight. A mapping's beads are distinct atoms in a fixed order, so no permutation symmetry is
imposed; per-bead weights instead of message passing make a training step ~8x cheaper on a CPU.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .diffusion import time_features


class PerBeadLinear(nn.Module):
    """``n`` independent linear layers, one per bead, applied to ``(n, B, inputs)`` by one batched product."""

    def __init__(self, n: int, inputs: int, outputs: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, inputs, outputs) / math.sqrt(inputs))
        self.bias = nn.Parameter(torch.zeros(n, 1, outputs))

    def forward(self, h: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, h, self.weight)


class EnergyNet(nn.Module):
    """Energy of ``n`` beads in normalised coordinates ``(B, n, 3)`` at diffusion times ``(B,)``; computes
    in the dtype of its parameters (float32 to train, float64 for finite-difference checks)."""

    def __init__(self, n: int, hidden: int = 128, layers: int = 3, radial: int = 24, reach: float = 5.0):
        super().__init__()
        if n < 2:
            raise ValueError(f"n: expected at least 2 beads, got {n}")
        self.n, self.hidden, self.layers_count, self.radial, self.reach = n, hidden, layers, radial, reach
        self.quadruples = max(n - 3, 0)
        self.register_buffer("centres", torch.linspace(0.0, reach, radial))
        self.register_buffer("others", torch.tensor([[j for j in range(n) if j != i] for i in range(n)]))
        self.width = reach / radial
        sizes = [(n - 1) * (radial + 1) + 4 + 2 * self.quadruples] + [hidden] * layers
        self.hidden_layers = nn.ModuleList(PerBeadLinear(n, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = PerBeadLinear(n, hidden, 1)

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
        x = x.to(self.centres.dtype)
        batch = x.shape[0]
        context = torch.cat([time_features(t.to(x.dtype)), self.dihedral_invariants(x)], dim=-1)  # (B, C)
        distance = torch.sqrt(((x[:, :, None, :] - x[:, None, :, :]) ** 2).sum(-1) + 1e-12)
        distance = torch.gather(distance, 2, self.others.expand(batch, -1, -1))  # (B, n, n - 1): no self
        basis = torch.exp(-((distance[..., None] - self.centres) / self.width) ** 2)
        features = torch.cat([basis, distance[..., None]], dim=-1).reshape(batch, self.n, -1)
        h = torch.cat([features, context[:, None, :].expand(batch, self.n, context.shape[-1])], dim=-1)
        h = h.transpose(0, 1)  # (n, B, inputs): one matrix product per bead's own weights
        for layer in self.hidden_layers:
            h = nn.functional.silu(layer(h))
        return self.output(h)[..., 0].sum(0)


class TimeExperts(nn.Module):
    """Energy networks each for its own range of diffusion time (the paper's mixture of experts): at time t
    the energy is that of the expert whose range ``[bounds[i], bounds[i + 1])`` holds t. The expert of the
    smallest times alone gives the forces of MD; the others only shape the reverse SDE's early steps."""

    def __init__(self, nets, bounds):
        super().__init__()
        bounds = [float(b) for b in bounds]
        if len(bounds) != len(nets) + 1 or bounds[0] != 0.0 or bounds[-1] != 1.0 or sorted(set(bounds)) != bounds:
            raise ValueError(f"bounds: expected 0 < ... < 1 around {len(nets)} experts, got {bounds}")
        self.nets = nn.ModuleList(nets)
        self.n = nets[0].n
        self.register_buffer("bounds", torch.tensor(bounds, dtype=torch.float64), persistent=False)  # (in config)

    def config(self) -> dict:
        return {"experts": [net.config() for net in self.nets], "bounds": self.bounds.tolist()}

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        index = torch.bucketize(t.to(self.bounds.dtype).contiguous(), self.bounds[1:-1], right=True)
        energy = None
        for i, net in enumerate(self.nets):
            chosen = index == i
            if bool(chosen.any()):
                part = net(x[chosen], t[chosen])
                energy = (part.new_zeros(x.shape[0]) if energy is None else energy).index_put((chosen,), part)
        return self.nets[0](x, t) if energy is None else energy  # (an empty batch)
