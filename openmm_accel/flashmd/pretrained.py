"""FlashMD models shipped with the package (trained here by ``openmm-accel train flashmd``).

Each file's metadata records the command that made it, its wall time, stride, system and reference
potential. :func:`resolve` turns what a user gives (a path, a shipped name, or nothing) into a model file
for the run's system and reference potential.
"""
from __future__ import annotations

import os
from typing import Dict

from ..learning.model_file import ShippedModels

# the model `openmm-accel run --method flashmd` uses for each (system, reference potential)
DEFAULTS = {("alanine-dipeptide-vacuum", "ani1x"): "ala2-ani1x-8fs",
            ("alanine-dipeptide-vacuum", "mm"): "ala2-amber-16fs",
            ("water-box-small", "mm"): "water-amber-2fs"}
# Langevin friction (1/ps) at which `bench flashmd` measured each shipped model (README); a run with it
# and no --friction uses this. Other models: the FlashMD paper's 10/ps (time constant 100 fs). The water
# model moves energy into the O-H stretch each stride; at 10/ps that leaves H 80 K hot and O 170 K cold,
# at 100/ps (time constant 10 fs) within ~7 K, with the reference's g(r) and density.
MEASURED_FRICTION_PER_PS: Dict[str, float] = {"water-amber-2fs": 100.0}
PAPER_FRICTION_PER_PS = 10.0


shipped = ShippedModels("flashmd", DEFAULTS, ".pt")
resolve = shipped.resolve  # (given, system, reference potential) -> the model file


def measured_friction(path: str) -> float:
    """The Langevin friction (1/ps) a FlashMD run uses unless told: what the shipped model was measured at."""
    for name, shipped_path in shipped().items():
        if os.path.abspath(shipped_path) == os.path.abspath(path):
            return MEASURED_FRICTION_PER_PS.get(name, PAPER_FRICTION_PER_PS)
    return PAPER_FRICTION_PER_PS
