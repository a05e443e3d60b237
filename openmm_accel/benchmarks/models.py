"""Benchmark (not a test): what one energy/force evaluation costs on this machine.

For alanine dipeptide in vacuum: the ANI-1x ensemble and a single ANI-1x network per *batched* force
evaluation at batch sizes 1-32, for each torch thread count, with the stacked networks (the default) and with
torchani's modules (what openmm-ml builds); the classical force field (amber14) per
evaluation through the energy-model contract and per ABOBA step in an OpenMM Context; and a full ABOBA
step with ANI-1x as a TorchForce (both network paths: plain ANI-1x MD in ns/day). These numbers decide the speculative-dynamics design (how much a
batched verification costs relative to one evaluation, and what a draft costs relative to the target).

    openmm-accel bench models --json bench-models.json
"""
from __future__ import annotations

import platform as host
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import openmm
import torch
from openmm import unit

from .. import systems
from ..devices import AUTO, Placement, platform_name, synchronized, torch_device
from ..forces import create_ml_system
from ..integrators import LangevinABOBAIntegrator
from ..models import create
from ..harness import write_report
from ..speculative.theory import best_window
from ..threads import torch_threads

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
STEP_FS = 0.5  # the time step of the MD rows
ACCEPTANCES = (0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TARGET = "ani1x ensemble"


def median_seconds(function: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``function()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _configurations(positions: np.ndarray, batch: int, seed: int = 0, device: str = AUTO) -> torch.Tensor:
    noise = np.random.default_rng(seed).normal(scale=0.005, size=(batch,) + positions.shape)
    return torch.tensor(positions[None] + noise, dtype=torch.float32, device=torch_device(device))


def _step_cost(system: openmm.System, positions, device: str, steps: int, repeats: int) -> float:
    integrator = LangevinABOBAIntegrator(300, 1, STEP_FS / 1000.0)
    context = Placement(device).context(system, integrator)
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300)
    return median_seconds(lambda: integrator.step(steps), repeats) / steps


def measure(repeats: int = 20, thread_counts: Sequence[int] = (1, 2),
            batch_sizes: Sequence[int] = BATCH_SIZES, device: str = AUTO) -> Dict[str, object]:
    ala2 = systems.load("alanine-dipeptide-vacuum")
    x = ala2.positions.value_in_unit(unit.nanometer)
    models = {"ani1x ensemble": create("ani1x", ala2.topology),
              "ani1x ensemble (torchani modules)": create("ani1x", ala2.topology, fused=False),
              "ani1x member 0 (stacked)": create("ani1x", ala2.topology, member=0, fused=True),
              "ani1x member 0": create("ani1x", ala2.topology, member=0)}  # torchani's modules: faster alone
    models = {name: model.to(torch_device(device)) for name, model in models.items()}
    rows: List[Dict[str, object]] = []
    for threads in thread_counts:
        with torch_threads(threads):
            for name, model in models.items():
                for batch in batch_sizes:
                    positions = _configurations(x, batch, device=device)
                    seconds = median_seconds(lambda: synchronized(model.energies_and_forces(positions), device),
                                             repeats)
                    rows.append({"model": name, "threads": threads, "batch": batch, "ms_per_call": 1e3 * seconds,
                                 "ms_per_configuration": 1e3 * seconds / batch})
            mm_model = create("amber14", ala2.topology, device=device)
            seconds = median_seconds(lambda: mm_model.energies_and_forces(_configurations(x, 1, device=device)),
                                     repeats)
            rows.append({"model": "amber14 (energy-model contract)", "threads": threads, "batch": 1,
                         "ms_per_call": 1e3 * seconds, "ms_per_configuration": 1e3 * seconds})
            steps = {f"{name} ABOBA step (TorchForce)":
                     _step_cost(create_ml_system(models[name], ala2.masses), x, device, 20, max(3, repeats // 4))
                     for name in ("ani1x ensemble", "ani1x ensemble (torchani modules)")}
            steps["amber14 ABOBA step"] = _step_cost(ala2.system, x, device, 200, max(3, repeats // 4))
            for name, seconds in steps.items():
                rows.append({"model": name, "threads": threads, "batch": 1, "ms_per_call": 1e3 * seconds,
                             "ms_per_configuration": 1e3 * seconds,
                             "ns_per_day": STEP_FS * 1e-6 / seconds * 86400.0})
    return {"system": "alanine-dipeptide-vacuum (22 atoms)", "repeats": repeats,
            "platform": platform_name(device),
            "machine": {"processor": host.processor() or host.machine(), "cpus": __import__("os").cpu_count(),
                        "torch": torch.__version__, "openmm": openmm.__version__},
            "rows": rows}


def speculative_ceiling(rows: Sequence[dict], acceptances: Sequence[float] = ACCEPTANCES) -> List[dict]:
    """What the measured costs allow speculative dynamics with the ANI-1x ensemble as target, per thread count:
    the synchronous window and speedup over the plain ABOBA step (TorchForce) for each per-step acceptance,
    with a free draft and no driver overhead - an upper bound for any draft on this machine. The batched
    cost T(K) is interpolated linearly between the measured batch sizes (windows up to the largest)."""
    ceiling = []
    for threads in sorted({row["threads"] for row in rows}):
        calls = sorted((row["batch"], row["ms_per_call"]) for row in rows
                       if row["model"] == TARGET and row["threads"] == threads)
        plain = [row["ms_per_call"] for row in rows
                 if row["model"] == f"{TARGET} ABOBA step (TorchForce)" and row["threads"] == threads]
        if not calls or not plain:
            continue
        sizes, costs = np.array(calls).T
        for acceptance in acceptances:
            best = best_window(acceptance, 0.0, lambda k: float(np.interp(k, sizes, costs)), int(sizes[-1]))
            ceiling.append({"threads": threads, "acceptance": acceptance, "window": best.window,
                            "committed_per_round": best.committed_per_round,
                            "ms_per_round": best.seconds_per_round,
                            "speedup_bound": best.committed_per_round * plain[0] / best.seconds_per_round})
    return ceiling


def table(results: Dict[str, object]) -> str:
    """Markdown table of the results."""
    lines = [f"| model | torch threads | batch | ms per call | ms per configuration | ns/day ({STEP_FS} fs) |",
             "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        speed = f"{row['ns_per_day']:.2f}" if "ns_per_day" in row else "-"
        lines.append(f"| {row['model']} | {row['threads']} | {row['batch']} | {row['ms_per_call']:.2f} | "
                     f"{row['ms_per_configuration']:.3f} | {speed} |")
    if results.get("speculative_ceiling"):
        lines += ["", f"Speculative dynamics with the {TARGET} as target, a free draft and no overhead (an upper "
                  "bound for any draft):", "",
                  "| torch threads | acceptance | best window | steps per round | ms per round | bound vs plain ABOBA |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {row['threads']} | {row['acceptance']} | {row['window']} | {row['committed_per_round']:.2f} | "
                  f"{row['ms_per_round']:.1f} | {row['speedup_bound']:.2f}x |" for row in results["speculative_ceiling"]]
    return "\n".join(lines)


def main(json_path: Optional[str] = None, repeats: int = 20, thread_counts: Sequence[int] = (1, 2),
         device: str = AUTO) -> dict:
    results = measure(repeats, thread_counts, device=device)
    results["speculative_ceiling"] = speculative_ceiling(results["rows"])
    write_report(results, json_path, table(results))
    return results
