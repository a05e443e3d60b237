"""Observables that benchmarks compare between an accelerated run and plain MD.

Ramachandran angles and their Jensen-Shannon divergence, per-element kinetic temperatures (with the
right number of degrees of freedom when the centre-of-mass momentum is removed), block standard errors
for correlated samples, and energy drift.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import mdtraj
import numpy as np
from openmm import unit

from .validation import as_array

BOLTZMANN = (unit.MOLAR_GAS_CONSTANT_R).value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def dihedrals(topology, frames: np.ndarray) -> np.ndarray:
    """(phi, psi) in radians of a dipeptide for frames (M, N, 3) nm (``topology``: OpenMM, N atoms)."""
    trajectory = mdtraj.Trajectory(as_array(frames, unit.nanometer, "frames"), mdtraj.Topology.from_openmm(topology))
    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    return np.column_stack([phi[:, 0], psi[:, 0]])


def backbone_dihedrals(topology, frames: np.ndarray) -> Optional[np.ndarray]:
    """(phi, psi) in radians of every residue that has both, pooled over residues and frames ``(M K, 2)``
    (a dipeptide's are :func:`dihedrals`); None for a molecule without a peptide backbone."""
    trajectory = mdtraj.Trajectory(as_array(frames, unit.nanometer, "frames"), mdtraj.Topology.from_openmm(topology))
    phi_atoms, phi = mdtraj.compute_phi(trajectory)
    psi_atoms, psi = mdtraj.compute_psi(trajectory)
    residue = trajectory.topology.atom
    phi_of = {residue(int(row[1])).residue.index: k for k, row in enumerate(phi_atoms)}
    psi_of = {residue(int(row[1])).residue.index: k for k, row in enumerate(psi_atoms)}
    both = sorted(set(phi_of) & set(psi_of))
    if not both:
        return None
    return np.stack([phi[:, [phi_of[r] for r in both]].ravel(), psi[:, [psi_of[r] for r in both]].ravel()], -1)


def ramachandran_histogram(angles: np.ndarray, bins: int = 24) -> np.ndarray:
    """Normalised 2-D histogram of (phi, psi) on a bins x bins grid over [-pi, pi)^2."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    counts = np.histogram2d(angles[:, 0], angles[:, 1], [edges, edges])[0]
    return counts / max(counts.sum(), 1)


def js_divergence(a: np.ndarray, b: np.ndarray, bins: int = 24) -> float:
    """Jensen-Shannon divergence (nats) of two phi/psi samples on a bins x bins grid."""
    p = ramachandran_histogram(a, bins).ravel() + 1e-12
    q = ramachandran_histogram(b, bins).ravel() + 1e-12
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    return float(0.5 * np.sum(p * np.log(p / m)) + 0.5 * np.sum(q * np.log(q / m)))


def reference_and_floor(held: np.ndarray, count: int) -> Tuple[np.ndarray, np.ndarray]:
    """Held-out reference frames ``(walkers, frames, ...)`` split for a noise floor matched to a sample of
    ``count`` frames: the first half of every walker's frames is the reference the sample is compared with, and
    ``count`` frames spread evenly over the second halves (fewer if those hold fewer) stand in for a perfect
    sampler. Compared with the reference, they score what that many draws of the reference distribution itself
    would; a floor from more frames than the sample has would make every small run look like a failure."""
    held = np.asarray(held)
    if held.ndim < 2 or held.shape[1] < 2 or count < 1:
        raise ValueError(f"held: expected (walkers, frames >= 2, ...) and count >= 1, got {held.shape}, {count}")
    half = held.shape[1] // 2
    reference = held[:, :half].reshape(-1, *held.shape[2:])
    rest = held[:, half:].reshape(-1, *held.shape[2:])
    pick = np.unique(np.round(np.linspace(0, len(rest) - 1, min(count, len(rest)))).astype(int))
    return reference, rest[pick]


def statistical_inefficiency(series) -> float:
    """Statistical inefficiency g = 1 + 2 sum_t (1 - t/n) rho(t) of a time series (pymbar's estimator):
    its n samples count as n / g independent ones."""
    logger = logging.getLogger("pymbar")
    level = logger.level
    logger.setLevel(logging.ERROR)  # pymbar announces at import that JAX is missing, and warns on every use
    try:
        from pymbar import timeseries
        return float(timeseries.statistical_inefficiency(np.asarray(series, dtype=float)))
    finally:
        logger.setLevel(level)


def standard_error(series) -> float:
    """Standard error of the mean of a correlated time series: std sqrt(g / n)."""
    series = np.asarray(series, dtype=float)
    return float(series.std(ddof=1) * np.sqrt(statistical_inefficiency(series) / len(series)))


def phi_psi_inefficiency(angles: np.ndarray) -> float:
    """Statistical inefficiency (frames) of a phi/psi series ``(M, 2)`` radians: the largest over the sine and
    cosine of each angle (periodic angles have no meaningful mean of their own)."""
    return max(statistical_inefficiency(f(angles[:, k])) for k in range(2) for f in (np.sin, np.cos))


def element_temperature_series(velocities: np.ndarray, masses: np.ndarray, symbols: Sequence[str],
                               com_removed: bool) -> Tuple[List[str], np.ndarray]:
    """Kinetic temperature (K) of each element in each frame: the elements (sorted) and an (M, E) array.

    ``velocities`` (M, N, 3) nm/ps, ``masses`` (N,) amu. With the centre-of-mass momentum held at zero,
    atom i keeps ``3 (1 - m_i / M)`` of its 3 degrees of freedom on average (equipartition under the
    constraint), so the estimator divides by that; without it the estimator would read ~2 K low for
    hydrogens of alanine dipeptide at 300 K.
    """
    masses = as_array(masses, unit.amu, "masses")
    velocities = as_array(velocities, unit.nanometer / unit.picosecond, "velocities")
    kinetic = 0.5 * masses[None, :] * np.sum(velocities ** 2, axis=-1)  # (M, N) kJ/mol
    dof = 3.0 * (1.0 - masses / masses.sum()) if com_removed else np.full(len(masses), 3.0)
    elements = sorted(set(symbols))
    series = np.empty((len(kinetic), len(elements)))
    for column, element in enumerate(elements):
        atoms = np.array([s == element for s in symbols])
        series[:, column] = 2.0 * kinetic[:, atoms].sum(1) / (dof[atoms].sum() * BOLTZMANN)
    return elements, series


def element_temperatures(velocities: np.ndarray, masses: np.ndarray, symbols: Sequence[str],
                         com_removed: bool) -> Dict[str, Tuple[float, float]]:
    """Kinetic temperature (K) of each element: mean and standard error over frames (:func:`standard_error`)
    of :func:`element_temperature_series`."""
    elements, series = element_temperature_series(velocities, masses, symbols, com_removed)
    return {element: (float(series[:, k].mean()), standard_error(series[:, k])) for k, element in enumerate(elements)}


def drift(times: np.ndarray, values: np.ndarray) -> float:
    """Least-squares slope of ``values`` against ``times`` (units of values per unit of time)."""
    if len(times) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(times, dtype=float), np.asarray(values, dtype=float), 1)[0])


def radial_distribution(topology, frames: np.ndarray, boxes: np.ndarray, first: str, second: str,
                        r_max: float, bins: int = 60) -> Tuple[np.ndarray, np.ndarray]:
    """g(r) between atoms of elements ``first`` and ``second`` in different residues (intermolecular),
    for frames (M, N, 3) nm in orthorhombic boxes (M, 3, 3) nm; returns bin centres (nm) and g."""
    trajectory = mdtraj.Trajectory(as_array(frames, unit.nanometer, "frames"), mdtraj.Topology.from_openmm(topology))
    trajectory.unitcell_vectors = as_array(boxes, unit.nanometer, "boxes").astype(np.float32)
    atoms = list(trajectory.topology.atoms)
    pairs = np.array([(a.index, b.index) for a in atoms if a.element.symbol == first
                      for b in atoms if b.element.symbol == second and b.residue.index != a.residue.index
                      and (first != second or a.index < b.index)])
    r, g = mdtraj.compute_rdf(trajectory, pairs, r_range=(0.0, r_max), n_bins=bins)
    return r, g


def density(masses: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mass density (g/cm^3) of each frame from the total mass (amu) and the box vectors (M, 3, 3) nm."""
    amu_per_nm3_in_g_per_cm3 = 1.66053906660e-3  # 1.6605e-24 g / 1e-21 cm^3
    masses, boxes = as_array(masses, unit.amu, "masses"), as_array(boxes, unit.nanometer, "boxes")
    return np.sum(masses) * amu_per_nm3_in_g_per_cm3 / np.abs(np.linalg.det(boxes))
