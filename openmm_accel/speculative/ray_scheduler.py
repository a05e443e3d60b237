"""The asynchronous speculative pipeline of the LSD paper (Kosmala et al. 2026, arXiv:2606.02455), over Ray actors.

The driver drafts steps and streams each drafted midpoint to a free target worker (a Ray actor with its
own copy of the target model; one per device, or several per device). Results come back out of order;
they wait in a min-heap and are verified strictly in step order. A rejection reflects that step,
commits it, discards every later step in flight and restarts drafting from the corrected state. There is
no fixed window: the number of steps in flight is the window.

Locally ``ray.init`` starts a private cluster on this machine; on a cluster, start Ray there and pass
``address="auto"`` so the same code scales out. With ``device`` a GPU, each worker is given its share of
the GPUs Ray sees (``num_gpus``, unless ``worker_options`` says otherwise) and evaluates there.
A worker that dies has its steps resubmitted to the others; if none is left the run stops with a clear
error and the committed trajectory is kept.
"""
from __future__ import annotations

import copy
import heapq
import os
from typing import Dict, List, Optional

import numpy as np

from ..devices import AUTO, CPU, GPU, gpu_count, resolved, torch_device
from ..threads import use_torch_threads
from ..validation import SimulationError, fail
from .engine import Correction, ModelEvaluator, SpeculativeEngine, VerifiedStep


class _TargetWorker:
    """Ray actor body: holds one copy of the target model and returns float64 forces."""

    def __init__(self, model, threads: int):
        import ray
        use_torch_threads(threads)
        if ray.get_gpu_ids():  # Ray made this worker's GPUs the visible ones
            model = model.to(torch_device(GPU))
        self.evaluator = ModelEvaluator(model, "target")

    def forces(self, positions: np.ndarray):
        """Forces (float64) and the seconds spent computing them. Non-finite values are checked by the
        driver, in order: a step drafted after a rejection is void, and its forces must not stop the run."""
        return self.evaluator.forces(positions, 0, check=False)

    def pid(self) -> int:
        return os.getpid()


class RayScheduler:
    """Asynchronous in-order speculative pipeline over ``workers`` Ray actors.

    Parameters
    ----------
    workers : int
        Number of target workers (actors).
    chunk : int
        Steps to commit per call before draining the pipeline (the integrator's look-ahead).
    depth : int
        Verification requests queued per worker (2 hides the round-trip latency).
    address : str, optional
        Ray cluster address (``"auto"`` on a cluster); ``None`` starts a local Ray if none is running.
    worker_options : dict, optional
        ``ray.remote`` options per actor, e.g. ``{"num_gpus": 1}``.
    threads : int
        torch intra-op threads inside each worker.
    device : str
        The run's device (:mod:`openmm_accel.devices`): on a GPU the workers share the GPUs.

    Its error-correction period is twice the requests in flight (``2 depth workers``): the pipeline drains
    once per period, when drafting waits for the step whose correction the next drafts use.
    """

    name = "ray"

    def __init__(self, workers: int = 2, chunk: int = 64, depth: int = 2, address: Optional[str] = None,
                 worker_options: Optional[dict] = None, threads: int = 1, device: str = AUTO):
        if int(workers) < 1:
            raise fail("workers", "at least one target worker", workers)
        if int(chunk) < 1 or int(depth) < 1:
            raise fail("chunk", "positive chunk and depth", (chunk, depth))
        self.n_workers, self.window, self.depth = int(workers), int(chunk), int(depth)
        self.correction_period = 2 * self.depth * self.n_workers
        self.address, self.worker_options, self.threads = address, dict(worker_options or {}), int(threads)
        gpus = gpu_count() if resolved(device).startswith(GPU) else 0
        if gpus and "num_gpus" not in self.worker_options:
            self.worker_options["num_gpus"] = gpus / self.n_workers
        self.workers: List = []
        self._model_id = None

    # -- workers ------------------------------------------------------------------------------------
    def _start(self, engine: SpeculativeEngine) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover
            raise fail("scheduler", "ray installed for scheduler='ray' (pip install 'openmm_accel[ray]')",
                       "ray is not importable") from None
        if not ray.is_initialized():
            options = dict(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if self.address is None:
                options["num_cpus"] = max(self.n_workers, os.cpu_count() or 1)
            ray.init(address=self.address, **options)
        actor = ray.remote(_TargetWorker)
        options = {"num_cpus": 1, "max_restarts": 0, **self.worker_options}
        # the target's own terms (shared ones stay in the driver), sent from the CPU: a worker moves them to its GPU
        model = engine.target.model
        if model.device != torch_device(CPU):
            model = copy.deepcopy(model).to(torch_device(CPU))
        self._model_id = ray.put(model)
        self.workers = [actor.options(**options).remote(self._model_id, self.threads) for _ in range(self.n_workers)]
        ray.get([w.pid.remote() for w in self.workers])  # fail now, not mid-run, if actors cannot start

    def close(self) -> None:
        if self.workers:
            import ray
            for worker in self.workers:
                ray.kill(worker)
        self.workers = []

    def next_window(self, engine: SpeculativeEngine) -> int:
        return self.window

    # -- the pipeline ---------------------------------------------------------------------------------
    def run(self, engine: SpeculativeEngine, index: int, position: np.ndarray, velocity: np.ndarray,
            correction: Correction, window: int) -> List[VerifiedStep]:
        import ray
        from ray.exceptions import RayActorError
        if not self.workers:
            self._start(engine)
        in_flight: Dict[object, tuple] = {}     # object ref -> (DraftedStep, worker)
        drafted: Dict[int, object] = {}         # step index -> DraftedStep still waiting to be committed
        ready: List[tuple] = []                 # min-heap of (step index, target forces)
        load = {id(w): 0 for w in self.workers}
        committed: List[VerifiedStep] = []
        next_commit, cursor = index, (index, position, velocity)
        drafting = True

        def submit(step):
            worker = min(self.workers, key=lambda w: load[id(w)])
            ref = worker.forces.remote(step.midpoint[None])
            in_flight[ref] = (step, worker)
            load[id(worker)] += 1

        while True:
            while (drafting and len(drafted) < self.depth * len(self.workers) and cursor[0] < correction.limit
                   and cursor[1] is not None):  # None: the last draft went wild, wait for its verification
                step = engine.draft_step(cursor[0], cursor[1], cursor[2], correction.offset)
                drafted[step.index] = step
                submit(step)
                cursor = (step.index + 1, step.position_out, step.velocity_out)
            if not in_flight:
                break
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                step, worker = in_flight.pop(ref)
                current = drafted.get(step.index) is step  # False: voided by a flush (the index may be redrafted)
                if id(worker) in load:
                    load[id(worker)] -= 1
                try:
                    forces, seconds = ray.get(ref)
                except RayActorError:
                    self._drop(worker, load)
                    if current:
                        submit(step)
                    continue
                engine.statistics.target_calls += 1
                engine.statistics.target_configurations += 1
                engine.statistics.target_seconds += seconds
                if current:
                    heapq.heappush(ready, (step.index, id(ref), engine.complete([step], forces)[0]))
            while ready and ready[0][0] == next_commit:
                step_index, _, forces = heapq.heappop(ready)
                step = drafted.pop(step_index)
                if not np.all(np.isfinite(forces)):
                    raise SimulationError(f"the target model returned non-finite forces at step {step_index}; "
                                          "the committed trajectory up to that step was kept")
                verified = engine.verify(step, forces)
                committed.append(verified)
                correction = correction.after(verified)  # after a rejection or at the limit: drafting goes on
                next_commit += 1
                if not verified.accepted:  # flush: everything drafted after a rejection is void
                    drafted.clear()
                    ready.clear()
                    engine.statistics.rounds += 1
                    cursor = (next_commit, verified.position, verified.velocity)
                    break
            if len(committed) >= window:
                drafting = False  # drain what is in flight, then return
            if not drafting and not drafted:
                break
        if committed and committed[-1].accepted:
            engine.statistics.rounds += 1
        return committed

    def _drop(self, worker, load) -> None:
        self.workers = [w for w in self.workers if w is not worker]
        load.pop(id(worker), None)
        if not self.workers:
            raise SimulationError("all Ray target workers died; the run was stopped and the committed "
                                  "trajectory was kept")
