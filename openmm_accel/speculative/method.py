"""Speculative dynamics as a method of ``openmm-accel run`` and ``bench`` (see :mod:`openmm_accel.method`)."""
from __future__ import annotations

import os

from ..method import Command, Method, Option
from ..validation import count, fail
from .benchmark import main as benchmark
from .recipes import DRAFTS, speculative_integrator

DRAFT_FILE = "draft.npz"


def _distilled(config) -> bool:
    return config.draft == "distilled"


OPTIONS = (
    Option("draft", "--draft", "distilled", "draft: force-matched to the target along a short run, one ANI-1x "
           "network, or MM", choices=DRAFTS),
    Option("draft_member", "--draft-member", 0, "the ANI-1x network of --draft member", type=int,
           applies=lambda c: c.draft == "member", where="--draft member"),
    Option("scheduler", "--scheduler", "batched", "verify drafts batched on this device, or on Ray workers",
           choices=("batched", "ray")),
    Option("workers", "--workers", 2, "Ray target workers", type=int, check=count,
           applies=lambda c: c.scheduler == "ray", where="--scheduler ray"),
    Option("window", "--window", 8, "initial drafts per batched round", type=int, check=count),
    Option("adaptive_window", "--fixed-window", True, "keep --window instead of re-choosing it from measured "
           "costs: a seeded run is then bitwise reproducible (adaptive windows follow the machine's load, and "
           "float32 results change by an ulp with the batch size)", action="store_false"),
    Option("error_correction", "--no-error-correction", True, "draft without the target-force correction",
           action="store_false"),
    Option("online", "--online", False, "keep refining the distilled draft during the run", action="store_true",
           applies=_distilled, where="--draft distilled"),
    Option("distill_steps", "--distill-steps", 2000, "target steps the draft is distilled from", type=int,
           check=count, applies=_distilled, where="--draft distilled"),
)


def build(config, setup, state, platform, prepared, paths):
    draft_file = paths[DRAFT_FILE]
    if config.resume and _distilled(config) and not os.path.isfile(draft_file):
        raise fail("resume", f"the distilled draft {draft_file} of the run being resumed", "no such file")
    return speculative_integrator(setup, state, platform, config.model, config.temperature_k, config.friction_per_ps,
                                  config.timestep_fs, config.seed, draft_file=draft_file, load_draft=config.resume,
                                  **{option.name: getattr(config, option.name) for option in OPTIONS})


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


def _bench(args) -> None:
    benchmark(json_path=args.json, steps=args.steps, quick=args.quick, threads=args.threads[0], only=args.only,
              drafts_only=args.drafts)


BENCH = Command(
    help="speculative vs plain dynamics from the same state: speed-up, acceptance, Ramachandran agreement",
    options=(Option("steps", "--steps", 1000, "committed steps per run", type=int, check=count),
             Option("quick", "--quick", False, "a smoke run", action="store_true"),
             Option("only", "--only", None, "only these settings: '|'-separated labels, or texts in labels "
                    "(e.g. 'vacuum, X-H')"),
             Option("drafts", "--drafts", None, "only these drafts: '|'-separated labels, or texts in labels "
                    "(e.g. 'distilled + EC|1 ANI')")),
    run=_bench)

METHOD = Method(name="lsd", help="Langevin speculative dynamics: a cheap draft proposes, the ML target verifies "
                "in parallel, the trajectory distribution stays the target's", build=build, options=OPTIONS,
                files=lambda config: (DRAFT_FILE,) if _distilled(config) else (), all_files=(DRAFT_FILE,),
                progress=lambda integrator: {"acceptance": f"{integrator.acceptance_rate:.2f}"},
                statistics_key="speculative", describe=describe, bench=BENCH, keeps_constraints=True)
