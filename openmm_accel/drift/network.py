"""The one-step generator of drifting: ``x = g(z)``, Gaussian noise to a conformation in one forward pass."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Tuple

import numpy as np
import torch
from openmm import app
from torch import Tensor, nn

from ..geometry import bond_angle, internal_coordinates, place
from ..validation import fail
from .features import centred, kabsch_rotations


def hidden_layers(inputs: int, hidden: int, layers: int) -> nn.Sequential:
    """The generators' MLP body: ``layers`` linear layers of width ``hidden``, each followed by SiLU."""
    sizes = [inputs] + [hidden] * layers
    blocks = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        blocks += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*blocks)


class Generator(nn.Module):
    """Conformations of ``N`` atoms in the data's aligned frame (normalised units) from noise ``z`` (B, 3N):
    the reference structure plus an MLP of ``z``, centred. Atoms are labelled (the output has a fixed atom
    order, as the data do), so no permutation symmetry is imposed; the aligned frame removes rotations."""

    def __init__(self, reference: Tensor, hidden: int = 256, layers: int = 3):
        super().__init__()
        self.atoms, self.hidden, self.layers_count = reference.shape[0], hidden, layers
        self.latent = 3 * self.atoms
        self.body = hidden_layers(self.latent, hidden, layers)
        self.output = nn.Linear(hidden, self.latent)
        nn.init.zeros_(self.output.bias)
        self.register_buffer("reference", reference.clone())

    def config(self) -> dict:
        return {"atoms": self.atoms, "hidden": self.hidden, "layers": self.layers_count}

    def forward(self, z: Tensor) -> Tensor:
        z = z.to(self.reference.dtype)
        return centred(self.reference + self.output(self.body(z)).reshape(-1, self.atoms, 3))


def internal_frame(topology) -> Tuple[List[int], np.ndarray]:
    """How to build a molecule - or several - from internal coordinates: ``anchors`` (the first three atoms: a
    heavy atom with the most heavy neighbours, and two of its neighbours) and ``(M, 4)`` rows ``(i, j, k, l)``
    in placement order, each atom ``i`` placed at its bond length to ``j`` (its parent in a breadth-first
    tree), its angle ``i-j-k`` and its torsion about ``j-k`` from ``l``. Where ``j`` has an earlier child,
    ``l`` is that sibling, so that a methyl group turns with one torsion and its hydrogens keep their
    arrangement. A ring is a tree with a closing bond whose length follows from the ring's angles and
    torsions. Each further molecule (ligand, ion, water) hangs from the first anchor by a distance, an
    angle and a torsion of its own best-connected atom, its other atoms placed from there: six degrees of
    freedom for where it sits and how it turns."""
    atoms = list(topology.atoms())
    neighbours: List[List[int]] = [[] for _ in atoms]
    for a, b in topology.bonds():
        neighbours[a.index].append(b.index)
        neighbours[b.index].append(a.index)
    heavy = [atom.element is not None and atom.element != app.element.hydrogen for atom in atoms]

    def connected(a: int) -> tuple:
        return len(neighbours[a]) >= 2, heavy[a], sum(heavy[n] for n in neighbours[a]), -a

    root = max(range(len(atoms)), key=connected) if atoms else None
    if root is None or len(neighbours[root]) < 2:
        raise fail("topology", "a molecule with an atom bonded to two others", f"{len(atoms)} atoms without one")
    parent, order = {root: -1}, [root]
    while True:
        queue = [order[-1]]
        while queue:
            atom = queue.pop(0)
            for other in sorted(neighbours[atom], key=lambda n: (not heavy[n], n)):
                if other not in parent:
                    parent[other] = atom
                    order.append(other)
                    queue.append(other)
        if len(order) == len(atoms):
            break
        start = max((a for a in range(len(atoms)) if a not in parent), key=connected)  # the next molecule
        parent[start] = root
        order.append(start)
    placed, rows = set(order[:3]), []
    for i in order[3:]:
        j = parent[i]
        k = parent[j] if parent[j] >= 0 else next(n for n in order if n in placed and n in neighbours[j])
        siblings = [n for n in order if n in placed and parent.get(n) == j and n != k]
        around_k = [n for n in order if n in placed and n != j and (n in neighbours[k] or n == parent[k])]
        rows.append((i, j, k, siblings[0] if siblings else around_k[0]))
        placed.add(i)
    return order[:3], np.array(rows, dtype=int).reshape(-1, 4)


def anchor_coordinates(x: Tensor, anchors: Tensor) -> Tensor:
    """``(B, 3)``: the bonds ``a0-a1``, ``a0-a2`` and the angle ``a1-a0-a2`` of the three anchor atoms."""
    a0, a1, a2 = (x[:, anchors[c]] for c in range(3))
    u, w = a1 - a0, a2 - a0
    return torch.stack([u.norm(dim=-1), w.norm(dim=-1), bond_angle(u, w)], -1)


def _bonded_pairs(anchors: Tensor, rows: Tensor) -> set:
    """The bonds a placement tree holds: the anchors' two and each row's ``i-j``."""
    a0, a1, a2 = anchors.tolist()
    pairs = {frozenset((a0, a1)), frozenset((a0, a2))}
    return pairs | {frozenset((i, j)) for i, j in rows[:, :2].tolist()}


@dataclass
class InternalFrame:
    """How positions are built from internal coordinates: the three ``anchors`` (placed by two bonds and an
    angle), the ``rows`` ``(i, j, k, l)`` that place atom ``i`` from ``j, k, l`` by a bond, an angle and a
    torsion, the data's reference ``values`` ``(N - 2, 3)`` of those coordinates (the anchors' first) and their
    ``spreads``; where rings close, every bond of the molecule (``ring_bonds``, ``(K, 2)``) with the data's
    mean length of each ring-closing one (``closure_lengths``, nm; NaN for the bonds the tree places)."""

    anchors: Any
    rows: Any
    values: Tensor
    spreads: Tensor
    ring_bonds: Any = None
    closure_lengths: Any = None


#: Sweeps of :meth:`InternalGenerator.closed` (measured on the host-guest complex's cucurbit[7]uril, 24 ring
#: closures: bonds up to 24 % off their length before, at most 0.4 % after 30 sweeps).
CLOSURE_SWEEPS = 30


def ring_closures(topology, anchors, rows) -> np.ndarray:
    """``(K, 2)`` the bonds of ``topology`` the placement tree (``anchors``, ``rows``) does not hold: those
    that close rings."""
    tree = _bonded_pairs(torch.as_tensor(anchors), torch.as_tensor(rows))
    return np.array([(a.index, b.index) for a, b in topology.bonds() if frozenset((a.index, b.index)) not in tree],
                    dtype=int).reshape(-1, 2)


class InternalGenerator(nn.Module):
    """Conformations built from internal coordinates: the three anchor atoms from their two bond lengths and
    angle, every other atom placed by its bond length, angle and torsion (:func:`internal_frame`). Rotors such
    as methyl groups turn by one torsion instead of moving three atoms through space, so that bonds stay
    bonds. Bond lengths and angles stay within ``limit`` spreads of the data's values (a smooth bound,
    ``limit * tanh(d / limit)`` in spreads; a bond the data hold fixed, e.g. a constrained X-H bond, stays
    fixed). The result is rotated onto the data's aligned frame (Kabsch). Normalised units, centred.

    Where the internal coordinates come from (``source``):

    * ``"internal"``: an MLP of ``z`` gives each coordinate's deviation from the data's value, in spreads;
      torsions are free.
    * ``"cartesian"``: an MLP of ``z`` gives atom positions as :class:`Generator` does, which are then
      projected onto bounded geometry: their internal coordinates are read off, the stiff ones clipped, and
      the molecule rebuilt. Torsions are kept as the positions have them, so the generator places rotors and
      basins as freely as a Cartesian one; the torsions that only fix where a sibling sits (the second and
      third hydrogen of a methyl group about the first, a substituent about its neighbour) are stiff
      geometry and bounded too, so that every 1-3 distance and every stereocentre's hand is kept. In
      training (``self.training``) the positions are returned as they are: the MLP learns as a Cartesian
      generator, whose field sees every bond's error, and only its samples are projected (docs/drift.md:
      training through the projection left bonds and angles piled at the bound)."""

    def __init__(self, reference: Tensor, frame: "InternalFrame", hidden: int = 256, layers: int = 3,
                 limit: float = 4.0, source: str = "internal"):
        super().__init__()
        anchors, rows, values, spreads = frame.anchors, frame.rows, frame.values, frame.spreads
        if source not in ("internal", "cartesian"):
            raise fail("source", "'internal' or 'cartesian'", repr(source))
        self.atoms, self.hidden, self.layers_count, self.limit = reference.shape[0], hidden, layers, float(limit)
        self.source = source
        self.latent = 3 * self.atoms
        self.body = hidden_layers(self.latent, hidden, layers)
        self.output = nn.Linear(hidden, 3 * (self.atoms - 2) if source == "internal" else self.latent)
        nn.init.zeros_(self.output.bias)
        self.register_buffer("reference", reference.clone())  # the aligned frame's reference structure
        self.register_buffer("anchors", torch.as_tensor(anchors, dtype=torch.long).clone())
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.long).clone())
        self.register_buffer("values", values.clone())       # (N - 2, 3): anchors' (bond, bond, angle), then
        self.register_buffer("spreads", spreads.clone())     # each row's (bond, angle, torsion); their spreads
        if frame.ring_bonds is not None and len(frame.ring_bonds):
            self.register_buffer("ring_bonds", torch.as_tensor(frame.ring_bonds, dtype=torch.long).clone())
            self.register_buffer("closure_lengths", torch.as_tensor(frame.closure_lengths, dtype=values.dtype).clone())
        else:  # no ring: nothing to close, nothing in the model file
            self.ring_bonds = torch.zeros(0, 2, dtype=torch.long)
        bounded = torch.ones(self.atoms - 2, 3, dtype=torch.bool)
        bounded[1:, 2] = False  # torsions free ...
        if source == "cartesian":  # ... except where they place a sibling
            bonds = _bonded_pairs(self.anchors, self.rows)
            bounded[1:, 2] = torch.tensor([frozenset((l, j)) in bonds for _, j, _, l in self.rows.tolist()],
                                          dtype=torch.bool)
        self.bounded = bounded

    def config(self) -> dict:
        return {"atoms": self.atoms, "hidden": self.hidden, "layers": self.layers_count, "kind": "internal",
                "limit": self.limit, "source": self.source}

    def forward(self, z: Tensor) -> Tensor:
        z = z.to(self.reference.dtype)
        out = self.output(self.body(z))
        if self.source == "internal":
            deviation = out.reshape(-1, self.atoms - 2, 3) * self.spreads
            return self.build(self.values + self.bound(deviation))
        x = centred(self.reference + out.reshape(-1, self.atoms, 3))
        return x if self.training else self.project(x)  # trained as a Cartesian generator; samples projected

    def bound(self, deviation: Tensor) -> Tensor:
        """Deviations ``(B, N - 2, 3)`` from the data's internal coordinates with the bounded ones held within
        ``limit`` spreads: smoothly (``cap * tanh(d / cap)``) for the ``"internal"`` source, whose gradient
        flows through it, and by clipping for the ``"cartesian"`` one, which leaves geometry inside the bound
        as it is."""
        cap = self.limit * self.spreads
        if self.source == "internal":
            held = cap * torch.tanh(deviation / torch.where(cap > 0, cap, torch.ones_like(cap)))
        else:
            held = torch.maximum(torch.minimum(deviation, cap), -cap)
        return torch.where(self.bounded.to(deviation.device), held, deviation)

    def project(self, x: Tensor) -> Tensor:
        """Positions ``(B, N, 3)`` rebuilt with their bond lengths, angles and sibling torsions bounded and their
        other torsions kept (the ``"cartesian"`` source's projection onto valid geometry)."""
        values = torch.cat([anchor_coordinates(x, self.anchors)[:, None], internal_coordinates(x, self.rows)], 1)
        deviation = values - self.values
        torsion = torch.remainder(deviation[:, 1:, 2] + np.pi, 2 * np.pi) - np.pi
        deviation = torch.cat([deviation[:, :1], torch.cat([deviation[:, 1:, :2], torsion[..., None]], 2)], 1)
        return self.build(self.values + self.bound(deviation))

    def build(self, values: Tensor) -> Tensor:
        """Positions ``(B, N, 3)`` in the data's aligned frame from internal coordinates ``(B, N - 2, 3)``."""
        first, second, angle = values[:, 0, 0], values[:, 0, 1], values[:, 0, 2]
        zero = torch.zeros_like(first)
        x = [None] * self.atoms
        a0, a1, a2 = self.anchors.tolist()
        x[a0] = torch.stack([zero, zero, zero], -1)
        x[a1] = torch.stack([first, zero, zero], -1)
        x[a2] = torch.stack([second * torch.cos(angle), second * torch.sin(angle), zero], -1)
        for row, (i, j, k, l) in enumerate(self.rows.tolist()):
            x[i] = place(x[j], x[k], x[l], values[:, row + 1, 0], values[:, row + 1, 1], values[:, row + 1, 2])
        x = centred(self.closed(torch.stack(x, 1)))
        return x @ kabsch_rotations(x, self.reference)  # in the data's aligned frame

    def closed(self, x: Tensor) -> Tensor:
        """Positions ``(B, N, 3)`` with their rings closed: a tree places each ring's atoms by angles and
        torsions, so its closing bond takes whatever length they add up to (a macrocycle's far from any).
        Every bond is moved towards its length - the closing ones' the data's mean, the others' as built -
        by :data:`CLOSURE_SWEEPS` Jacobi sweeps of pairwise corrections (as SHAKE does, each atom's share
        divided by its bond count); differentiable, so a generator learns through it."""
        if not len(self.ring_bonds):
            return x
        i, j = self.ring_bonds[:, 0], self.ring_bonds[:, 1]
        built = (x[:, j] - x[:, i]).norm(dim=-1)
        target = torch.where(torch.isnan(self.closure_lengths), built, self.closure_lengths)
        ones = torch.ones(len(i), dtype=x.dtype, device=x.device)
        share = x.new_zeros(self.atoms).index_add_(0, i, ones).index_add_(0, j, ones).clamp(min=1.0)[:, None]
        for _ in range(CLOSURE_SWEEPS):
            bond = x[:, j] - x[:, i]
            length = bond.norm(dim=-1, keepdim=True)
            step = 0.5 * (length - target[..., None]) / length * bond
            x = x + (torch.zeros_like(x).index_add_(1, i, step).index_add_(1, j, -step)) / share
        return x

    @classmethod
    def for_data(cls, topology, aligned: Tensor, reference: Tensor, hidden: int = 256,
                 layers: int = 3, source: str = "internal", limit: float = 4.0) -> "InternalGenerator":
        """A generator for ``topology`` whose reference internal coordinates and spreads are those of the
        aligned, normalised data frames ``aligned`` (F, N, 3): bond lengths and angles their means (single
        modes), torsions those of the frame nearest ``reference``, spreads their standard deviations (of
        torsions about that frame's, wrapped)."""
        anchors, rows = internal_frame(topology)
        rows_t, anchors_t = torch.as_tensor(rows), torch.as_tensor(anchors)
        start = aligned[(aligned - reference).square().sum((1, 2)).argmin()]
        every = internal_coordinates(aligned, rows_t)
        first = internal_coordinates(start[None], rows_t)[0]
        turned = torch.remainder(every[..., 2] - first[:, 2] + np.pi, 2 * np.pi) - np.pi
        values = torch.stack([every[..., 0].mean(0), every[..., 1].mean(0), first[:, 2]], -1)
        spreads = torch.stack([every[..., 0].std(0), every[..., 1].std(0), turned.square().mean(0).sqrt()], -1)
        anchored = anchor_coordinates(aligned, anchors_t)
        values = torch.cat([anchored.mean(0)[None], values])
        spreads = torch.cat([anchored.std(0)[None], spreads])
        closures = ring_closures(topology, anchors, rows)
        frame = InternalFrame(anchors, rows, values, spreads)
        if len(closures):
            bonds = np.array([(a.index, b.index) for a, b in topology.bonds()], dtype=int)
            closing = {tuple(pair) for pair in closures.tolist()}
            lengths = (aligned[:, bonds[:, 1]] - aligned[:, bonds[:, 0]]).norm(dim=-1).mean(0)
            is_closure = torch.tensor([tuple(pair) in closing for pair in bonds.tolist()])
            frame = InternalFrame(anchors, rows, values, spreads, bonds,
                                  torch.where(is_closure, lengths, torch.full_like(lengths, float("nan"))))
        return cls(reference, frame, hidden, layers, limit, source)
