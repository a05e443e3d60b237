"""A cheap draft distilled from an expensive target: a classical-form potential fitted to its forces.

:class:`ForceMatchedModel` is built from a molecule's bonds and is *linear in its parameters*:

* bonds: ``(r - r0)^k``, k = 1..4 (anharmonic stretches, which dominate the fast force changes);
* angles: ``(theta - theta0)^k``, k = 1..4; 1-3 distances: ``(r13 - r13_0)^k``, k = 1..3;
* couplings at every angle: stretch-stretch, stretch-bend and cubic stretch-stretch terms;
* proper torsions: ``cos(n phi)``, ``sin(n phi)``, n = 1..3;
* non-bonded pairs (three or more bonds apart): ``1/r``, ``1/r^6``, ``1/r^12``.

Each term has its own coefficients (no atom types), so the model is specific to one molecule, and
force matching is a linear least-squares problem: fitting from a short target run is exact and fast,
and the normal equations can be updated online with the target forces that speculative verification
produces anyway (:class:`OnlineForceMatching`). Reference values r0, theta0 are averages over the first
fitted configurations. Cost: all pairs are included, so it is meant for molecules of tens of atoms.
"""
from __future__ import annotations

import collections
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from openmm import unit
from torch import Tensor

from ..models.base import EnergyModel
from ..models.registry import atomic_numbers_of
from ..learning.model_file import read_model, save_model
from ..validation import as_array, fail


def _molecular_graph(topology, atoms: Optional[Sequence[int]]):
    """Bonds, angles, proper torsions, 1-3 pairs and non-bonded pairs among ``atoms`` (local indices)."""
    every = list(topology.atoms())
    selected = list(range(len(every))) if atoms is None else [int(i) for i in atoms]
    local = {global_index: i for i, global_index in enumerate(selected)}
    bonds = sorted({tuple(sorted((local[a.index], local[b.index]))) for a, b in topology.bonds()
                    if a.index in local and b.index in local})
    n = len(selected)
    if not bonds:
        raise fail("topology", "bonds between the selected atoms (a ForceMatchedModel is built on them)", "none")
    neighbours = {i: set() for i in range(n)}
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
    separation = np.full((n, n), n + 1)
    for start in range(n):
        separation[start, start] = 0
        queue = collections.deque([start])
        while queue:
            u = queue.popleft()
            for w in neighbours[u]:
                if separation[start, w] > n:
                    separation[start, w] = separation[start, u] + 1
                    queue.append(w)
    pairs13 = [(i, j) for i in range(n) for j in range(i + 1, n) if separation[i, j] == 2]
    nonbonded = [(i, j) for i in range(n) for j in range(i + 1, n) if separation[i, j] >= 3]
    bond_index = {b: i for i, b in enumerate(bonds)}
    arms = [(bond_index[tuple(sorted((i, j)))], bond_index[tuple(sorted((j, k)))]) for i, j, k in angles]
    return n, bonds, angles, sorted(torsions), pairs13, nonbonded, arms


METHOD = "lsd-draft"


class ForceMatchedModel(EnergyModel):
    """Molecule-specific classical-form potential, linear in its parameters, fitted to target forces.

    Parameters
    ----------
    topology : openmm.app.Topology
        Must contain bonds (PDB files with CONECT/standard residues, or Modeller output do).
    atoms : sequence of int, optional
        Restrict to these atoms (e.g. the solute of an ML/MM system).
    """

    def __init__(self, topology, atoms: Optional[Sequence[int]] = None):
        numbers = atomic_numbers_of(topology, atoms)
        super().__init__(len(numbers), numbers)
        self.atoms = None if atoms is None else [int(i) for i in atoms]
        n, bonds, angles, torsions, pairs13, nonbonded, arms = _molecular_graph(topology, atoms)
        for name, values, width in (("bonds", bonds, 2), ("angles", angles, 3), ("torsions", torsions, 4),
                                    ("pairs13", pairs13, 2), ("nonbonded", nonbonded, 2), ("arms", arms, 2)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.long).reshape(len(values), width))
        self.register_buffer("reference", torch.zeros(len(bonds) + len(angles) + len(pairs13), dtype=torch.float64))
        self.n_parameters = (4 * len(bonds) + 4 * len(angles) + 6 * len(torsions) + 3 * len(pairs13)
                             + 3 * len(nonbonded) + 5 * len(angles))
        self.register_buffer("params", torch.zeros(self.n_parameters, dtype=torch.float64))
        self.fitted = False

    # -- the basis ----------------------------------------------------------------------------------
    def internal_coordinates(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        def vector(pairs, a, b):
            return x[..., pairs[:, b], :] - x[..., pairs[:, a], :]
        r = vector(self.bonds, 0, 1).norm(dim=-1)
        u, w = vector(self.angles, 1, 0), vector(self.angles, 1, 2)
        cos_theta = (u * w).sum(-1) / (u.norm(dim=-1) * w.norm(dim=-1))
        theta = torch.acos(cos_theta.clamp(-1 + 1e-12, 1 - 1e-12))
        b1, b2, b3 = vector(self.torsions, 0, 1), vector(self.torsions, 1, 2), vector(self.torsions, 2, 3)
        n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
        m1 = torch.linalg.cross(n1, b2 / b2.norm(dim=-1, keepdim=True))
        phi = torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))
        r13 = vector(self.pairs13, 0, 1).norm(dim=-1)
        rnb = vector(self.nonbonded, 0, 1).norm(dim=-1)
        return r, theta, phi, r13, rnb

    def basis(self, x: Tensor) -> Tensor:
        """All basis functions, ``(B, n_parameters)``, for positions ``(B, N, 3)`` in nm."""
        r, theta, phi, r13, rnb = self.internal_coordinates(x)
        nb, na = r.shape[-1], theta.shape[-1]
        ref = self.reference
        dr, dtheta, d13 = r - ref[:nb], theta - ref[nb:nb + na], r13 - ref[nb + na:]
        s1, s2 = dr[..., self.arms[:, 0]], dr[..., self.arms[:, 1]]
        terms = [dr, dr**2, dr**3, dr**4, dtheta, dtheta**2, dtheta**3, dtheta**4]
        terms += [torch.cos(k * phi) for k in (1, 2, 3)] + [torch.sin(k * phi) for k in (1, 2, 3)]
        terms += [d13, d13**2, d13**3, 1.0 / rnb, rnb**-6, rnb**-12]
        terms += [s1 * s2, s1 * dtheta, s2 * dtheta, s1 * s1 * s2, s1 * s2 * s2]
        return torch.cat(terms, dim=-1)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        self.check_batch(positions)
        return self.basis(positions.to(torch.float64)) @ self.params

    # -- fast analytic forces (the draft's hot path: ~10x cheaper than autograd through the basis) ------
    def energies_and_forces(self, positions: Tensor, box: Optional[Tensor] = None):
        x = positions.detach().cpu().double().numpy()
        energies, forces = self._analytic(x)
        return torch.as_tensor(energies), torch.as_tensor(forces)

    def _split_parameters(self):
        if getattr(self, "_split_cache", None) is not None and self._split_cache[0] is self._version():
            return self._split_cache[1]
        p = self.params.numpy()
        nb, na, nt = len(self.bonds), len(self.angles), len(self.torsions)
        n13, nnb = len(self.pairs13), len(self.nonbonded)
        sizes = [nb] * 4 + [na] * 4 + [nt] * 6 + [n13] * 3 + [nnb] * 3 + [na] * 5
        blocks = np.split(p, np.cumsum(sizes)[:-1])
        self._split_cache = (self._version(), blocks)
        return blocks

    def _version(self):
        return self.params._version

    def _analytic(self, x: np.ndarray):
        """Energies (B,) and forces (B, N, 3) from closed-form derivatives of the internal coordinates."""
        g = self._graph_arrays()
        (b1, b2, b3, b4, a1, a2, a3, a4, c1, c2, c3, s1_, s2_, s3_, q1, q2, q3,
         p1, p2, p3, k1, k2, k3, k4, k5) = self._split_parameters()
        ref = self.reference.numpy()
        nb, na = len(g["bonds"]), len(g["angles"])
        forces = np.zeros_like(x)

        def distance(pairs):
            d = x[:, pairs[:, 1]] - x[:, pairs[:, 0]]
            r = np.linalg.norm(d, axis=-1)
            return r, d / r[..., None]

        def scatter(name, gradient):  # dE/dr u (u from atom 0 to atom 1): +on atom 0, -on atom 1
            forces[:] += g[name + "@pair"] @ gradient

        def add(name, column, contribution):  # per-term force on the term's atom `column`
            forces[:] += g[f"{name}@{column}"] @ contribution

        # bonds (with coupling terms at angles)
        r, ub = distance(g["bonds"])
        dr = r - ref[:nb]
        # angles
        u = x[:, g["angles"][:, 0]] - x[:, g["angles"][:, 1]]
        w = x[:, g["angles"][:, 2]] - x[:, g["angles"][:, 1]]
        lu, lw = np.linalg.norm(u, axis=-1), np.linalg.norm(w, axis=-1)
        uh, wh = u / lu[..., None], w / lw[..., None]
        cos_t = np.clip((uh * wh).sum(-1), -1 + 1e-12, 1 - 1e-12)
        theta = np.arccos(cos_t)
        sin_t = np.sqrt(1 - cos_t**2)
        dt = theta - ref[nb:nb + na]
        sa, sb = dr[:, g["arms"][:, 0]], dr[:, g["arms"][:, 1]]
        energy = ((b1 + (b2 + (b3 + b4 * dr) * dr) * dr) * dr).sum(-1)
        energy += ((a1 + (a2 + (a3 + a4 * dt) * dt) * dt) * dt).sum(-1)
        energy += (k1 * sa * sb + k2 * sa * dt + k3 * sb * dt + k4 * sa * sa * sb + k5 * sa * sb * sb).sum(-1)
        de_dr = b1 + (2 * b2 + (3 * b3 + 4 * b4 * dr) * dr) * dr
        de_dsa = k1 * sb + k2 * dt + 2 * k4 * sa * sb + k5 * sb * sb
        de_dsb = k1 * sa + k3 * dt + k4 * sa * sa + 2 * k5 * sa * sb
        de_dr = de_dr + de_dsa @ g["arms@0"].T + de_dsb @ g["arms@1"].T
        scatter("bonds", de_dr[..., None] * ub)
        de_dt = a1 + (2 * a2 + (3 * a3 + 4 * a4 * dt) * dt) * dt + k2 * sa + k3 * sb
        dti = (cos_t[..., None] * uh - wh) / (lu * sin_t)[..., None]
        dtk = (cos_t[..., None] * wh - uh) / (lw * sin_t)[..., None]
        fi, fk = -de_dt[..., None] * dti, -de_dt[..., None] * dtk
        add("angles", 0, fi)
        add("angles", 2, fk)
        add("angles", 1, -(fi + fk))
        # torsions (Blondel-Karplus derivatives; phi as in internal_coordinates)
        t = g["torsions"]
        bf = x[:, t[:, 1]] - x[:, t[:, 0]]
        bg = x[:, t[:, 2]] - x[:, t[:, 1]]
        bh = x[:, t[:, 3]] - x[:, t[:, 2]]
        n1, n2 = np.cross(bf, bg), np.cross(bg, bh)
        lg = np.linalg.norm(bg, axis=-1)
        m1 = np.cross(n1, bg / lg[..., None])
        phi = np.arctan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))
        energy += (c1 * np.cos(phi) + c2 * np.cos(2 * phi) + c3 * np.cos(3 * phi)
                   + s1_ * np.sin(phi) + s2_ * np.sin(2 * phi) + s3_ * np.sin(3 * phi)).sum(-1)
        de_dphi = (-c1 * np.sin(phi) - 2 * c2 * np.sin(2 * phi) - 3 * c3 * np.sin(3 * phi)
                   + s1_ * np.cos(phi) + 2 * s2_ * np.cos(2 * phi) + 3 * s3_ * np.cos(3 * phi))
        n1sq, n2sq = (n1 * n1).sum(-1), (n2 * n2).sum(-1)
        dphi_i = (lg / n1sq)[..., None] * n1
        dphi_l = -(lg / n2sq)[..., None] * n2
        fg, hg = (bf * bg).sum(-1) / lg**2, (bh * bg).sum(-1) / lg**2
        dphi_j = -(1 + fg)[..., None] * dphi_i + hg[..., None] * dphi_l
        dphi_k = fg[..., None] * dphi_i - (1 + hg)[..., None] * dphi_l
        for column, derivative in enumerate((dphi_i, dphi_j, dphi_k, dphi_l)):
            add("torsions", column, -de_dphi[..., None] * derivative)
        # 1-3 distances and non-bonded pairs
        r13, u13 = distance(g["pairs13"])
        d13 = r13 - ref[nb + na:]
        energy += ((q1 + (q2 + q3 * d13) * d13) * d13).sum(-1)
        scatter("pairs13", (q1 + (2 * q2 + 3 * q3 * d13) * d13)[..., None] * u13)
        rnb, unb = distance(g["nonbonded"])
        inv = 1.0 / rnb
        inv6 = inv**6
        energy += (p1 * inv + p2 * inv6 + p3 * inv6 * inv6).sum(-1)
        scatter("nonbonded", (-(p1 * inv + 6 * p2 * inv6 + 12 * p3 * inv6 * inv6) * inv)[..., None] * unb)
        return energy, forces

    def _graph_arrays(self):
        """Index arrays and the incidence matrices that scatter per-term forces onto atoms (cached)."""
        if getattr(self, "_graph_cache", None) is None:
            cache = {name: getattr(self, name).numpy() for name in
                     ("bonds", "angles", "torsions", "pairs13", "nonbonded", "arms")}

            def incidence(indices, rows):
                matrix = np.zeros((rows, len(indices)))
                matrix[indices, np.arange(len(indices))] = 1.0
                return matrix
            for name in ("bonds", "pairs13", "nonbonded"):
                cache[name + "@pair"] = incidence(cache[name][:, 0], self.n_atoms) - incidence(cache[name][:, 1],
                                                                                            self.n_atoms)
            for name, width in (("angles", 3), ("torsions", 4)):
                for column in range(width):
                    cache[f"{name}@{column}"] = incidence(cache[name][:, column], self.n_atoms)
            for column in range(2):  # bond index of each angle's arms: (n_bonds, n_angles)
                cache[f"arms@{column}"] = incidence(cache["arms"][:, column], len(cache["bonds"]))
            self._graph_cache = cache
        return self._graph_cache

    # -- fitting ------------------------------------------------------------------------------------
    def design(self, positions: np.ndarray) -> np.ndarray:
        """Minus the basis gradients: ``(B * N * 3, n_parameters)``, so that forces = design @ params."""
        x = torch.as_tensor(positions, dtype=torch.float64)
        jacobian = torch.func.vmap(torch.func.jacfwd(lambda y: self.basis(y[None])[0]))(x)  # (B, P, N, 3)
        return -jacobian.reshape(len(x), self.n_parameters, -1).permute(0, 2, 1).reshape(-1, self.n_parameters).numpy()

    def fit_memory(self, chunk: int = 32) -> int:
        """Bytes a :meth:`fit` in chunks of ``chunk`` configurations needs at its peak: the normal equations
        and their scaled copy with the ridge (3 P^2 doubles), a chunk's design matrix as torch's Jacobian,
        its transpose and the NumPy copy (3 chunk P 3N), and the dense incidence matrices of the analytic
        forces. It grows with the square of the parameters, and the non-bonded pairs with the square of the
        atoms: a 156-atom host-guest complex has 43,348 parameters and needs ~45 GB."""
        p, n = self.n_parameters, self.n_atoms
        terms = (len(self.bonds) + len(self.pairs13) + len(self.nonbonded) + 3 * len(self.angles)
                 + 4 * len(self.torsions))
        return 8 * (3 * p * p + 3 * chunk * p * 3 * n + n * terms + 2 * len(self.bonds) * len(self.angles))

    def check_memory(self, chunk: int = 32, fraction: float = 0.5) -> None:
        """Refuse (naming ``draft``) a fit that needs more than ``fraction`` of the memory available now, with
        what to use instead, before any of it is built or sampled for."""
        needed, available = self.fit_memory(chunk), available_memory()
        if available is not None and needed > fraction * available:
            raise fail("draft", f"a distilled draft whose fit fits in memory (it grows with the square of the atoms; "
                       f"{fraction:.0%} of the {available / 2**30:.1f} GiB available now): use --draft mm (the force "
                       "field) or --draft member (one network of an ensemble), or a smaller --ml-atoms region",
                       f"a fit needing ~{needed / 2**30:.1f} GiB ({self.n_parameters:,} parameters on "
                       f"{self.n_atoms} atoms)")

    def set_reference(self, positions: np.ndarray) -> None:
        """Reference bond lengths, angles and 1-3 distances: averages over ``positions`` (B, N, 3)."""
        with torch.no_grad():
            r, theta, _, r13, _ = self.internal_coordinates(torch.as_tensor(positions, dtype=torch.float64))
            self.reference.copy_(torch.cat([r.mean(0), theta.mean(0), r13.mean(0)]))

    def fit(self, positions: np.ndarray, forces: np.ndarray, ridge: float = 1e-8, chunk: int = 32,
            metric: Optional["AcceptanceMetric"] = None) -> float:
        """Least-squares fit to target ``forces`` (kJ/mol/nm) at ``positions`` (nm; either may be a
        Quantity), errors measured in ``metric`` if given; returns the RMS error (in that metric)."""
        positions = as_array(positions, unit.nanometer, "positions")
        forces = as_array(forces, unit.kilojoule_per_mole / unit.nanometer, "forces")
        if positions.shape != forces.shape or positions.shape[1:] != (self.n_atoms, 3):
            raise fail("positions/forces", f"equal shapes (B, {self.n_atoms}, 3)", f"{positions.shape}, {forces.shape}")
        self.set_reference(positions)
        equations = NormalEquations(self.n_parameters)
        for start in range(0, len(positions), chunk):
            design = self.design(positions[start:start + chunk])
            target = forces[start:start + chunk].ravel()
            if metric is not None:
                design, target = metric.apply(positions[start:start + chunk], design, target)
            equations.add(design, target)
        self.params.copy_(torch.as_tensor(equations.solve(ridge)))
        self.fitted = True
        return self.rms_error(positions, forces, metric)

    def save(self, path: str) -> None:
        """Write the fitted parameters, with the term lists they belong to, as a model file
        (:mod:`openmm_accel.learning.model_file`)."""
        arrays = {name: getattr(self, name).numpy() for name in ("params", "reference", "bonds", "angles", "torsions",
                                                                   "nonbonded")}
        save_model(path, METHOD, arrays, {"atoms": self.atoms}, {"elements": list(self.atomic_numbers)})

    def load(self, path: str) -> None:
        """Read parameters written by :meth:`save` for the same molecule (checked)."""
        header, data = read_model(path, METHOD, "distilled draft file (ForceMatchedModel.save)")
        for name in ("bonds", "angles", "torsions", "nonbonded"):
            if not np.array_equal(data[name], getattr(self, name).numpy()):
                raise fail("path", "parameters of a model of the same molecule", f"different {name} in {path}")
        self.params.copy_(torch.as_tensor(data["params"]))
        self.reference.copy_(torch.as_tensor(data["reference"]))
        self.fitted = True

    def rms_error(self, positions: np.ndarray, forces: np.ndarray, metric: Optional["AcceptanceMetric"] = None) -> float:
        """RMS force error per component against ``forces`` (in ``metric``, if given)."""
        errors = self.evaluate(positions)[1] - forces
        if metric is not None:
            errors = metric.apply(positions, None, errors.ravel())[1]
        return float(np.sqrt(np.mean(errors**2)))


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

    def apply(self, positions: np.ndarray, design: Optional[np.ndarray], target: np.ndarray):
        """``(W design, W target)`` for stacked configurations (``design`` rows and ``target`` entries in
        the order of ``positions`` (B, N, 3) raveled)."""
        n = 3 * len(self.masses)
        blocks = [self.matrix(x) for x in positions]
        weighted_target = np.concatenate([w @ target[b * n:(b + 1) * n] for b, w in enumerate(blocks)])
        if design is None:
            return None, weighted_target
        return np.concatenate([w @ design[b * n:(b + 1) * n] for b, w in enumerate(blocks)]), weighted_target

    def matrix(self, position: np.ndarray) -> np.ndarray:
        """``W = M^1/2 P M^-1`` at one configuration, times sqrt(mean mass): (3N, 3N)."""
        inverse = np.repeat(1.0 / self.masses, 3)
        root = np.repeat(np.sqrt(self.masses), 3)
        if self.constraints is None:
            return np.diag(self._scale * root * inverse)
        project = self.constraints.projector(position)
        columns = [project(unit_vector.reshape(-1, 3)).ravel() for unit_vector in np.diag(inverse)]
        return self._scale * root[:, None] * np.stack(columns, axis=1)


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
    """Accumulated ``A^T A`` and ``A^T y`` of a linear least-squares problem, with optional forgetting."""

    def __init__(self, size: int):
        self.gram = np.zeros((size, size))
        self.rhs = np.zeros(size)

    def add(self, design: np.ndarray, target: np.ndarray, weight: float = 1.0) -> None:
        self.gram += weight * design.T @ design
        self.rhs += weight * design.T @ target

    def decay(self, factor: float) -> None:
        self.gram *= factor
        self.rhs *= factor

    def solve(self, ridge: float) -> np.ndarray:
        """Scaled ridge solution (columns normalised so that ``ridge`` is relative)."""
        scale = np.sqrt(np.diag(self.gram)) + 1e-300
        scaled = self.gram / np.outer(scale, scale)
        return np.linalg.solve(scaled + ridge * np.eye(len(scaled)), self.rhs / scale) / scale


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
        design, target = self.model.design(positions), forces.ravel()
        if self.metric is not None:
            design, target = self.metric.apply(positions, design, target)
        self.equations.add(design, target)

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
