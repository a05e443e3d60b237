"""Make sure openmmtorch's platform plugins are loaded, whatever the import order.

OpenMM loads its plugins when ``openmm`` is first imported. The TorchForce plugins link libtorch and
the CUDA runtime libraries that ``import torch`` puts on the search path, so if ``openmm`` was imported
before ``torch`` they fail to load and every Context with a TorchForce reports "does not support all
required kernels". This module imports torch, then retries exactly the TorchForce plugins that failed.
"""
from __future__ import annotations

import re
from typing import Dict

_done = False
_loaded: set = set()
_failures: Dict[str, str] = {}


def ensure_torch_plugins() -> None:
    """Import torch and openmmtorch, and load any TorchForce plugin that failed to load earlier."""
    global _done
    if _done:
        return
    import torch  # noqa: F401  (must come before openmmtorch: it puts libtorch/CUDA libraries in place)
    import logging
    import openmm
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # openmmtorch 1.5 imports simtk.openmm, which logs a warning
    try:
        import openmmtorch  # noqa: F401
    finally:
        root.setLevel(level)
    for failure in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (\S+OpenMMTorch\w*\.so)", failure)
        if match and match.group(1) not in _loaded:
            try:  # a GPU plugin loads where its driver and libraries are present, and only there
                openmm.Platform.loadPluginLibrary(match.group(1))
                _loaded.add(match.group(1))
            except Exception as error:
                _failures[match.group(1)] = str(error).strip()
    _done = True


def torch_plugin_failures() -> Dict[str, str]:
    """TorchForce plugins that could not be loaded even after torch was imported, with OpenMM's reason (e.g.
    the OpenCL one without an OpenCL driver); ``openmm-accel doctor`` shows them."""
    ensure_torch_plugins()
    return dict(_failures)
