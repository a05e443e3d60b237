"""One device option for everything: where torch tensors live and which OpenMM platform runs the System.

``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (a CUDA device when torch sees one, else the
CPU). Every module below the command line takes a device and asks here for what follows from it, so no other
module names a platform or a device:

* :func:`torch_device` - the ``torch.device`` of models, batches and random streams;
* :func:`platform_name` / :func:`platform` - the OpenMM platform: CUDA (with its ``DeviceIndex``) on a GPU,
  else CPU. The CPU platform also runs a TorchForce (it inherits the Reference kernels openmm-torch
  registers), with the Reference platform's energies and forces, and faster: measured here (2 cores, one
  thread, 20-step means, side by side), ANI-1x alanine dipeptide 7.0 vs 12.9 ms per step, and T4 lysozyme
  with ANI-1x on its ligand and Amber/OBC2 on the protein (2621 atoms) 120 vs 311 ms per step.
  ``float64=True`` asks for the Reference platform, which computes in double precision (exactness checks).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import openmm
import torch

from .validation import fail

AUTO, CPU, GPU = "auto", "cpu", "cuda"
DEVICE_HELP = "cpu, cuda, cuda:N or auto (a CUDA device when torch sees one, else the CPU)"
_PLATFORMS = {"cpu": "CPU", "cuda": "CUDA"}
_DOUBLE = "Reference"
CUDA_PLATFORM = _PLATFORMS["cuda"]


def device_option(what: str = "where OpenMM runs (the CUDA platform on a GPU, else the CPU platform)"):
    """The ``--device`` option of every job that runs a model or a System (declared here once; ``what`` it
    decides in that job)."""
    from .options import option
    return option(AUTO, "--device", f"{what}: {DEVICE_HELP}", check=check_device)


def check_device(value, name: str = "device") -> None:
    """Refuse (by ``name``) anything but cpu, cuda, cuda:N or auto, and a CUDA device that is not there."""
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise fail(name, DEVICE_HELP, value)
    if value.startswith("cuda"):
        count = gpu_count()
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= count:
            raise fail(name, f"a CUDA device torch can see (it sees {count}: torch {torch.__version__}, built for "
                       f"CUDA {torch.version.cuda}; 'openmm-accel doctor' says more)", value)


def resolved(device: Optional[str] = AUTO) -> str:
    """``device`` with ``auto`` (or None) made concrete: ``cuda:0`` when torch sees a GPU, else ``cpu``."""
    device = AUTO if device is None else device
    check_device(device)
    if device == AUTO:
        return "cuda:0" if torch.cuda.is_available() else CPU
    return "cuda:0" if device == "cuda" else device


def gpu_count() -> int:
    """The CUDA devices torch can see here."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available() -> List[str]:
    """Every device torch can use here: ``cpu`` and each ``cuda:N``."""
    return [CPU] + [f"cuda:{index}" for index in range(gpu_count())]


def platform_names() -> List[str]:
    """The OpenMM platforms this installation has, once the TorchForce plugins are loaded."""
    from ._plugins import ensure_torch_plugins
    ensure_torch_plugins()
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def torch_device(device: Optional[str] = AUTO) -> torch.device:
    """The torch device of ``device``."""
    return torch.device(resolved(device))


def synchronized(result, device: Optional[str] = AUTO):
    """``result``, once the work queued on ``device`` is done (a GPU runs asynchronously: a timing must wait)."""
    if resolved(device).startswith("cuda"):
        torch.cuda.synchronize(torch_device(device))
    return result


def platform_name(device: Optional[str] = AUTO, float64: bool = False) -> str:
    """The OpenMM platform for ``device``: CUDA on a GPU, CPU on the CPU, Reference for ``float64``. With
    ``auto`` on a GPU whose OpenMM has no CUDA platform (installed without the ``[cuda]`` extra), the CPU
    platform: the run goes on there, and ``doctor`` says why (an explicit ``cuda`` is refused instead)."""
    if float64:
        return _DOUBLE
    name = _PLATFORMS[resolved(device).split(":")[0]]
    if (AUTO if device is None else device) == AUTO and name == CUDA_PLATFORM and name not in platform_names():
        return _PLATFORMS[CPU]
    return name


def platform_properties(device: Optional[str] = AUTO, threads: Optional[int] = None,
                        float64: bool = False) -> Dict[str, str]:
    """Context properties: the GPU's index for CUDA; on the CPU platform deterministic forces (its threads take
    work as they come, so under load the float32 sums would change order: a seeded run must not depend on the
    machine's load) and the thread count, if given."""
    name, concrete = platform_name(device, float64), resolved(device)
    if name == _PLATFORMS["cuda"]:
        return {"DeviceIndex": concrete.split(":")[1]}
    if name == _PLATFORMS["cpu"]:
        return {"DeterministicForces": "true", **({} if threads is None else {"Threads": str(int(threads))})}
    return {}


def platform(device: Optional[str] = AUTO, float64: bool = False) -> openmm.Platform:
    """The OpenMM platform of ``device`` (its TorchForce kernels loaded), refused by name when this OpenMM lacks
    it (e.g. installed without its CUDA build: see the README's GPU section)."""
    name, names = platform_name(device, float64), platform_names()
    if name not in names:
        raise fail("device", f"an OpenMM with the {name} platform (this one has {', '.join(names)}; "
                   "'openmm-accel doctor' says why)", device)
    return openmm.Platform.getPlatformByName(name)


@dataclass(frozen=True)
class Placement:
    """Where an OpenMM Context runs: ``device``, the CPU platform's ``threads`` (None: OpenMM's choice) and
    ``float64`` (the Reference platform's double precision)."""

    device: str = AUTO
    threads: Optional[int] = None
    float64: bool = False

    def context(self, system: openmm.System, integrator: openmm.Integrator) -> openmm.Context:
        """A Context for ``system`` here."""
        return openmm.Context(system, integrator, platform(self.device, self.float64),
                              platform_properties(self.device, self.threads, self.float64))

    @property
    def platform_name(self) -> str:
        return platform_name(self.device, self.float64)

    @classmethod
    def named(cls, name: str, index: str = "0", threads: Optional[int] = 1) -> "Placement":
        """The placement of OpenMM's platform ``name`` (device ``index`` on a GPU, ``threads`` on the CPU
        platform), e.g. to continue where a checkpoint was made (checkpoints are platform-specific)."""
        if name == _DOUBLE:
            return cls(CPU, None, True)
        if name == _PLATFORMS["cuda"]:
            return cls(f"cuda:{index.split(',')[0]}")
        return cls(CPU, threads if name == _PLATFORMS["cpu"] else None)

    @classmethod
    def of(cls, context: openmm.Context, threads: Optional[int] = 1) -> "Placement":
        """Where ``context`` runs (its platform and device), with ``threads`` on the CPU platform: so that a
        model evaluates a System where the Simulation does."""
        platform = context.getPlatform()
        index = (platform.getPropertyValue(context, "DeviceIndex")
                 if "DeviceIndex" in platform.getPropertyNames() else "0")
        return cls.named(platform.getName(), index, threads)
