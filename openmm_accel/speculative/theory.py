"""Predicted rejection and speedup of Langevin speculative dynamics from force errors (Kosmala et al. 2026,
arXiv:2606.02455).

Units: forces kJ/mol/nm, masses amu, T in K, friction 1/ps, time step ps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from openmm import unit

from ..validation import fail
from .coupling import rejection_probability

_R = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def delta_norm(force_difference: np.ndarray, masses: np.ndarray, temperature: float, friction: float,
               timestep: float) -> np.ndarray:
    """Exact |delta| of the ABOBA coupling for force differences ``(..., N, 3)`` (target - draft).

    ``delta_i = (1 + a)(h/2) dF_i / (m_i sigma_i)`` with ``sigma_i^2 = kT (1 - a^2) / m_i``.
    """
    masses = np.asarray(masses, dtype=np.float64)
    if masses.ndim != 1 or np.any(masses <= 0):
        raise fail("masses", "a 1-D array of positive masses (amu)", f"shape {masses.shape}")
    a = math.exp(-friction * timestep)
    if a >= 1.0:
        raise fail("friction", "a positive friction (without noise there is nothing to couple)", friction)
    kt = _R * temperature
    scale = (1 + a) * 0.5 * timestep / np.sqrt(masses * kt * (1 - a * a))  # 1 / (m sigma) * c, per atom
    whitened = np.asarray(force_difference, dtype=np.float64) * scale[:, None]
    return np.sqrt(np.sum(whitened**2, axis=(-2, -1)))


def predicted_rejection(force_difference: np.ndarray, masses: np.ndarray, temperature: float, friction: float,
                        timestep: float) -> float:
    """Mean per-step rejection ``<erf(|delta|/sqrt 8)>`` over the configurations in ``force_difference``."""
    return float(np.mean(rejection_probability(delta_norm(force_difference, masses, temperature, friction,
                                                          timestep))))


def approximate_rejection(rms_force_error: float, masses: np.ndarray, temperature: float, friction: float,
                          timestep: float) -> float:
    """The small-gamma*h approximation ``erf(sqrt(N tau h <dF^2/m> / (16 kT)))``, per-component RMS error."""
    masses = np.asarray(masses, dtype=np.float64)
    kt = _R * temperature
    mean_over_m = 3.0 * rms_force_error**2 * np.mean(1.0 / masses)  # <|dF_i|^2 / m_i>
    return float(math.erf(math.sqrt(len(masses) * timestep * mean_over_m / (friction * 16.0 * kt))))


def expected_committed(acceptance: float, window: int) -> float:
    """Steps committed by one synchronous round of ``window`` drafts: ``(1 - alpha^K)/(1 - alpha)``."""
    if acceptance >= 1.0:
        return float(window)
    return (1.0 - acceptance**window) / (1.0 - acceptance)


@dataclass
class SpeedupEstimate:
    window: int
    committed_per_round: float
    seconds_per_round: float
    speedup: float


def best_window(acceptance: float, draft_seconds: float, target_seconds: Callable[[int], float],
                max_window: int = 64, overhead_seconds: float = 0.0) -> SpeedupEstimate:
    """The synchronous window K that maximises committed steps per second, and the speedup over plain MD.

    ``target_seconds(K)`` is the cost of one batched target call on K configurations; plain MD costs
    ``target_seconds(1)`` per step.
    """
    plain = target_seconds(1)
    best: Optional[SpeedupEstimate] = None
    for window in range(1, max_window + 1):
        committed = expected_committed(acceptance, window)
        seconds = window * draft_seconds + target_seconds(window) + overhead_seconds
        estimate = SpeedupEstimate(window, committed, seconds, committed / seconds * plain)
        if best is None or estimate.speedup > best.speedup:
            best = estimate
    return best


def speedup_bound(cost_ratio: float, rejection: float) -> float:
    """Upper bound ``1 / (c + beta)`` of the speedup with cost ratio ``c = t_draft / t_target`` (METHODS 1.5)."""
    return 1.0 / (cost_ratio + rejection)
