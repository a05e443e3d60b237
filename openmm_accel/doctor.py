"""``openmm-accel doctor``: what this installation can run, and whether it computes the same forces everywhere.

In the spirit of ``python -m openmm.testInstallation``: versions of the stack, OpenMM's platforms and the
plugins that failed to load (with OpenMM's reason, e.g. a CUDA plugin without a driver), the torch devices
and thread settings, then a short agreement check: alanine dipeptide's Amber14 forces on every OpenMM platform
against the Reference platform's, and its ANI-1x forces as a TorchForce on every platform and as a torch
model on every torch device, against the torch model on the CPU in float64. A check fails when a force
differs by more than ``TOLERANCE`` relative to the RMS force (single precision, as a GPU computes, is
~1e-6 there; a broken kernel is off by orders of magnitude).
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform as host
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import openmm
import torch
from openmm import unit

from . import devices
from ._version import __version__
from ._plugins import torch_plugin_failures
from .forces import create_ml_system
from .options import option
from .storage import atomic_write
from .threads import torch_threads

TOLERANCE = 1e-3
PACKAGES = ("openmm", "openmmtorch", "torch", "triton", "torchani", "openmmtools", "mdtraj", "pdbfixer", "parmed",
            "pymbar", "numpy", "openmmml", "mace-torch", "ray", "metatomic-torch")


@dataclass(frozen=True)
class DoctorConfig:
    json: Optional[str] = option(None, "--json", "also write the report to this JSON file")
    checks: bool = option(True, "--no-checks", "versions, platforms and devices only (no force checks)")


def versions() -> Dict[str, Optional[str]]:
    """Installed versions of the stack (None: not installed)."""
    found = {"python": host.python_version(), "openmm_accel": __version__}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["torch built for CUDA"] = torch.version.cuda
    return found


def platforms() -> Dict[str, object]:
    """OpenMM's platforms (name: relative speed) and every plugin that failed to load, with the reason."""
    torch_failures = torch_plugin_failures()  # loads the TorchForce plugins first
    names = {name: openmm.Platform.getPlatformByName(name).getSpeed() for name in devices.platform_names()}
    failures = {}
    for failure in openmm.Platform.getPluginLoadFailures():
        library = failure.split(": ", 1)[0].replace("Error loading library ", "")
        if "OpenMMTorch" not in library or library in torch_failures:
            failures[os.path.basename(library)] = failure.split(": ", 1)[-1]
    return {"platforms": names, "plugin_failures": failures}


def torch_devices() -> Dict[str, object]:
    """Torch's devices and the thread settings that decide CPU speed."""
    gpus = [torch.cuda.get_device_name(i) for i in range(devices.gpu_count())]
    return {"cuda_available": torch.cuda.is_available(), "gpus": gpus, "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "auto_device": devices.resolved("auto")}


def _deviation(forces: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(forces - reference).max() / np.sqrt(np.mean(reference ** 2)))


def _platform_forces(system: openmm.System, positions, name: str) -> np.ndarray:
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
    context.setPositions(positions)
    return context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        unit.kilojoule_per_mole / unit.nanometer)


def agreement() -> List[dict]:
    """Each check: what, where, the largest force deviation relative to the RMS force, seconds, passed."""
    from . import systems
    from .models import create
    ala2 = systems.load("alanine-dipeptide-vacuum")
    positions = ala2.positions.value_in_unit(unit.nanometer)
    names = devices.platform_names()
    reference_platform = devices.platform_name(float64=True)
    checks = []

    def check(what: str, where: str, compute, reference: np.ndarray) -> None:
        began = time.perf_counter()
        try:
            deviation, error = _deviation(compute(), reference), None
        except Exception as failure:  # a platform that is listed but cannot run (e.g. no device)
            deviation, error = None, f"{type(failure).__name__}: {str(failure).splitlines()[0] if str(failure) else ''}"
        checks.append({"check": what, "where": where, "deviation": deviation, "error": error,
                       "seconds": time.perf_counter() - began,
                       "passed": error is None and deviation <= TOLERANCE})

    amber = _platform_forces(ala2.system, positions, reference_platform)
    for name in names:
        check("Amber14 forces vs the Reference platform", f"OpenMM {name}",
              lambda name=name: _platform_forces(ala2.system, positions, name), amber)
    with torch_threads(1):
        model = create("ani1x", ala2.topology)
        exact = model.double().evaluate(positions)[1]
        model = create("ani1x", ala2.topology)
        system = create_ml_system(model, ala2.masses)
        for name in names:
            check("ANI-1x TorchForce vs the torch model (float64)", f"OpenMM {name}",
                  lambda name=name: _platform_forces(system, positions, name), exact)
        for device in devices.available():
            check("ANI-1x torch model vs float64 on the CPU", f"torch {device}",
                  lambda device=device: create("ani1x", ala2.topology).to(device).evaluate(positions)[1], exact)
    return checks


def report(config: DoctorConfig) -> dict:
    """Everything the doctor finds (see the module)."""
    found = {"versions": versions(), **platforms(), "torch": torch_devices()}
    found["checks"] = agreement() if config.checks else []
    if config.json:
        atomic_write(config.json, json.dumps(found, indent=2).encode())
    return found


def text(found: dict) -> str:
    """The report for a terminal."""
    lines = ["versions: " + ", ".join(f"{k} {v}" for k, v in found["versions"].items() if v is not None),
             "not installed: " + (", ".join(k for k, v in found["versions"].items() if v is None) or "-"),
             "OpenMM platforms: " + ", ".join(f"{k} (speed {v:g})" for k, v in found["platforms"].items())]
    lines += [f"  plugin not loaded: {library}: {reason}" for library, reason in found["plugin_failures"].items()]
    if devices.CUDA_PLATFORM not in found["platforms"]:
        lines.append("  no CUDA platform: this OpenMM has no CUDA plugin; on an NVIDIA GPU install "
                     "'openmm_accel[cuda]' (OpenMM's and openmm-torch's CUDA 12 builds), see the README's GPU section")
    t = found["torch"]
    lines.append(f"torch: CUDA available {t['cuda_available']}" + (f" ({', '.join(t['gpus'])})" if t["gpus"] else "")
                 + f"; --device auto means {t['auto_device']}; {t['cpu_cores']} CPU cores, {t['torch_threads']} "
                 f"torch threads ({t['torch_interop_threads']} inter-op), OMP_NUM_THREADS={t['OMP_NUM_THREADS']}")
    for c in found["checks"]:
        result = (f"max |dF| / rms F = {c['deviation']:.1e}" if c["error"] is None else c["error"])
        lines.append(f"{'ok  ' if c['passed'] else 'FAIL'} {c['check']}, {c['where']}: {result} ({c['seconds']:.1f} s)")
    return "\n".join(lines)
