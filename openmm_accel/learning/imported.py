"""``openmm-accel data --import``: a lab's own trajectories - whatever mdtraj reads (DCD, XTC, TRR, NetCDF,
HDF5, multi-model PDB, ...) - as the package's reference data, so that score and drift models learn from MD
made elsewhere.

Each trajectory becomes one walker of a data folder in :mod:`.reference`'s layout (``settings.json``,
``topology.pdb``, ``walker-NN/chunk-0000.npz``), every one cut to the shortest one's length. Forces are
optional: the user's own (``forces``, one NumPy file per trajectory in a stated unit) or computed here
(``label_forces``: the force field of ``system``, ``"mm"``, or an ML model; potential energies too). Only
labelled data name a system the package can simulate (drift refinement, a benchmark's MD speed); that MD
uses a 1 fs time step and 1/ps friction. The files' SHA-256 digests are recorded; ``resume`` continues an
interrupted labelling of the same files, trajectory by trajectory.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import numpy as np
import openmm
from openmm import unit

from ..devices import device_option
from ..molecular import MM_MODEL, MolecularSystem, Recipe
from ..options import checked, option, positive_in, redefault
from ..progress import progress_bar
from ..storage import file_sha256, refuse_resume_and_overwrite
from ..systems import SystemOptions, build, canonical_source, check_potential, selected
from ..threads import torch_threads
from ..validation import count, fail
from .dataset import Dataset
from .reference import chunk_path, chunks_done, data_context, write_data, write_record

#: Units a user's forces may come in, with their factor to kJ/mol/nm.
FORCE_UNITS = {"kJ/mol/nm": 1.0, "kcal/mol/A": 41.84, "eV/A": 964.8533212, "hartree/bohr": 49614.7526}
#: Formats whose frames carry their time (mdtraj numbers the frames of the others 0, 1, 2, ...).
TIMED = (".xtc", ".trr", ".h5", ".nc", ".netcdf", ".ncdf")
#: No covalent bond is longer (S-S 0.21 nm, C-I 0.21 nm): a longer one means another molecule's frames.
LONGEST_BOND_NM = 0.3
#: The MD the package runs of labelled data's system (refinement, benchmark speed), not that of the data.
MD_TIMESTEP_FS, MD_FRICTION_PER_PS = 1.0, 1.0


@dataclass
class ImportConfig(SystemOptions):
    """What ``openmm-accel data --import`` turns into reference data (plain numbers in OpenMM's units)."""

    trajectories: Tuple[str, ...] = option((), "--import", "import these trajectories (any format mdtraj reads), "
                                           "one walker each, instead of sampling")
    topology: Optional[str] = option(None, "--topology", "the trajectories' atoms: a file mdtraj reads a topology "
                                     "from: .pdb, .cif, .prmtop, .psf, .gro, .h5, ... (default: --system)")
    system: Optional[str] = redefault(SystemOptions, "system", None)
    temperature_k: Optional[float] = option(None, "--temperature", "K", check=positive_in(unit.kelvin, "temperature"))
    frame_ps: Optional[float] = option(None, "--frame-interval", "ps between the files' frames (default: the time "
                                       "that XTC, TRR, HDF5 and NetCDF frames carry)",
                                       check=positive_in(unit.picosecond, "frame_interval"))
    stride: int = option(1, "--stride", "import every n-th frame", check=count)
    atoms: Optional[str] = option(None, "--atoms", "the atoms imported, in mdtraj's selection language (e.g. "
                                  "'protein' of a solvated trajectory) (default: all)")
    forces: Tuple[str, ...] = option((), "--forces", "the forces of every frame: one .npy or .npz file (frames, "
                                     "atoms, 3) per trajectory")
    forces_unit: str = option("kJ/mol/nm", "--forces-unit", "the unit of --forces", choices=tuple(FORCE_UNITS))
    label_forces: Optional[str] = option(None, "--label-forces", "compute the forces and energies of every frame "
                                         "with this potential ('mm': the force field of --system, or an ML model)")
    member: Optional[int] = option(None, "--member", "single network of an ML ensemble")
    output: str = option("reference-data", "--output", "data folder")
    resume: bool = option(False, "--resume", "continue an interrupted import of the same files into OUTPUT")
    overwrite: bool = option(False, "--overwrite", "replace the data in OUTPUT")
    progress: Optional[bool] = option(None, "--no-progress", "no progress bar")
    device: str = device_option()

    @property
    def source(self) -> Optional[str]:
        """The system that labels the forces: ``system``, else the topology file (None without a label)."""
        return None if self.label_forces is None else (self.system or self.topology)

    def options(self) -> dict:
        """What was asked for, as recorded (files by absolute path and SHA-256)."""
        files = {"trajectories": [_described(path) for path in self.trajectories],
                 "topology": _described(self.topology) if self.topology else None,
                 "forces": [_described(path) for path in self.forces]}
        given = {key: value for key, value in asdict(self).items() if key in ("stride", "atoms", "label_forces")}
        return {**files, **given, **({"forces_unit": self.forces_unit} if self.forces else {})}


def _described(path: str) -> dict:
    return {"path": os.path.abspath(path), "sha256": file_sha256(path)}


@dataclass
class Imported:
    """What :func:`import_trajectories` checked and read before writing: the imported atoms' topology and masses,
    each trajectory's frames (nm) and boxes, forces when given, the labelling system when asked for."""

    topology: object
    kept: np.ndarray  # the imported atoms' indices in ``frames``
    masses: np.ndarray
    frames: List[np.ndarray]  # per trajectory (T, N, 3) nm, float32: every atom to label, else the imported ones
    boxes: List[Optional[np.ndarray]]
    forces: List[Optional[np.ndarray]]  # the user's, of the imported atoms
    frame_ps: float
    dropped: int
    molecular: Optional[MolecularSystem] = None

    @property
    def recipe(self) -> Optional[Recipe]:
        return None if self.molecular is None else self.molecular.recipe


def validated(config: ImportConfig) -> ImportConfig:
    """``config`` with every option checked: trajectories, topology and force files exist, one force file per
    trajectory, forces given or labelled (not both), ``member`` and ``ml_atoms`` only with an ML label."""
    config = checked(config)
    if not config.trajectories:
        raise fail("trajectories (--import)", "one or more trajectory files", "none")
    for path in config.trajectories + config.forces + ((config.topology,) if config.topology else ()):
        if not os.path.isfile(path):
            raise fail("trajectories (--import)" if path in config.trajectories else
                       "forces" if path in config.forces else "topology", "an existing file", path)
    if config.topology is None and config.system is None:
        raise fail("topology", "the file the trajectories' atoms come from (--topology, or --system)", None)
    if config.temperature_k is None:
        raise fail("temperature", "the temperature the trajectories sample, K (--temperature)", None)
    if config.forces and len(config.forces) != len(config.trajectories):
        raise fail("forces", f"one file per trajectory ({len(config.trajectories)})", f"{len(config.forces)} files")
    if config.forces and config.label_forces is not None:
        raise fail("label_forces", "forces from --forces or computed with --label-forces, not both",
                   config.label_forces)
    if config.system is not None and config.label_forces is None:
        raise fail("system", "it only with --label-forces (the system that labels the frames)", config.system)
    if config.label_forces is not None:
        check_potential(config.label_forces, config.member, "an ML --label-forces", "label_forces")
        if config.label_forces == MM_MODEL and config.ml_atoms is not None:
            raise fail("ml_atoms (--ml-atoms)", "it only with an ML --label-forces", config.ml_atoms)
    elif config.member is not None or config.ml_atoms is not None:
        name = "member" if config.member is not None else "ml_atoms"
        raise fail(name, "it only with an ML --label-forces", getattr(config, name))
    refuse_resume_and_overwrite(config.resume, config.overwrite)
    return config


def _read_topology(config: ImportConfig, molecular: Optional[MolecularSystem]):
    """The trajectories' mdtraj topology: of ``topology``, else of the labelling system."""
    import mdtraj
    if config.topology is None:
        return mdtraj.Topology.from_openmm(molecular.topology)
    try:
        return mdtraj.load_topology(config.topology)
    except Exception as error:
        raise fail("topology", "a file mdtraj reads a topology from (.pdb, .cif, .prmtop, .psf, .gro, .h5, ...)",
                   f"{config.topology} ({type(error).__name__}: {error})") from None


def _read_trajectory(path: str, topology, stride: int, atoms: Optional[np.ndarray] = None):
    """The trajectory in ``path`` with ``topology``, every ``stride``-th frame, of ``atoms`` only if given (read
    as such: a solvated run's water never enters memory); another molecule's refused."""
    import mdtraj
    try:
        trajectory = mdtraj.load(path, top=topology, stride=stride, atom_indices=atoms)
    except Exception as error:
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        raise fail("trajectories (--import)", f"a trajectory of the topology's {topology.n_atoms} atoms that "
                   "mdtraj reads", f"{path} ({type(error).__name__}: {first})") from None
    expected = topology.n_atoms if atoms is None else len(atoms)
    if trajectory.n_atoms != expected:
        raise fail("trajectories (--import)", f"frames of the topology's {topology.n_atoms} atoms",
                   f"{trajectory.n_atoms} atoms in {path}")
    if not np.all(np.isfinite(trajectory.xyz)):
        raise fail("trajectories (--import)", "finite coordinates", f"NaN or infinite ones in {path}")
    _check_bonds(trajectory, trajectory.topology, path)
    return trajectory


def _check_bonds(trajectory, topology, path: str) -> None:
    """Refuse frames whose bonded atoms are far apart in the first frame (another molecule, atoms in another
    order, or molecules broken across a periodic box: the minimum image is used)."""
    import mdtraj
    pairs = np.array([[bond[0].index, bond[1].index] for bond in topology.bonds], dtype=int)
    if not len(pairs):
        return
    lengths = mdtraj.compute_distances(trajectory[0], pairs, periodic=trajectory.unitcell_vectors is not None)[0]
    worst = int(np.argmax(lengths))
    if lengths[worst] > LONGEST_BOND_NM:
        first, second = (topology.atom(int(i)) for i in pairs[worst])
        raise fail("trajectories (--import)", f"frames of the topology's molecule (bonded atoms within "
                   f"{LONGEST_BOND_NM} nm)", f"{path}: bonded atoms {first} and {second} {lengths[worst]:.2f} nm "
                   "apart in its first frame")


def _frame_interval(config: ImportConfig, trajectories) -> float:
    """ps between the imported frames: ``frame_ps`` x ``stride``, else what timed files say (the same in each)."""
    if config.frame_ps is not None:
        return config.frame_ps * config.stride
    intervals = set()
    for path, trajectory in zip(config.trajectories, trajectories):
        steps = np.diff(trajectory.time)
        timed = os.path.splitext(path)[1].lower() in TIMED and len(steps) and steps[0] > 0
        if not timed or not np.allclose(steps, steps[0], rtol=1e-4):
            raise fail("frame_interval", f"the ps between frames of {os.path.basename(path)} (--frame-interval; "
                       "its frames carry no uniform time)", None)
        intervals.add(round(float(steps[0]), 6))
    if len(intervals) > 1:
        raise fail("frame_interval", "trajectories recorded at one interval", f"{sorted(intervals)} ps")
    return intervals.pop()


def _user_forces(path: str, frames: int, atoms: int, config: ImportConfig) -> np.ndarray:
    """The forces of ``path`` in kJ/mol/nm for the strided frames (the file holds every frame's)."""
    try:
        loaded = np.load(path)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            names = list(loaded.files)
            loaded = loaded["forces"] if "forces" in names else loaded[names[0]] if len(names) == 1 else None
    except Exception as error:
        raise fail("forces", "a .npy or .npz file of forces NumPy reads", f"{path} ({error})") from None
    if loaded is None:
        raise fail("forces", "an .npz file holding one array, or one named 'forces'", path)
    forces = np.asarray(loaded, dtype=np.float64)[::config.stride]
    if forces.shape[1:] != (atoms, 3) or len(forces) < frames:
        raise fail("forces", f"the forces of every frame of its trajectory ({frames * config.stride} frames or "
                   f"more before --stride, {atoms} atoms, 3)", f"shape {np.shape(loaded)} in {path}")
    if not np.all(np.isfinite(forces[:frames])):
        raise fail("forces", "finite forces", f"NaN or infinite values in {path}")
    return forces[:frames] * FORCE_UNITS[config.forces_unit]


def _check_same_atoms(molecular: MolecularSystem, topology, source: str) -> None:
    """Refuse a labelling system whose atoms (elements, in order) are not the trajectories'."""
    elements = [atom.element.symbol if atom.element else None for atom in molecular.topology.atoms()]
    theirs = [atom.element.symbol if atom.element else None for atom in topology.atoms]
    if elements != theirs:
        where = next((i for i, (a, b) in enumerate(zip(elements, theirs)) if a != b),
                     min(len(elements), len(theirs)))
        raise fail("system", "the atoms of the trajectories' topology, in order", f"{source}: {len(elements)} "
                   f"atoms, differing from the topology's {len(theirs)} at atom {where}")


def prepare(config: ImportConfig) -> Imported:
    """Everything checked and read: the labelling system, the topology, every trajectory and force file."""
    molecular = None
    if config.label_forces is not None:
        molecular = build(Recipe.of(canonical_source(config.source), config.label_forces, config.member,
                                    source_options=config.source_options(), ml_atoms=config.ml_atoms))
    topology = _read_topology(config, molecular)
    if molecular is not None:
        _check_same_atoms(molecular, topology, config.source)
    atoms = np.arange(topology.n_atoms) if config.atoms is None else np.array(
        selected(topology.to_openmm(), config.atoms, "atoms"))
    whole = molecular is not None or config.atoms is None  # the labelling needs every atom
    trajectories = [_read_trajectory(path, topology, config.stride, None if whole else atoms)
                    for path in config.trajectories]
    frames = min(t.n_frames for t in trajectories)
    if frames < 2:
        raise fail("trajectories (--import)", "at least 2 frames in each (after --stride)", f"{frames}")
    forces = [_user_forces(path, frames, topology.n_atoms, config)[:, atoms] for path in config.forces] or \
        [None] * len(trajectories)
    masses = (molecular.masses if molecular is not None else
              np.array([atom.element.mass if atom.element else 0.0 for atom in topology.atoms]))[atoms]
    return Imported(topology.subset(atoms).to_openmm(), atoms if whole else np.arange(len(atoms)), masses,
                    [t.xyz[:frames] for t in trajectories],
                    [None if t.unitcell_vectors is None else t.unitcell_vectors[:frames].astype(np.float64)
                     for t in trajectories], forces, _frame_interval(config, trajectories),
                    sum(t.n_frames - frames for t in trajectories), molecular)


def settings_of(config: ImportConfig, imported: Imported) -> dict:
    """The data's settings (``settings.json``): those :func:`~.reference.load_reference` reads, the system and
    potential of labelled data, and what was imported."""
    frames = len(imported.frames[0])
    labelled = imported.molecular is not None
    return {"system": config.source and canonical_source(config.source), "model": config.label_forces,
            "member": config.member, "constraints": "none", "hydrogen_mass_amu": None,
            "temperature_k": config.temperature_k, "friction_per_ps": MD_FRICTION_PER_PS,
            "timestep_fs": MD_TIMESTEP_FS, "frame_ps": imported.frame_ps, "chunk_ns": frames * imported.frame_ps / 1000,
            "equilibration_ps": 0.0, "walkers": len(imported.frames), "seed": 1, "record": "all",
            **(config.given_file_options() if labelled else {}),
            **({"ml_atoms": config.ml_atoms} if config.ml_atoms is not None else {}),
            "imported": config.options()}


def _labelled(molecular: MolecularSystem, frames: np.ndarray, boxes, config: ImportConfig, walker: int):
    """Forces (kJ/mol/nm) and potential energies (kJ/mol) of every frame with the system's potential, on the
    Context data are made with (:func:`~.reference.data_context`) on ``config.device``."""
    progress = config.progress
    context = data_context(molecular.system, openmm.VerletIntegrator(0.001), config.device)
    forces, energies = np.empty(frames.shape), np.empty(len(frames))
    for i in progress_bar(range(len(frames)), progress, desc=f"forces of trajectory {walker + 1}", unit="frame"):
        if boxes is not None:
            context.setPeriodicBoxVectors(*boxes[i])
        context.setPositions(frames[i].astype(np.float64))
        state = context.getState(getForces=True, getEnergy=True)
        forces[i] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        energies[i] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not (np.all(np.isfinite(forces)) and np.all(np.isfinite(energies))):
        raise fail("label_forces", "a potential finite on every frame", f"NaN or infinite forces in trajectory "
                   f"{walker + 1}")
    return forces, energies


def _write(config: ImportConfig, imported: Imported) -> dict:
    folder = config.output
    settings = settings_of(config, imported)
    write_record(folder, imported.topology, imported.frames[0][0][imported.kept], settings, imported.recipe)
    written = 0
    with torch_threads(1):
        for walker, frames in enumerate(imported.frames):
            if chunks_done(folder, walker):
                continue
            boxes, kept = imported.boxes[walker], imported.kept
            forces, energies = imported.forces[walker], None
            if imported.molecular is not None:
                forces, energies = _labelled(imported.molecular, frames, boxes, config, walker)
                forces = forces[:, kept]
            os.makedirs(os.path.dirname(chunk_path(folder, walker, 0)), exist_ok=True)
            Dataset(frames[None][:, :, kept].astype(np.float32), imported.masses, imported.frame_ps,
                    forces=None if forces is None else forces[None].astype(np.float32),
                    potential=None if energies is None else energies[None],
                    box=None if boxes is None else boxes[0],
                    metadata={"walker": walker, "chunk": 0, "settings": settings,
                              "source": settings["imported"]["trajectories"][walker]}
                    ).save(chunk_path(folder, walker, 0))
            written += 1
    frames = len(imported.frames[0])
    if imported.dropped:
        warnings.warn(f"the trajectories were cut to the shortest one's {frames} frames: {imported.dropped} frames "
                      "of the longer ones were left out")
    return {"output": folder, "walkers": len(imported.frames), "trajectories_written": written,
            "frames_per_walker": frames, "frames_dropped": imported.dropped,
            "ns_per_walker": settings["chunk_ns"], "forces": "labelled" if imported.molecular is not None else
            "given" if config.forces else None}


def import_trajectories(config: ImportConfig) -> dict:
    """Turn the trajectories of ``config`` into a reference-data folder (see the module); returns a summary.
    Everything is read and checked before anything is written; earlier data are refused unless resumed or
    overwritten (:func:`~.reference.write_data`); Ctrl-C keeps the trajectories written so far."""
    config = validated(config)
    return write_data(config, lambda: prepare(config), _write, lambda imported: settings_of(config, imported))


__all__ = ["FORCE_UNITS", "ImportConfig", "import_trajectories"]
