"""Benchmark (not a test): FlashMD against plain MD with the same reference potential, in one run.

For each FlashMD model file (default: the shipped ones), on the model's system and reference potential:

* plain ABOBA Langevin at 0.5 fs (friction 10/ps by default, the paper's 100 fs time constant) is the
  reference;
  every run starts from the same state, equilibrated with it;
* FlashMD NVT (Langevin splitting, same friction) with and without energy rescaling: per-element kinetic
  temperature deviation from the thermostat's (the paper's Table 1 analogue; goal |dT| < 1 K with
  rescaling), Ramachandran JS divergence against the reference (next to the JS divergence between the two
  halves of the reference run, i.e. what sampling noise alone gives), fallback fraction;
* NVE drift of H = K + V with and without rescaling, next to velocity Verlet at 0.5 fs;
* wall-clock simulated ns/day of each, and FlashMD's speedup over the reference.

    openmm-accel bench flashmd --json bench-flashmd.json [--models NAME|PATH ...] [--duration 10]
        [--reference-duration PS] [--friction 10] [--quick]

writes the JSON, prints a Markdown table and saves plots next to the JSON (``.png``).
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import unit

from ..analysis import (density, dihedrals, drift, element_temperatures, js_divergence, standard_error,
                        radial_distribution, ramachandran_histogram)
from .. import devices
from ..harness import machine, ns_per_day, prepared_state, sample, write_report
from ..integrators import LangevinABOBAIntegrator, VelocityVerletIntegrator
from ..learning.model_file import recipe_of
from ..systems import build
from ..threads import use_torch_threads
from ..validation import SimulationError, positive
from .config import FlashMDBenchConfig
from .integrator import FlashMDIntegrator, Safeguards, Thermostat
from .pretrained import PAPER_FRICTION_PER_PS as FRICTION_PER_PS, resolve, shipped
from .training import load

REFERENCE_TIMESTEP_FS = 0.5
REFERENCE_SAMPLE_FS = 4.0


def _total_energy(run: dict, masses: np.ndarray) -> np.ndarray:
    return run["potential"] + 0.5 * np.sum(masses[None, :, None] * run["v"] ** 2, axis=(1, 2))


def structure(topology, run: dict) -> dict:
    """What the structural comparison looks at: a peptide's (phi, psi), or water's O-O and O-H g(r)."""
    if all(residue.name == "HOH" for residue in topology.residues()):
        r_max = 0.5 * float(np.min(np.diagonal(run["box"][0])))
        return {"rdf": {pair: radial_distribution(topology, run["x"], run["box"], *pair.split("-"), r_max)
                        for pair in ("O-O", "O-H")}}
    return {"angles": dihedrals(topology, run["x"])}


def difference(a: dict, b: dict) -> float:
    """Ramachandran JS divergence (nats), or the largest |g_a(r) - g_b(r)| over the water pairs."""
    if "angles" in a:
        return js_divergence(a["angles"], b["angles"])
    return float(max(np.max(np.abs(a["rdf"][k][1] - b["rdf"][k][1])) for k in a["rdf"]))


def _halves(run: dict) -> Tuple[dict, dict]:
    half = len(run["x"]) // 2
    return ({k: run[k][:half] for k in ("x", "box")}, {k: run[k][half:] for k in ("x", "box")})


def _with_barostat(system: openmm.System, temperature: float, frequency: int) -> openmm.System:
    copy = openmm.XmlSerializer.clone(system)
    copy.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, temperature * unit.kelvin, frequency))
    return copy


def bench_model(path: str, duration_ps: float, nve_ps: float, seed: int = 7,
                references: Optional[dict] = None, reference_ps: Optional[float] = None,
                friction_per_ps: float = FRICTION_PER_PS, device: str = devices.AUTO) -> dict:
    """All measurements for one model file (``references`` caches reference runs between models), on ``device``.

    ``reference_ps`` (default ``duration_ps``): a shorter reference run lets FlashMD run long enough to
    resolve its temperatures to ~1 K, which are measured against the thermostat's target anyway.
    ``friction_per_ps``: the Langevin friction of every NVT/NpT run, reference and FlashMD alike (it changes
    the dynamics, not the equilibrium distribution; a stronger one thermalises each atom faster than the
    model's per-element energy errors accumulate)."""
    reference_ps = duration_ps if reference_ps is None else reference_ps
    model = load(path)
    meta = model.metadata
    temperature = float(meta.get("training", {}).get("temperature_k", 300.0))
    molecular = build(recipe_of(meta))
    system, topology = molecular.system, molecular.topology
    periodic = system.usesPeriodicBoundaryConditions()
    platform = devices.platform(device)
    masses = molecular.masses
    symbols = [atom.element.symbol for atom in topology.atoms()]
    stride_fs = model.stride * 1000
    samples = max(20, int(round(duration_ps * 1000 / stride_fs)))
    nve_samples = max(10, int(round(nve_ps * 1000 / stride_fs)))
    # the reference runs are shared by every model of the same system and potential: sampled every 4 fs
    every = int(round(REFERENCE_SAMPLE_FS / REFERENCE_TIMESTEP_FS))
    reference_samples = int(round(reference_ps * 1000 / REFERENCE_SAMPLE_FS))
    reference_nve_samples = int(round(nve_ps * 1000 / REFERENCE_SAMPLE_FS))
    barostat_every_fs = 12.5  # attempts per simulated time as OpenMM's default (25 steps of 0.5 fs)

    def aboba(friction=friction_per_ps):
        integrator = LangevinABOBAIntegrator(temperature, friction, REFERENCE_TIMESTEP_FS * 1e-3)
        integrator.setRandomNumberSeed(seed)
        return integrator

    key = (json.dumps(molecular.recipe.physics(), sort_keys=True), temperature, reference_ps, nve_ps, friction_per_ps)
    references = {} if references is None else references
    if key not in references:
        state = prepared_state(system, molecular.positions, temperature, platform, seed)
        state = sample(aboba(10.0), system, state, platform, 1, 4000)["final"]  # 2 ps at 10/ps: equilibrated
        runs = {"nvt": sample(aboba(), system, state, platform, reference_samples, every),
                "verlet": sample(VelocityVerletIntegrator(REFERENCE_TIMESTEP_FS * 1e-3), system, state, platform,
                                 reference_nve_samples, every)}
        if periodic:
            npt = _with_barostat(system, temperature, int(round(barostat_every_fs / REFERENCE_TIMESTEP_FS)))
            runs["npt"] = sample(aboba(), npt, state, platform, reference_samples, every)
        runs["structure"] = structure(topology, runs["nvt"])
        first, second = _halves(runs["nvt"])
        runs["noise"] = difference(structure(topology, first), structure(topology, second))
        references[key] = (state, runs)
    state, reference = references[key]
    times = np.arange(1, nve_samples + 1) * model.stride
    measure = "JS divergence of (phi, psi)" if "angles" in reference["structure"] else "max |dg(r)| (O-O, O-H)"
    result = {
        "model": os.path.basename(path), "system": meta["system"], "reference": meta["reference"],
        "stride_fs": stride_fs, "temperature_k": temperature, "duration_ps": duration_ps, "nve_ps": nve_ps,
        "reference_ps": reference_ps, "friction_per_ps": friction_per_ps,
        "structure_measure": measure,
        "reference_run": {
            "ms_per_step": 1e3 * reference["nvt"]["seconds_per_step"],
            "ns_per_day": ns_per_day(reference["nvt"]["seconds_per_step"], REFERENCE_TIMESTEP_FS),
            "element_temperature": element_temperatures(reference["nvt"]["v"], masses, symbols, com_removed=False),
            "structure_half_vs_half": reference["noise"],
            "nve_drift_kj_mol_ps": drift(np.arange(1, reference_nve_samples + 1) * REFERENCE_SAMPLE_FS * 1e-3,
                                         _total_energy(reference["verlet"], masses)),
            "structure": reference["structure"],
        },
        "runs": {},
    }
    if periodic:
        values = density(masses, reference["npt"]["box"])
        result["reference_run"]["npt_density_g_cm3"] = (float(values.mean()), standard_error(values))
    for label, rescale in (("rescaled", True), ("not rescaled", False)):
        row: Dict[str, object] = {}
        try:
            nvt = FlashMDIntegrator(model, temperature=temperature, thermostat=Thermostat(friction=friction_per_ps),
                                    safeguards=Safeguards(rescale_energy=rescale), seed=seed)
            run = sample(nvt, system, state, platform, samples, 1)
            row.update({
                "ms_per_stride": 1e3 * run["seconds_per_step"],
                "ns_per_day": ns_per_day(run["seconds_per_step"], stride_fs),
                "element_temperature": element_temperatures(run["v"], masses, symbols, com_removed=True),
                "structure": structure(topology, run),
                "fallback_fraction": nvt.statistics["fallback_fraction"],
                "statistics": nvt.statistics,  # fallbacks by cause, mean rescaling factor
            })
            row["structure_vs_reference"] = difference(row["structure"], reference["structure"])
            row["speedup"] = row["ns_per_day"] / result["reference_run"]["ns_per_day"]
            nve = FlashMDIntegrator(model, safeguards=Safeguards(rescale_energy=rescale), seed=seed)
            energy = _total_energy(sample(nve, system, state, platform, nve_samples, 1), masses)
            row["nve_drift_kj_mol_ps"] = drift(times, energy)
            row["nve_fallback_fraction"] = nve.statistics["fallback_fraction"]
            if periodic and rescale:
                frequency = max(1, int(round(barostat_every_fs / stride_fs)))
                npt = FlashMDIntegrator(model, temperature=temperature, thermostat=Thermostat(friction=friction_per_ps),
                                        seed=seed)
                values = density(masses, sample(npt, _with_barostat(system, temperature, frequency), state,
                                                platform, samples, 1)["box"])
                row["npt_density_g_cm3"] = (float(values.mean()), standard_error(values))
        except (SimulationError, openmm.OpenMMException) as error:
            row["error"] = str(error)
        result["runs"][label] = row
    return result


def _temperatures(temps: dict, target: float) -> str:
    return ", ".join(f"{e} {t - target:+.2f}+-{err:.2f}" for e, (t, err) in temps.items())


def _density(row: dict) -> str:
    value = row.get("npt_density_g_cm3")
    return "-" if value is None else f"{value[0]:.4f}+-{value[1]:.4f}"


def table(results: Sequence[dict]) -> str:
    lines = ["| model | run | ns/day | speedup | T_element - T (K) | structure vs reference (noise: halves of "
             "reference) | NVE drift (kJ/mol/ps) | NpT density (g/cm3) | fallbacks |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref, target = r["reference_run"], r["temperature_k"]
        lines.append(f"| {r['model']} | ABOBA {REFERENCE_TIMESTEP_FS:g} fs, friction {r['friction_per_ps']:g}/ps | "
                     f"{ref['ns_per_day']:.3f} | 1 | "
                     f"{_temperatures(ref['element_temperature'], target)} | ({ref['structure_half_vs_half']:.3f}) | "
                     f"{ref['nve_drift_kj_mol_ps']:.3g} (Verlet) | {_density(ref)} | - |")
        for label, row in r["runs"].items():
            if "error" in row:
                lines.append(f"| {r['model']} | FlashMD {r['stride_fs']:g} fs, {label} | failed: {row['error']} |")
                continue
            lines.append(f"| {r['model']} | FlashMD {r['stride_fs']:g} fs, {label} | {row['ns_per_day']:.3f} | "
                         f"{row['speedup']:.2f}x | {_temperatures(row['element_temperature'], target)} | "
                         f"{row['structure_vs_reference']:.3f} | {row['nve_drift_kj_mol_ps']:.3g} | "
                         f"{_density(row)} | {row['fallback_fraction']:.3f} |")
    return "\n".join(lines) + f"\n(structure: {results[0]['structure_measure']})" if results else ""


def plot(results: Sequence[dict], path: str) -> None:
    """Per model: Ramachandran histograms (reference, FlashMD rescaled) or water g(r), and per-element dT."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(len(results), 3, figsize=(13, 4 * len(results)), squeeze=False)
    for row_axes, r in zip(axes, results):
        panels = [("reference ABOBA", r["reference_run"]["structure"])]
        rescaled = r["runs"].get("rescaled", {})
        if "structure" in rescaled:
            panels.append((f"FlashMD {r['stride_fs']:g} fs", rescaled["structure"]))
        if "angles" in panels[0][1]:
            for axis, (title, data) in zip(row_axes[:2], panels):
                axis.imshow(ramachandran_histogram(data["angles"], 36).T, origin="lower",
                            extent=[-180, 180, -180, 180], cmap="viridis")
                axis.set(title=f"{r['model']}: {title}", xlabel="phi (deg)", ylabel="psi (deg)")
        else:
            for axis, pair in zip(row_axes[:2], ("O-O", "O-H")):
                for (title, data), style in zip(panels, ("-", "--")):
                    axis.plot(*data["rdf"][pair], style, label=title)
                axis.set(title=f"{r['model']}: g(r) {pair}", xlabel="r (nm)", ylabel="g(r)")
                axis.legend()
        axis = row_axes[2]
        elements = list(r["reference_run"]["element_temperature"])
        columns = [("reference", r["reference_run"])] + [(k, v) for k, v in r["runs"].items() if "error" not in v]
        width = 0.8 / len(columns)
        for i, (label, run) in enumerate(columns):
            values = [run["element_temperature"][e] for e in elements]
            axis.bar(np.arange(len(elements)) + i * width, [t - r["temperature_k"] for t, _ in values], width,
                     yerr=[err for _, err in values], label=label)
        axis.axhline(0, color="k", lw=0.5)
        axis.set_xticks(np.arange(len(elements)) + 0.4 - width / 2, elements)
        axis.set(ylabel="T_element - T (K)", title="kinetic temperature per element")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def structures(results: Sequence[dict]) -> Dict[str, np.ndarray]:
    """The sampled structure of every run as arrays (what the JSON leaves out), keyed
    ``model/run/quantity``: (phi, psi) in radians per frame, or water g(r) as (r, g) rows."""
    arrays = {}
    for r in results:
        runs = [("reference", r["reference_run"])] + list(r["runs"].items())
        for label, run in runs:
            data = run.get("structure", {})
            if "angles" in data:
                arrays[f"{r['model']}/{label}/phi_psi"] = np.asarray(data["angles"])
            for pair, curve in data.get("rdf", {}).items():
                arrays[f"{r['model']}/{label}/g_{pair}"] = np.asarray(curve)
    return arrays


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k not in ("angles", "structure")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def main(config: FlashMDBenchConfig) -> dict:
    """``bench flashmd``: every model of ``config.models`` (default: the shipped ones), see :func:`bench_model`."""
    threads, friction_per_ps, device, models = config.threads[0], config.friction, config.device, config.models
    duration_ps, nve_ps, reference_ps = config.duration, config.nve_duration, config.reference_duration
    json_path = config.json
    use_torch_threads(threads)
    if config.quick:
        duration_ps, nve_ps, reference_ps = 0.5, 0.2, None
    positive(friction_per_ps, unit.picosecond**-1, "friction")
    durations = {"duration": duration_ps, "nve_duration": nve_ps, "reference_duration": reference_ps}
    for name, value in durations.items():
        if value is not None:
            positive(value, unit.picosecond, name)
    paths = [resolve(m, "", "") for m in models] if models else list(shipped().values())
    if not paths:
        raise SimulationError("no FlashMD models to benchmark: none shipped and none given with --models")
    references: dict = {}
    results = []
    for path in paths:
        results.append(bench_model(path, duration_ps, nve_ps, references=references, reference_ps=reference_ps,
                                   friction_per_ps=friction_per_ps, device=device))
        print(table(results[-1:]), flush=True)
    output = {"models": _jsonable(results), "torch_threads": threads, "machine": machine(threads)}
    write_report(output, json_path, table(results), plot=lambda path: plot(results, path),
                 arrays=structures(results))
    return output
