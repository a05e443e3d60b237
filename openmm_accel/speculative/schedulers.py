"""Schedulers decide which drafted steps are verified when; the engine decides what is committed.

* :class:`BatchedScheduler` (one device): draft K steps, verify all K in ONE batched target call,
  commit up to and including the first rejection (Kosmala et al. 2026, arXiv:2606.02455). K is fixed or
  chosen on the fly to maximise committed steps per second from the measured acceptance and costs.
* :class:`~openmm_accel.speculative.ray_scheduler.RayScheduler` (many devices): the paper's asynchronous
  pipeline over Ray actors.

Both implement ``run(engine, index, position, velocity, correction, window) -> list of VerifiedStep`` and
name the error-correction period that suits them (``correction_period``): drafts never run past the
:class:`~openmm_accel.speculative.engine.Correction`'s limit, so the committed path is independent of the
windows and of timing.
"""
from __future__ import annotations

from collections import deque
from typing import List

import numpy as np

from ..validation import fail
from .engine import Correction, SpeculativeEngine, VerifiedStep
from .theory import best_window


class BatchedScheduler:
    """Synchronous rounds: K serial drafts, one batched target call, in-order verification.

    Parameters
    ----------
    window : int
        Drafts per round (the initial value when ``adaptive``).
    adaptive : bool
        Re-choose the window after every round from the measured acceptance, draft cost and the fitted
        batched target cost ``t(K) = t0 + t1 K`` (:func:`~openmm_accel.speculative.theory.best_window`).
    max_window : int
        Upper bound of the adaptive window.

    Its error-correction period is ``window`` for a fixed window (a refresh every round, as if each round
    took the latest correction) and ``max_window`` for an adaptive one (rounds never grow past it).
    """

    name = "batched"

    def __init__(self, window: int = 8, adaptive: bool = True, max_window: int = 32):
        if int(window) < 1 or int(max_window) < int(window):
            raise fail("window", f"1 <= window <= max_window ({max_window})", window)
        self.window = int(window)
        self.adaptive = bool(adaptive)
        self.max_window = int(max_window)
        self._costs = deque(maxlen=64)  # (K, target seconds) of recent rounds
        self._accepts = deque(maxlen=256)
        self.correction_period = self.max_window if self.adaptive else self.window

    def next_window(self, engine: SpeculativeEngine) -> int:
        """The window of the next round."""
        if not self.adaptive or len(self._accepts) < 8:
            return self.window
        stats = engine.statistics
        acceptance = float(np.mean(self._accepts))
        draft_seconds = stats.draft_seconds / max(stats.draft_calls, 1)
        sizes = np.array([k for k, _ in self._costs], dtype=float)
        seconds = np.array([s for _, s in self._costs])
        if len(set(sizes)) >= 2:
            slope, intercept = np.polyfit(sizes, seconds, 1)
            slope, intercept = max(slope, 1e-7), max(intercept, 1e-7)
        else:  # one window size seen so far: assume the batch doubles the cost at 8x the size
            intercept = float(np.mean(seconds / (1 + sizes / 8)))
            slope = intercept / 8
        choice = best_window(min(acceptance, 0.999), draft_seconds, lambda k: intercept + slope * k, self.max_window)
        # move gradually, so the cost fit sees nearby sizes
        self.window = int(np.clip(choice.window, max(1, self.window // 2), min(self.max_window, 2 * self.window)))
        return self.window

    def run(self, engine: SpeculativeEngine, index: int, position: np.ndarray, velocity: np.ndarray,
            correction: Correction, window: int) -> List[VerifiedStep]:
        drafted = []
        for k in range(min(window, correction.limit - index)):
            step = engine.draft_step(index + k, position, velocity, correction.offset)
            drafted.append(step)
            position, velocity = step.position_out, step.velocity_out
            if position is None:  # the draft went wild: verify what there is
                break
        seconds_before = engine.statistics.target_seconds
        target_forces = engine.target_forces(drafted)
        self._costs.append((window, engine.statistics.target_seconds - seconds_before))
        committed = []
        for step, force in zip(drafted, target_forces):
            verified = engine.verify(step, force)
            committed.append(verified)
            self._accepts.append(verified.accepted)
            if not verified.accepted:
                break
        engine.statistics.rounds += 1
        return committed

    def close(self) -> None:
        """Nothing to release (the Ray scheduler stops its workers here)."""


def create_scheduler(scheduler, **options):
    """A scheduler from a name (``"batched"`` or ``"ray"``) with ``options`` (else its defaults), or an
    instance as is."""
    if not isinstance(scheduler, str):
        return scheduler
    if scheduler == "batched":
        return BatchedScheduler(**options)
    if scheduler == "ray":
        from .ray_scheduler import RayScheduler
        return RayScheduler(**options)
    raise fail("scheduler", "'batched' or 'ray'", scheduler)
