"""Benchmark (not a test): Langevin speculative dynamics against plain ABOBA with the same target.

For alanine dipeptide with the ANI-1x ensemble as target (in vacuum, and as ML/MM in TIP3P water), for
each setting (time step, friction, hydrogen mass) and each draft and scheduler, both runs start from the
same equilibrated state in the same invocation and commit the same number of steps. Reported per row:
wall-clock speedup, acceptance measured and predicted from the force errors, draft/target costs, the
bound 1/(c + beta), and Ramachandran agreement (Jensen-Shannon divergence of phi/psi histograms between
the LSD and plain runs, next to the same divergence between the two halves of the plain run, which is
what sampling noise alone gives for runs this short).

    openmm-accel bench lsd --json bench-lsd.json [--steps 1000] [--quick]

On a lab's own system (``--system FILE`` with its file options, ``--model`` the target, ``--ml-atoms`` its
region), two settings: 0.5 fs without constraints and 1 fs with X-H constraints, both at 10/ps; the
agreement is that of every residue's (phi, psi), pooled (none for a molecule without a peptide backbone).
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List, Optional


from ..analysis import backbone_dihedrals, js_divergence
from .. import devices
from ..harness import machine, prepared_state, sample, write_report
from ..integrators import Langevin, LangevinABOBAIntegrator
from ..method import Start
from ..models.analytic import DoubleWellModel
from ..systems import double_well, subset_topology, with_potential
from ..threads import use_torch_threads
from ..validation import fail
from .integrator import SpeculativeLangevinIntegrator
from .config import SpeculativeConfig
from .recipes import speculative_integrator
from .schedulers import BatchedScheduler


SETTINGS = [
    {"label": "vacuum, 1 fs, 1/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 1.0, "friction_per_ps": 1.0},
    {"label": "vacuum, 0.5 fs, 1/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 0.5, "friction_per_ps": 1.0},
    {"label": "vacuum, 1 fs, 10/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 1.0, "friction_per_ps": 10.0},
    {"label": "vacuum, HMR 3 amu, 1 fs, 1/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 1.0,
     "friction_per_ps": 1.0, "hydrogen_mass_amu": 3.0},
    {"label": "vacuum, HMR 3 amu, 0.5 fs, 10/ps", "system": "alanine-dipeptide-vacuum", "timestep_fs": 0.5,
     "friction_per_ps": 10.0, "hydrogen_mass_amu": 3.0},
    {"label": "ML/MM in water, 0.5 fs, 10/ps", "system": "alanine-dipeptide-explicit", "timestep_fs": 0.5,
     "friction_per_ps": 10.0, "backend": "pythonforce"},
] + [  # X-H constraints (rigid water in solvent): the along-bond draft errors are absorbed
    {"label": f"{where}, X-H constrained, {h:g} fs, {gamma:g}/ps", "system": system, "timestep_fs": h,
     "friction_per_ps": gamma, "constraints": "hbonds", **extra}
    for where, system, extra in (("vacuum", "alanine-dipeptide-vacuum", {}),
                                 ("ML/MM in water", "alanine-dipeptide-explicit", {"backend": "pythonforce"}))
    for h in (1.0, 2.0) for gamma in (1.0, 10.0)
]
DRAFTS = [  # (label, options of speculative_integrator)
    ("MM + EC", {"draft": "mm"}),
    ("MM, no EC", {"draft": "mm", "error_correction": False}),
    ("1 ANI network + EC", {"draft": "member"}),
    ("distilled + EC", {"draft": "distilled"}),
    ("distilled online + EC", {"draft": "distilled", "online": True}),
    ("distilled + EC, Ray 2 workers", {"draft": "distilled", "scheduler": "ray", "workers": 2, "window": 64}),
]


SEED = 11
SAMPLE_EVERY = 10


def _plain(setting: dict) -> LangevinABOBAIntegrator:
    integrator = LangevinABOBAIntegrator(300.0, setting["friction_per_ps"], setting["timestep_fs"] * 1e-3)
    integrator.setRandomNumberSeed(SEED)
    return integrator


def measure(steps: int = 1000, settings: Optional[List[dict]] = None, drafts=None, threads: int = 1,
            distill_steps: int = 2000, device: str = devices.AUTO) -> Dict[str, object]:
    """Every draft of ``drafts`` in every setting of ``settings``, against plain ABOBA from the same state, on
    ``device``."""
    use_torch_threads(threads)
    rows = []
    samples = max(1, steps // SAMPLE_EVERY)
    for setting in settings or SETTINGS:
        target = setting.get("model", "ani1x")
        molecular = with_potential(setting["system"], target, None, setting.get("hydrogen_mass_amu"),
                                   setting.get("backend", "torchforce"), setting.get("constraints", "none"),
                                   setting.get("source_options"), setting.get("ml_atoms"))
        system, topology = molecular.system, molecular.topology
        platform = devices.platform(device)
        state = prepared_state(system, molecular.positions, 300.0, platform, SEED)
        state = sample(_plain(setting), system, state, platform, 1, 500)["final"]
        solute = molecular.region if molecular.region is not None else list(range(topology.getNumAtoms()))
        solute_topology = subset_topology(topology, solute)
        plain = sample(_plain(setting), system, state, platform, samples, SAMPLE_EVERY, solute)
        plain_angles = backbone_dihedrals(solute_topology, plain["x"])  # None: no peptide backbone
        half = 0 if plain_angles is None else len(plain_angles) // 2
        noise = None if plain_angles is None else js_divergence(plain_angles[:half], plain_angles[half:])
        draft_file = os.path.join(tempfile.mkdtemp(), "draft.npz")
        for label, changes in drafts or DRAFTS:
            began = time.perf_counter()
            langevin = Langevin(300.0, setting["friction_per_ps"], setting["timestep_fs"], SEED)
            options = SpeculativeConfig(distill_steps=distill_steps, **changes)
            integrator, _ = speculative_integrator(langevin, target, options,
                                                   Start(molecular, state, platform, device=device),
                                                   draft_file=draft_file)
            setup_seconds = time.perf_counter() - began
            try:
                run = sample(integrator, system, state, platform, samples, SAMPLE_EVERY, solute)
                stats = integrator.statistics
            finally:
                integrator.close()
            seconds, plain_seconds = run["seconds_per_step"], plain["seconds_per_step"]
            cost_ratio = stats["draft_seconds"] / max(stats["draft_calls"], 1) / plain_seconds
            rejection = 1.0 - stats["acceptance_rate"]
            rows.append({
                "setting": setting["label"], "draft": label, "steps": samples * SAMPLE_EVERY,
                "plain_ms_per_step": 1e3 * plain_seconds, "lsd_ms_per_step": 1e3 * seconds,
                "speedup": plain_seconds / seconds, "acceptance": stats["acceptance_rate"],
                "predicted_acceptance": stats["predicted_acceptance"], "steps_per_round": stats["mean_streak"],
                "draft_ms": 1e3 * stats["draft_seconds"] / max(stats["draft_calls"], 1),
                "target_ms_per_call": 1e3 * stats["target_seconds"] / max(stats["target_calls"], 1),
                "cost_ratio_c": cost_ratio, "bound_1_over_c_plus_beta": 1.0 / (cost_ratio + rejection),
                "js_lsd_vs_plain": None if plain_angles is None else
                js_divergence(backbone_dihedrals(solute_topology, run["x"]), plain_angles),
                "js_plain_half_vs_half": noise, "setup_seconds": setup_seconds,
            })
            print(_row(rows[-1]), flush=True)
    targets = sorted({setting.get("model", "ani1x") for setting in settings or SETTINGS})
    return {"target": ", ".join("ANI-1x ensemble (float32)" if t == "ani1x" else t for t in targets), "rows": rows,
            "machine": machine(threads)}


def driver_overhead(steps: int = 3000, window: int = 16, device: str = devices.AUTO) -> Dict[str, float]:
    """What the speculative driver costs per committed step apart from the models: a trivial target (three
    particles in double wells: its calls cost torch's per-call overhead, not arithmetic) as its own draft
    (every draft accepted), ``window`` drafts per round, timed over ``steps`` committed steps after a short
    untimed start. Returns ms per committed step in all, in the draft and target calls (torch's per-call
    cost included), and the rest (the driver: coupling, noise, bookkeeping, the Context hand-over)."""
    model = DoubleWellModel(3, 4.0, 0.1, 1000.0)
    molecular = double_well(n_particles=3, barrier=4.0, a=0.1, k_perp=1000.0, mass=4.0, seed=SEED)
    integrator = SpeculativeLangevinIntegrator(300.0, 2.0, 0.004, draft=model, target=model, seed=SEED,
                                               scheduler=BatchedScheduler(window))
    context = devices.Placement(device).context(molecular.system, integrator)
    context.setPositions(molecular.positions)
    context.setVelocitiesToTemperature(300.0, SEED)
    integrator.step(100)
    before = integrator.statistics
    began = time.perf_counter()
    integrator.step(steps)
    total = (time.perf_counter() - began) / steps
    after = integrator.statistics
    models = sum(after[k] - before[k] for k in ("draft_seconds", "target_seconds")) / steps
    integrator.close()
    return {"steps": steps, "window": window, "acceptance": after["acceptance_rate"],
            "ms_per_committed_step": 1e3 * total, "models_ms": 1e3 * models, "driver_ms": 1e3 * (total - models)}


HEADER = ("| setting | draft | plain ms/step | LSD ms/step | speedup | acceptance (predicted) | steps/round | "
          "c | bound 1/(c+beta) | JS LSD-plain (noise) |\n|---|---|---|---|---|---|---|---|---|---|")


def _row(r) -> str:
    return (f"| {r['setting']} | {r['draft']} | {r['plain_ms_per_step']:.2f} | {r['lsd_ms_per_step']:.2f} | "
            f"{r['speedup']:.2f}x | {r['acceptance']:.3f} ({r['predicted_acceptance']:.3f}) | "
            f"{r['steps_per_round']:.2f} | {r['cost_ratio_c']:.3f} | {r['bound_1_over_c_plus_beta']:.2f} | "
            + ("n/a |" if r["js_lsd_vs_plain"] is None else
               f"{r['js_lsd_vs_plain']:.3f} ({r['js_plain_half_vs_half']:.3f}) |"))


def main(json_path: Optional[str] = None, steps: int = 1000, quick: bool = False, threads: int = 1,
         only: Optional[str] = None, drafts_only: Optional[str] = None, settings: Optional[list] = None,
         device: str = devices.AUTO) -> dict:
    """Run the table (``only``/``drafts_only``: the settings/drafts named by one of these '|'-separated
    texts: a whole label, or else any label containing the text; ``settings``: another system's, see
    :meth:`~.method.SpeculativeBenchConfig.settings`)."""
    def chosen(label, texts, labels):
        return texts is None or any(text == label or (text not in labels and text in label)
                                    for text in texts.split("|"))
    table = settings or SETTINGS
    settings = [s for s in table if chosen(s["label"], only, [s["label"] for s in table])]
    drafts = [d for d in DRAFTS if chosen(d[0], drafts_only, [d[0] for d in DRAFTS])]
    if not settings or not drafts:
        raise fail("only" if not settings else "drafts", "text found in a setting's or draft's label: "
                   f"{' | '.join(s['label'] for s in table) if not settings else ' | '.join(d[0] for d in DRAFTS)}",
                   only if not settings else drafts_only)
    if quick:
        settings, drafts = settings[:1], [d for d in drafts if d in DRAFTS[2:4]] or drafts[:1]
    print(HEADER, flush=True)
    results = measure(steps, settings, drafts, threads, distill_steps=500 if quick else 2000, device=device)
    results["driver_overhead"] = overhead = driver_overhead(device=device)
    summary = (f"Driver overhead (trivial target as its own draft, window {overhead['window']}): "
               f"{overhead['ms_per_committed_step']:.3f} ms per committed step, of which the model calls "
               f"{overhead['models_ms']:.3f} ms and the driver {overhead['driver_ms']:.3f} ms.")
    print(summary, flush=True)
    write_report(results, json_path, "\n".join([HEADER] + [_row(row) for row in results["rows"]] + ["", summary]))
    return results
