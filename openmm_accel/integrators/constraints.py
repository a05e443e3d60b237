"""Distance constraints as RATTLE projections in numpy, for integrators whose step runs in Python.

A System's constraints ``|x_i - x_j| = d`` (X-H bonds, rigid water) split into small independent
*clusters* (a heavy atom with its hydrogens, one water): at most a few constraints share atoms. Every
operation below is a batch of tiny dense solves, one per cluster, in float64:

* :meth:`Constraints.positions` - the RATTLE position step: move ``x~`` along the constraint gradients
  at a reference configuration, ``x = x~ + M^-1 G(x_ref)^T lambda``, until every constraint holds
  (Newton's method on ``lambda``, keeping a Jacobian while it still converges fast).
* :meth:`Constraints.velocities` - the RATTLE velocity step: the mass-weighted (M-orthogonal)
  projection onto the tangent space at ``x``, ``v - M^-1 G^T (G M^-1 G^T)^-1 G v``.
* :meth:`Constraints.projector` - that projection at one ``x``, factorised once and applied to many
  vectors (the mean and the noise of a Langevin velocity update).

These are the same operations as OpenMM's ``addConstrainPositions``/``addConstrainVelocities``, solved
to a tighter tolerance, so a Python step and a ``CustomIntegrator`` program integrate the same dynamics.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import openmm
from scipy.sparse import csr_matrix, diags, identity
from scipy.sparse.csgraph import connected_components

from ..validation import SimulationError, fail

#: Tolerance of the constraint steps of this package's OpenMM programs (OpenMM's default for a
#: CustomIntegrator is 1e-5, looser than the 1e-8 relative length error these integrators promise).
PROGRAM_TOLERANCE = 1e-8
#: Newton's method stops when every |r|^2 - d^2 is below this fraction of d^2 (~1e-12 nm at 0.1 nm).
RELATIVE_TOLERANCE = 1e-11
MAX_ITERATIONS = 50


def add_constrained_drift(integrator: openmm.CustomIntegrator, step: str) -> None:
    """Append a drift ``x += step * v`` and RATTLE's position projection with its velocity correction to an
    OpenMM program (no-ops without constraints; the caller projects the velocities when its scheme says).
    ``step``: an expression such as ``"dt"`` or ``"0.5*dt"``; needs the per-DOF variable ``unconstrained``."""
    integrator.addComputePerDof("x", f"x + {step}*v")
    integrator.addComputePerDof("unconstrained", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", f"v + (x - unconstrained)/({step})")


class Constraints:
    """Distance constraints between particle pairs, as batched RATTLE projections.

    Parameters
    ----------
    pairs : (K, 2) int array
        The constrained particle pairs.
    distances : (K,) array
        Their lengths (nm).
    masses : (N,) array
        Particle masses (amu); constrained particles must have mass.
    """

    def __init__(self, pairs, distances, masses):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        distances = np.asarray(distances, dtype=np.float64).reshape(-1)
        masses = np.asarray(masses, dtype=np.float64).reshape(-1)
        if len(pairs) != len(distances):
            raise fail("distances", f"one length per constrained pair ({len(pairs)})", len(distances))
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(masses)):
            raise fail("pairs", f"particle indices in 0..{len(masses) - 1}", f"{pairs.min()}..{pairs.max()}")
        if np.any(masses[pairs.ravel()] <= 0):
            raise fail("system", "constraints between particles with mass", "a constraint on a massless particle")
        if np.any(distances <= 0):
            raise fail("distances", "positive constraint lengths", distances.min())
        self.pairs, self.distances = pairs, distances
        self.inverse_mass = 1.0 / np.where(masses > 0, masses, np.inf)
        n_atoms = len(masses)
        self._i, self._j = pairs[:, 0].copy(), pairs[:, 1].copy()
        # constraint k moves atom i_k by +w lambda_k s_k and j_k by -w lambda_k s_k: one bincount over (atom, axis)
        self._scatter = (pairs.T.reshape(-1, 1) * 3 + np.arange(3)).ravel()
        self._n_atoms = n_atoms
        self._clusters = _clusters(pairs, n_atoms)
        # coupling[k, l] = d r_k / d(lambda_l s_l): how constraint l's correction changes constraint k's vector
        i, j = pairs[self._clusters].transpose(2, 0, 1)  # (C, S) each, padded entries repeat a real one
        w = self.inverse_mass
        ii, jj = i[:, :, None], j[:, :, None]
        il, jl = i[:, None, :], j[:, None, :]
        self._coupling = (w[ii] * ((ii == il).astype(float) - (ii == jl)) -
                          w[jj] * ((jj == il).astype(float) - (jj == jl)))
        self._padding = np.zeros(self._clusters.shape, dtype=bool)
        for row, members in enumerate(self._clusters):
            _, first = np.unique(members, return_index=True)
            self._padding[row] = True
            self._padding[row, first] = False
        self._coupling[self._padding] = 0.0
        self._coupling.transpose(0, 2, 1)[self._padding] = 0.0
        eye = np.eye(self._clusters.shape[1])
        self._identity_on_padding = eye[None] * self._padding[:, :, None]
        self._real = (~self._padding).astype(float)
        self._members = self._clusters[~self._padding]  # constraint of each real cluster slot, in slot order
        self._slots = np.flatnonzero(~self._padding.ravel())

    @classmethod
    def from_system(cls, system: openmm.System, masses: Optional[np.ndarray] = None) -> Optional["Constraints"]:
        """The System's constraints, or ``None`` if it has none."""
        if system.getNumConstraints() == 0:
            return None
        pairs, distances = [], []
        for k in range(system.getNumConstraints()):
            i, j, d = system.getConstraintParameters(k)
            pairs.append((i, j))
            distances.append(d.value_in_unit(openmm.unit.nanometer) if openmm.unit.is_quantity(d) else d)
        if masses is None:
            masses = [system.getParticleMass(i).value_in_unit(openmm.unit.dalton)
                      for i in range(system.getNumParticles())]
        return cls(pairs, distances, masses)

    def __len__(self) -> int:
        return len(self.pairs)

    def among(self, atoms) -> Optional["Constraints"]:
        """The constraints between ``atoms`` only, indexed within them (``None`` if there are none)."""
        atoms = np.asarray(atoms, dtype=np.int64)
        local = -np.ones(len(self.inverse_mass), dtype=np.int64)
        local[atoms] = np.arange(len(atoms))
        inside = np.all(local[self.pairs] >= 0, axis=1)
        if not inside.any():
            return None
        return Constraints(local[self.pairs[inside]], self.distances[inside], 1.0 / self.inverse_mass[atoms])

    # -- the three operations ----------------------------------------------------------------------
    def positions(self, reference: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """``moved`` (N, 3) corrected along the constraint gradients at ``reference`` until every
        constraint holds (the RATTLE/SHAKE position step)."""
        i, j = self._i, self._j
        directions = reference[i] - reference[j]
        multipliers = np.zeros(len(self))
        x = moved
        target = self.distances**2
        inverse, previous = None, np.inf
        for _ in range(MAX_ITERATIONS):
            vectors = x[i] - x[j]
            residual = (vectors * vectors).sum(axis=1) - target
            violation = np.max(np.abs(residual) / target)
            if violation <= RELATIVE_TOLERANCE:
                return x
            if inverse is None or violation > 0.1 * previous:
                # Newton's Jacobian, kept while it converges fast (x~ of an MD step starts close to the surface)
                inverse = self._inverse(2.0 * self._gather_products(vectors, directions) * self._coupling)
            previous = violation
            multipliers = multipliers - self._apply(inverse, residual)
            x = moved + self._displacement(multipliers, directions)
        raise SimulationError(f"constraints did not converge in {MAX_ITERATIONS} iterations (largest relative "
                              f"violation {violation:.3g}): the step moved atoms too far")

    def velocities(self, positions: np.ndarray, velocities: np.ndarray) -> np.ndarray:
        """``velocities`` projected onto the tangent space of the constraints at ``positions`` (mass-weighted)."""
        return self.projector(positions)(velocities)

    def projector(self, positions: np.ndarray) -> "TangentProjector":
        """The mass-weighted projection onto the tangent space at ``positions``, to apply to many vectors."""
        return TangentProjector(self, positions)

    # -- batched cluster algebra -------------------------------------------------------------------
    def _gather_products(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a_k . b_l`` for the constraints k, l of every cluster: (C, S, S)."""
        return a[self._clusters] @ b[self._clusters].transpose(0, 2, 1)

    def _inverse(self, matrices: np.ndarray) -> np.ndarray:
        """Inverses of the cluster matrices (C, S, S), the padding made an identity."""
        return np.linalg.inv(matrices + self._identity_on_padding)

    def _apply(self, inverse: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Per-constraint solution ``y`` of the cluster systems ``matrices @ y = right`` from their inverses."""
        solution = (inverse @ (right[self._clusters] * self._real)[..., None]).reshape(-1)
        out = np.empty(len(self))
        out[self._members] = solution[self._slots]
        return out

    def _displacement(self, multipliers: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """``M^-1 G^T multipliers`` for constraint vectors ``directions``: (N, 3)."""
        moves = multipliers[:, None] * directions
        out = np.bincount(self._scatter, np.concatenate([moves, -moves]).ravel(), minlength=3 * self._n_atoms)
        return self.inverse_mass[:, None] * out.reshape(-1, 3)


class TangentProjector:
    """``v -> v - M^-1 G^T (G M^-1 G^T)^-1 G v`` at one configuration (G: constraint gradients there)."""

    def __init__(self, constraints: Constraints, positions: np.ndarray):
        self.constraints = constraints
        self.vectors = positions[constraints._i] - positions[constraints._j]
        self._inverse = constraints._inverse(constraints._gather_products(self.vectors, self.vectors)
                                             * constraints._coupling)

    def __call__(self, velocities: np.ndarray) -> np.ndarray:
        c = self.constraints
        rates = (self.vectors * (velocities[c._i] - velocities[c._j])).sum(axis=1)
        return velocities - c._displacement(c._apply(self._inverse, rates), self.vectors)

    def matrix(self) -> csr_matrix:
        """The projection as a sparse (3N, 3N) matrix ``I - M^-1 G^T (G M^-1 G^T)^-1 G``: block-diagonal over
        the clusters, the identity on unconstrained atoms."""
        c = self.constraints
        size, count = 3 * c._n_atoms, len(c)
        coordinates = np.concatenate([3 * c._i[:, None] + np.arange(3), 3 * c._j[:, None] + np.arange(3)], axis=1)
        gradient = csr_matrix((np.concatenate([self.vectors, -self.vectors], axis=1).ravel(),
                               (np.repeat(np.arange(count), 6), coordinates.ravel())), shape=(count, size))
        real = ~c._padding[:, :, None] & ~c._padding[:, None, :]
        rows = np.broadcast_to(c._clusters[:, :, None], real.shape)[real]
        columns = np.broadcast_to(c._clusters[:, None, :], real.shape)[real]
        inverse = csr_matrix((self._inverse[real], (rows, columns)), shape=(count, count))
        correction = diags(np.repeat(c.inverse_mass, 3)) @ gradient.T @ inverse @ gradient
        return (identity(size, format="csr") - correction).tocsr()


def _clusters(pairs: np.ndarray, n_atoms: int) -> np.ndarray:
    """Constraint indices grouped by connected atoms, as a (clusters, size) array padded by repeating the
    cluster's first constraint."""
    if len(pairs) == 0:
        return np.zeros((0, 1), dtype=np.int64)
    graph = csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n_atoms, n_atoms))
    _, labels = connected_components(graph, directed=False)
    label_of_constraint = labels[pairs[:, 0]]
    groups = [np.flatnonzero(label_of_constraint == label) for label in np.unique(label_of_constraint)]
    size = max(len(group) for group in groups)
    return np.array([np.concatenate([group, np.repeat(group[:1], size - len(group))]) for group in groups])
