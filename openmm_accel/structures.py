"""Systems from a lab's own files: whatever OpenMM's ``app`` layer reads, as a
:class:`~openmm_accel.molecular.MolecularSystem`.

* a structure - PDB (``.pdb``) or PDBx/mmCIF (``.cif``) - parameterised with OpenMM force-field XMLs
  (``forcefield``; default: Amber14 with TIP3P water);
* an Amber ``.prmtop`` with ``coordinates`` (``.inpcrd``/``.rst7``/``.crd`` or a PDB);
* a GROMACS ``.top`` with a ``.gro`` (``#include`` files are looked up beside the topology);
* a CHARMM ``.psf`` with coordinates (``.crd`` or PDB) and its parameter files as ``forcefield``
  (``.prm``/``.rtf``/``.str``);
* a serialized ``openmm.System`` (``.xml``) with a PDB or PDBx file for its topology and positions.

A topology that brings its own parameters (prmtop, top, psf, xml) keeps them; given ``forcefield`` XMLs, a
prmtop, top or structure is parameterised anew (needed when ``remove_solvent`` strips the water of a solvated
system). ``implicit_solvent`` (e.g. ``"obc2"``) adds a generalized-Born model; ``add_hydrogens`` (a pH)
completes a structure with Modeller. A periodic box means PME (cutoff 1 nm, or 0.4 x the shortest edge of
a smaller box); without one, no cutoff. The recipe records every file's absolute path and SHA-256, so that
a model file or data set refuses a structure that changed since.
"""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import openmm
from openmm import app, unit

from .molecular import SOLVENT_RESIDUES, MolecularSystem, Recipe
from .storage import file_sha256
from .validation import InputError, as_array, fail

#: What each file suffix is read as.
KINDS = {".pdb": "pdb", ".ent": "pdb", ".cif": "pdbx", ".mmcif": "pdbx", ".pdbx": "pdbx", ".prmtop": "amber",
         ".parm7": "amber", ".top": "gromacs", ".psf": "charmm", ".xml": "xml"}
#: Topologies that bring their own parameters (the others need force-field XMLs).
PARAMETERISED = ("amber", "gromacs", "charmm", "xml")
#: Generalized-Born models by name: OpenMM's implicit-solvent XML (for ForceField) and app constant.
IMPLICIT_SOLVENTS = {"obc1": ("implicit/obc1.xml", app.OBC1), "obc2": ("implicit/obc2.xml", app.OBC2),
                     "gbn": ("implicit/gbn.xml", app.GBn), "gbn2": ("implicit/gbn2.xml", app.GBn2),
                     "hct": ("implicit/hct.xml", app.HCT)}
DEFAULT_FORCEFIELD = ("amber14-all.xml", "amber14/tip3p.xml")


def is_structure_file(name: str) -> bool:
    """Whether ``name`` names a file this module reads (by its suffix)."""
    return isinstance(name, str) and os.path.splitext(name)[1].lower() in KINDS


def _existing(path: str, argument: str, what: str) -> str:
    if not isinstance(path, str) or not os.path.isfile(path):
        raise fail(argument, f"an existing {what}", path)
    return os.path.abspath(path)


def _positions(path: str, atoms: int, argument: str):
    """Positions (and box vectors, or None) of a coordinate file for a topology of ``atoms`` atoms."""
    path = _existing(path, argument, "coordinate file (.inpcrd, .rst7, .crd, .gro, .pdb or .cif)")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".inpcrd", ".rst7", ".restrt", ".crd") and not _charmm_crd(path):
            read = app.AmberInpcrdFile(path)
            positions, box = read.getPositions(asNumpy=True), read.boxVectors
        elif suffix == ".crd":
            read = app.CharmmCrdFile(path)
            positions, box = read.positions, None
        elif suffix == ".gro":
            read = app.GromacsGroFile(path)
            positions, box = read.getPositions(asNumpy=True), read.getPeriodicBoxVectors()
        elif KINDS.get(suffix) in ("pdb", "pdbx"):
            read = (app.PDBFile if KINDS[suffix] == "pdb" else app.PDBxFile)(path)
            positions, box = read.getPositions(asNumpy=True), read.topology.getPeriodicBoxVectors()
        else:
            raise fail(argument, "a coordinate file (.inpcrd, .rst7, .crd, .gro, .pdb or .cif)", path)
    except InputError:
        raise
    except Exception as error:
        raise fail(argument, "a coordinate file OpenMM can read", f"{path} ({error})") from None
    if len(positions) != atoms:
        raise fail(argument, f"{atoms} positions, one per atom of the topology", f"{len(positions)} in {path}")
    return positions, box


def _charmm_crd(path: str) -> bool:
    """A CHARMM .crd (title lines starting with '*') rather than an Amber one."""
    with open(path) as handle:
        return handle.readline().startswith("*")


class _Read:
    """What the files give: topology, positions, box, and (for parameterised topologies) a ``create``
    callable that makes the System with the given nonbonded settings."""

    def __init__(self, topology, positions, box=None, create=None):
        self.topology, self.positions, self.box, self.create = topology, positions, box, create


def _read(path: str, coordinates: Optional[str], forcefield: Sequence[str]) -> _Read:
    kind = KINDS[os.path.splitext(path)[1].lower()]
    try:
        if kind in ("pdb", "pdbx"):
            read = (app.PDBFile if kind == "pdb" else app.PDBxFile)(path)
            if coordinates is not None:
                raise fail("coordinates", f"no separate coordinates for a {kind.upper()} file (it has its own)",
                           coordinates)
            return _Read(read.topology, read.getPositions(asNumpy=True), read.topology.getPeriodicBoxVectors())
        if coordinates is None:
            raise fail("coordinates", f"a coordinate file for {os.path.basename(path)} (--coordinates)", None)
        if kind == "amber":
            prmtop = _amber_prmtop(path)
            positions, box = _positions(coordinates, prmtop.topology.getNumAtoms(), "coordinates")
            if box is not None:
                prmtop.topology.setPeriodicBoxVectors(box)
            return _Read(prmtop.topology, positions, box, prmtop.createSystem)
        if kind == "gromacs":
            top = app.GromacsTopFile(path, includeDir=os.path.dirname(path))
            positions, box = _positions(coordinates, top.topology.getNumAtoms(), "coordinates")
            if box is not None:  # what createSystem reads the box from
                top.topology.setPeriodicBoxVectors(box)
            return _Read(top.topology, positions, box, top.createSystem)
        if kind == "charmm":
            if not forcefield:
                raise fail("forcefield", "the CHARMM parameter files of the .psf (.prm, .rtf, .str)", "none")
            psf = app.CharmmPsfFile(path)
            positions, box = _positions(coordinates, psf.topology.getNumAtoms(), "coordinates")
            if box is not None:
                psf.setBox(*(box[i][i] for i in range(3)))
            parameters = app.CharmmParameterSet(*[_existing(f, "forcefield", "CHARMM parameter file")
                                                  for f in forcefield])
            return _Read(psf.topology, positions, box, lambda **kw: psf.createSystem(parameters, **kw))
        # a serialized System: its topology and positions from a structure file
        with open(path) as handle:
            system = openmm.XmlSerializer.deserialize(handle.read())
        if KINDS.get(os.path.splitext(coordinates)[1].lower()) not in ("pdb", "pdbx"):
            raise fail("coordinates", "a PDB or PDBx/mmCIF file with the topology of the System", coordinates)
        structure = _read(_existing(coordinates, "coordinates", "structure file"), None, ())
        if structure.topology.getNumAtoms() != system.getNumParticles():
            raise fail("coordinates", f"a structure of the System's {system.getNumParticles()} particles",
                       f"{structure.topology.getNumAtoms()} atoms in {coordinates}")
        box = system.getDefaultPeriodicBoxVectors() if system.usesPeriodicBoundaryConditions() else None
        if box is not None:
            structure.topology.setPeriodicBoxVectors(box)
        return _Read(structure.topology, structure.positions, box, lambda **kw: system)
    except InputError:
        raise
    except Exception as error:
        raise fail("system", f"a {kind} file OpenMM can read", f"{path} ({type(error).__name__}: {error})") from None


def _amber_prmtop(path: str) -> app.AmberPrmtopFile:
    """An Amber topology; one in the format before Amber 7 (no %FLAG sections, which OpenMM does not read) is
    converted with ParmEd first."""
    with open(path) as handle:
        modern = "%FLAG" in handle.read(1 << 16)
    if modern:
        return app.AmberPrmtopFile(path)
    import parmed
    with tempfile.TemporaryDirectory() as folder:
        converted = os.path.join(folder, "converted.prmtop")
        parmed.amber.AmberParm(path).save(converted, format="amber")
        return app.AmberPrmtopFile(converted)


def _force_field(files: Sequence[str], implicit_solvent: Optional[str]) -> app.ForceField:
    files = list(files) + ([IMPLICIT_SOLVENTS[implicit_solvent][0]] if implicit_solvent else [])
    try:
        return app.ForceField(*files)
    except Exception as error:
        raise fail("forcefield", "OpenMM force-field XMLs (its own names, e.g. amber14-all.xml, or files)",
                   f"{', '.join(files)} ({error})") from None


def _nonbonded(box) -> dict:
    if box is None:
        return {"nonbondedMethod": app.NoCutoff}
    edge = min(box[i][i].value_in_unit(unit.nanometer) for i in range(3))
    return {"nonbondedMethod": app.PME, "nonbondedCutoff": min(1.0, 0.4 * edge) * unit.nanometer}


@dataclass(frozen=True)
class FileOptions:
    """How a file becomes a system: ``coordinates`` of a topology file; ``forcefield`` XMLs (or a psf's
    CHARMM parameter files); ``implicit_solvent`` (a key of :data:`IMPLICIT_SOLVENTS`); ``remove_solvent``:
    water and ions deleted; ``add_hydrogens``: the pH at which Modeller adds missing hydrogens."""

    coordinates: Optional[str] = None
    forcefield: Tuple[str, ...] = ()
    implicit_solvent: Optional[str] = None
    remove_solvent: bool = False
    add_hydrogens: Optional[float] = None


def structure_system(path: str, options: FileOptions = FileOptions(), constrained: bool = False,
                     hydrogen_mass=None, sha256_of: Optional[Dict[str, str]] = None) -> MolecularSystem:
    """The system of the file ``path`` (see the module) made as ``options`` say. ``constrained``: X-H bonds
    and rigid water; ``hydrogen_mass`` (Quantity): repartitioning; ``sha256_of``: the digests a recipe
    recorded (a changed file is refused)."""
    path = _existing(path, "system", "structure or topology file (.pdb, .cif, .prmtop, .top, .psf or .xml)")
    kind = KINDS.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise fail("system", f"a file ending in {', '.join(KINDS)}", path)
    if options.implicit_solvent is not None and options.implicit_solvent not in IMPLICIT_SOLVENTS:
        raise fail("implicit_solvent", f"one of {', '.join(IMPLICIT_SOLVENTS)}", options.implicit_solvent)
    coordinates = None if options.coordinates is None else _existing(options.coordinates, "coordinates",
                                                                      "coordinate file")
    files = tuple(os.path.abspath(f) if os.path.isfile(f) else f for f in options.forcefield)
    options = replace(options, coordinates=coordinates, forcefield=files)
    digests = _digests(path, options)
    if sha256_of is not None and dict(sha256_of) != digests:
        changed = sorted(k for k in set(digests) | set(sha256_of) if digests.get(k) != dict(sha256_of).get(k))
        raise fail("system", f"the files this recipe was made from, unchanged (SHA-256 of {', '.join(changed)} "
                   "differ)", path)
    read = _read(path, coordinates, files if kind == "charmm" else ())
    own_parameters = kind in PARAMETERISED and not (files and kind in ("amber", "gromacs"))
    if (options.remove_solvent or options.add_hydrogens is not None) and own_parameters:
        what = "--remove-solvent" if options.remove_solvent else "--add-hydrogens"
        raise fail("forcefield", f"force-field XMLs with {what} (the parameters in {os.path.basename(path)} are "
                   "for its atoms as they are)", "none")
    _edit(read, options)
    if options.implicit_solvent is not None and read.box is not None:
        raise fail("implicit_solvent", "a system without a periodic box (remove the explicit water with "
                   "--remove-solvent)", options.implicit_solvent)
    system = _parameterised(read, kind if own_parameters else None, options, constrained, hydrogen_mass)
    recorded = {key: value for key, value in asdict(options).items() if value not in (None, (), False)}
    recipe = Recipe(f"file:{path}", {**recorded, "sha256_of": digests}, "hbonds" if constrained else "none",
                    None if hydrogen_mass is None else hydrogen_mass.value_in_unit(unit.amu))
    return MolecularSystem(read.topology, system, np.array(read.positions.value_in_unit(unit.nanometer))
                           * unit.nanometer, recipe)


def _digests(path: str, options: FileOptions) -> Dict[str, str]:
    """SHA-256 of the topology, coordinate and parameter files (force fields named by OpenMM are its own)."""
    digests = {"system": file_sha256(path)}
    if options.coordinates:
        digests["coordinates"] = file_sha256(options.coordinates)
    digests.update({f"forcefield:{os.path.basename(f)}": file_sha256(f) for f in options.forcefield
                    if os.path.isfile(f)})
    return digests


def _edit(read: _Read, options: FileOptions) -> None:
    """Delete the solvent and add hydrogens, as ``options`` ask."""
    if not options.remove_solvent and options.add_hydrogens is None:
        return
    modeller = app.Modeller(read.topology, read.positions)
    if options.remove_solvent:
        modeller.delete([r for r in read.topology.residues() if r.name in SOLVENT_RESIDUES])
        modeller.topology.setPeriodicBoxVectors(None)
        read.box = None
    if options.add_hydrogens is not None:
        state = random.getstate()  # Modeller places hydrogens with Python's global random numbers
        random.seed(1)
        try:
            modeller.addHydrogens(_force_field(options.forcefield or DEFAULT_FORCEFIELD, None),
                                  pH=float(options.add_hydrogens))
        except Exception as error:
            raise fail("add_hydrogens", "residues the force field has templates for", str(error)) from None
        finally:
            random.setstate(state)
    read.topology, read.positions = modeller.topology, modeller.getPositions()


def _parameterised(read: _Read, own: Optional[str], options: FileOptions, constrained: bool,
                   hydrogen_mass) -> openmm.System:
    """The System: with the parameters of the topology file (``own``: its kind) or with force-field XMLs."""
    settings = dict(_nonbonded(read.box), constraints=app.HBonds if constrained else None,
                    rigidWater=bool(constrained), hydrogenMass=hydrogen_mass)
    if own == "xml":
        if constrained or hydrogen_mass is not None or options.implicit_solvent:
            raise fail("system", "a serialized System as it is (no --constraints, --hydrogen-mass or "
                       "--implicit-solvent: build them into it)", "a System XML with them")
        return read.create()
    if own is not None:
        if options.implicit_solvent is not None:
            if own == "gromacs":
                raise fail("implicit_solvent", "none with a GROMACS topology (OpenMM reads no GB model from it)",
                           options.implicit_solvent)
            settings["implicitSolvent"] = IMPLICIT_SOLVENTS[options.implicit_solvent][1]
        return _create(read.create, settings)
    force_field = _force_field(options.forcefield or DEFAULT_FORCEFIELD, options.implicit_solvent)
    return _create(lambda **kw: force_field.createSystem(read.topology, **kw), settings)


def file_source(path: str, sha256_of: Optional[Dict[str, str]] = None, constraints=None, constrained: bool = False,
                hydrogen_mass=None, **options) -> MolecularSystem:
    """The ``file`` source of :mod:`openmm_accel.systems` (its builder's keywords: a recipe's source options
    and the build options)."""
    known = {item.name for item in fields(FileOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise fail(unknown[0], f"an option of a file as a system ({', '.join(sorted(known))})", options[unknown[0]])
    if "forcefield" in options:
        options["forcefield"] = tuple(options["forcefield"])
    return structure_system(path, FileOptions(**options), constrained, hydrogen_mass, sha256_of)


def from_openmm(topology: app.Topology, system: openmm.System, positions, folder: str) -> MolecularSystem:
    """A :class:`MolecularSystem` of an OpenMM ``topology``, ``system`` and ``positions`` (a Quantity, or nm)
    built in a script: written to ``folder`` as ``system.xml`` (the serialized System) and ``structure.pdb``
    (topology and positions), so that its recipe rebuilds it and every command takes it (``--system
    FOLDER/system.xml --coordinates FOLDER/structure.pdb``). Files already there are never written over."""
    if topology.getNumAtoms() != system.getNumParticles():
        raise fail("system", f"a System of the topology's {topology.getNumAtoms()} atoms",
                   f"{system.getNumParticles()} particles")
    x = as_array(positions, unit.nanometer, "positions")
    if x.shape != (topology.getNumAtoms(), 3):
        raise fail("positions", f"({topology.getNumAtoms()}, 3) nm", f"shape {x.shape}")
    paths = {name: os.path.join(folder, name) for name in ("system.xml", "structure.pdb")}
    existing = [path for path in paths.values() if os.path.exists(path)]
    if existing:
        raise fail("folder", "a folder without system.xml and structure.pdb (they are never written over)",
                   ", ".join(existing))
    os.makedirs(folder, exist_ok=True)
    with open(paths["system.xml"], "w") as handle:
        handle.write(openmm.XmlSerializer.serialize(system))
    with open(paths["structure.pdb"], "w") as handle:
        app.PDBFile.writeFile(topology, x * unit.nanometer, handle, keepIds=True)
    return structure_system(paths["system.xml"], FileOptions(coordinates=paths["structure.pdb"]))


def _create(create, settings: dict) -> openmm.System:
    """Make the System, a residue without a template refused by name."""
    try:
        return create(**{k: v for k, v in settings.items() if v is not None or k == "constraints"})
    except ValueError as error:
        if "template" in str(error).lower():
            raise fail("forcefield", "templates for every residue (add the XML of a ligand, or --add-hydrogens "
                       "when hydrogens are missing)", str(error).split("\n")[0]) from None
        raise fail("system", "parameters OpenMM can build a System from", str(error)) from None


__all__ = ["DEFAULT_FORCEFIELD", "FileOptions", "IMPLICIT_SOLVENTS", "KINDS", "file_source", "from_openmm",
           "is_structure_file", "structure_system"]
