"""Make sure openmmtorch's platform plugins are loaded, whatever the import order.

OpenMM loads its plugins when ``openmm`` is first imported. The TorchForce plugins link libtorch and
the CUDA runtime libraries that ``import torch`` puts on the search path, so if ``openmm`` was imported
before ``torch`` they fail to load and every Context with a TorchForce reports "does not support all
required kernels". This module imports torch, then retries exactly the TorchForce plugins that failed.
"""
from __future__ import annotations

import re

_done = False


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
        if match and "OpenCL" not in match.group(1) and "CUDA" not in match.group(1):
            openmm.Platform.loadPluginLibrary(match.group(1))
    _done = True
