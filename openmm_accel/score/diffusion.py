"""The variance-preserving diffusion of an energy-based model (Plainer et al. 2025, arXiv:2506.17139): noise
schedule, the denoising score-matching loss, the Fokker-Planck residual and the reverse-SDE sampler.

An energy function ``energy(x, t) -> (B,)`` takes configurations ``x`` of shape ``(B, n, d)`` (normalised
coordinates) and diffusion times ``t`` ``(B,)``; the model's log-density is ``log q_t = -E`` up to a function
of ``t``, its score ``s = -grad_x E``. For molecules (``centred``) the data and every noise draw are centred
(zero mean over the ``n`` beads), so the process lives in the ``d (n - 1)``-dimensional space of centred
configurations, where a translation-invariant energy is a proper density.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

Energy = Callable[[Tensor, Tensor], Tensor]

BETA_MIN, BETA_MAX = 0.1, 20.0
T_MIN = 1e-5  # smallest diffusion time: training draws t in [T_MIN, 1]; forces for MD are taken there
SDE_STEPS, CORRECTOR_STEPS, SNR = 500, 1, 0.3  # the sampler's defaults (docs/score.md measures them)


def beta(t: Tensor) -> Tensor:
    return BETA_MIN + (BETA_MAX - BETA_MIN) * t


def alpha(t: Tensor) -> Tensor:
    """Signal scale: x_t = alpha_t x_0 + sigma_t eps, alpha_t = exp(-0.05 t - 4.975 t^2)."""
    return torch.exp(-0.5 * BETA_MIN * t - 0.25 * (BETA_MAX - BETA_MIN) * t**2)


def sigma(t: Tensor) -> Tensor:
    return torch.sqrt(-torch.expm1(-BETA_MIN * t - 0.5 * (BETA_MAX - BETA_MIN) * t**2))


def time_features(t: Tensor) -> Tensor:
    """``(B, 4)``: t - 1/2, cos 2 pi t, sin 2 pi t, -cos 4 pi t."""
    angle = 2 * math.pi * t
    return torch.stack([t - 0.5, torch.cos(angle), torch.sin(angle), -torch.cos(2 * angle)], dim=-1)


class VPDiffusion:
    """The VP-SDE ``dx = -beta/2 x dt + sqrt(beta) dW`` on configurations ``(n, d)``, centred if ``centred``."""

    def __init__(self, n: int, d: int = 3, centred: bool = True):
        self.n, self.d, self.centred = n, d, centred
        self.dimension = d * (n - 1) if centred else d * n

    def project(self, v: Tensor) -> Tensor:
        return v - v.mean(dim=-2, keepdim=True) if self.centred else v

    def noise(self, shape, generator: Optional[torch.Generator], dtype=torch.float64) -> Tensor:
        """Centred Gaussian noise on the ``generator``'s device (the model's: see ScoreModel.to)."""
        device = None if generator is None else generator.device
        return self.project(torch.randn(shape, generator=generator, dtype=dtype, device=device))

    def score(self, energy: Energy, x: Tensor, t: Tensor, create_graph: bool = True) -> Tuple[Tensor, Tensor]:
        """(E, s = -grad_x E) at ``x``, ``t`` (differentiable in the parameters if ``create_graph``)."""
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        value = energy(x, t)
        (gradient,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
        return value, self.project(-gradient)

    def diffuse(self, x0: Tensor, t: Tensor, generator: Optional[torch.Generator]) -> Tuple[Tensor, Tensor]:
        """(x_t, eps) for data ``x0`` at times ``t``."""
        eps = self.noise(x0.shape, generator, x0.dtype)
        return alpha(t)[:, None, None] * x0 + sigma(t)[:, None, None] * eps, eps

    def dsm_loss(self, energy: Energy, x0: Tensor, t: Tensor, generator: Optional[torch.Generator]) -> Tensor:
        """Denoising score matching ``E[(1/D) |eps + sigma_t s(x_t, t)|^2]`` (per sample, ``(B,)``)."""
        xt, eps = self.diffuse(x0, t, generator)
        _, s = self.score(energy, xt, t)
        return ((eps + sigma(t)[:, None, None] * s) ** 2).sum((-1, -2)) / self.dimension

    def fp_residual_pair(self, energy: Energy, x: Tensor, t: Tensor, generator: Optional[torch.Generator],
                         probe: float = 1e-4) -> Tuple[Tensor, Tensor]:
        """Two independent estimates ``(r1, r2)`` of the Fokker-Planck residual of ``log q = -E`` at (x, t)::

            r = beta(t)/2 [div s + |s|^2 + x.s + D] - d/dt log q

        Each uses its own random probe v for the divergence (Hutchinson: a central finite difference of the
        score along v, scale ``probe``, with the other terms at x + probe v); ``d/dt log q = -dE/dt`` comes
        exactly from autograd, in the same backward pass as the score (no extra energy evaluations). Their
        product is an unbiased estimate of r^2; its variance grows like 1/sigma_t^4 at small t (the
        probe's error in the divergence of a score whose Jacobian is ~1/sigma_t^2)."""
        estimates = []
        for _ in range(2):  # Rademacher probes (centred): exact for a diagonal Jacobian, low variance otherwise
            v = self.project(torch.randint(0, 2, x.shape, generator=generator).to(x.dtype) * 2 - 1)
            both = torch.cat([x + probe * v, x - probe * v]).detach().requires_grad_(True)
            times = torch.cat([t, t]).detach().requires_grad_(True)
            value = energy(both, times)
            gradient, d_energy_dt = torch.autograd.grad(value.sum(), (both, times), create_graph=True,
                                                        allow_unused=True)  # an energy may not depend on t
            if d_energy_dt is None:
                d_energy_dt = torch.zeros_like(times)
            s = self.project(-gradient)
            s_plus, s_minus = s[:len(x)], s[len(x):]
            divergence = (v * (s_plus - s_minus)).sum((-1, -2)) / (2 * probe)
            d_log_q = -d_energy_dt[:len(x)]
            plus = both[:len(x)]
            rhs = 0.5 * beta(t) * (divergence + (s_plus**2).sum((-1, -2)) + (plus * s_plus).sum((-1, -2))
                                   + self.dimension)
            estimates.append(rhs - d_log_q)
        return estimates[0], estimates[1]

    @torch.no_grad()
    def sample(self, energy: Energy, count: int, steps: int, generator: Optional[torch.Generator],
               dtype=torch.float64, corrector_steps: int = CORRECTOR_STEPS, snr: float = SNR) -> Tensor:
        """``count`` configurations from the model by the reverse SDE (Euler-Maruyama, ``steps`` from t = 1
        to ``T_MIN``), batched. With ``corrector_steps`` > 0, each new noise level t is followed by that many
        Metropolis-adjusted Langevin (MALA) steps that leave the model's own q_t = exp(-E(x, t)) invariant
        (possible because the model is energy-based: a score-only model can only take unadjusted Langevin
        steps). The step size is Song et al.'s signal-to-noise rule, 2 (snr |z| / |s|)^2, with |s| the
        batch's mean score norm at the level before (fixed before the states it moves are drawn, so the
        MALA kernel is exactly reversible for q_t; adjacent levels differ little).
        The corrector's acceptance rate at each level is left in ``self.corrector_acceptance``."""
        x = self.noise((count, self.n, self.d), generator, dtype)
        times = torch.linspace(1.0, T_MIN, steps + 1, dtype=dtype, device=x.device)
        energy_x, score_x = self._energy_score(energy, x, times[0].expand(count))
        self.corrector_acceptance = []
        for now, after in zip(times[:-1], times[1:]):
            h = now - after
            b = beta(now)
            step = 2 * (snr * math.sqrt(self.dimension) / score_x.flatten(1).norm(dim=1).mean()) ** 2
            x = x + (0.5 * b * x + b * score_x) * h + torch.sqrt(b * h) * self.noise(x.shape, generator, dtype)
            t = after.expand(count)
            energy_x, score_x = self._energy_score(energy, x, t)
            if corrector_steps:
                accepted = 0.0
                for _ in range(corrector_steps):
                    x, energy_x, score_x, rate = self._mala(energy, x, energy_x, score_x, t, step, generator)
                    accepted += rate / corrector_steps
                self.corrector_acceptance.append(accepted)
        return x

    def _energy_score(self, energy: Energy, x: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        with torch.enable_grad():
            value, s = self.score(energy, x, t, create_graph=False)
        return value.detach(), s

    def _mala(self, energy: Energy, x: Tensor, energy_x: Tensor, score_x: Tensor, t: Tensor, step: Tensor,
              generator: Optional[torch.Generator]):
        """One Metropolis-adjusted Langevin step at time ``t`` for every chain: (x, E, s, acceptance rate)."""
        y = x + step * score_x + torch.sqrt(2 * step) * self.noise(x.shape, generator, x.dtype)
        energy_y, score_y = self._energy_score(energy, y, t)
        forward = ((y - x - step * score_x) ** 2).sum((-1, -2))
        backward = ((x - y - step * score_y) ** 2).sum((-1, -2))
        log_ratio = energy_x - energy_y + (forward - backward) / (4 * step)
        uniform = torch.rand(len(x), generator=generator, dtype=x.dtype, device=x.device)
        accept = torch.log(uniform) < log_ratio
        keep = accept[:, None, None]
        return (torch.where(keep, y, x), torch.where(accept, energy_y, energy_x), torch.where(keep, score_y, score_x),
                accept.double().mean().item())
