"""The drifting field of a one-step generator and its force guidance (Hu 2026, arXiv:2603.05527;
derivations in docs/drift.md).

Everything here works on flat feature vectors ``(B, D)`` in one set of units: generated samples ``x``,
data ``positives`` ``y_j`` and, for guidance, the Boltzmann score at each data point ``scores_j =
grad log p_B(y_j)`` in the same units (forces divided by kT, times the feature scale). With a Gaussian kernel
``k(x, y) = exp(-|x - y|^2 / 2 h^2)`` the normalised mean shift towards a distribution ``p`` is

    M_p(x) = E_p[k (y - x)] / E_p[k] = h^2 grad log (p * k)(x)

(the score of ``p`` smoothed by the kernel), so the drifting field ``V = M_p - M_q`` (``q``: the generated
samples, each without itself) vanishes when ``q = p`` and otherwise points from ``q`` towards ``p``. By the
Drifting Score Identity ``M_p(x) = h^2 E_p[k grad log p] / E_p[k]``: where the data are biased
(``p_data != p_B``), forces carry what the data positions miss.

Both guidances use the force correction ``C(x) = h^2 <scores>_k - M_data(x)``, the kernel window's estimate
of ``h^2 grad log r`` with ``r = p_B / p_data``, clipped to ``TRUST`` widths (it is first order):

- ``guidance="fi"`` (force-interpolated): ``M+ = M_data + omega C = (1 - omega) M_data + omega h^2
  <scores>_k``. For small ``h`` the generator's equilibrium is ``q ~ p_data^(1 - omega) p_B^omega``.
- ``guidance="fk"`` (force-aligned kernel): only the kernel weights change, ``w_j ~ k_j exp(omega C . (y_j -
  x) / h^2)`` (the window's centre moved by ``omega C``: the first-order importance ratio ``r(y_j) / r(x)``);
  the attraction stays a weighted mean of data points, so samples stay on the data's manifold. (The
  reconstruction this package started from tilts by ``scores_j . (x - y_j)`` alone, which even for unbiased data would
  move the equilibrium to ``p_B^(1 - omega)``; docs/drift.md.)

Several kernel widths are summed, each field divided by its RMS per dimension (the drifting paper's drift
normalisation), so that no width dominates by scale alone.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import Tensor

from ..validation import fail

GUIDANCE = ("none", "fi", "fk")
Projection = Callable[[Tensor], Tensor]
TRUST = 1.0  # the force correction is first order: trusted up to this many kernel widths


def kernel_logits(x: Tensor, y: Tensor, width: float, exclude_self: bool = False) -> Tensor:
    """``log k(x_i, y_j) = -|x_i - y_j|^2 / 2 h^2``, ``(B, M)``; with ``exclude_self`` (``y is x``) the
    diagonal is removed, so a generated sample is not repelled by itself."""
    logits = -torch.cdist(x, y).square() / (2.0 * width**2)
    if exclude_self:
        logits = logits.masked_fill(torch.eye(len(x), dtype=torch.bool, device=x.device), float("-inf"))
    return logits


@dataclass(frozen=True)
class Guidance:
    """Force guidance of the attraction (module docstring): ``kind`` ``"fi"`` or ``"fk"`` (``"none"``: off),
    strength ``omega``, ``scores`` the Boltzmann score (forces over kT) at every positive; ``soft(C)``: the
    force correction at ``x`` without the components guidance leaves alone (stiff ones); ``data_scores``:
    ``grad log p_data`` at the positives where it is known (data that are Boltzmann at another temperature:
    their forces over their kT), so that ``C = h^2 <scores - data_scores>_k``, the window's average of
    ``grad log r`` itself, without the noise of the data's mean shift."""

    kind: str = "none"
    omega: float = 0.0
    scores: Optional[Tensor] = None
    data_scores: Optional[Tensor] = None
    soft: Optional[Projection] = None

    def __post_init__(self):
        if self.kind not in GUIDANCE:
            raise fail("guidance", f"one of {', '.join(GUIDANCE)}", self.kind)

    @property
    def active(self) -> bool:
        return self.kind != "none" and self.omega != 0.0

    def check(self, positives: Tensor) -> None:
        """Refuse scores that are not one per positive."""
        if self.kind != "none" and (self.scores is None or self.scores.shape != positives.shape):
            raise fail("scores", f"the Boltzmann score at every positive, shape {tuple(positives.shape)}",
                       None if self.scores is None else tuple(self.scores.shape))
        if self.data_scores is not None and self.data_scores.shape != positives.shape:
            raise fail("data_scores", f"the data's score at every positive, shape {tuple(positives.shape)}",
                       tuple(self.data_scores.shape))


NO_GUIDANCE = Guidance()


def fused_kernels(x: Tensor) -> bool:
    """Whether the drifting field's kernel averages run as the fused Triton kernel
    (``cuda_kernels.gaussian_average``): for CUDA tensors, when Triton is installed."""
    return x.is_cuda and importlib.util.find_spec("triton") is not None


def kernel_averages(x: Tensor, y: Tensor, width: float, value_sets: Sequence[Tensor], exclude_self: bool = False,
                    fused: Optional[bool] = None) -> List[Tensor]:
    """``sum_j w_ij v_j`` for each ``v`` of ``value_sets`` (rows of ``y``), ``w = softmax_j(log k(x_i, y_j))``:
    in torch with the weights computed once, or, ``fused`` (default: :func:`fused_kernels`), one pass of the
    Triton kernel per set without the ``(B, M)`` weights in memory."""
    if fused_kernels(x) if fused is None else fused:
        from cuda_kernels.gaussian_average import gaussian_average
        return [gaussian_average(x, y, values, width, exclude_self) for values in value_sets]
    weights = torch.softmax(kernel_logits(x, y, width, exclude_self), dim=-1)
    return [weights @ values for values in value_sets]


def attraction(x: Tensor, positives: Tensor, width: float, guidance: Guidance = NO_GUIDANCE,
               fused: Optional[bool] = None) -> Tensor:
    """The attraction ``M+`` of the data at kernel width ``width``, with force ``guidance`` (``fused``: see
    :func:`kernel_averages`)."""
    if not guidance.active:
        return kernel_averages(x, positives, width, [positives], fused=fused)[0] - x
    omega, scores, data_scores, soft = guidance.omega, guidance.scores, guidance.data_scores, guidance.soft
    # the force correction C = h^2 <s_B>_k - M_data = h^2 <grad log r>_k: what the forces say the mean shift
    # towards p_B has beyond the data's own (r = p_B / p_data); first order, so trusted up to one width
    known = scores if data_scores is None else scores - data_scores
    mean, smoothed = kernel_averages(x, positives, width, [positives, known], fused=fused)
    plain = mean - x
    correction = width**2 * smoothed - (plain if data_scores is None else 0.0)
    if soft is not None:
        correction = soft(correction)
    norm = correction.norm(dim=-1, keepdim=True)
    correction = correction * torch.clamp(TRUST * width / norm.clamp_min(1e-30), max=1.0)
    if guidance.kind == "fi":
        return plain + omega * correction
    # fk: the kernel's centre moved by omega C, i.e. weights tilted by exp(omega C.(y - x) / h^2), the first-
    # order importance ratio r(y) / r(x); the attraction stays a weighted mean of data points
    return kernel_averages(x + omega * correction, positives, width, [positives], fused=fused)[0] - x


def drifting_field(x: Tensor, positives: Tensor, widths: Sequence[float], guidance: Guidance = NO_GUIDANCE,
                   normalise: bool = True, negatives: Optional[Tensor] = None, fused: Optional[bool] = None) -> Tensor:
    """``V(x) = sum_h [M+_h(x) - M-_h(x)] / lambda_h`` at generated samples ``x``, the attraction with force
    ``guidance``: the repulsion ``M-`` from ``negatives`` (default: the other samples of ``x``), ``lambda_h``
    the RMS per dimension of that width's field (1 without ``normalise``). No gradient flows through V (the
    drifting loss uses it as a fixed target). ``fused``: see :func:`kernel_averages`."""
    guidance.check(positives)
    if negatives is None and len(x) < 2:
        raise fail("x", "at least 2 generated samples (each is repelled by the others)", len(x))
    with torch.no_grad():
        total = torch.zeros_like(x)
        for width in widths:
            others = x if negatives is None else negatives
            repulsion = kernel_averages(x, others, width, [others], negatives is None, fused)[0] - x
            field = attraction(x, positives, width, guidance, fused) - repulsion
            if normalise:
                field = field / field.square().mean().sqrt().clamp_min(1e-12)
            total += field
    return total


def drifting_loss(x: Tensor, field: Tensor) -> Tensor:
    """``mean |x - stopgrad(x + V)|^2`` per sample and dimension: its gradient moves each generated sample
    along V (its value is |V|^2, the drift left)."""
    return (x - (x + field).detach()).square().mean()
