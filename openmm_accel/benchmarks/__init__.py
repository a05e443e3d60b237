"""Benchmarks that belong to no method: ``openmm-accel bench models`` (what one energy/force evaluation
costs here; :mod:`.models`) and ``bench gpu`` (what a GPU changes, every method side by side; :mod:`.gpu`),
each imported when the benchmark runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..method import BenchConfig, Job
from ..options import option
from ..validation import count


@dataclass(frozen=True)
class ModelsBenchConfig(BenchConfig):
    repeats: int = option(20, "--repeats", "timing repeats", check=count)


def _counts(values, name) -> None:
    for value in values:
        count(value, name, "positive integers")


@dataclass(frozen=True)
class GPUBenchConfig(BenchConfig):
    small: bool = option(False, "--small", "the tests' setting: a few steps and samples of each (seconds on a CPU)")
    batches: Tuple[int, ...] = option((1, 2, 4, 8, 16, 32, 64), "--batches", "batch sizes of the ANI-1x "
                                      "evaluation; LSD's windows are those from 4 up", check=_counts)
    cg_replicas: Tuple[int, ...] = option((1, 8, 64), "--cg-replicas", "CG replicas of the score model's MD",
                                       check=_counts)


class GPUBench(Job):
    help = ("what a GPU changes, in one command: batched ANI-1x, LSD vs plain, FlashMD vs ABOBA, score CG "
            "replicas, drift samples per second (--device; --small: seconds on a CPU)")
    Config = GPUBenchConfig

    def run(self, config: GPUBenchConfig) -> None:
        from .gpu import main
        main(config)


class ModelsBench(Job):
    help = "ANI-1x and MM cost per evaluation vs batch size and threads"
    Config = ModelsBenchConfig

    def run(self, config: ModelsBenchConfig) -> None:
        from .models import main
        main(json_path=config.json, repeats=config.repeats, thread_counts=config.threads, device=config.device)


__all__ = ["GPUBench", "GPUBenchConfig", "ModelsBench", "ModelsBenchConfig"]
