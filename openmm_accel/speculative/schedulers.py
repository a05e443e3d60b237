"""Schedulers decide which drafted steps are verified when; the engine decides what is committed.

* :class:`BatchedScheduler` (one device): draft K steps, verify all K in ONE batched target call,
  commit up to and including the first rejection (METHODS.md 1.3). K is fixed or chosen on the fly to
  maximise committed steps per second from the measured acceptance and costs.
* :class:`OverlappedScheduler` (both cores of one machine): the same rounds, but the target runs in a
  second thread while the draft works ahead on the next round, so drafting costs no wall time while the
  drafts keep being accepted.
* :class:`~openmm_accel.speculative.ray_scheduler.RayScheduler` (many devices): the paper's asynchronous
  pipeline over Ray actors.

Both implement ``run(engine, index, position, velocity, correction, window) -> list of VerifiedStep`` and
name the error-correction period that suits them (``correction_period``): drafts never run past the
:class:`~openmm_accel.speculative.engine.Correction`'s limit, so the committed path is independent of the
windows and of timing.
"""
from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

import numpy as np

from ..validation import fail
from .engine import Correction, DraftedStep, SpeculativeEngine, VerifiedStep
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
        drafted = draft_steps(engine, index, position, velocity, correction, min(window, correction.limit - index))
        seconds_before = engine.statistics.target_seconds
        target_forces = engine.target_forces(drafted)
        self._costs.append((window, engine.statistics.target_seconds - seconds_before))
        return self._verify(engine, drafted, target_forces)

    def _verify(self, engine: SpeculativeEngine, drafted: List[DraftedStep], target_forces) -> List[VerifiedStep]:
        """Verify in order up to and including the first rejection."""
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


def draft_steps(engine: SpeculativeEngine, index: int, position: np.ndarray, velocity: np.ndarray,
                correction: Correction, count: int, stop=None) -> List[DraftedStep]:
    """``count`` consecutive drafts from a state (fewer if the draft goes wild, or ``stop()`` turns true)."""
    drafted = []
    for k in range(count):
        step = engine.draft_step(index + k, position, velocity, correction.offset)
        drafted.append(step)
        position, velocity = step.position_out, step.velocity_out
        if position is None or (stop is not None and stop()):  # a wild draft: verify what there is
            break
    return drafted


class OverlappedScheduler(BatchedScheduler):
    """:class:`BatchedScheduler` rounds with the target in a second thread and the draft working ahead.

    While the target verifies round r (torch releases the GIL inside its kernels, so it runs on the
    other core), the driver drafts round r + 1 from round r's last drafted state. If all of round r is
    accepted, round r + 1 needs no drafting time; after a rejection the drafts ahead are dropped. Drafts
    are functions of the committed state, the correction and the seed only, so how far the draft got
    ahead (a matter of timing) never changes the path. The error correction is refreshed every two
    windows (drafts ahead must not need the correction the current round will produce).

    ``timeline`` keeps (what, start, end) of recent draft and target intervals (``time.perf_counter``);
    :meth:`busy_fractions` summarises them.
    """

    name = "overlapped"

    def __init__(self, window: int = 8, adaptive: bool = True, max_window: int = 32):
        super().__init__(window, adaptive, max_window)
        self.correction_period = 2 * (self.max_window if self.adaptive else self.window)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lsd-target")
        self._ahead: List[DraftedStep] = []
        self._ahead_from: Optional[Tuple[np.ndarray, np.ndarray, int]] = None
        self.timeline = deque(maxlen=20000)

    def run(self, engine: SpeculativeEngine, index: int, position: np.ndarray, velocity: np.ndarray,
            correction: Correction, window: int) -> List[VerifiedStep]:
        count = min(window, correction.limit - index)
        drafted = self._take_ahead(engine, position, velocity, index)[:count]
        if len(drafted) < count and (not drafted or drafted[-1].position_out is not None):
            start = drafted[-1] if drafted else None
            began = time.perf_counter()
            drafted += draft_steps(engine, index + len(drafted), start.position_out if start else position,
                                   start.velocity_out if start else velocity, correction, count - len(drafted))
            self.timeline.append(("draft", began, time.perf_counter()))
        future = self._executor.submit(self._target, engine, drafted)
        last = drafted[-1]
        if last.position_out is not None:  # work ahead on the next round while the target runs
            began = time.perf_counter()
            self._ahead = draft_steps(engine, last.index + 1, last.position_out, last.velocity_out, correction,
                                      min(window, correction.limit - last.index - 1), stop=future.done)
            self._ahead_from = (last.position_out, last.velocity_out, engine.draft_version)
            self.timeline.append(("draft", began, time.perf_counter()))
        target_forces, seconds = future.result()
        self._costs.append((len(drafted), seconds))
        committed = self._verify(engine, drafted, target_forces)
        if not committed[-1].accepted:
            self._ahead, self._ahead_from = [], None
        return committed

    def _take_ahead(self, engine, position, velocity, index) -> List[DraftedStep]:
        """The drafts made ahead, if they continue from exactly this committed state."""
        ahead, self._ahead = self._ahead, []
        if (ahead and self._ahead_from is not None and self._ahead_from[0] is position
                and self._ahead_from[1] is velocity and self._ahead_from[2] == engine.draft_version
                and ahead[0].index == index):
            return ahead
        return []

    def _target(self, engine: SpeculativeEngine, drafted: List[DraftedStep]):
        began = time.perf_counter()
        forces = engine.target_forces(drafted)
        ended = time.perf_counter()
        self.timeline.append(("target", began, ended))
        return forces, ended - began

    def busy_fractions(self) -> dict:
        """Shares of the wall time (first to last recorded interval) with the draft, the target, both, or
        neither running."""
        if not self.timeline:
            return {}
        events = sorted((t, kind, +1 if edge == 0 else -1) for kind, *ends in self.timeline
                        for edge, t in enumerate(ends))
        active = {"draft": 0, "target": 0}
        shares = {"draft only": 0.0, "target only": 0.0, "both": 0.0, "idle": 0.0}
        previous = events[0][0]
        for t, kind, change in events:
            span = t - previous
            key = {(True, True): "both", (True, False): "draft only", (False, True): "target only",
                   (False, False): "idle"}[(active["draft"] > 0, active["target"] > 0)]
            shares[key] += span
            active[kind] += change
            previous = t
        wall = events[-1][0] - events[0][0]
        return {key: value / wall for key, value in shares.items()} if wall > 0 else {}

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def create_scheduler(scheduler, **options):
    """A scheduler from a name (``"batched"`` or ``"ray"``) and options, or an instance as is."""
    if not isinstance(scheduler, str):
        return scheduler
    if scheduler == "batched":
        return BatchedScheduler(**options)
    if scheduler == "overlapped":
        return OverlappedScheduler(**options)
    if scheduler == "ray":
        from .ray_scheduler import RayScheduler
        return RayScheduler(**options)
    raise fail("scheduler", "'batched', 'overlapped' or 'ray'", scheduler)
