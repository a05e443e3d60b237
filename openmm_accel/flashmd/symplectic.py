"""A symplectic, time-reversible FlashMD map: a learned midpoint generating function, solved by fixed point.

The stride map is defined implicitly through a scalar ``S`` of the midpoint ``zbar = (z + z') / 2`` of the
phase-space points before and after the stride (``z = (q, p)``)::

    q' - q = dS/dpbar,    p' - p = -dS/dqbar,    S = tau [sum_i pbar_i^2 / 2 m_i + E(qbar, pbar)]

Any smooth ``S`` makes this map symplectic (it is the midpoint, or Poincare, generating function: Hairer,
Lubich & Wanner, *Geometric Numerical Integration*, VI.5), hence volume-preserving; an ``S`` even in the
momenta makes it time-reversible, ``R Phi R = Phi^-1`` with ``R(q, p) = (q, -p)``. With ``E`` the potential
it is the implicit midpoint rule; here ``E`` is a network of the midpoint's invariants (distances, and
momenta only through products of two: ``(s_i . rhat)^2``, ``(s_i . rhat)(s_j . rhat)``, ``s_i . s_j``,
``|s_i|^2`` with ``s = p / sqrt(m)``), so the map is also exactly equivariant. This follows the idea of the
symplectic FlashMD stepper (Bigi et al., flashmd 0.3: a midpoint-to-increment model solved by fixed-point
iteration), with the increment written as the gradient of one scalar so that symplecticity holds by
construction, not by training.

Training needs no solver: the data give both ends of a stride, hence its midpoint, and the loss compares
``z + J grad S(zbar_data)`` with ``z'`` (:meth:`SymplecticFlashMDNet.fit_prediction`). At inference
``z' = z + J grad S((z + z') / 2)`` is solved by Anderson-accelerated fixed-point iteration (plain
iteration diverges once ``tau`` times a vibration's frequency passes 2: X-H stretches at 8 fs) to
``tolerance`` in mass-scaled phase space, within ``max_iterations``; a stride that does not converge is
flagged (:attr:`converged`) and the integrator falls back to reference dynamics or rejects it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..validation import fail
from .model import FlashMDModel
from .network import edges, mlp

#: Fixed-point tolerance (max over atoms and components of the mass-scaled change, sqrt(amu) nm) and cap.
TOLERANCE = 1e-8
MAX_ITERATIONS = 200
HISTORY = 6  # Anderson's memory


@dataclass(frozen=True)
class FixedPoint:
    """How each stride's fixed point is solved: ``tolerance`` on the largest mass-scaled change (sqrt(amu) nm)
    and at most ``max_iterations``."""

    tolerance: float = TOLERANCE
    max_iterations: int = MAX_ITERATIONS

    def __post_init__(self):
        if not self.tolerance > 0 or int(self.max_iterations) < 1:
            raise fail("solver", "a positive tolerance and iteration cap", f"{self.tolerance}, {self.max_iterations}")


class SymplecticFlashMDNet(FlashMDModel):
    """FlashMD propagator whose stride map is symplectic and reversible by construction (module docstring)."""

    rotation_equivariant = True
    volume_preserving = True
    fitted_on_midpoints = True

    def __init__(self, atomic_numbers: Sequence[int], masses: Sequence[float], stride: float, hidden: int = 64,
                 layers: int = 2, cutoff: float = 0.6, radial: int = 16, solver: FixedPoint = FixedPoint()):
        super().__init__(stride, masses, atomic_numbers)
        if isinstance(solver, (list, tuple)):  # as a model file's config stores it
            solver = FixedPoint(*solver)
        elements = sorted(set(int(z) for z in atomic_numbers))
        self.elements = elements
        self.register_buffer("species", torch.tensor([elements.index(int(z)) for z in atomic_numbers]))
        self.hidden, self.layers_count, self.cutoff, self.radial = int(hidden), int(layers), float(cutoff), int(radial)
        self.tolerance, self.max_iterations = float(solver.tolerance), int(solver.max_iterations)
        self.embedding = torch.nn.Embedding(len(elements), hidden)
        pair = radial + 4
        self.node_in = mlp([hidden + 1, hidden, hidden])
        self.messages = torch.nn.ModuleList([mlp([2 * hidden + pair, hidden, hidden]) for _ in range(layers)])
        self.updates = torch.nn.ModuleList([mlp([2 * hidden, hidden, hidden]) for _ in range(layers)])
        self.readout = mlp([hidden, hidden, 1])
        # (position, momentum) scales of the data beyond free flight, set at the start of training; the
        # network's energy unit follows from them
        self.register_buffer("scale", torch.ones(2, dtype=torch.float64))
        self.register_buffer("centres", torch.linspace(0.0, cutoff, radial))
        self.double()  # the fixed point is solved to 1e-8: float32 would not resolve it
        self.converged, self.iterations, self.residual = True, 0, 0.0

    def config(self) -> dict:
        return {"kind": "midpoint", "atomic_numbers": self.atomic_numbers, "masses": self.masses.tolist(),
                "stride": self.stride, "hidden": self.hidden, "layers": self.layers_count, "cutoff": self.cutoff,
                "radial": self.radial, "solver": [self.tolerance, self.max_iterations]}

    # -- the generating function and its gradient ----------------------------------------------------
    def correction(self, q: Tensor, p: Tensor) -> Tensor:
        """``E(qbar, pbar)``, kJ/mol per configuration ``(B,)``: invariant, even in the momenta."""
        batch, n = q.shape[0], q.shape[1]
        s = p / self.masses.sqrt()[:, None]
        b, i, j, rhat, envelope, rbf = edges(q, self.cutoff, self.centres)
        si, sj = s[b, i], s[b, j]
        along_i, along_j = (si * rhat).sum(-1, keepdim=True), (sj * rhat).sum(-1, keepdim=True)
        unit_s = self.scale[1].clamp_min(1e-12)
        pair = torch.cat([rbf, torch.cat([along_i**2, along_j**2, along_i * along_j,
                                          (si * sj).sum(-1, keepdim=True)], dim=-1) / unit_s**2], dim=-1)
        node_i, node_j = b * n + i, b * n + j
        h = self.node_in(torch.cat([self.embedding(self.species).expand(batch, -1, -1).reshape(batch * n, -1),
                                    (s * s).sum(-1).reshape(batch * n, 1) / unit_s**2], dim=-1))
        for message, update in zip(self.messages, self.updates):
            m = message(torch.cat([h[node_i], h[node_j], pair], dim=-1)) * envelope[:, None]
            h = h + update(torch.cat([h, torch.zeros_like(h).index_add_(0, node_i, m)], dim=-1))
        return self.energy_unit() * self.readout(h).reshape(batch, n).sum(-1)

    def energy_unit(self) -> Tensor:
        """kJ/mol: a force that changes the mass-scaled momentum by the data's RMS over one stride, across
        the position scale (so the network's outputs are of order one)."""
        return self.scale[1] * self.scale[0] / self.stride

    def increments(self, q: Tensor, p: Tensor, create_graph: bool = False) -> Tuple[Tensor, Tensor]:
        """``(dS/dpbar, -dS/dqbar)`` at midpoints ``(q, p)``."""
        with torch.enable_grad():
            q = q.detach().requires_grad_(True) if not q.requires_grad else q
            p = p.detach().requires_grad_(True) if not p.requires_grad else p
            generating = self.stride * self.correction(q, p).sum()
            dq, dp = torch.autograd.grad(generating, (q, p), create_graph=create_graph)
        increments = self.stride * p / self.masses[:, None] + dp, -dq
        return increments if create_graph else tuple(t.detach() for t in increments)

    # -- training and inference -----------------------------------------------------------------------
    def fit_prediction(self, positions: Tensor, momenta: Tensor, target_positions: Tensor, target_momenta: Tensor,
                       box: Optional[Tensor] = None, forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The map's prediction with the data's own midpoint (no solver; gradients flow to the parameters)."""
        q, p = positions.double(), momenta.double()
        dq, dp = self.increments(0.5 * (q + target_positions.double()), 0.5 * (p + target_momenta.double()),
                                 create_graph=torch.is_grad_enabled())
        return q + dq, p + dp

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if box is not None:
            raise ValueError("SymplecticFlashMDNet: non-periodic systems only")
        q0, p0 = positions.double(), momenta.double()
        root = self.masses.sqrt()[:, None]

        def stack(q, p):  # mass-scaled phase-space point (B, 2N * 3)
            return torch.cat([(q * root).flatten(1), (p / root).flatten(1)], dim=1)

        def unstack(z):
            half = z.shape[1] // 2
            return z[:, :half].reshape(q0.shape) / root, z[:, half:].reshape(p0.shape) * root

        def image(z):  # z0 + J grad S((z0 + z) / 2), mass-scaled
            q, p = unstack(z)
            dq, dp = self.increments(0.5 * (q0 + q), 0.5 * (p0 + p))
            return stack(q0 + dq, p0 + dp)

        start = stack(q0, p0)
        z, converged, iterations, residual = anderson(image, image(start), self.tolerance, self.max_iterations)
        self.converged, self.iterations, self.residual = converged, iterations, residual
        return unstack(z)


def anderson(image, z: Tensor, tolerance: float, max_iterations: int, history: int = HISTORY):
    """Solve ``z = image(z)`` for a batch ``(B, D)`` by Anderson acceleration (type II, each configuration with
    its own mixing coefficients); returns the solution, whether every residual ``max |image(z) - z|`` fell
    below ``tolerance`` within ``max_iterations``, the iterations taken and the largest residual."""
    steps, changes = [], []
    previous_z = previous_g = None
    residual = float("inf")
    for iteration in range(1, max_iterations + 1):
        g = image(z) - z
        residual = float(g.abs().max())
        if residual < tolerance:
            return z + g, True, iteration, residual
        if previous_z is not None:
            steps.append(z - previous_z)
            changes.append(g - previous_g)
            del steps[:-history], changes[:-history]
        previous_z, previous_g = z, g
        if not steps:
            z = z + g
            continue
        dz, dg = torch.stack(steps, dim=-1), torch.stack(changes, dim=-1)  # (B, D, k)
        gram = dg.transpose(1, 2) @ dg
        gram = gram + 1e-10 * gram.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] * torch.eye(
            gram.shape[-1], dtype=gram.dtype, device=gram.device)
        gamma = torch.linalg.solve(gram, (dg.transpose(1, 2) @ g[..., None]))
        z = z + g - ((dz + dg) @ gamma)[..., 0]
    return z, False, max_iterations, residual


class LearnedVerletNet(SymplecticFlashMDNet):
    """An explicit symplectic FlashMD map: kick-drift-kick over the whole stride with a learned *stride
    potential* ``U(q)`` (an invariant network of the positions)::

        p_half = p - tau/2 grad U(q),   q' = q + tau M^-1 p_half,   p' = p_half - tau/2 grad U(q')

    Each of the three moves is a shear, so the map is symplectic and, being a palindrome, reversible, with no
    solver: one network gradient per stride. ``U`` is not the potential but the one whose Verlet stride best
    matches the data, free to soften the stiff modes a Verlet step of the potential itself cannot follow at
    this stride. Less expressive than a generating function of positions and momenta together."""

    fitted_on_midpoints = False

    def config(self) -> dict:
        return {**super().config(), "kind": "verlet"}

    def stride_force(self, q: Tensor, create_graph: bool = False) -> Tensor:
        """``-grad U(q)``, kJ/mol/nm."""
        with torch.enable_grad():
            q = q.detach().requires_grad_(True) if not q.requires_grad else q
            (gradient,) = torch.autograd.grad(self.correction(q, torch.zeros_like(q)).sum(), q,
                                              create_graph=create_graph)
        return -gradient if create_graph else -gradient.detach()

    def forward(self, positions: Tensor, momenta: Tensor, box: Optional[Tensor] = None,
                forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if box is not None:
            raise ValueError("LearnedVerletNet: non-periodic systems only")
        training = torch.is_grad_enabled()
        q, p = positions.double(), momenta.double()
        p = p + 0.5 * self.stride * self.stride_force(q, training)
        q = q + self.stride * p / self.masses[:, None]
        p = p + 0.5 * self.stride * self.stride_force(q, training)
        self.converged, self.iterations, self.residual = True, 0, 0.0
        return q, p

    def fit_prediction(self, positions: Tensor, momenta: Tensor, target_positions: Tensor, target_momenta: Tensor,
                       box: Optional[Tensor] = None, forces: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Explicit: the map itself (gradients flow to the parameters)."""
        return self(positions, momenta, box)


#: The symplectic FlashMD models by the name ``train flashmd --symplectic`` and model files give them.
SYMPLECTIC = {"midpoint": SymplecticFlashMDNet, "verlet": LearnedVerletNet}
