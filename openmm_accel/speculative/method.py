"""Speculative dynamics as a method of ``openmm-accel run`` and ``bench`` (see :mod:`openmm_accel.method`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from ..method import BenchConfig, Job, Method, Start
from ..options import option, redefault
from ..structures import is_structure_file
from ..systems import SystemOptions, canonical_source, check_potential
from ..validation import count, fail
from .config import SpeculativeConfig

DRAFT_FILE = "draft.npz"


def describe(stats: dict) -> str:
    """What the run did and why it was as fast as it was (the speedup bound 1/(c + beta) of Kosmala et al.
    2026, arXiv:2606.02455, with c the draft's cost per call over the target's per batched call)."""
    calls = max(stats["target_calls"], 1)
    draft_ms = 1e3 * stats["draft_seconds"] / max(stats["draft_calls"], 1)
    target_ms = 1e3 * stats["target_seconds"] / calls
    cost_ratio = draft_ms / target_ms if target_ms > 0 else float("nan")
    rejection = 1.0 - stats["acceptance_rate"]
    line = (f"speculative: acceptance {stats['acceptance_rate']:.3f} (predicted from force errors "
            f"{stats['predicted_acceptance']:.3f}), {stats['mean_streak']:.2f} steps per round; draft "
            f"{draft_ms:.2f} ms per call, target {target_ms:.2f} ms per call of "
            f"{stats['target_configurations'] / calls:.1f} configurations: c = {cost_ratio:.3f}, speedup bound "
            f"1/(c + beta) = {1.0 / (cost_ratio + rejection):.2f}x")
    if stats["mean_streak"] < 2.5:
        line += (" (few steps per round: the draft's acceptance limits the speed; higher --friction, "
                 "--constraints hbonds and the distilled draft raise it)")
    return line


@dataclass(frozen=True)
class SpeculativeBenchConfig(BenchConfig, SystemOptions):
    """``bench lsd``: its table on alanine dipeptide, or (``system``) on a lab's own system."""

    steps: int = option(1000, "--steps", "committed steps per run", check=count)
    quick: bool = option(False, "--quick", "a smoke run")
    only: Optional[str] = option(None, "--only", "only these settings: '|'-separated labels, or texts in labels "
                                 "(e.g. 'vacuum, X-H')")
    drafts: Optional[str] = option(None, "--drafts", "only these drafts: '|'-separated labels, or texts in labels "
                                   "(e.g. 'distilled + EC|1 ANI')")
    system: Optional[str] = redefault(SystemOptions, "system", None)
    model: str = option("ani1x", "--model", "the target potential (a registered ML model, or a torchscript: or "
                        "mace: file) on --system's ML region")

    def settings(self) -> Optional[list]:
        """The settings of a lab's own ``system`` (None: the built-in table's)."""
        if self.system is None:
            if self.given_file_options() or self.model != "ani1x":
                name = next(iter(self.given_file_options()), "model")
                raise fail(name, "it only with --system (the built-in table is alanine dipeptide's with ANI-1x)",
                           getattr(self, name))
            return None
        check_potential(self.model, None)
        common = {"system": canonical_source(self.system), "source_options": self.source_options(),
                  "ml_atoms": self.ml_atoms, "model": self.model, "friction_per_ps": 10.0}
        name = os.path.basename(self.system) if is_structure_file(self.system) else self.system
        return [{**common, "label": f"{name}, 0.5 fs, 10/ps", "timestep_fs": 0.5},
                {**common, "label": f"{name}, X-H constrained, 1 fs, 10/ps", "timestep_fs": 1.0,
                 "constraints": "hbonds"}]


class SpeculativeBench(Job):
    help = "speculative vs plain dynamics from the same state: speed-up, acceptance, Ramachandran agreement"
    Config = SpeculativeBenchConfig

    def run(self, config: SpeculativeBenchConfig) -> None:
        from .benchmark import main
        main(json_path=config.json, steps=config.steps, quick=config.quick, threads=config.threads[0],
             only=config.only, drafts_only=config.drafts, settings=config.settings(), device=config.device)


class SpeculativeDynamics(Method):
    name = "lsd"
    help = ("Langevin speculative dynamics: a cheap draft proposes, the ML target verifies in parallel, the "
            "trajectory distribution stays the target's")
    Config = SpeculativeConfig
    keeps_constraints = True
    output_files = (DRAFT_FILE,)
    statistics_key = "speculative"
    # exact whatever the draft and schedule: they change how fast the target's dynamics run, not the dynamics
    resumable = ("draft", "draft_member", "scheduler", "workers", "window", "adaptive_window", "error_correction",
                 "online", "distill_steps")
    bench = SpeculativeBench()

    def unused(self, run) -> dict:
        return run.options.unused()

    def integrator(self, run, start: Start):
        from .recipes import speculative_integrator
        draft_file = start.paths[DRAFT_FILE]
        distilled = run.options.draft == "distilled"
        if run.resume and distilled and not os.path.isfile(draft_file):
            raise fail("resume", f"the distilled draft {draft_file} of the run being resumed", "no such file")
        return speculative_integrator(run.langevin, run.model, run.options, start, draft_file=draft_file,
                                      load_draft=run.resume)

    def files(self, run) -> tuple:
        return (DRAFT_FILE,) if run.options.draft == "distilled" else ()

    def progress(self, integrator) -> dict:
        return {"acceptance": f"{integrator.acceptance_rate:.2f}"}

    def describe(self, statistics: dict) -> str:
        return describe(statistics)


METHOD = SpeculativeDynamics()
