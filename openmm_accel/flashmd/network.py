"""FlashMDNet: a small E(3)-equivariant message-passing propagator for long-stride dynamics.

Mass-scaled variables (Bigi et al. 2025, arXiv:2505.19350): ``s = p / sqrt(m)`` and ``u = q sqrt(m)``.
The network predicts corrections to free flight::

    sqrt(m_i) (q'_i - q_i) = tau s_i + sum_j a_ij rhat_ij + b_i s_i + sum_j c_ij s_j
    p'_i / sqrt(m_i)       =       s_i + sum_j a'_ij rhat_ij + b'_i s_i + sum_j c'_ij s_j

with scalar coefficients computed from invariants only (element embeddings, distances, dot products of
momenta and bond directions). The outputs are therefore exactly equivariant under rotations, reflections
and translations, so no random rotations are needed at inference, and the momentum of the centre of mass
can be restored exactly by the integrator. Messages run over the pairs within ``cutoff`` (an edge list, so
the cost grows with the number of neighbours, not with N^2); with ``box`` (orthorhombic, ``(B, 3, 3)`` nm)
pairs use the minimum image, for periodic systems such as a water box.

With ``force_inputs`` the reference forces at the input positions, ``g = F / sqrt(m)``, enter as a second
vector per atom (invariants ``g.rhat``, ``g.g``, ``s.g``; output terms ``sum_j e_ij g_j + d_i g_i``).
Forces are a function of the positions, so this adds no information, but it hands the network the
reference potential's slope, anharmonic and environment-dependent parts included, instead of asking it
to relearn them from distances: on the same ANI-1x data and 8 epochs it halved the validation loss at a
16 fs stride (0.124 vs 0.260). The integrator takes the forces from the evaluation that the energy
rescaling makes anyway (they add its gradient, not a second evaluation).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .model import FlashMDModel


def mlp(sizes: Sequence[int]) -> torch.nn.Sequential:
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.SiLU())
    return torch.nn.Sequential(*layers)


def edges(x: Tensor, cutoff: float, centres: Tensor, box: Optional[Tensor] = None):
    """The pairs ``(b, i, j)`` within ``cutoff`` of positions ``(B, N, 3)`` (from all pairwise distances: cheap
    next to the messages; minimum image in an orthorhombic ``box``), their unit vectors from i to j, the cosine
    envelope and the Gaussian radial features at ``centres``."""
    n = x.shape[1]
    lengths = None if box is None else torch.diagonal(box.to(x.dtype), dim1=-2, dim2=-1)
    with torch.no_grad():
        between = x[:, None, :, :] - x[:, :, None, :]
        if box is not None:
            between = between - lengths[:, None, None, :] * torch.round(between / lengths[:, None, None, :])
        close = (between * between).sum(-1) < cutoff**2
        close &= ~torch.eye(n, dtype=torch.bool, device=x.device)
        b, i, j = close.nonzero(as_tuple=True)
    rij = x[b, j] - x[b, i]  # from i to j
    if box is not None:
        rij = rij - lengths[b] * torch.round(rij / lengths[b])
    d = torch.sqrt((rij * rij).sum(-1))
    envelope = 0.5 * (torch.cos(math.pi * d / cutoff) + 1.0)
    rbf = torch.exp(-((d[:, None] - centres) / (cutoff / len(centres))) ** 2)
    return b, i, j, rij / d[:, None], envelope, rbf


class FlashMDNet(FlashMDModel):
    """Equivariant FlashMD propagator for one system (its elements, masses and stride are fixed)."""

    rotation_equivariant = True

    def __init__(self, atomic_numbers: Sequence[int], masses: Sequence[float], stride: float, hidden: int = 64,
                 layers: int = 2, cutoff: float = 0.6, radial: int = 16, force_inputs: bool = False):
        super().__init__(stride, masses, atomic_numbers)
        self.force_inputs = bool(force_inputs)
        vectors = 3 if force_inputs else 2  # per-atom vectors the outputs are built from: rhat, s (, g)
        elements = sorted(set(int(z) for z in atomic_numbers))
        self.elements = elements
        self.register_buffer("species", torch.tensor([elements.index(int(z)) for z in atomic_numbers]))
        self.hidden, self.layers_count, self.cutoff, self.radial = int(hidden), int(layers), float(cutoff), int(radial)
        self.embedding = torch.nn.Embedding(len(elements), hidden)
        pair = radial + (10 if force_inputs else 5)
        self.node_in = mlp([hidden + (3 if force_inputs else 1), hidden, hidden])
        self.messages = torch.nn.ModuleList([mlp([2 * hidden + pair, hidden, hidden]) for _ in range(layers)])
        self.updates = torch.nn.ModuleList([mlp([2 * hidden, hidden, hidden]) for _ in range(layers)])
        self.pair_out = mlp([2 * hidden + pair, hidden, 2 * vectors])
        self.node_out = mlp([hidden, hidden, 2 * (vectors - 1)])
        # scales of the outputs (and of the force inputs) measured from data at the start of training
        self.register_buffer("scale", torch.ones(3 if force_inputs else 2, dtype=torch.float64))
        self.register_buffer("centres", torch.linspace(0.0, cutoff, radial))

    def config(self) -> dict:
        return {"atomic_numbers": self.atomic_numbers, "masses": self.masses.tolist(), "stride": self.stride,
                "hidden": self.hidden, "layers": self.layers_count, "cutoff": self.cutoff, "radial": self.radial,
                "force_inputs": self.force_inputs}

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        dtype = self.embedding.weight.dtype
        batch, n = positions.shape[0], positions.shape[1]
        sqrt_m = self.masses.sqrt().to(dtype)[:, None]
        x, s = positions.to(dtype), momenta.to(dtype) / sqrt_m
        if self.force_inputs and forces is None:
            raise ValueError("FlashMDNet: this model takes the reference forces at the current positions")
        if box is not None and bool((box - torch.diag_embed(torch.diagonal(box, dim1=-2, dim2=-1))).abs().max() > 0):
            raise ValueError("FlashMDNet: only orthorhombic boxes are supported")
        b, i, j, rhat, envelope, rbf = edges(x, self.cutoff, self.centres.to(dtype), box)
        scale = self.scale.to(dtype)
        node_i, node_j = b * n + i, b * n + j
        # per-atom vectors: mass-scaled momenta s (and mass-scaled forces g, in units of their spread)
        vectors = [s.reshape(batch * n, 3)]
        if self.force_inputs:
            vectors.append((forces.to(dtype) / sqrt_m).reshape(batch * n, 3) / scale[2])
        dot = lambda u, w: (u * w).sum(-1, keepdim=True)  # noqa: E731
        pair_features, node_features = [rbf], []
        for u in vectors:
            ui, uj = u[node_i], u[node_j]
            pair_features += [dot(ui, rhat), dot(uj, rhat), dot(ui, uj), ui.norm(dim=-1, keepdim=True),
                              uj.norm(dim=-1, keepdim=True)]
            node_features.append(dot(u, u))
        if self.force_inputs:
            node_features.append(dot(vectors[0], vectors[1]))
        pair = torch.cat(pair_features, dim=-1)
        h = self.node_in(torch.cat([self.embedding(self.species).expand(batch, -1, -1).reshape(batch * n, -1)]
                                   + node_features, dim=-1))

        def gather_sum(values: Tensor) -> Tensor:  # sum over each atom's edges
            return torch.zeros(batch * n, values.shape[1], dtype=values.dtype, device=values.device).index_add_(
                0, node_i, values)

        for message, update in zip(self.messages, self.updates):
            m = message(torch.cat([h[node_i], h[node_j], pair], dim=-1)) * envelope[:, None]
            h = h + update(torch.cat([h, gather_sum(m)], dim=-1))
        # outputs: for du and for ds, sum_j (a_ij rhat_ij + sum_k c^k_ij u^k_j) + sum_k b^k_i u^k_i
        coefficients = (self.pair_out(torch.cat([h[node_i], h[node_j], pair], dim=-1)) * envelope[:, None])
        own = self.node_out(h)
        per = len(vectors) + 1
        heads = []
        for head in range(2):
            c = coefficients[:, head * per:(head + 1) * per]
            edge = c[:, :1] * rhat + sum(c[:, k + 1:k + 2] * u[node_j] for k, u in enumerate(vectors))
            o = own[:, head * len(vectors):(head + 1) * len(vectors)]
            heads.append(gather_sum(edge) + sum(o[:, k:k + 1] * u for k, u in enumerate(vectors)))
        flat = vectors[0]
        du = self.stride * flat + scale[0] * heads[0]
        s_new = flat + scale[1] * heads[1]
        du, s_new = du.reshape(batch, n, 3), s_new.reshape(batch, n, 3)
        return (positions.to(torch.float64) + (du / sqrt_m).to(torch.float64),
                (s_new * sqrt_m).to(torch.float64))
