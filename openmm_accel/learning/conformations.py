"""Generated conformations on disk, the same way for every method that samples them: any format mdtraj
writes, and beside a file without a topology (DCD, XTC, TRR, NetCDF) its first frame as ``FILE.pdb``, so
that ``mdtraj.load(FILE, top=FILE + ".pdb")`` works. Earlier results are never written over."""
from __future__ import annotations

import os
from typing import List

import numpy as np
from openmm import app

from ..storage import writable_folder
from ..validation import fail

WITHOUT_TOPOLOGY = (".dcd", ".xtc", ".trr", ".nc")


def check_new(path: str, argument: str = "output") -> None:
    """Refuse an existing file (or its topology PDB) or a folder that cannot be written, before any work."""
    beside = path + ".pdb" if os.path.splitext(path)[1].lower() in WITHOUT_TOPOLOGY else None
    for name in filter(None, (path, beside)):
        if os.path.exists(name):
            raise fail(argument, "a new file (samples are never written over earlier results)", name)
    writable_folder(os.path.dirname(os.path.abspath(path)), argument, path)


def write_conformations(path: str, positions: np.ndarray, topology: app.Topology) -> List[str]:
    """Write ``positions`` ``(M, N, 3)`` nm with ``topology`` to ``path``; returns the files written."""
    import mdtraj
    check_new(path)
    trajectory = mdtraj.Trajectory(np.asarray(positions, dtype=np.float32), mdtraj.Topology.from_openmm(topology))
    trajectory.save(path)
    written = [path]
    if os.path.splitext(path)[1].lower() in WITHOUT_TOPOLOGY:
        trajectory[0].save_pdb(path + ".pdb")
        written.append(path + ".pdb")
    return written
