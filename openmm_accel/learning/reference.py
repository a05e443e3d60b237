"""``openmm-accel data``: long reference MD for learned methods, as independent seeded walkers written in
chunks, so that hours of sampling can be stopped at any moment and continued later (another day, another
session) to exactly the data an uninterrupted run gives.

Folder layout (``--output``)::

    settings.json            what the data are (system, potential, thermostat, frames, seeds)
    topology.pdb             the all-atom structure the frames belong to
    walker-00/chunk-0000.npz a Dataset of ``chunk_ns`` of frames (positions, forces, potential energies),
    walker-00/chunk-0001.npz ... each also holding the OpenMM checkpoint its walker continues from

Frames are recorded every ``frame_ps`` after ``equilibration_ps`` of unrecorded dynamics, with OpenMM's
``LangevinMiddleIntegrator`` (which handles constraints; X-H constraints with hydrogen mass repartitioning
change the masses and fix the X-H lengths, not the heavy-atom distribution learned from the data) on the
CPU platform with one thread per walker (bitwise reproducible); an ML potential runs on the Reference
platform (TorchForce has no CPU kernel) with one torch thread. Positions and forces are stored in float32.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
import zipfile
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import openmm
from openmm import app, unit

from ..devices import CPU, Placement, device_option
from ..forces import masses_of
from ..molecular import MM_MODEL, MolecularSystem, Recipe, solute_atoms
from ..options import checked, option, positive_in, redefault
from ..progress import progress_bar
from ..storage import atomic_write, folder_lock, refuse_resume_and_overwrite, writable_folder
from ..systems import (CONSTRAINABLE, SystemOptions, build as build_system, canonical_source, check_potential,
                       constrainable, subset_topology)
from ..threads import torch_threads
from ..validation import LARGEST_SEED, SimulationError, check_seed, count, fail
from .dataset import Dataset

SETTINGS = "settings.json"
TOPOLOGY = "topology.pdb"


@dataclass
class ReferenceConfig(SystemOptions):
    """What ``openmm-accel data`` samples (plain numbers in OpenMM's units: K, fs, ps, ns, amu)."""

    system: str = redefault(SystemOptions, "system", "openmmtools:AlanineDipeptideImplicit")
    model: str = option(MM_MODEL, "--model", "potential: 'mm' or a registered ML model")
    member: Optional[int] = option(None, "--member", "single network of an ML ensemble")
    constraints: str = option("hbonds", "--constraints", "X-H bond constraints, rigid water (openmmtools systems "
                              "and systems.CONSTRAINABLE)", choices=("hbonds", "none"))
    hydrogen_mass_amu: Optional[float] = option(None, "--hydrogen-mass", "hydrogen mass repartitioning, amu",
                                                check=positive_in(unit.amu, "hydrogen_mass"))
    temperature_k: float = option(300.0, "--temperature", "K", check=positive_in(unit.kelvin, "temperature"))
    friction_per_ps: float = option(1.0, "--friction", "Langevin friction, 1/ps",
                                    check=positive_in(unit.picosecond**-1, "friction"))
    timestep_fs: float = option(2.0, "--timestep", "fs", check=positive_in(unit.femtosecond, "timestep"))
    frame_ps: float = option(1.0, "--frame-interval", "ps between recorded frames",
                             check=positive_in(unit.picosecond, "frame_interval"))
    chunk_ns: float = option(1.0, "--chunk", "ns per chunk file (the unit of resumption)",
                             check=positive_in(unit.nanosecond, "chunk"))
    equilibration_ps: float = option(100.0, "--equilibration", "ps before the first frame of each walker",
                                     check=positive_in(unit.picosecond, "equilibration", allow_zero=True))
    walkers: int = option(2, "--walkers", "independent seeded walkers", check=count)
    duration_ns: float = option(1.0, "--duration", "ns per walker, rounded up to whole chunks (a resumed run may "
                                "extend it)",
                                check=positive_in(unit.nanosecond, "duration"))
    processes: int = option(1, "--processes", "walkers run side by side, one thread each", check=count)
    seed: int = option(1, "--seed", "walker w uses seed + w", check=check_seed)
    record: str = option("all", "--record", "atoms whose positions and forces are recorded: all, or the solute "
                         "(without water and ions; the whole system is still simulated; explicit water: 100x "
                         "smaller files)", choices=("all", "solute"))
    output: str = option("reference-data", "--output", "data folder")
    resume: bool = option(False, "--resume", "continue the data in OUTPUT (same settings; --duration may grow)")
    overwrite: bool = option(False, "--overwrite", "replace the data in OUTPUT")
    progress: Optional[bool] = option(None, "--no-progress", "no progress bar")
    device: str = device_option()

    def identity(self) -> dict:
        """The settings that make the data what they are (a resumed run must match them)."""
        volatile = {"duration_ns", "processes", "output", "resume", "overwrite", "progress", "device"}
        if self.record == "all":  # as data written before --record existed say nothing about it
            volatile.add("record")
        volatile |= self.unset_options()  # nor about files as systems and ML regions
        return json.loads(json.dumps({key: value for key, value in asdict(self).items() if key not in volatile}))

    @property
    def recipe(self) -> Recipe:
        """The system the data sample, with their potential."""
        return Recipe.of(canonical_source(self.system), self.model, self.member, constraints=self.constraints,
                         hydrogen_mass_amu=self.hydrogen_mass_amu, source_options=self.source_options(),
                         ml_atoms=self.ml_atoms)

    @property
    def steps_per_frame(self) -> int:
        return int(round(self.frame_ps * 1000 / self.timestep_fs))

    @property
    def frames_per_chunk(self) -> int:
        return int(round(self.chunk_ns * 1000 / self.frame_ps))

    @property
    def chunks(self) -> int:
        return math.ceil(self.duration_ns / self.chunk_ns - 1e-9)


def _whole_multiple(total: float, unit_: float) -> bool:
    """Whether ``total`` is a whole, positive number of ``unit_`` (to a relative 1e-9)."""
    count_ = round(total / unit_)
    return count_ >= 1 and abs(count_ * unit_ - total) <= 1e-9 * total


def validated(config: ReferenceConfig) -> ReferenceConfig:
    """``config`` with every option checked: names known, ``member`` only with an ML model, the frame interval
    and chunk length whole multiples of the time step and frame interval, not resumed and overwritten."""
    config = checked(config)
    check_potential(config.model, config.member)
    if config.model == MM_MODEL and config.ml_atoms is not None:
        raise fail("ml_atoms (--ml-atoms)", "it only with an ML --model, where it has an effect",
                   f"{config.ml_atoms!r} with --model mm")
    refuse_resume_and_overwrite(config.resume, config.overwrite)
    if config.constraints == "hbonds" and not constrainable(config.system):
        raise fail("constraints", f"--constraints none for {config.system} (X-H constraints are built for "
                   f"openmmtools systems and {', '.join(CONSTRAINABLE)})", config.constraints)
    if not _whole_multiple(config.frame_ps * 1000, config.timestep_fs):
        raise fail("frame_interval", f"a whole multiple of the time step ({config.timestep_fs:g} fs)",
                   f"{config.frame_ps:g} ps")
    if not _whole_multiple(config.chunk_ns * 1000, config.frame_ps):
        raise fail("chunk", f"a whole multiple of the frame interval ({config.frame_ps:g} ps)",
                   f"{config.chunk_ns:g} ns")
    if config.seed + config.walkers - 1 > LARGEST_SEED:
        raise fail("seed", f"at most {LARGEST_SEED - config.walkers + 1} (walker w uses seed + w)", config.seed)
    return config


def build(config: ReferenceConfig) -> MolecularSystem:
    """The data's system with its potential."""
    return build_system(config.recipe)


def recorded_atoms(config: ReferenceConfig, topology: app.Topology) -> list:
    """The atoms whose frames are recorded: all, or the solute's (``--record solute``)."""
    return solute_atoms(topology) if config.record == "solute" else list(range(topology.getNumAtoms()))


def chunk_path(folder: str, walker: int, chunk: int) -> str:
    """Where chunk ``chunk`` of walker ``walker`` is kept."""
    return os.path.join(folder, f"walker-{walker:02d}", f"chunk-{chunk:04d}.npz")


def chunks_done(folder: str, walker: int) -> int:
    """How many consecutive, whole chunks of ``walker`` are on disk (a damaged one ends the count: it is made
    again from the one before; chunks are written atomically, so only a file damaged afterwards is)."""
    done = 0
    while os.path.isfile(chunk_path(folder, walker, done)) and _whole(chunk_path(folder, walker, done)):
        done += 1
    return done


def _whole(path: str) -> bool:
    """Whether ``path`` is a readable archive (its table of contents is at its end: a truncated file has none)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def checked_chunks(folder: str, walkers: int) -> list:
    """How many whole chunks each walker has, data with a gap refused: a missing or damaged chunk followed by
    later ones (training on the frames before it would silently drop the rest)."""
    counts = []
    for walker in range(walkers):
        done = chunks_done(folder, walker)
        counts.append(done)
        directory = os.path.join(folder, f"walker-{walker:02d}")
        names = os.listdir(directory) if os.path.isdir(directory) else []
        later = sorted(name for name in names if name.startswith("chunk-") and name.endswith(".npz")
                       and name[6:10].isdigit() and int(name[6:10]) > done)
        if later:
            problem = "damaged" if os.path.isfile(chunk_path(folder, walker, done)) else "missing"
            raise fail("data", f"consecutive whole chunks in {folder}",
                       f"chunk {done} of walker {walker} {problem}, with later chunks ({later[-1]}) present; make "
                       f"it again with 'openmm-accel data --resume --output {folder}' after removing the later ones")
    return counts


def _started(config: ReferenceConfig, seed: int, fresh: bool = True, platform: Optional[str] = None):
    """(topology, System, Context) of the data's MD: its integrator (LangevinMiddle) seeded with ``seed``, on
    ``config.device`` or the OpenMM ``platform`` named (:func:`data_context`); ``fresh``: minimised, with
    velocities."""
    if config.system is None:
        raise fail("data", "data of a system OpenMM can simulate (made by 'openmm-accel data', or imported with "
                   "--label-forces)", "trajectories imported without a potential")
    molecular = build(config)
    topology, system, positions = molecular.topology, molecular.system, molecular.positions
    integrator = openmm.LangevinMiddleIntegrator(config.temperature_k * unit.kelvin,
                                                 config.friction_per_ps / unit.picosecond,
                                                 config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = data_context(system, integrator, config.device, platform)
    if fresh:
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=1000)
        context.setVelocitiesToTemperature(config.temperature_k * unit.kelvin, seed)
    return topology, system, context


def data_context(system: openmm.System, integrator: openmm.Integrator, device: str,
                 platform: Optional[str] = None) -> openmm.Context:
    """The Context data are made with: on ``device``, one thread on the CPU platform (bitwise reproducible), or
    on the OpenMM ``platform`` named (where a walker's last checkpoint was made)."""
    placement = Placement(device, threads=1) if platform is None else Placement.named(platform)
    return placement.context(system, integrator)


def settings_config(settings: dict, system: Optional[str] = None) -> ReferenceConfig:
    """The :class:`ReferenceConfig` of a data folder's ``settings.json`` (of ``system`` instead, if given)."""
    known = {name for name in ReferenceConfig.__dataclass_fields__}
    return ReferenceConfig(**{**{k: v for k, v in settings.items() if k in known},
                              **({"system": system} if system else {})})


def data_md(settings: dict, seed: int):
    """(topology, System, Context) of MD as the data of ``settings`` were made (potential, constraints,
    hydrogen mass, LangevinMiddle integrator seeded with ``seed``, platform, one thread); no positions set."""
    return _started(settings_config(settings), seed, fresh=False)


def md_speed(settings: dict, picoseconds: float, seed: int, system: Optional[str] = None) -> dict:
    """ns/day of MD as the data of ``settings`` (their ``settings.json``) were made (potential, constraints,
    hydrogen mass, integrator, platform and thread), of their system or of ``system`` (e.g. the same
    molecule in another solvent), timed over ``picoseconds`` after a short untimed start. The time is that of
    the fastest of five equal blocks: a shared machine's speed can vary between runs (6x on the development
    machine), and the fastest block is the figure least favourable to a method compared against MD."""
    config = settings_config(settings, system)
    _, openmm_system, context = _started(config, seed)
    integrator = context.getIntegrator()
    integrator.step(10)
    blocks = 5
    steps = max(int(round(picoseconds * 1000 / config.timestep_fs / blocks)), 10)
    times = []
    for _ in range(blocks):
        began = time.perf_counter()
        integrator.step(steps)
        times.append((time.perf_counter() - began) / steps)
    seconds, slowest = min(times), max(times)
    return {"system": config.system, "atoms": openmm_system.getNumParticles(), "timestep_fs": config.timestep_fs,
            "steps": steps * blocks, "ns_per_day": config.timestep_fs * 1e-6 / seconds * 86400.0,
            "ns_per_day_slowest_block": config.timestep_fs * 1e-6 / slowest * 86400.0}


def run_chunk(config: ReferenceConfig, walker: int, chunk: int) -> float:
    """Sample chunk ``chunk`` of ``walker`` (from the end of the previous one) and write it; returns seconds.
    An ML potential runs with one torch thread, like the CPU platform's one thread for MM."""
    with torch_threads(1):
        return _run_chunk(config, walker, chunk)


def _run_chunk(config: ReferenceConfig, walker: int, chunk: int) -> float:
    began = time.perf_counter()
    previous = None if chunk == 0 else Dataset.load(chunk_path(config.output, walker, chunk - 1), "data")
    # a walker continues on the platform of its checkpoint (chunks made before this was recorded: Reference for
    # an ML potential, the CPU platform for MM)
    earlier = Placement(CPU, float64=config.model != MM_MODEL).platform_name
    platform = None if previous is None else previous.metadata.get("platform", earlier)
    topology, system, context = _started(config, config.seed + walker, fresh=chunk == 0, platform=platform)
    integrator = context.getIntegrator()
    if previous is None:
        integrator.step(int(round(config.equilibration_ps * 1000 / config.timestep_fs)))
    else:
        context.loadCheckpoint(bytes.fromhex(previous.metadata["state"]))
    frames = config.frames_per_chunk
    atoms = recorded_atoms(config, topology)
    n = len(atoms)
    x, f = np.empty((1, frames, n, 3), np.float32), np.empty((1, frames, n, 3), np.float32)
    energies = np.empty((1, frames))
    blown_up = SimulationError(f"walker {walker} blew up in chunk {chunk}: reduce the time step (the chunks "
                               "written so far are kept)")
    for frame in range(frames):
        try:
            integrator.step(config.steps_per_frame)
        except openmm.OpenMMException:  # e.g. "Particle coordinate is NaN"
            raise blown_up from None
        state = context.getState(getPositions=True, getForces=True, getEnergy=True)
        x[0, frame] = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)[atoms]
        f[0, frame] = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)[atoms]
        energies[0, frame] = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(energies))):
        raise blown_up
    box = None
    if system.usesPeriodicBoundaryConditions():
        box = context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
    seconds = time.perf_counter() - began
    os.makedirs(os.path.dirname(chunk_path(config.output, walker, chunk)), exist_ok=True)
    Dataset(x, masses_of(system)[atoms], config.frame_ps, forces=f, potential=energies, box=box, metadata={
        "walker": walker, "chunk": chunk, "settings": config.identity(), "seconds": seconds,
        "state": context.createCheckpoint().hex(), "platform": context.getPlatform().getName()}).save(
        chunk_path(config.output, walker, chunk))
    return seconds


def generate(config: ReferenceConfig) -> dict:
    """Sample (or continue) the reference data of ``config``; returns a summary (also ``settings.json``).

    Everything is checked, and the system built, before anything in ``output`` is touched (see
    :func:`write_data`). Ctrl-C stops it; the chunks written so far stay, and ``resume`` continues from them."""
    config = validated(config)
    return write_data(config, lambda: build(config), _generate, lambda _: config.identity())


def write_data(config, prepare, make, identity) -> dict:
    """Write a data folder (``config.output``) as ``make(config, prepare())`` does: what ``prepare`` checks and
    builds is done before anything in the folder is touched, and a folder created for data that never came is
    removed again. One process writes a folder at a time (a lock the operating system releases if it dies).
    Earlier data are refused unless ``config.resume`` (with the same settings, ``identity(prepared)``; a
    recipe ``prepare`` returns must match the recorded one) or ``config.overwrite``: then they are moved aside and
    deleted only when the new data are complete (restored if ``make`` fails or is interrupted)."""
    folder = config.output
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise fail("output", "a folder for the data", f"{folder}, a file")
    created = not os.path.exists(folder)
    writable_folder(folder, "output", folder)
    with folder_lock(folder):
        settings_path = os.path.join(folder, SETTINGS)
        try:
            earlier = _earlier_data(config, settings_path)
            prepared = prepare()  # a bad system, potential or input file is refused here
            if earlier and config.resume:
                _check_same_settings(settings_path, identity(prepared))
                if getattr(prepared, "recipe", None) is not None:
                    _check_same_system(settings_path, prepared.recipe)
        except BaseException:
            if created:  # the folder made for data that never came
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if earlier and config.overwrite:
            return _replacing(folder, lambda: make(config, prepared))
        return make(config, prepared)


def write_record(folder: str, topology: app.Topology, positions, identity: dict, recipe: Optional[Recipe]) -> None:
    """The data's ``topology.pdb`` (``positions`` nm; kept if already there) and ``settings.json``: the
    settings that make the data what they are (``identity``) and the recipe of their system, if any."""
    if not os.path.exists(os.path.join(folder, TOPOLOGY)):
        with open(os.path.join(folder, TOPOLOGY), "w") as handle:
            app.PDBFile.writeFile(topology, np.asarray(positions) * unit.nanometer, handle)
    record = {"settings": identity, **({"recipe": recipe.to_json()} if recipe is not None else {}),
              "package": "openmm_accel"}
    atomic_write(os.path.join(folder, SETTINGS), json.dumps(record, indent=1).encode())


def _check_same_system(settings_path: str, recipe: Recipe) -> None:
    """Refuse to continue data whose system was built differently (e.g. a structure file edited since: its
    recipe's SHA-256 differs), naming what changed; data recorded before recipes were kept pass."""
    recorded = _recorded(settings_path).get("recipe")
    if recorded is None:
        return
    changed = Recipe.from_json(recorded, "resume").differences(recipe)
    if changed:
        raise fail("resume", "the system the data were made of (the same files, unchanged)",
                   f"another {', '.join(changed)} (a file given as --system changed since?)")


def read_settings(path: str, argument: str) -> dict:
    """The settings a data folder's ``settings.json`` records (an unreadable one is refused naming
    ``argument``)."""
    try:
        return _recorded(path)["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise fail(argument, "a folder whose settings.json can be read", f"{path} ({error})") from None


def _recorded(path: str) -> dict:
    """What a data folder's ``settings.json`` holds."""
    with open(path) as handle:
        return json.load(handle)


def _earlier_data(config, settings_path: str) -> bool:
    """Whether ``output`` holds data, refused unless resumed or overwritten."""
    folder = config.output
    if not os.path.exists(settings_path):
        if config.resume:
            raise fail("resume", f"earlier data in {folder} to continue", "none")
        return False
    read_settings(settings_path, "output")
    if not (config.resume or config.overwrite):
        raise fail("output", "a folder without earlier data, or --resume to continue them, or --overwrite",
                   f"{folder}, which holds reference data")
    return True


def _check_same_settings(settings_path: str, identity: dict) -> None:
    """Refuse to resume data made with other settings than ``identity``, naming them."""
    earlier = read_settings(settings_path, "output")
    if earlier != identity:
        different = sorted(k for k in set(earlier) | set(identity) if earlier.get(k) != identity.get(k))
        raise fail("resume", f"the settings of the data in {os.path.dirname(settings_path)}",
                   f"other {', '.join(different)}")


REPLACED = ".replaced"


def _replacing(folder: str, make):
    """Run ``make()`` with the data in ``folder`` moved to ``folder/.replaced``: deleted once ``make`` returns,
    put back if it fails or is interrupted (what it wrote is removed)."""
    aside = os.path.join(folder, REPLACED)
    if os.path.exists(aside):
        shutil.rmtree(aside)
    os.makedirs(aside)
    moved = [name for name in os.listdir(folder) if name not in (REPLACED, ".lock")]
    for name in moved:
        os.replace(os.path.join(folder, name), os.path.join(aside, name))
    try:
        result = make()
    except BaseException:
        for name in os.listdir(folder):
            if name not in (REPLACED, ".lock"):
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        for name in moved:
            os.replace(os.path.join(aside, name), os.path.join(folder, name))
        os.rmdir(aside)
        raise
    shutil.rmtree(aside)
    return result


def _generate(config: ReferenceConfig, molecular: MolecularSystem) -> dict:
    folder = config.output
    atoms = recorded_atoms(config, molecular.topology)
    topology = molecular.topology
    if len(atoms) < topology.getNumAtoms():
        topology = subset_topology(topology, atoms)
    write_record(folder, topology, molecular.positions.value_in_unit(unit.nanometer)[atoms], config.identity(),
                 molecular.recipe)
    todo = {walker: list(range(chunks_done(folder, walker), config.chunks)) for walker in range(config.walkers)}
    total = sum(len(chunks) for chunks in todo.values())
    bar = progress_bar(total=total * config.chunk_ns, unit="ns", desc="reference MD", enabled=config.progress)
    seconds = 0.0
    if config.processes == 1:  # chunk by chunk across walkers, so that a run stopped early leaves them even
        for chunk, walker in sorted((chunk, walker) for walker, chunks in todo.items() for chunk in chunks):
            seconds += run_chunk(config, walker, chunk)
            bar.update(config.chunk_ns)
    else:
        with ProcessPoolExecutor(config.processes) as pool:
            running = {}
            for walker in todo:
                if todo[walker]:
                    running[pool.submit(run_chunk, config, walker, todo[walker].pop(0))] = walker
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    walker = running.pop(future)
                    seconds += future.result()
                    bar.update(config.chunk_ns)
                    if todo[walker]:
                        running[pool.submit(run_chunk, config, walker, todo[walker].pop(0))] = walker
    bar.close()
    sampled_ns = total * config.chunk_ns
    held_ns = min(chunks_done(folder, walker) for walker in range(config.walkers)) * config.chunk_ns
    return {"output": folder, "walkers": config.walkers, "chunks_written": total, "sampled_ns": sampled_ns,
            "ns_per_walker": held_ns,
            "ns_per_day_per_walker": sampled_ns / seconds * 86400 if seconds else None}


def data_folder(metadata: dict) -> Optional[str]:
    """The reference data a model was trained on: the folder its file's ``metadata`` records, else the folder
    of that name under ``data/reference`` of the working directory (a clone of this repository keeps them
    there)."""
    recorded = metadata.get("data", {}).get("folder")
    if recorded and not os.path.isdir(recorded):
        in_checkout = os.path.join("data", "reference", os.path.basename(recorded))
        return in_checkout if os.path.isdir(in_checkout) else recorded
    return recorded


@lru_cache(maxsize=4)
def cached_reference(folder: str) -> Dataset:
    """The reference data in ``folder``, read once per process (a benchmark compares every model trained on
    them with the same frames, also while ``openmm-accel data --resume`` adds more)."""
    return load_reference(folder)


def load_reference(folder: str, walkers: Optional[int] = None, max_ns: Optional[float] = None) -> Dataset:
    """The data in ``folder`` as one :class:`Dataset`: one segment per walker, each as long as the shortest
    walker's complete chunks (or ``max_ns``), with the topology."""
    settings_path = os.path.join(folder, SETTINGS)
    if not os.path.isfile(settings_path):
        raise fail("data", "a folder written by 'openmm-accel data'", folder)
    settings = read_settings(settings_path, "data")
    if not os.path.isfile(os.path.join(folder, TOPOLOGY)):
        raise fail("data", f"the data's topology {TOPOLOGY} in {folder}", "no such file")
    n_walkers = settings["walkers"] if walkers is None else walkers
    chunks = min(checked_chunks(folder, n_walkers))
    if max_ns is not None:
        chunks = min(chunks, math.ceil(max_ns / settings["chunk_ns"] - 1e-9))
    if chunks == 0:
        raise fail("data", f"at least one complete chunk per walker in {folder}", "none")
    parts = [[Dataset.load(chunk_path(folder, walker, chunk), "data") for chunk in range(chunks)]
             for walker in range(n_walkers)]
    for walker, walker_parts in enumerate(parts):
        for chunk, part in enumerate(walker_parts):
            if part.metadata.get("settings") != settings:
                raise fail("data", f"chunks made with the settings of {settings_path}",
                           f"chunk {chunk} of walker {walker}, made with other settings")
    first = parts[0][0]
    stacked = {name: None if getattr(first, name) is None else
               np.stack([np.concatenate([getattr(part, name)[0] for part in walker]) for walker in parts])
               for name in ("positions", "forces", "potential")}
    topology = app.PDBFile(os.path.join(folder, TOPOLOGY)).topology
    recipe = _recorded(settings_path).get("recipe")
    return Dataset(stacked["positions"], first.masses, settings["frame_ps"], forces=stacked["forces"],
                   potential=stacked["potential"], box=first.box, topology=topology,
                   metadata={**settings, "walkers": n_walkers, "ns_per_walker": chunks * settings["chunk_ns"],
                             **({"recipe": recipe} if recipe else {})})


def data_recipe(metadata: dict) -> Optional[Recipe]:
    """The recipe of the system data were made of (a :class:`Dataset`'s ``metadata`` from
    :func:`load_reference`): the recorded one, else what the settings say; None for trajectories imported
    without a potential."""
    if metadata.get("recipe"):
        return Recipe.from_json(metadata["recipe"], "data")
    return settings_config(metadata).recipe if metadata.get("system") else None
