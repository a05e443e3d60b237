"""``openmm-accel bench gpu``: in one command, what a GPU changes, each method against plain MD side by side.

Made to be run as soon as a GPU is available (a few minutes), and in a small setting on any CPU (the tests):

* the ANI-1x ensemble's batched evaluation at batch sizes 1-64 and a plain ABOBA step with it as a TorchForce
  (what speculative verification relies on: a batch of K costing about one);
* LSD with one ANI-1x network as draft at fixed windows against plain ABOBA (alanine dipeptide, 0.5 fs, 10/ps);
* FlashMD (the shipped 8 fs ANI-1x model) against ABOBA at 0.5 fs on the same potential;
* score-based CG MD with K replicas in one System (aggregate CG ns/day);
* drift samples per second.

ANI-2x is not measured: the torchani 2.2.4 wheel ships its parameter files empty.
"""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np
from openmm import unit

from .. import devices, systems
from ..harness import machine, ns_per_day, prepared_state, sample, write_report
from ..integrators import LangevinABOBAIntegrator
from ..threads import torch_threads
from . import GPUBenchConfig
from .models import measure as model_costs

SEED = 11
NOT_MEASURED = {"ani2x": "no ANI-2x parameters offline: the torchani 2.2.4 wheel ships its files empty"}


def lsd_vs_plain(device: str, windows: List[int], steps: int, threads: int) -> List[dict]:
    """LSD (one ANI-1x network as draft, fixed windows) against plain ABOBA from the same state, on ``device``."""
    from ..speculative.benchmark import measure
    setting = {"label": "vacuum, 0.5 fs, 10/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 0.5,
               "friction_per_ps": 10.0}
    drafts = [(f"1 ANI network + EC, window {k}", {"draft": "member", "window": k, "adaptive_window": False})
              for k in windows]
    return measure(steps, [setting], drafts, threads, device=device)["rows"]


def flashmd_vs_aboba(device: str, strides: int) -> dict:
    """The shipped 8 fs ANI-1x FlashMD model and ABOBA at 0.5 fs on the same potential, from the same state."""
    from ..flashmd import FlashMDIntegrator, Thermostat
    from ..flashmd.pretrained import resolve
    from ..flashmd.training import open_model
    molecular = systems.with_potential("alanine-dipeptide-vacuum", "ani1x")
    platform = devices.platform(device)
    state = prepared_state(molecular.system, molecular.positions, 300.0, platform, SEED)
    numbers = [atom.element.atomic_number for atom in molecular.topology.atoms()]
    model = open_model(resolve(None, "alanine-dipeptide-vacuum", "ani1x"), numbers, molecular.masses)
    model.to(devices.torch_device(device))
    stride_fs = model.stride * 1000
    flash = sample(FlashMDIntegrator(model, temperature=300.0 * unit.kelvin, thermostat=Thermostat(friction=10.0
                                     / unit.picosecond), seed=SEED), molecular.system, state, platform, strides, 1)
    aboba_steps = max(int(round(strides * stride_fs / 0.5)) // 4, 1)  # a quarter of the time: its speed is steady
    aboba = sample(LangevinABOBAIntegrator(300.0, 10.0, 0.0005), molecular.system, state, platform, 1, aboba_steps)
    rows = {"flashmd_ns_per_day": ns_per_day(flash["seconds_per_step"], stride_fs),
            "aboba_ns_per_day": ns_per_day(aboba["seconds_per_step"], 0.5), "stride_fs": stride_fs,
            "strides": strides, "aboba_steps": aboba_steps}
    rows["speedup"] = rows["flashmd_ns_per_day"] / rows["aboba_ns_per_day"]
    return rows


def score_replicas(device: str, replicas: List[int], picoseconds: float) -> List[dict]:
    """Aggregate CG ns/day of the shipped score model's MD with K replicas in one System (2 fs, 10/ps)."""
    from ..score.benchmark import cg_md
    from ..score.method import DEFAULT_SYSTEM, shipped
    from ..score.model import load
    _, model = shipped.pick(None, None, DEFAULT_SYSTEM, load)
    start = model.to(devices.torch_device(device)).sample(1, seed=SEED)
    rows = []
    for k in replicas:
        md = cg_md(model, np.repeat(start, k, axis=0), picoseconds / 1000, 2.0, 10.0, SEED, "torchforce", device)
        rows.append({"replicas": k, "ns_per_day": md["ns_per_day"], "aggregate_ns_per_day": k * md["ns_per_day"]})
    return rows


def drift_rate(device: str, samples: int) -> dict:
    """Independent conformations per second from the shipped drift model (after an untimed first batch)."""
    from ..drift.model import DEFAULT_SYSTEM, load, shipped
    _, model = shipped.pick(None, None, DEFAULT_SYSTEM, load)
    model.to(devices.torch_device(device))
    model.sample(min(samples, 100), SEED)
    began = time.perf_counter()
    model.sample(samples, SEED)
    return {"samples": samples, "per_second": samples / (time.perf_counter() - began)}


def main(config: GPUBenchConfig) -> dict:
    device, threads = config.device, config.threads[0]
    small = config.small
    windows = [k for k in config.batches if k >= 4] or [max(config.batches)]
    with torch_threads(threads):
        results: Dict[str, object] = {
            "device": devices.resolved(device), "platform": devices.platform_name(device),
            "machine": machine(threads), "not_measured": NOT_MEASURED, "small": small,
            "batched": model_costs(2 if small else 10, (threads,), config.batches, device)["rows"]}
        results["lsd"] = lsd_vs_plain(device, windows[:1] if small else windows, 20 if small else 1000, threads)
        results["flashmd"] = flashmd_vs_aboba(device, 5 if small else 500)
        results["score"] = score_replicas(device, config.cg_replicas, 1.0 if small else 100.0)
        results["drift"] = drift_rate(device, 100 if small else 10000)
    write_report(results, config.json, table(results))
    return results


def table(results: dict) -> str:
    """The report as Markdown."""
    lines = [f"Device {results['device']} (OpenMM {results['platform']} platform); not measured: "
             + "; ".join(f"{k} ({v})" for k, v in results["not_measured"].items()), "",
             "| ANI-1x evaluation | batch | ms per call | ms per configuration |", "|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['batch']} | {row['ms_per_call']:.2f} | {row['ms_per_configuration']:.3f} |"
              for row in results["batched"]]
    lines += ["", "| LSD (alanine dipeptide, 0.5 fs, 10/ps) | acceptance | plain ms/step | LSD ms/step | speedup |",
              "|---|---|---|---|---|"]
    lines += [f"| {row['draft']} | {row['acceptance']:.3f} | {row['plain_ms_per_step']:.2f} | "
              f"{row['lsd_ms_per_step']:.2f} | {row['speedup']:.2f}x |" for row in results["lsd"]]
    f = results["flashmd"]
    lines += ["", f"FlashMD {f['stride_fs']:g} fs: {f['flashmd_ns_per_day']:.2f} ns/day, ABOBA 0.5 fs "
              f"{f['aboba_ns_per_day']:.2f} ns/day: {f['speedup']:.1f}x", "",
              "| score CG replicas | ns/day each | aggregate ns/day |", "|---|---|---|"]
    lines += [f"| {row['replicas']} | {row['ns_per_day']:.1f} | {row['aggregate_ns_per_day']:.1f} |"
              for row in results["score"]]
    d = results["drift"]
    lines += ["", f"Drift: {d['per_second']:.0f} independent conformations per second ({d['samples']} drawn)"]
    return "\n".join(lines)
