"""One dataset format for every learned method: reference MD frames with their labels and topology.

A :class:`Dataset` holds ``S`` segments (independent runs) of ``T`` frames of ``N`` atoms in OpenMM's
units: positions (nm), velocities (nm/ps), forces (kJ/mol/nm), potential energies (kJ/mol), a fixed box
(nm) and the masses (amu). On disk it is an ``.npz`` archive with a JSON header (format, version, units,
how it was made: :mod:`openmm_accel.storage`) and the topology as PDB text, so :meth:`Dataset.load` needs
no other file and :meth:`Dataset.to_mdtraj` hands the frames to mdtraj (to save as DCD, HDF5, ...).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np
from openmm import app, unit

from ..storage import read_archive, save_archive
from ..validation import fail, positive

FORMAT = "openmm_accel.dataset"
FORMAT_VERSION = 1
UNITS = {"positions": "nm", "velocities": "nm/ps", "forces": "kJ/mol/nm", "potential": "kJ/mol", "box": "nm",
         "masses": "amu", "interval_ps": "ps"}
ARRAYS = ("positions", "velocities", "forces", "potential", "box", "masses")


@dataclass
class Dataset:
    """Segments of reference MD: positions ``(S, T, N, 3)`` and, where recorded, velocities and forces of
    the same shape, potential energies ``(S, T)``; ``interval_ps`` between frames of a segment."""

    positions: np.ndarray
    masses: np.ndarray
    interval_ps: float
    velocities: Optional[np.ndarray] = None
    forces: Optional[np.ndarray] = None
    potential: Optional[np.ndarray] = None
    box: Optional[np.ndarray] = None  # (3, 3): every frame's (the data are NVT or NVE)
    topology: Optional[app.Topology] = None
    metadata: dict = field(default_factory=dict)  # how it was made: kind, temperature_k, seed, seconds, ...

    def __post_init__(self):
        self.interval_ps = positive(self.interval_ps, unit.picosecond, "interval_ps")
        shape = np.shape(self.positions)
        if len(shape) != 4 or shape[-1] != 3 or shape[2] != len(self.masses):
            raise fail("positions", f"segments of frames (S, T, {len(self.masses)}, 3) nm", f"shape {shape}")
        for name in ("velocities", "forces"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise fail(name, f"the shape of the positions {shape}", f"shape {np.shape(value)}")
        if self.potential is not None and np.shape(self.potential) != shape[:2]:
            raise fail("potential", f"one energy per frame {shape[:2]}", f"shape {np.shape(self.potential)}")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0] * self.positions.shape[1]

    def frames(self, name: str = "positions") -> np.ndarray:
        """``name`` (positions, velocities or forces) of every frame, ``(S T, N, 3)``."""
        value = getattr(self, name)
        return None if value is None else value.reshape((-1,) + value.shape[2:])

    def with_forces(self, forces: np.ndarray) -> "Dataset":
        """A copy labelled with ``forces`` of every frame (``(S T, N, 3)`` or ``(S, T, N, 3)``)."""
        return replace(self, forces=np.asarray(forces).reshape(self.positions.shape))

    def save(self, path: str) -> None:
        """Write the dataset (atomically) to ``path``."""
        arrays = {name: getattr(self, name) for name in ARRAYS if getattr(self, name) is not None}
        if self.topology is not None:
            text = io.StringIO()
            app.PDBFile.writeFile(self.topology, self.positions[0, 0] * unit.nanometer, text)
            arrays["topology_pdb"] = np.array(text.getvalue())
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "units": UNITS,
                  "interval_ps": float(self.interval_ps), "metadata": self.metadata}
        save_archive(path, header, arrays)

    @classmethod
    def load(cls, path: str, argument: str = "data") -> "Dataset":
        """Read a dataset written by :meth:`save` (a missing, damaged or foreign file is refused)."""
        header, arrays = read_archive(path, FORMAT, FORMAT_VERSION, argument, "dataset file")
        topology = None
        if "topology_pdb" in arrays:
            topology = app.PDBFile(io.StringIO(str(arrays.pop("topology_pdb")))).topology
        return cls(interval_ps=header["interval_ps"], topology=topology, metadata=header.get("metadata", {}),
                   **{name: arrays.get(name) for name in ARRAYS})

    def to_mdtraj(self):
        """The frames as an ``mdtraj.Trajectory`` (segments one after another; time in ps within each)."""
        import mdtraj
        if self.topology is None:
            raise fail("topology", "a dataset saved with its topology", "none")
        segments, length = self.positions.shape[:2]
        time = np.tile(np.arange(length) * self.interval_ps, segments)
        trajectory = mdtraj.Trajectory(self.frames().astype(np.float32), mdtraj.Topology.from_openmm(self.topology),
                                       time=time)
        if self.box is not None:
            trajectory.unitcell_vectors = np.repeat(self.box[None].astype(np.float32), self.n_frames, axis=0)
        return trajectory
