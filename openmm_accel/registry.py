"""Name-keyed plug-in points: the entry-point groups through which energy models (``openmm_accel.models``)
and methods (``openmm_accel.methods``) are registered, by this package and by any other installed one."""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Dict

from .validation import InputError, closest_name


def registered(group: str) -> Dict[str, object]:
    """The entry points of ``group``, by name."""
    return {point.name: point for point in entry_points(group=group)}


def load(group: str, name: str, argument: str, kind: str):
    """The object registered as ``name`` in ``group``; an unknown name gets the closest known one."""
    points = registered(group)
    if name not in points:
        if not points:
            raise InputError(f"no {kind}s are registered: install the package (pip install -e .) so that its "
                             f"'{group}' entry points exist")
        raise closest_name(name, points, argument, kind)
    return points[name].load()
