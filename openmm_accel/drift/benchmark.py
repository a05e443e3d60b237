"""``openmm-accel bench drift``: drift models against held-out reference MD, and their sampling rate against
MD's rate of effectively independent frames.

Every comparison uses frames of the reference data that training never saw (each walker's end, after the
model file's ``training_frames_per_walker``), also for a model trained on a biased subset (its reference is
the unbiased data's Boltzmann distribution). Samples are compared with the first half of every walker's
held-out frames; each measure's noise floor is the same comparison for as many frames of the second halves
(:func:`..analysis.reference_and_floor`), the score a perfect sampler of that sample size would get:

* **distance TVD**: for every atom pair, the total variation distance ``1/2 sum |p - q|`` of its distance
  histograms (``BINS_DISTANCE`` bins over the range both sets span), averaged over all pairs and per pair of
  elements (C-H, C-C, ...);
* **bond-length MAE**: the mean over the topology's bonds of the absolute difference between a bond's mean
  length in the samples and in the reference;
* **validity**: the share of samples with every bond within 10 % of its reference length, no clash and every
  stereocentre of the data's hand (:mod:`.validity`);
* **phi/psi JS** (peptides): the Jensen-Shannon divergence of 64 x 64 histograms;
* **energy**: the reference potential's energy of the samples against that of the held-out frames (mean,
  standard deviation, 1-Wasserstein distance), on the data's own System.

Speed: conformations per second (batches of 10,000, after an untimed first batch) against MD's effective
samples per second, the data's MD speed (``md_speed``: its integrator, one thread) divided by the
statistical inefficiency of its phi/psi series (or, for other molecules, of its potential energy).
"""
from __future__ import annotations

import os
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from openmm import unit

from ..analysis import (dihedrals, js_divergence, phi_psi_inefficiency, reference_and_floor,
                        statistical_inefficiency)
from ..harness import machine, report_name, write_report
from ..learning.reference import cached_reference, data_folder, data_md, md_speed
from ..threads import use_torch_threads
from ..validation import fail
from .features import distances, pairs
from .model import load
from .training import BASINS, basins

BINS_DISTANCE = 100
BINS_ANGLES = 64


def distance_tvd(reference: np.ndarray, other: np.ndarray, bins: int = BINS_DISTANCE) -> np.ndarray:
    """``(P,)`` total variation distance of each column's histogram (distances ``(M, P)``), on ``bins`` bins
    spanning both sets."""
    low, high = np.minimum(reference.min(0), other.min(0)), np.maximum(reference.max(0), other.max(0))
    tvd = np.empty(reference.shape[1])
    for k in range(reference.shape[1]):
        edges = np.linspace(low[k], high[k] + 1e-12, bins + 1)
        p = np.histogram(reference[:, k], edges)[0] / len(reference)
        q = np.histogram(other[:, k], edges)[0] / len(other)
        tvd[k] = 0.5 * np.abs(p - q).sum()
    return tvd


def pair_types(topology, pair_index: np.ndarray) -> np.ndarray:
    """``(P,)`` element pair of each atom pair, e.g. ``"C-H"`` (symbols sorted)."""
    symbols = [atom.element.symbol for atom in topology.atoms()]
    return np.array(["-".join(sorted((symbols[i], symbols[j]))) for i, j in pair_index])


def reference_energies(settings: dict, frames: np.ndarray) -> np.ndarray:
    """Potential energies (kJ/mol) of ``frames`` (M, N, 3) nm on the System the data were made with."""
    _, _, context = data_md(settings, seed=1)  # the data's platform (Reference for an ML potential)
    energies = np.empty(len(frames))
    for k, frame in enumerate(frames):
        context.setPositions(frame * unit.nanometer)
        energies[k] = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energies


def structure(reference: np.ndarray, drawn: np.ndarray, topology, model) -> Dict[str, object]:
    """Distance TVD (overall and per element pair), bond-length MAE and validity of ``drawn`` against
    ``reference`` frames (both (M, N, 3) nm)."""
    index = pairs(reference.shape[1])
    d_ref = distances(torch.as_tensor(reference), index).numpy()
    d_gen = distances(torch.as_tensor(drawn), index).numpy()
    tvd = distance_tvd(d_ref, d_gen)
    types = pair_types(topology, index.numpy())
    per_type = {kind: float(tvd[types == kind].mean()) for kind in sorted(set(types))}
    bonds = model.validity.bonds
    bond_ref = np.linalg.norm(reference[:, bonds[:, 0]] - reference[:, bonds[:, 1]], axis=-1).mean(0)
    bond_gen = np.linalg.norm(drawn[:, bonds[:, 0]] - drawn[:, bonds[:, 1]], axis=-1).mean(0)
    checks = model.validity.check(drawn)
    return {"distance_tvd": float(tvd.mean()), "distance_tvd_by_elements": per_type,
            "bond_mae_nm": float(np.abs(bond_gen - bond_ref).mean()),
            **{f"{name}_percent": 100.0 * float(np.mean(checks[name]))
               for name in ("valid", "bonds_ok", "clash_free", "chirality_ok")}}


def _energy_summary(energies: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
    from scipy.stats import wasserstein_distance
    return {"mean_kj_mol": float(np.mean(energies)), "std_kj_mol": float(np.std(energies)),
            "median_kj_mol": float(np.median(energies)),  # robust to the few clashes that dominate mean and W1
            "w1_kj_mol": float(wasserstein_distance(energies, reference)),
            "above_reference_max_percent": 100.0 * float(np.mean(energies > reference.max()))}


def bench_model(path: str, data: Optional[str], samples: int, energy_samples: int, seed: int) -> Dict[str, object]:
    """One model against its held-out reference frames."""
    model = load(path, "models")
    folder = data or data_folder(model.metadata)
    if not folder or not os.path.isdir(folder):
        raise fail("data", f"the reference data {path} was trained on (a folder of 'openmm-accel data')", folder)
    reference = cached_reference(os.path.abspath(folder))
    model.check_topology(reference.topology, "data")
    kept = model.metadata["data"]["training_frames_per_walker"]
    if reference.positions.shape[1] <= kept + 1:
        raise fail("data", f"held-out frames after the first {kept} of each walker (the model trained on those)",
                   f"{reference.positions.shape[1]} frames per walker in {folder}")
    held_walkers = reference.positions[:, kept:].astype(np.float64)
    held = held_walkers.reshape(-1, *held_walkers.shape[2:])
    topology = model.topology()
    next(model.batches(min(samples, 10000), seed))  # untimed: first-call overheads
    began = time.perf_counter()
    drawn = model.sample(samples, seed)
    per_second = samples / (time.perf_counter() - began)
    # the sample is compared with the first half of every walker's held-out frames; as many frames of the
    # second halves, compared the same way, are the noise floor for that sample size
    compared, floor_frames = reference_and_floor(held_walkers, samples)
    rng = np.random.default_rng(seed)
    subset = compared[rng.choice(len(compared), min(len(compared), samples), replace=False)]
    result = {"name": report_name(path), "path": path,
              "representation": model.representation, "guidance": model.metadata.get("guidance"),
              "omega": model.metadata.get("omega"), "biased_subset": model.metadata["data"].get("biased_subset"),
              "training_frames": model.metadata["data"].get("frames"), "samples": samples,
              "samples_per_second": per_second, "reference_frames": int(len(held)),
              "generated": structure(subset, drawn, topology, model),
              "noise_floor": structure(subset, floor_frames, topology, model),
              "noise_floor_frames": int(len(floor_frames)),
              "reference_settings": reference.metadata, "history": model.metadata.get("history", [])}
    arrays = {}
    try:
        angles_held = np.stack([dihedrals(topology, walker) for walker in held_walkers])
    except (IndexError, ValueError):  # not a peptide: no phi/psi
        angles_held = None
    energies_held = reference.potential[:, kept:]
    if angles_held is not None:
        every = angles_held.reshape(-1, 2)
        angles = dihedrals(topology, drawn)
        compared_angles, floor_angles = reference_and_floor(angles_held, samples)
        result["phi_psi_js"] = js_divergence(compared_angles, angles, BINS_ANGLES)
        result["phi_psi_js_noise_floor"] = js_divergence(compared_angles, floor_angles, BINS_ANGLES)
        result["reference_inefficiency_frames"] = max(phi_psi_inefficiency(a) for a in angles_held)
        result["basin_percent"] = {"reference": basin_percent(every), "generated": basin_percent(angles),
                                   "basins": list(BASINS)}
        arrays.update(reference=every, generated=angles)
    else:
        result["reference_inefficiency_frames"] = max(statistical_inefficiency(e) for e in energies_held)
    some = drawn[:energy_samples]
    energies = reference_energies(reference.metadata, some)
    compared_energies, floor_energies = reference_and_floor(energies_held, len(some))
    result["energy"] = _energy_summary(energies, compared_energies)
    result["energy"]["w1_noise_floor_kj_mol"] = _energy_summary(floor_energies, compared_energies)["w1_kj_mol"]
    result["energy_reference"] = {"mean_kj_mol": float(energies_held.mean()), "std_kj_mol": float(energies_held.std()),
                                  "median_kj_mol": float(np.median(energies_held))}
    arrays.update(energies=energies, energies_reference=energies_held.ravel())
    result["arrays"] = arrays
    return result


def basin_percent(angles: np.ndarray) -> list:
    """Percent of phi/psi pairs ``(M, 2)`` in each basin of :data:`.training.BASINS`."""
    return [float(100.0 * np.mean(basins(angles) == b)) for b in range(len(BASINS))]


def table(results: Sequence[dict], speeds: Dict[str, dict]) -> str:
    """Markdown: structure per model (with the noise floor for its sample size), then speed."""
    lines = ["| model | data | representation | guidance | distance TVD | bond MAE (A) | valid % | bonds ok % | "
             "phi/psi JS | basins % generated (reference) | energy W1 kJ/mol | energy median (reference) | "
             "energy above the reference's max % |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        data = f"biased {row['biased_subset']}" if row["biased_subset"] else f"{row['training_frames']} frames"
        g, floor = row["generated"], row["noise_floor"]
        js = f"{row['phi_psi_js']:.4f} (floor {row['phi_psi_js_noise_floor']:.4f})" if "phi_psi_js" in row else "-"
        populations = row.get("basin_percent")
        populations = "/".join(f"{p:.1f}" for p in populations["generated"]) + " (" + "/".join(
            f"{p:.1f}" for p in populations["reference"]) + ")" if populations else "-"
        lines.append(f"| {row['name']} | {data} | {row['representation']} | {row['guidance']} | "
                     f"{g['distance_tvd']:.3f} (floor {floor['distance_tvd']:.3f}) | {10 * g['bond_mae_nm']:.4f} | "
                     f"{g['valid_percent']:.1f} | {g['bonds_ok_percent']:.1f} | {js} | {populations} | "
                     f"{row['energy']['w1_kj_mol']:.4g} (floor {row['energy']['w1_noise_floor_kj_mol']:.4g}) | "
                     f"{row['energy']['median_kj_mol']:.1f} "
                     f"({row['energy_reference']['median_kj_mol']:.1f}) | "
                     f"{row['energy']['above_reference_max_percent']:.1f} |")
    lines += ["", "| model | samples/s | MD ns/day | MD effective samples/s | ratio |", "|---|---|---|---|---|"]
    for row in results:
        md = speeds[row["reference_settings"]["system"]]
        effective = md["ns_per_day"] * 1000 / 86400 / row["reference_settings"]["frame_ps"] / \
            row["reference_inefficiency_frames"]
        row["md_effective_per_second"] = effective
        lines.append(f"| {row['name']} | {row['samples_per_second']:.0f} | {md['ns_per_day']:.0f} | "
                     f"{effective:.2f} | {row['samples_per_second'] / effective:.0f}x |")
    return "\n".join(lines)


def plot(results: Sequence[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = len(results)
    figure, axes = plt.subplots(rows, 3, figsize=(12, 4 * rows), squeeze=False)
    edges = np.linspace(-np.pi, np.pi, BINS_ANGLES + 1)
    for row, result in zip(axes, results):
        arrays = result["arrays"]
        for axis, key, title in zip(row[:2], ("reference", "generated"), ("held-out reference MD", "generated")):
            if key not in arrays:
                axis.axis("off")
                continue
            counts = np.histogram2d(arrays[key][:, 0], arrays[key][:, 1], [edges, edges])[0]
            free = -np.log(np.where(counts > 0, counts / counts.sum(), np.nan))
            axis.pcolormesh(edges, edges, (free - np.nanmin(free)).T, vmin=0, vmax=8, cmap="viridis")
            axis.set(title=f"{result['name']}: {title}", xlabel="phi (rad)", ylabel="psi (rad)")
        reference, energies = arrays["energies_reference"], arrays["energies"]
        bins = np.linspace(np.percentile(reference, 0.1), np.percentile(reference, 99.9) + 50, 80)
        row[2].hist(reference, bins, density=True, alpha=0.6, label="held-out reference MD")
        row[2].hist(np.clip(energies, bins[0], bins[-1]), bins, density=True, alpha=0.6, label="generated")
        row[2].set(title=f"{result['name']}: reference potential energy", xlabel="kJ/mol")
        row[2].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def main(json_path: Optional[str], models: Sequence[str], data: Optional[str] = None, samples: int = 20000,
         energy_samples: int = 2000, md_ps: float = 5.0, seed: int = 1, threads: int = 1) -> dict:
    use_torch_threads(threads)
    results = [bench_model(path, data, samples, energy_samples, seed) for path in models]
    speeds = {}
    for result in results:
        settings = result["reference_settings"]
        if settings["system"] not in speeds:
            speeds[settings["system"]] = md_speed(settings, md_ps, seed)
    markdown = table(results, speeds)
    arrays = {f"{r['name']}-{key}": value for r in results for key, value in r["arrays"].items()}
    report = {"machine": machine(threads), "settings": {"samples": samples, "energy_samples": energy_samples,
                                                        "md_ps": md_ps, "seed": seed},
              "models": [{k: v for k, v in r.items() if k != "arrays"} for r in results], "md": speeds}
    write_report(report, json_path, markdown, lambda path: plot(results, path), arrays)
    return report
