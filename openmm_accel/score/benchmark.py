"""``openmm-accel bench score``: score models against held-out reference MD, as independent samples and as
coarse-grained MD with their forces, and the speed of that MD against all-atom MD of the same peptide.

Structure is compared on frames of the reference data that training never saw (each walker's end, from the
model file's ``training_frames_per_walker``): the Jensen-Shannon divergence of 64 x 64 phi/psi histograms
(natural log: scipy's squared Jensen-Shannon distance), the error of the phi/psi free energy (PMF) and the
1-Wasserstein distance of every bond length. Samples are compared with the first half of every walker's
held-out frames; the noise floor of a sample of N frames is the same comparison for N frames spread over the
second halves (:func:`..analysis.reference_and_floor`), what a perfect sampler of that size would score.

Speed: simulated ns/day of CG MD with the model, and of all-atom MD of the same peptide in implicit solvent
and in explicit water (the reference data's integrator settings), measured here one after another; and
effective samples per second, ``rate / g`` with ``g`` the statistical inefficiency of the phi/psi series
(the largest over their sines and cosines), for CG MD, all-atom MD (g from the reference data's 1-ps
frames) and iid sampling (g = 1).
"""
from __future__ import annotations

import io
import os
import time
from typing import Dict, List, Sequence

import numpy as np
from openmm import app, unit

from ..analysis import (BOLTZMANN, dihedrals, js_divergence, phi_psi_inefficiency, ramachandran_histogram,
                        reference_and_floor)
from .. import devices
from ..harness import machine, ns_per_day, prepared_state, report_name, sample as run_md, write_report
from ..integrators import LangevinABOBAIntegrator
from ..learning.reference import cached_reference, data_folder, md_speed
from ..systems import in_solvent
from ..threads import use_torch_threads
from ..validation import choice, fail
from .config import MD_STARTS, ScoreBenchConfig
from .model import ScoreModel
from .system import model_mapping, replica_system, side_by_side
from .model import load

BINS = 64


def _cg_topology(model: ScoreModel) -> app.Topology:
    return app.PDBFile(io.StringIO(model.metadata["topology_pdb"])).topology


def pmf_error(reference: np.ndarray, other: np.ndarray, kt: float, bins: int = BINS, within: float = 4.0) -> float:
    """RMS difference (kJ/mol) of the phi/psi free energies ``-kT ln p`` over the bins where the reference's
    is within ``within`` kT of its minimum (the populated basins), weighted by the reference's probability,
    after the best constant shift; a bin the other sample never visits counts as if it held half a frame."""
    p = ramachandran_histogram(reference, bins)
    q = ramachandran_histogram(other, bins)
    floor = 0.5 / len(other)
    inside = p > 0
    f_ref = -kt * np.log(np.where(inside, p, 1.0))
    inside &= f_ref <= f_ref[inside].min() + within * kt
    difference = -kt * np.log(np.maximum(q[inside], floor)) - f_ref[inside]
    weights = p[inside] / p[inside].sum()
    difference -= np.sum(weights * difference)
    return float(np.sqrt(np.sum(weights * difference**2)))


def bond_w1(reference: np.ndarray, other: np.ndarray) -> List[float]:
    """1-Wasserstein distance (nm) of each consecutive bead distance between two sets of frames."""
    from scipy.stats import wasserstein_distance

    def lengths(frames):
        return np.linalg.norm(frames[:, 1:] - frames[:, :-1], axis=-1)
    a, b = lengths(reference), lengths(other)
    return [float(wasserstein_distance(a[:, k], b[:, k])) for k in range(a.shape[1])]


def compare(reference_frames: np.ndarray, reference_angles: np.ndarray, frames: np.ndarray, angles: np.ndarray,
            kt: float) -> Dict[str, object]:
    bonds = bond_w1(reference_frames, frames)
    return {"js": js_divergence(reference_angles, angles, BINS), "pmf_error_kj_mol": pmf_error(
        reference_angles, angles, kt), "bond_w1_nm": bonds, "bond_w1_mean_nm": float(np.mean(bonds)),
        "frames": int(len(frames))}


def all_atom_speeds(settings: dict, picoseconds: float, seed: int) -> Dict[str, dict]:
    """All-atom ns/day of the reference data's molecule in implicit solvent (``picoseconds``) and explicit water
    (a tenth of it), each with the data's integrator settings."""
    speeds = {}
    for solvent, duration in (("implicit", picoseconds), ("explicit", picoseconds / 10)):
        name = in_solvent(settings["system"], solvent)
        if name is not None:
            speeds[solvent] = md_speed(settings, duration, seed, name)
    return speeds


def cg_md(model: ScoreModel, starts: np.ndarray, nanoseconds: float, timestep_fs: float, friction_per_ps: float,
          seed: int, backend: str, device: str = devices.AUTO) -> Dict[str, object]:
    """CG Langevin MD (the ABOBA integrator ``run --method score`` uses) with the model's forces, one replica
    from each of ``starts`` (K, n, 3) nm in one System on ``device``; frames every ps, ``(frames, K, n, 3)``."""
    replicas, beads = starts.shape[:2]
    system = replica_system(model, model.metadata["masses"], replicas, backend)
    positions = side_by_side(starts)
    platform = devices.platform(device)
    state = prepared_state(system, positions * unit.nanometer, model.temperature_k, platform, seed, minimize=False)
    integrator = LangevinABOBAIntegrator(model.temperature_k * unit.kelvin, friction_per_ps / unit.picosecond,
                                         timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    every = max(int(round(1000.0 / timestep_fs)), 1)
    frames = max(int(round(nanoseconds * 1000)), 2)
    result = run_md(integrator, system, state, platform, frames, every)
    return {"x": result["x"].reshape(frames, replicas, beads, 3), "platform": platform.getName(),
            "ns_per_day": ns_per_day(result["seconds_per_step"], timestep_fs)}




def bench_model(path: str, config: ScoreBenchConfig) -> Dict[str, object]:
    """One model against its held-out reference frames: the noise floor, iid samples and CG MD (its replicas
    started from the data's first frame, or from the model's own first iid samples), as ``config`` says."""
    data, samples, sampler, seed, replicas = config.data, config.samples, config.sampler(), config.seed, config.replicas
    md_start, md_ns = config.md_start, config.md_duration
    choice(md_start, MD_STARTS, "md_start")
    model = load(path, "models")
    folder = data or data_folder(model.metadata)
    if not folder or not os.path.isdir(folder):
        raise fail("data", f"the reference data {path} was trained on (a folder of 'openmm-accel data')", folder)
    reference = cached_reference(os.path.abspath(folder))
    model_mapping(model, reference.topology, path, "data")  # the data of the molecule the model knows
    kept = model.metadata["data"]["training_frames_per_walker"]
    if reference.positions.shape[1] <= kept + 1:
        raise fail("data", f"held-out frames after the first {kept} of each walker (the model trained on those)",
                   f"{reference.positions.shape[1]} frames per walker in {folder}")
    atoms = list(model.metadata["atoms"])
    held = reference.positions[:, kept:, atoms].astype(np.float64)  # (walkers, frames, n, 3)
    topology = _cg_topology(model)
    kt = BOLTZMANN * model.temperature_k
    held_angles = np.stack([dihedrals(topology, walker) for walker in held])
    # samples are compared with the first half of every walker's held-out frames; as many frames of the
    # second halves, compared the same way, are the noise floor for that many frames
    frames, _ = reference_and_floor(held, 1)
    angles, _ = reference_and_floor(held_angles, 1)

    def floor(count: int) -> Dict[str, object]:
        floor_frames = reference_and_floor(held, count)[1]
        return compare(frames, angles, floor_frames, reference_and_floor(held_angles, count)[1], kt)

    began = time.perf_counter()
    drawn = model.sample(samples, seed=seed, **sampler)
    iid_seconds = time.perf_counter() - began
    iid = compare(frames, angles, drawn, dihedrals(topology, drawn), kt)
    iid.update(samples_per_second=samples / iid_seconds, effective_per_second=samples / iid_seconds)

    # every replica starts from the reference data's first frame (a training frame, so nothing about the held-out
    # populations leaks in), or from one of the model's iid samples (MD then has to keep the model's own
    # distribution: no burn-in across barriers); its first --md-discard ps (frames are 1 ps apart) are left out
    if md_start == "iid":
        starts = drawn[np.arange(replicas) % len(drawn)]
    else:
        starts = np.repeat(reference.positions[:1, 0, atoms].astype(np.float64), replicas, axis=0)
    md = cg_md(model, starts, md_ns, config.md_timestep, config.md_friction, seed, config.backend, config.device)
    kept_md = md["x"][-config.md_frames_kept():]
    per_replica = [dihedrals(topology, kept_md[:, k]) for k in range(replicas)]
    md_angles = np.concatenate(per_replica)
    md_result = compare(frames, angles, kept_md.transpose(1, 0, 2, 3).reshape(-1, len(atoms), 3), md_angles, kt)
    g = float(np.mean([phi_psi_inefficiency(series) for series in per_replica]))
    md_result.update(ns_per_day=md["ns_per_day"], replicas=replicas, inefficiency_frames=g, platform=md["platform"],
                     aggregate_ns_per_day=replicas * md["ns_per_day"],
                     effective_per_second=replicas * md["ns_per_day"] / 86400 * 1000 / g)
    reference_g = max(phi_psi_inefficiency(walker) for walker in held_angles)
    return {"model": path, "name": report_name(path), "beads": model.metadata.get("beads"),
            "md_start": md_start,
            "fp_weight": model.metadata.get("training", {}).get("fp_weight"),
            "training_seconds": model.metadata.get("training_seconds"), "data": folder,
            "held_out_frames": int(held.shape[0] * held.shape[1]), "compared_frames": int(len(frames)),
            "noise_floor": floor(samples), "iid": iid, "md_noise_floor": floor(md_result["frames"]), "md": md_result,
            "reference_inefficiency_frames": reference_g, "reference_settings": reference.metadata,
            "history": model.metadata.get("history", []),
            "arrays": {"reference": held_angles.reshape(-1, 2), "iid": dihedrals(topology, drawn), "md": md_angles}}


def sampler_text(sampler: dict) -> str:
    """What drew the iid samples: reverse-SDE levels, corrector steps per level and their SNR."""
    steps = sampler["corrector_steps"]
    corrector = (f"{steps} MALA corrector step{'s' if steps > 1 else ''} per level, snr {sampler['snr']:g}"
                 if steps else "no corrector")
    return f"{sampler['steps']} levels, {corrector}"


def table(results: Sequence[dict], speeds: Dict[str, dict], sampler: dict) -> str:
    """Markdown: structure (floor, iid, CG MD) per model; then speed per data system, CG MD against all-atom."""
    iid = f"iid (reverse SDE, {sampler_text(sampler)})"
    lines = ["| model | FP weight | sampling | JS (64x64) | PMF error kJ/mol | bond W1 (pm) | frames |",
             "|---|---|---|---|---|---|---|"]
    for row in results:
        for label, key in (("noise floor for the iid sample size", "noise_floor"), (iid, "iid"),
                           ("noise floor for the CG MD frame count", "md_noise_floor"), ("CG MD", "md")):
            part = row[key]
            lines.append(f"| {row['name']} | {row['fp_weight']:g} | {label} | {part['js']:.4f} | "
                         f"{part['pmf_error_kj_mol']:.2f} | {1000 * part['bond_w1_mean_nm']:.2f} | {part['frames']} |")
    lines += ["", "| run | ns/day per trajectory | ns/day, all replicas | effective samples/s | "
              "ns/day vs explicit water |", "|---|---|---|---|---|"]
    for system, speed in speeds.items():
        explicit = speed["explicit"]["ns_per_day"] if "explicit" in speed else None

        def versus(rate):
            return f"{rate / explicit:.0f}x" if explicit else "-"
        mine = [row for row in results if row["reference_settings"]["system"] == system]
        for row in mine:
            md = row["md"]
            lines.append(f"| {row['name']} CG MD, {md['replicas']} replicas ({md['platform']}) | "
                         f"{md['ns_per_day']:.0f} | {md['aggregate_ns_per_day']:.0f} | "
                         f"{md['effective_per_second']:.2f} | {versus(md['ns_per_day'])} (all: "
                         f"{versus(md['aggregate_ns_per_day'])}) |")
            lines.append(f"| {row['name']} {iid} | - | - | {row['iid']['effective_per_second']:.1f} | - |")
        reference_g = mine[0]["reference_inefficiency_frames"]
        for solvent, run in speed.items():
            effective = run["ns_per_day"] / 86400 * 1000 / reference_g
            lines.append(f"| all-atom {run['system']} ({run['atoms']} atoms, {run['timestep_fs']:g} fs) | "
                         f"{run['ns_per_day']:.1f} | - | {effective:.3f} | "
                         f"{'1x' if solvent == 'explicit' else versus(run['ns_per_day'])} |")
    return "\n".join(lines)


def plot(results: Sequence[dict], path: str, sampler: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = len(results)
    figure, axes = plt.subplots(rows, 4, figsize=(16, 4 * rows), squeeze=False)
    edges = np.linspace(-np.pi, np.pi, BINS + 1)
    for row, result in zip(axes, results):
        for axis, key, title in zip(row, ("reference", "iid", "md"), ("held-out reference MD",
                                                                       f"iid (reverse SDE)\n{sampler_text(sampler)}",
                                                                       "CG MD with the model's forces")):
            angles = result["arrays"][key]
            counts = np.histogram2d(angles[:, 0], angles[:, 1], [edges, edges])[0]
            free = -np.log(np.where(counts > 0, counts / counts.sum(), np.nan))
            axis.pcolormesh(edges, edges, (free - np.nanmin(free)).T, vmin=0, vmax=8, cmap="viridis")
            axis.set(title=f"{result['name']}\n{title}", xlabel="phi (rad)", ylabel="psi (rad)")
        history = result["history"]
        if history:  # the trainer records the validation loss and its parts per epoch
            epochs = np.arange(1, len(history) + 1)  # (experts train one after another: epochs in sequence)
            row[3].plot(epochs, [h["dsm"] for h in history], label="denoising score matching")
            row[3].set(title=f"{result['name']}\nvalidation loss", xlabel="epoch", ylabel="DSM loss", yscale="log")
            if any(h["fp"] for h in history):
                residual = row[3].twinx()
                residual.plot(epochs, [h["fp"] for h in history], color="tab:orange", label="Fokker-Planck residual")
                residual.set(ylabel="mean r1 r2")
                residual.legend(loc="center right")
            row[3].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(models: Sequence[str], config: ScoreBenchConfig) -> dict:
    """Every model of ``models`` (files) against its held-out data, and all-atom MD's speed, as ``config``
    (``bench score``'s options) says; the report is also written to ``config.json`` (with table and plots)."""
    threads, sampler = config.threads[0], config.sampler()
    use_torch_threads(threads)
    results = [bench_model(path, config) for path in models]
    speeds = {}  # all-atom MD of each data set's molecule, as its data were made
    for result in results:
        settings = result["reference_settings"]
        if settings["system"] not in speeds:
            speeds[settings["system"]] = all_atom_speeds(settings, config.all_atom_duration, config.seed)
    arrays = {f"{r['name']}-{key}": value for r in results for key, value in r["arrays"].items()}
    report = {"machine": machine(threads), "settings": {"samples": config.samples, "sampler": sampler,
              "md_ns": config.md_duration, "timestep_fs": config.md_timestep, "friction_per_ps": config.md_friction,
              "seed": config.seed, "replicas": config.replicas, "discard_ps": config.md_discard,
              "md_start": config.md_start},
              "models": [{k: v for k, v in r.items() if k != "arrays"} for r in results], "all_atom": speeds}
    write_report(report, config.json, table(results, speeds, sampler), lambda path: plot(results, path, sampler),
                 arrays)
    return report
