"""``openmm-accel sample --method drift``: conformations from a drifting generator, streamed to a
trajectory, with their validity, and optionally refined by short MD with the reference potential."""
from __future__ import annotations

import os
import time

import numpy as np

from ..devices import torch_device
from ..learning.conformations import check_format, check_new, write_conformations
from ..options import checked
from ..threads import use_torch_threads
from .config import DriftSampleConfig
from .model import DEFAULT_SYSTEM, load, refine, shipped


def _percentages(report: dict) -> str:
    total = len(report["valid"])
    return ", ".join(f"{name.replace('_', ' ')} {100.0 * np.mean(report[name]):.2f} %"
                     for name in ("valid", "bonds_ok", "clash_free", "chirality_ok")) + f" of {total}"


def refined_path(path: str) -> str:
    """Where refined samples go: ``samples.dcd`` -> ``samples.refined.dcd`` (beside the raw ones)."""
    stem, extension = os.path.splitext(path)
    return f"{stem}.refined{extension}"


def sample(config: DriftSampleConfig) -> str:
    """``openmm-accel sample --method drift``: conformations from a generator, streamed to a trajectory with
    the molecule's topology, and a report of their validity (every raw sample is written, valid or not);
    with ``--refine``, also the samples after short MD with the reference potential, in a file of their own."""
    config = checked(config)
    check_new(config.output)
    if config.refine:
        check_new(refined_path(config.output))
    _, model = shipped.pick(config.drift_model, config.system, DEFAULT_SYSTEM, load)
    model.to(torch_device(config.device))
    topology = model.topology()
    check_format(config.output, topology)
    use_torch_threads(config.threads)
    reports, kept = [], []

    def validated():
        for batch in model.batches(config.count, config.seed, config.batch):
            if model.validity is not None:
                reports.append(model.validity.check(batch))
            if config.refine:
                kept.append(batch)
            yield batch
    began = time.perf_counter()
    written = write_conformations(config.output, validated(), topology)
    seconds = time.perf_counter() - began
    line = f"{config.count} conformations in {seconds:.1f} s ({config.count / seconds:.0f} per second, written)"
    if reports:
        line += "; " + _percentages(_merged(reports))
    line += f"; wrote {', '.join(written)}"
    if config.refine:
        # the data's MD, at the temperature the model aims at (guidance may aim at another than the data's)
        settings = {**model.metadata["data"]["settings"], "temperature_k": model.temperature_k}
        refined_reports, failed = [], []

        def refined():
            done = 0
            for batch in kept:  # sample i's velocities are drawn with seed + i, whatever the batches
                batch = refine(batch, settings, config.refine, config.seed + done,
                               progress=config.progress is not False)
                done += len(batch)
                finite = np.isfinite(batch).all(axis=(1, 2))
                failed.append(int(np.sum(~finite)))
                batch = batch[finite]
                if len(batch):
                    if model.validity is not None:
                        refined_reports.append(model.validity.check(batch))
                    yield batch
        began = time.perf_counter()
        written = write_conformations(refined_path(config.output), refined(), topology)
        seconds = time.perf_counter() - began
        line += (f"\nrefined by {config.refine:g} ps of the reference potential's MD each in {seconds:.1f} s "
                 f"({config.count / seconds:.1f} per second)")
        if sum(failed):
            line += f"; {sum(failed)} could not be relaxed (non-finite forces) and are left out"
        if refined_reports:
            line += "; " + _percentages(_merged(refined_reports))
        line += f"; wrote {', '.join(written)}"
    return line


def _merged(reports: list) -> dict:
    return {name: np.concatenate([r[name] for r in reports]) for name in reports[0]}
