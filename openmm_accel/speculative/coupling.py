"""Reflection maximal coupling of the draft and target ABOBA velocity Gaussians (Kosmala et al. 2026, arXiv:2606.02455).

A drafted step samples ``v = mu_q + sigma z`` (z standard normal). The target would have sampled from
``N(mu_p, sigma^2)``: same covariance, different mean. With ``delta = (mu_p - mu_q) / sigma``::

    log r = z . delta - |delta|^2 / 2            # log N(v; mu_p, sigma) - log N(v; mu_q, sigma)
    accept (keep v) with probability min(1, r)
    otherwise reflect:  z' = z - 2 (z . e) e,  e = delta / |delta|;   v = mu_p + sigma z'

The result is distributed exactly as ``N(mu_p, sigma^2)`` and the acceptance probability
``2 Phi(-|delta|/2)`` is the largest any coupling can reach. Everything is float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf, ndtr


@dataclass
class CouplingResult:
    """Outcome of coupling one drafted step: the committed velocity and what decided it."""

    velocity: np.ndarray
    accepted: bool
    log_ratio: float
    delta_norm: float


def couple(z: np.ndarray, delta: np.ndarray, mu_target: np.ndarray, sigma: np.ndarray,
           draft_velocity: np.ndarray, log_uniform: float) -> CouplingResult:
    """Couple one step. ``z``: the draft's standard-normal draw; ``delta``: whitened mean difference;
    ``log_uniform``: log of a U(0, 1) variate. Arrays share one shape (e.g. ``(N, 3)``)."""
    delta_sq = float(np.dot(delta.ravel(), delta.ravel()))
    log_ratio = float(np.dot(z.ravel(), delta.ravel())) - 0.5 * delta_sq
    if log_uniform < log_ratio or delta_sq == 0.0:
        return CouplingResult(draft_velocity, True, log_ratio, math.sqrt(delta_sq))
    e = delta / math.sqrt(delta_sq)
    reflected = z - 2.0 * float(np.dot(z.ravel(), e.ravel())) * e
    return CouplingResult(mu_target + sigma * reflected, False, log_ratio, math.sqrt(delta_sq))


def acceptance_probability(delta_norm):
    """Acceptance of the maximal coupling, ``1 - TV = 2 Phi(-|delta|/2)``."""
    return 2.0 * ndtr(-0.5 * np.asarray(delta_norm, dtype=np.float64))


def rejection_probability(delta_norm):
    """Per-step rejection ``beta = erf(|delta| / sqrt(8))`` (Kosmala et al. 2026, arXiv:2606.02455)."""
    return erf(np.asarray(delta_norm, dtype=np.float64) / math.sqrt(8.0))
