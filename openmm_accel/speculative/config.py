"""The run options of speculative dynamics (``openmm-accel run --method lsd``), declared once."""
from __future__ import annotations

from dataclasses import dataclass

from ..options import option
from ..validation import count

DRAFTS = ("distilled", "member", "mm")


@dataclass(frozen=True)
class SpeculativeConfig:
    draft: str = option("distilled", "--draft", "draft: force-matched to the target along a short run, one ANI-1x "
                        "network, or MM", choices=DRAFTS)
    draft_member: int = option(0, "--draft-member", "the ANI-1x network of --draft member")
    scheduler: str = option("batched", "--scheduler", "verify drafts batched on this device, or on Ray workers",
                            choices=("batched", "ray"))
    workers: int = option(2, "--workers", "Ray target workers", check=count)
    window: int = option(8, "--window", "initial drafts per batched round", check=count)
    adaptive_window: bool = option(True, "--fixed-window", "keep --window instead of re-choosing it from measured "
                                   "costs: a seeded run is then bitwise reproducible (adaptive windows follow the "
                                   "machine's load, and float32 results change by an ulp with the batch size)")
    error_correction: bool = option(True, "--no-error-correction", "draft without the target-force correction")
    online: bool = option(False, "--online", "keep refining the distilled draft during the run")
    distill_steps: int = option(2000, "--distill-steps", "target steps the draft is distilled from", check=count)

    def unused(self) -> dict:
        """The options with no effect in these settings, each with where they have one."""
        unused = {}
        if self.draft != "member":
            unused["draft_member"] = "--draft member"
        if self.scheduler != "ray":
            unused["workers"] = "--scheduler ray"
        if self.draft != "distilled":
            unused.update(online="--draft distilled", distill_steps="--draft distilled")
        return unused
