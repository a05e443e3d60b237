"""A cheap draft distilled from an expensive target: a classical-form potential fitted to its forces.

:class:`ForceMatchedModel` is built from a molecule's bonds and is *linear in its parameters*:

* bonds: ``(r - r0)^k``, k = 1..4 (anharmonic stretches, which dominate the fast force changes);
* angles: ``(theta - theta0)^k``, k = 1..4; 1-3 distances: ``(r13 - r13_0)^k``, k = 1..3;
* couplings at every angle: stretch-stretch, stretch-bend and cubic stretch-stretch terms;
* proper torsions: ``cos(n phi)``, ``sin(n phi)``, n = 1..3;
* 1-4 pairs: ``1/r``, ``1/r^6``, ``1/r^12``;
* every pair farther apart within :data:`CUTOFF`: ``1/r``, ``1/r^6``, ``1/r^12`` times a switch to zero
  between :data:`SWITCH` and the cutoff, with one coefficient per pair of *atom types* (element and number
  of bonds; a hydrogen by the element it is bonded to), found with a Verlet neighbour list.

Bonded terms and 1-4 pairs have their own coefficients, so the model is specific to one molecule; the
farther pairs share theirs, so the number of parameters grows linearly with the atoms. Force matching is a
linear least-squares problem whose design matrix is sparse (each bonded coefficient moves two to four
atoms) and is assembled from closed-form derivatives; its normal equations are sparse too and solved by a
sparse factorisation, so memory follows the bonded terms (:meth:`ForceMatchedModel.fit_memory`). The normal
equations can be updated online with the target forces that speculative verification produces anyway
(:class:`OnlineForceMatching`). Reference values r0, theta0 are averages over the fitted configurations.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from openmm import unit
from scipy import sparse
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree
from torch import Tensor

from ..models.base import ComputedEnergies, EnergyModel
from ..models.registry import atomic_numbers_of
from ..learning.model_file import read_model, save_model
from ..validation import as_array, fail

#: Pairs more than three bonds apart interact through typed terms within this distance (nm), switched
#: smoothly to zero from SWITCH on (OpenMM's switching polynomial, continuous to the second derivative).
CUTOFF = 1.0
SWITCH = 0.8
#: The neighbour list holds the pairs within CUTOFF + SKIN of where it was built, and is rebuilt once an
#: atom has moved by more than half of it.
SKIN = 0.1
#: The column order of the design matrix's blocks (each block: one basis function after the other, every
#: term of the block within a basis function) and the number of basis functions of each.
BLOCKS = (("bonds", 4), ("angles", 4), ("torsions", 6), ("pairs13", 3), ("pairs14", 3), ("couplings", 5))
TYPED_BASIS = 3
#: Memory of a fit (:meth:`ForceMatchedModel.fit_memory`): the LU factors of the normal equations hold at most
#: FILL times their entries (measured 6.2 on the host-guest cage, whose rings fill the most); a design matrix
#: takes ENTRY_BYTES per entry as it is assembled (measured 56) and at most CHUNK_BYTES at once; the far
#: pairs are bounded at ATOMS_PER_NM3 (liquid water has 100).
FILL = 8
ENTRY_BYTES = 64
CHUNK_BYTES = 2**28
ATOMS_PER_NM3 = 110

METHOD = "lsd-draft"


def _molecular_graph(topology, atoms: Optional[Sequence[int]]):
    """Local indices of the bonds, angles, proper torsions, 1-3 and 1-4 pairs among ``atoms``, the bond index
    of each angle's two arms, and every atom's bonded neighbours. Only three bonds deep from each atom, so
    linear in the atoms."""
    selected = list(range(topology.getNumAtoms())) if atoms is None else [int(i) for i in atoms]
    local = {global_index: i for i, global_index in enumerate(selected)}
    bonds = sorted({tuple(sorted((local[a.index], local[b.index]))) for a, b in topology.bonds()
                    if a.index in local and b.index in local})
    n = len(selected)
    if not bonds:
        raise fail("topology", "bonds between the selected atoms (a ForceMatchedModel is built on them)", "none")
    neighbours: List[set] = [set() for _ in range(n)]
    for i, j in bonds:
        neighbours[i].add(j)
        neighbours[j].add(i)
    angles = sorted({(i, j, k) for j in range(n) for i in neighbours[j] for k in neighbours[j] if i < k})
    torsions = set()
    for j, k in bonds:
        for a, b in ((j, k), (k, j)):
            for first in neighbours[a] - {b}:
                for last in neighbours[b] - {a}:
                    if first != last:
                        torsions.add((first, a, b, last) if first < last else (last, b, a, first))
    by_separation: List[set] = [set(), set(), set()]  # 1-2, 1-3, 1-4 pairs (shortest path)
    for start in range(n):
        seen, frontier = {start}, [start]
        for depth in range(3):
            frontier = [w for u in frontier for w in neighbours[u] if w not in seen]
            frontier = list(dict.fromkeys(frontier))
            seen.update(frontier)
            by_separation[depth].update((start, w) for w in frontier if w > start)
    bond_index = {b: i for i, b in enumerate(bonds)}
    arms = [(bond_index[tuple(sorted((i, j)))], bond_index[tuple(sorted((j, k)))]) for i, j, k in angles]
    return (bonds, angles, sorted(torsions), sorted(by_separation[1]), sorted(by_separation[2]), arms,
            [sorted(partners) for partners in neighbours])


def atom_types(topology, atoms: Optional[Sequence[int]], neighbours) -> List[str]:
    """Each atom's type for the far pairs: its element and number of bonds (``C4``, ``O1``), a hydrogen the
    element it is bonded to (``H-N``)."""
    every = list(topology.atoms())
    selected = [every[i] for i in (range(len(every)) if atoms is None else atoms)]
    symbols = [atom.element.symbol if atom.element is not None else atom.name for atom in selected]
    return [f"H-{symbols[partners[0]]}" if symbol == "H" and partners else f"{symbol}{len(partners)}"
            for symbol, partners in zip(symbols, neighbours)]


class NeighbourList:
    """Pairs of atoms within ``cutoff`` (nm), excluding ``excluded`` keys ``i * n + j`` (i < j): a Verlet
    list built with scipy's k-d tree at ``cutoff + skin`` and reused while no atom has moved by more than
    ``skin / 2`` from where it was built. The list may hold farther pairs; callers switch them off."""

    def __init__(self, n_atoms: int, excluded: np.ndarray, cutoff: float = CUTOFF, skin: float = SKIN):
        self.n_atoms, self.excluded = n_atoms, np.asarray(excluded, dtype=np.int64)
        self.cutoff, self.skin = cutoff, skin
        self.anchor: Optional[np.ndarray] = None
        self.pairs = np.zeros((0, 2), dtype=np.int64)
        self.builds = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The candidate pairs (P, 2) for every configuration of ``x`` (B, N, 3) nm."""
        if self.anchor is None or np.sqrt(((x - self.anchor) ** 2).sum(-1).max()) > 0.5 * self.skin:
            found = [cKDTree(config).query_pairs(self.cutoff + self.skin, output_type="ndarray") for config in x]
            keys = np.unique(np.concatenate([pairs[:, 0] * self.n_atoms + pairs[:, 1] for pairs in found]))
            keys = keys[~np.isin(keys, self.excluded)]
            self.pairs = np.stack([keys // self.n_atoms, keys % self.n_atoms], axis=1)
            self.anchor = np.array(x[0])
            self.builds += 1
        return self.pairs


def switch(r: np.ndarray, cutoff: float = CUTOFF, start: float = SWITCH) -> Tuple[np.ndarray, np.ndarray]:
    """OpenMM's switching function ``1 - 10t^3 + 15t^4 - 6t^5`` (t from 0 at ``start`` to 1 at ``cutoff``) and
    its derivative in r."""
    t = np.clip((r - start) / (cutoff - start), 0.0, 1.0)
    return 1 - t**3 * (10 - 15 * t + 6 * t * t), -30 * t * t * (1 - t) ** 2 / (cutoff - start)


# -- internal coordinates with their Cartesian gradients, batched: values (B, T), gradients (B, T, A, 3) ----
def distances(x: np.ndarray, pairs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    d = x[:, pairs[:, 1]] - x[:, pairs[:, 0]]
    r = np.sqrt((d * d).sum(-1))
    u = d / r[..., None]
    return r, np.stack([-u, u], axis=2)


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a x b`` over the last axis (NumPy's own is slow on small arrays)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def bond_angles(x: np.ndarray, triples: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    u = x[:, triples[:, 0]] - x[:, triples[:, 1]]
    w = x[:, triples[:, 2]] - x[:, triples[:, 1]]
    lu, lw = np.sqrt((u * u).sum(-1)), np.sqrt((w * w).sum(-1))
    uh, wh = u / lu[..., None], w / lw[..., None]
    cos_t = np.clip((uh * wh).sum(-1), -1 + 1e-12, 1 - 1e-12)
    sin_t = np.sqrt(1 - cos_t**2)
    dti = (cos_t[..., None] * uh - wh) / (lu * sin_t)[..., None]
    dtk = (cos_t[..., None] * wh - uh) / (lw * sin_t)[..., None]
    return np.arccos(cos_t), np.stack([dti, -(dti + dtk), dtk], axis=2)


def dihedrals(x: np.ndarray, quads: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Torsion angles with the Blondel-Karplus derivatives."""
    bf = x[:, quads[:, 1]] - x[:, quads[:, 0]]
    bg = x[:, quads[:, 2]] - x[:, quads[:, 1]]
    bh = x[:, quads[:, 3]] - x[:, quads[:, 2]]
    n1, n2 = cross(bf, bg), cross(bg, bh)
    lg = np.sqrt((bg * bg).sum(-1))
    m1 = cross(n1, bg / lg[..., None])
    phi = np.arctan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))
    di = (lg / (n1 * n1).sum(-1))[..., None] * n1
    dl = -(lg / (n2 * n2).sum(-1))[..., None] * n2
    fg, hg = (bf * bg).sum(-1) / lg**2, (bh * bg).sum(-1) / lg**2
    dj = -(1 + fg)[..., None] * di + hg[..., None] * dl
    dk = fg[..., None] * di - (1 + hg)[..., None] * dl
    return phi, np.stack([di, dj, dk, dl], axis=2)


# -- basis functions of a block's variables: values (B, T, K) and partial derivatives (B, T, K, m) ----------
def powers(v: np.ndarray, count: int) -> Tuple[np.ndarray, np.ndarray]:
    values = np.cumprod(np.repeat(v[..., None], count, axis=-1), axis=-1)
    lower = np.concatenate([np.ones_like(v)[..., None], values[..., :-1]], axis=-1)
    return values, (np.arange(1, count + 1) * lower)[..., None]


def fourier(phi: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    k = np.arange(1, 4)
    angle = phi[..., None] * k
    values = np.concatenate([np.cos(angle), np.sin(angle)], axis=-1)
    return values, np.concatenate([-k * np.sin(angle), k * np.cos(angle)], axis=-1)[..., None]


def inverse_powers(r: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    inverse = 1.0 / r
    sixth = (inverse * inverse * inverse) ** 2
    values = np.stack([inverse, sixth, sixth * sixth], axis=-1)
    return values, (-np.array([1, 6, 12]) * values * inverse[..., None])[..., None]


def couplings(s1: np.ndarray, s2: np.ndarray, dt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Stretch-stretch, stretch-bend and cubic stretch-stretch terms at an angle; partials in (s1, s2, dt)."""
    zero = np.zeros_like(s1)
    values = np.stack([s1 * s2, s1 * dt, s2 * dt, s1 * s1 * s2, s1 * s2 * s2], axis=-1)
    partials = np.stack([np.stack(row, axis=-1) for row in (
        (s2, s1, zero), (dt, zero, s1), (zero, dt, s2), (2 * s1 * s2, s1 * s1, zero), (s2 * s2, 2 * s1 * s2, zero))],
        axis=-2)
    return values, partials


@dataclass
class Evaluated:
    """One block at a batch: its basis values (B, T, K), partial derivatives (B, T, K, m), the variables'
    gradients (m, B, T, A, 3), the atoms (T, A) and the parameter columns (K, T) of each term."""
    values: np.ndarray
    partials: np.ndarray
    gradients: np.ndarray
    atoms: np.ndarray
    columns: np.ndarray

    def basis_gradients(self) -> np.ndarray:
        """d(basis)/dx of each term's atoms: (B, T, K, A, 3)."""
        return np.einsum("btkm,mbtac->btkac", self.partials, self.gradients)


class ForceMatchedModel(EnergyModel):
    """Molecule-specific classical-form potential, linear in its parameters, fitted to target forces.

    Parameters
    ----------
    topology : openmm.app.Topology
        Must contain bonds (PDB files with CONECT/standard residues, or Modeller output do).
    atoms : sequence of int, optional
        Restrict to these atoms (e.g. the solute of an ML/MM system).
    cutoff : float
        nm; pairs more than three bonds apart interact within it (switched off from ``0.8 cutoff``).
    """

    def __init__(self, topology, atoms: Optional[Sequence[int]] = None, cutoff: float = CUTOFF):
        numbers = atomic_numbers_of(topology, atoms)
        super().__init__(len(numbers), numbers)
        self.atoms = None if atoms is None else [int(i) for i in atoms]
        bonds, angles, torsions, pairs13, pairs14, arms, neighbours = _molecular_graph(topology, atoms)
        for name, values, width in (("bonds", bonds, 2), ("angles", angles, 3), ("torsions", torsions, 4),
                                    ("pairs13", pairs13, 2), ("pairs14", pairs14, 2), ("arms", arms, 2)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.long).reshape(len(values), width))
        types = atom_types(topology, atoms, neighbours)
        self.type_names = sorted(set(types))
        n_types = len(self.type_names)
        self.register_buffer("types", torch.tensor([self.type_names.index(t) for t in types], dtype=torch.long))
        upper = np.triu_indices(n_types)
        self._type_pair = np.zeros((n_types, n_types), dtype=np.int64)
        self._type_pair[upper] = self._type_pair.T[upper] = np.arange(len(upper[0]))
        self.n_type_pairs = len(upper[0])
        self.cutoff = float(cutoff)
        near = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in (bonds, pairs13, pairs14)])
        self.neighbours = NeighbourList(self.n_atoms, near[:, 0] * self.n_atoms + near[:, 1], self.cutoff)
        counts = {"bonds": len(bonds), "angles": len(angles), "torsions": len(torsions), "pairs13": len(pairs13),
                  "pairs14": len(pairs14), "couplings": len(angles)}
        self.offsets, start = {}, 0
        for name, width in BLOCKS:
            self.offsets[name] = start
            start += width * counts[name]
        self.offsets["far"] = start
        self.n_parameters = start + TYPED_BASIS * self.n_type_pairs
        self.register_buffer("reference", torch.zeros(len(bonds) + len(angles) + len(pairs13), dtype=torch.float64))
        self.register_buffer("params", torch.zeros(self.n_parameters, dtype=torch.float64))
        self.fitted = False
        self._column_cache = {}

    # -- the basis, with its Cartesian derivatives --------------------------------------------------
    def _terms(self, name: str) -> Tensor:
        """The atoms (T, A) of each term of a bonded block (the couplings sit at the angles)."""
        return getattr(self, "angles" if name == "couplings" else name)

    def _columns(self, name: str) -> np.ndarray:
        """The parameter of each basis function (rows) and term (columns) of a bonded block."""
        if name not in self._column_cache:
            count = len(self._terms(name))
            self._column_cache[name] = (self.offsets[name] + np.arange(dict(BLOCKS)[name])[:, None] * count
                                        + np.arange(count)[None])
        return self._column_cache[name]

    def blocks(self, x: np.ndarray) -> List[Evaluated]:
        """Every block of basis functions at positions ``x`` (B, N, 3) nm."""
        ref = self.reference.numpy()
        nb, na = len(self.bonds), len(self.angles)
        bonds, angles, torsions = self.bonds.numpy(), self.angles.numpy(), self.torsions.numpy()
        pairs13, pairs14, arms = self.pairs13.numpy(), self.pairs14.numpy(), self.arms.numpy()
        # every distance at once: bonds, 1-3 and 1-4 pairs, and each angle's arms j-i and j-k
        arm_pairs = np.concatenate([angles[:, [1, 0]], angles[:, [1, 2]]])
        lengths, pair_gradients = distances(x, np.concatenate([bonds, pairs13, pairs14, arm_pairs]))
        ends = np.cumsum([len(bonds), len(pairs13), len(pairs14), na])
        r, r13, r14, r_ij, r_kj = np.split(lengths, ends, axis=1)
        bond_gradients, gradients13, gradients14, g_ij, g_kj = np.split(pair_gradients, ends, axis=1)
        theta, angle_gradients = bond_angles(x, angles)
        phi, torsion_gradients = dihedrals(x, torsions)
        dt = theta - ref[nb:nb + na]
        # the arms' gradients placed on the angle's atoms (i, j, k)
        zero = np.zeros_like(g_ij[:, :, 0])
        arm_gradients = np.stack([np.stack([g_ij[:, :, 1], g_ij[:, :, 0], zero], axis=2),
                                  np.stack([zero, g_kj[:, :, 0], g_kj[:, :, 1]], axis=2), angle_gradients])
        evaluated = []
        for name, (values, partials), gradients, atoms in (
                ("bonds", powers(r - ref[:nb], 4), bond_gradients, bonds),
                ("angles", powers(dt, 4), angle_gradients, angles),
                ("torsions", fourier(phi), torsion_gradients, torsions),
                ("pairs13", powers(r13 - ref[nb + na:], 3), gradients13, pairs13),
                ("pairs14", inverse_powers(r14), gradients14, pairs14),
                ("couplings", couplings(r_ij - ref[arms[:, 0]], r_kj - ref[arms[:, 1]], dt), arm_gradients, angles)):
            gradients = gradients[None] if gradients.ndim == 4 else gradients
            evaluated.append(Evaluated(values, partials, gradients, atoms, self._columns(name)))
        evaluated.append(self._far_pairs(x))
        return evaluated

    def _far_pairs(self, x: np.ndarray) -> Evaluated:
        """Pairs more than three bonds apart, within the cutoff: typed, switched inverse powers."""
        pairs = self.neighbours(x)
        r, gradients = distances(x, pairs)
        s, ds = switch(r, self.cutoff, SWITCH / CUTOFF * self.cutoff)
        f, df = inverse_powers(r)
        types = self.types.numpy()
        type_pairs = self._type_pair[types[pairs[:, 0]], types[pairs[:, 1]]]
        columns = self.offsets["far"] + np.arange(TYPED_BASIS)[:, None] * self.n_type_pairs + type_pairs[None]
        return Evaluated(f * s[..., None], df * s[..., None, None] + f[..., None] * ds[..., None, None],
                         gradients[None], pairs, columns)

    def compute(self, x: np.ndarray, box=None) -> Tuple[np.ndarray, np.ndarray]:
        """Energies (B,) and forces (B, N, 3) from the closed-form derivatives (float64 NumPy)."""
        params = self.params.numpy()
        batch = len(x)
        energies, rows, contributions = np.zeros(batch), [], []
        for block in self.blocks(x):
            weights = params[block.columns].T  # (T, K)
            energies += np.einsum("btk,tk->b", block.values, weights)
            slopes = np.einsum("btkm,tk->btm", block.partials, weights)
            contributions.append(-np.einsum("btm,mbtac->btac", slopes, block.gradients).ravel())
            rows.append(self._rows(block.atoms, batch).ravel())
        forces = np.bincount(np.concatenate(rows), np.concatenate(contributions), batch * self.n_atoms * 3)
        return energies, forces.reshape(batch, self.n_atoms, 3)

    def _rows(self, atoms: np.ndarray, batch: int) -> np.ndarray:
        """Flat (configuration, atom, axis) index of each term's atoms: (B, T, A, 3)."""
        configurations = np.arange(batch)[:, None, None, None] * self.n_atoms
        return (configurations + atoms[None, :, :, None]) * 3 + np.arange(3)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        return ComputedEnergies.apply(positions, box, self)

    def energies_and_forces(self, positions: Tensor, box: Optional[Tensor] = None):
        energies, forces = self.compute(positions.detach().cpu().double().numpy())
        return (torch.as_tensor(energies, device=positions.device),
                torch.as_tensor(forces, device=positions.device))

    # -- fitting ------------------------------------------------------------------------------------
    def design(self, positions: np.ndarray) -> sparse.csr_matrix:
        """Minus the basis gradients, sparse ``(B * N * 3, n_parameters)``: forces = design @ params."""
        x = np.asarray(positions, dtype=np.float64)
        rows, columns, values = [], [], []
        for block in self.blocks(x):
            entries = -block.basis_gradients()  # (B, T, K, A, 3)
            shape = entries.shape
            row = np.broadcast_to(self._rows(block.atoms, len(x))[:, :, None], shape)
            column = np.broadcast_to(block.columns.T[None, :, :, None, None], shape)
            keep = entries != 0
            rows.append(row[keep])
            columns.append(column[keep])
            values.append(entries[keep])
        return sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
                                 shape=(x.shape[0] * self.n_atoms * 3, self.n_parameters))

    def columns_per_atom(self) -> np.ndarray:
        """How many parameters act on each atom (bonded terms, and every far-pair type its type takes part in)."""
        counts = np.zeros(self.n_atoms, dtype=np.int64)
        for name, width in BLOCKS:
            atoms = self._terms(name).numpy()
            np.add.at(counts, atoms.ravel(), width)
        return counts + TYPED_BASIS * len(self.type_names)

    def design_entries(self) -> int:
        """Entries of one configuration's design matrix before they are summed, at most: every bonded term's
        basis gradients on its atoms, and the far pairs at condensed-phase density (:data:`ATOMS_PER_NM3`)
        within the neighbour list's reach."""
        entries = sum(self._terms(name).numel() * width * 3 for name, width in BLOCKS)
        reach = 4 / 3 * np.pi * (self.cutoff + SKIN) ** 3 * ATOMS_PER_NM3
        far_pairs = min(self.n_atoms * (self.n_atoms - 1) // 2, int(self.n_atoms * reach / 2))
        return entries + far_pairs * TYPED_BASIS * 2 * 3

    def fit_chunk(self, largest: int = 32) -> int:
        """Configurations per design matrix in a fit: up to ``largest``, fewer where one chunk would pass
        :data:`CHUNK_BYTES`."""
        return int(np.clip(CHUNK_BYTES // (ENTRY_BYTES * self.design_entries()), 1, largest))

    def fit_memory(self, chunk: Optional[int] = None) -> int:
        """Bytes a :meth:`fit` needs at its peak, an upper bound: the sparse normal equations (at most
        ``sum_atoms c^2`` entries for ``c`` parameters acting on an atom; 12 bytes each) three times (the
        sum, its scaled copy and a chunk's product), their LU factors (at most :data:`FILL` times as many
        entries, at most dense), and a chunk's design matrix as it is assembled (:data:`ENTRY_BYTES` per
        entry). Linear in the atoms but for the factorisation's fill. Measured (peak resident memory
        of a fit to 1000 configurations): alanine dipeptide 0.04 GiB (estimate 0.05), openmmtools' 156-atom
        host-guest complex 0.91 GiB (estimate 1.47)."""
        chunk = self.fit_chunk() if chunk is None else chunk
        gram = float((self.columns_per_atom().astype(np.float64) ** 2).sum())
        factors = min(float(self.n_parameters) ** 2, FILL * gram)
        return int(12 * (3 * gram + factors) + ENTRY_BYTES * chunk * self.design_entries())

    def check_memory(self, chunk: Optional[int] = None, fraction: float = 0.5) -> None:
        """Refuse (naming ``draft``) a fit that needs more than ``fraction`` of the memory available now, with
        what to use instead, before any of it is built or sampled for."""
        needed, available = self.fit_memory(chunk), available_memory()
        if available is not None and needed > fraction * available:
            raise fail("draft", f"a distilled draft whose fit fits in memory ({fraction:.0%} of the "
                       f"{available / 2**30:.1f} GiB available now): use --draft mm (the force field) or --draft "
                       "member (one network of an ensemble), or a smaller --ml-atoms region",
                       f"a fit needing ~{needed / 2**30:.1f} GiB ({self.n_parameters:,} parameters on "
                       f"{self.n_atoms} atoms)")

    def set_reference(self, positions: np.ndarray) -> None:
        """Reference bond lengths, angles and 1-3 distances: averages over ``positions`` (B, N, 3)."""
        x = np.asarray(positions, dtype=np.float64)
        r = distances(x, self.bonds.numpy())[0]
        theta = bond_angles(x, self.angles.numpy())[0]
        r13 = distances(x, self.pairs13.numpy())[0]
        self.reference.copy_(torch.as_tensor(np.concatenate([r.mean(0), theta.mean(0), r13.mean(0)])))

    def fit(self, positions: np.ndarray, forces: np.ndarray, ridge: float = 1e-8, chunk: Optional[int] = None,
            metric: Optional["AcceptanceMetric"] = None) -> float:
        """Least-squares fit to target ``forces`` (kJ/mol/nm) at ``positions`` (nm; either may be a
        Quantity), errors measured in ``metric`` if given; returns the RMS error (in that metric).
        ``chunk``: configurations per design matrix (default :meth:`fit_chunk`)."""
        positions = as_array(positions, unit.nanometer, "positions")
        forces = as_array(forces, unit.kilojoule_per_mole / unit.nanometer, "forces")
        if positions.shape != forces.shape or positions.shape[1:] != (self.n_atoms, 3):
            raise fail("positions/forces", f"equal shapes (B, {self.n_atoms}, 3)", f"{positions.shape}, {forces.shape}")
        self.set_reference(positions)
        chunk = self.fit_chunk() if chunk is None else int(chunk)
        equations = NormalEquations(self.n_parameters)
        for start in range(0, len(positions), chunk):
            equations.add(*self.equations_of(positions[start:start + chunk], forces[start:start + chunk], metric))
        self.params.copy_(torch.as_tensor(equations.solve(ridge)))
        self.fitted = True
        return self.rms_error(positions, forces, metric, chunk)

    def equations_of(self, positions: np.ndarray, forces: np.ndarray, metric: Optional["AcceptanceMetric"] = None):
        """The design matrix and target of ``forces`` at ``positions`` (B, N, 3), weighted by ``metric``."""
        design, target = self.design(positions), forces.ravel()
        return (design, target) if metric is None else metric.apply(positions, design, target)

    def save(self, path: str) -> None:
        """Write the fitted parameters, with the term lists they belong to, as a model file
        (:mod:`openmm_accel.learning.model_file`)."""
        arrays = {name: getattr(self, name).numpy() for name in ("params", "reference") + IDENTITY}
        save_model(path, METHOD, arrays, {"atoms": self.atoms, "cutoff": self.cutoff, "types": self.type_names},
                   {"elements": list(self.atomic_numbers)})

    def load(self, path: str) -> None:
        """Read parameters written by :meth:`save` for the same molecule (checked)."""
        header, data = read_model(path, METHOD, "distilled draft file (ForceMatchedModel.save)")
        for name in IDENTITY:
            if name not in data:
                raise fail("path", "a distilled draft file with typed far pairs (this version's ForceMatchedModel)",
                           f"{path}, written by an older version (no {name}): distil the draft again")
            if not np.array_equal(data[name], getattr(self, name).numpy()):
                raise fail("path", "parameters of a model of the same molecule", f"different {name} in {path}")
        if header["config"].get("cutoff") != self.cutoff or header["config"].get("types") != self.type_names:
            raise fail("path", f"a draft with cutoff {self.cutoff} nm and atom types {self.type_names}",
                       f"{path}: cutoff {header['config'].get('cutoff')}, types {header['config'].get('types')}")
        self.params.copy_(torch.as_tensor(data["params"]))
        self.reference.copy_(torch.as_tensor(data["reference"]))
        self.fitted = True

    def rms_error(self, positions: np.ndarray, forces: np.ndarray, metric: Optional["AcceptanceMetric"] = None,
                  chunk: int = 32) -> float:
        """RMS force error per component against ``forces`` (in ``metric``, if given), ``chunk``
        configurations at a time."""
        squares = 0.0
        for start in range(0, len(positions), chunk):
            x = positions[start:start + chunk]
            errors = self.evaluate(x)[1] - forces[start:start + chunk]
            if metric is not None:
                errors = metric.apply(x, None, errors.ravel())[1]
            squares += float(np.sum(errors**2))
        return float(np.sqrt(squares / np.size(forces)))


#: The term lists a saved draft belongs to (a file is loaded only onto a model with the same ones).
IDENTITY = ("bonds", "angles", "torsions", "pairs14", "types")


class AcceptanceMetric:
    """The norm in which speculative verification sees a draft's force error: ``|delta|`` is proportional
    to ``|M^1/2 P M^-1 dF|`` (Kosmala et al. 2026, arXiv:2606.02455; docs/lsd-constraints.md): errors on light
    atoms count more, errors along constrained bonds not at all. Scaled by the mean mass, so forces keep their units.

    ``masses``: (N,) amu; ``constraints``: :class:`~openmm_accel.integrators.constraints.Constraints` among
    the N atoms, or None."""

    def __init__(self, masses, constraints=None):
        self.masses = np.asarray(masses, dtype=np.float64)
        self.constraints = constraints
        self._scale = np.sqrt(self.masses.mean())

    def apply(self, positions: np.ndarray, design: Optional[sparse.spmatrix], target: np.ndarray):
        """``(W design, W target)`` for stacked configurations (``design`` rows and ``target`` entries in
        the order of ``positions`` (B, N, 3) raveled)."""
        weights = sparse.block_diag([self.matrix(x) for x in positions], format="csr")
        return (None if design is None else weights @ design), weights @ target

    def matrix(self, position: np.ndarray) -> sparse.csr_matrix:
        """``W = M^1/2 P M^-1`` at one configuration, times sqrt(mean mass): sparse (3N, 3N)."""
        if self.constraints is None:
            return sparse.diags(np.repeat(self._scale / np.sqrt(self.masses), 3)).tocsr()
        root, inverse = (sparse.diags(np.repeat(self._scale * np.sqrt(self.masses), 3)),
                         sparse.diags(np.repeat(1.0 / self.masses, 3)))
        return (root @ self.constraints.projector(position).matrix() @ inverse).tocsr()


def available_memory() -> Optional[int]:
    """Bytes of memory available now: Linux's MemAvailable (free memory and reclaimable caches), else the
    free pages; None where the system does not say."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


class NormalEquations:
    """Accumulated sparse ``A^T A`` and ``A^T y`` of a linear least-squares problem, with optional forgetting."""

    def __init__(self, size: int):
        self.gram = sparse.csr_matrix((size, size))
        self.rhs = np.zeros(size)

    def add(self, design: sparse.spmatrix, target: np.ndarray, weight: float = 1.0) -> None:
        transposed = design.T.tocsr()
        self.gram = self.gram + weight * (transposed @ design)
        self.rhs += weight * (transposed @ target)

    def decay(self, factor: float) -> None:
        self.gram = self.gram * factor
        self.rhs *= factor

    def solve(self, ridge: float) -> np.ndarray:
        """Scaled ridge solution (columns normalised so that ``ridge`` is relative), by a sparse LU
        factorisation (SuperLU, COLAMD order: less fill and faster than a symmetric order on the drafts)."""
        scale = np.sqrt(self.gram.diagonal()) + 1e-300
        unscale = sparse.diags(1.0 / scale)
        scaled = unscale @ self.gram @ unscale + ridge * sparse.identity(len(scale))
        return splu(scaled.tocsc(), permc_spec="COLAMD").solve(self.rhs / scale) / scale


class OnlineForceMatching:
    """Keeps refining a :class:`ForceMatchedModel` draft with the target forces verification produces.

    Every verified step brings the target force at its midpoint. Every ``every``-th of them is added to
    the normal equations (older data decays by ``forgetting`` per addition, so the fit follows the
    trajectory), and every ``refit_every`` additions the parameters are re-solved. A step is always
    drafted and verified with one frozen parameter set, so exactness holds while the draft improves.
    """

    def __init__(self, model: ForceMatchedModel, atoms: Optional[Sequence[int]] = None, every: int = 4,
                 refit_every: int = 50, forgetting: float = 0.999, ridge: float = 1e-8,
                 metric: Optional[AcceptanceMetric] = None):
        if not model.fitted:
            raise fail("model", "a ForceMatchedModel fitted offline first (model.fit)", "an unfitted model")
        self.atoms = None if atoms is None else list(atoms)  # the model's atoms within the observed system
        self.model, self.every, self.refit_every = model, int(every), int(refit_every)
        self.forgetting, self.ridge = float(forgetting), float(ridge)
        self.metric = metric  # the one the offline fit used (see AcceptanceMetric)
        self.equations: Optional[NormalEquations] = None
        self._seen = 0
        self._added = 0
        self.refits = 0

    def start(self, positions: np.ndarray, forces: np.ndarray) -> None:
        """Seed the normal equations with the offline data."""
        self.equations = NormalEquations(self.model.n_parameters)
        for start in range(0, len(positions), 32):
            self._add(positions[start:start + 32], forces[start:start + 32])

    def _add(self, positions: np.ndarray, forces: np.ndarray) -> None:
        self.equations.add(*self.model.equations_of(positions, forces, self.metric))

    def observe(self, midpoints: List[np.ndarray], target_forces: List[np.ndarray]) -> bool:
        """Take verified (midpoint, target force) pairs of the whole system (the target force of the term
        the model stands in for); return True if the draft's parameters changed."""
        if self.equations is None:
            self.equations = NormalEquations(self.model.n_parameters)
        changed = False
        for x, f in zip(midpoints, target_forces):
            self._seen += 1
            if self._seen % self.every:
                continue
            if self.atoms is not None:
                x, f = x[self.atoms], f[self.atoms]
            self.equations.decay(self.forgetting)
            self._add(x[None], f[None])
            self._added += 1
            if self._added % self.refit_every == 0:
                self.model.params.copy_(torch.as_tensor(self.equations.solve(self.ridge)))
                self.refits += 1
                changed = True
        return changed
