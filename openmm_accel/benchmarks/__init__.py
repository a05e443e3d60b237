"""Benchmarks that belong to no method: ``openmm-accel bench models`` (what one energy/force evaluation
costs here; :mod:`.models`, imported when the benchmark runs)."""
from __future__ import annotations

from dataclasses import dataclass

from ..method import BenchConfig, Job
from ..options import option
from ..validation import count


@dataclass(frozen=True)
class ModelsBenchConfig(BenchConfig):
    repeats: int = option(20, "--repeats", "timing repeats", check=count)


class ModelsBench(Job):
    help = "ANI-1x and MM cost per evaluation vs batch size and threads"
    Config = ModelsBenchConfig

    def run(self, config: ModelsBenchConfig) -> None:
        from .models import main
        main(json_path=config.json, repeats=config.repeats, thread_counts=config.threads, device=config.device)


__all__ = ["ModelsBench", "ModelsBenchConfig"]
