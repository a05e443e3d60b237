"""Standard systems for examples, tests and benchmarks, built from files that ship with the packages.

``load(name, **options)`` returns a :class:`~openmm_accel.molecular.MolecularSystem` (topology, System,
positions and the recipe that rebuilds it). Systems are
built without constraints and with flexible water by default (FlashMD's learned strides cannot keep
constraints); the dipeptides, ethanol and water boxes of :data:`CONSTRAINABLE` take ``constraints=app.HBonds``
(X-H bonds and rigid water, which ABOBA and speculative dynamics keep with RATTLE); ``hydrogen_mass``
repartitions mass onto hydrogens.
:func:`with_potential` puts a registered model on one: alone in vacuum, or on the solute (ML/MM), and
:func:`build` makes the system a :class:`~openmm_accel.molecular.Recipe` describes.
"""
from __future__ import annotations

import importlib.util
import os
import random
from functools import lru_cache
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import openmm
import torch
from openmm import app, unit

from .forces import create_mixed_system, create_ml_system
from .geometry import place
from .models import available, create
from .models.analytic import DoubleWellModel, HarmonicModel
from .models.classical import create_force_field_system
from .molecular import CONSTRAINT_CHOICES, MM_MODEL, MolecularSystem, Recipe
from .models.registry import checked_model_file, model_file
from .options import option, positive_in
from .registry import load as load_entry_point, registered
from .storage import file_sha256
from .structures import IMPLICIT_SOLVENTS, file_source, is_structure_file
from .validation import InputError, choice, closest_name, fail, positive

def subset_topology(topology: app.Topology, atoms) -> app.Topology:
    """The topology of ``atoms`` alone (bonds among them kept; no periodic box), e.g. an ML/MM solute."""
    keep = set(int(i) for i in atoms)
    modeller = app.Modeller(topology, [openmm.Vec3(0, 0, 0)] * topology.getNumAtoms())
    modeller.delete([a for a in topology.atoms() if a.index not in keep])
    modeller.topology.setPeriodicBoxVectors(None)
    return modeller.topology


def _package_file(package: str, *parts: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(f"the data file {'/'.join(parts)} comes with the package {package!r}; install it")
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    if not os.path.isfile(path):
        raise InputError(f"missing data file {path}; reinstall {package}")
    return path


@lru_cache(maxsize=None)
def _alanine_dipeptide_path() -> str:
    return _package_file("openmmtools", "data", "alanine-dipeptide-gbsa", "alanine-dipeptide.pdb")


def _alanine_dipeptide_pdb() -> app.PDBFile:
    return app.PDBFile(_alanine_dipeptide_path())


def capped_dipeptide(residue: str = "ALA", solvent: str = "vacuum", force_field: str = "amber14",
                     box_size=2.5 * unit.nanometer, hydrogen_mass=None, constraints=None) -> MolecularSystem:
    """A capped dipeptide ACE-``residue``-NME in ``"vacuum"``, ``"implicit"`` (OBC2) or ``"explicit"`` TIP3P.

    Alanine is openmmtools' alanine-dipeptide structure (22 atoms); another residue is that structure with
    alanine mutated by PDBFixer (side chain and hydrogens from its templates; minimise before use). The
    explicit-solvent box is cubic with edge ``box_size`` (default 2.5 nm: 1 nm PME cutoff, ~1,500 atoms).
    ``constraints=app.HBonds`` (with rigid water) is for plain OpenMM integrators, e.g. reference data.
    """
    if solvent not in ("vacuum", "implicit", "explicit"):
        raise fail("solvent", "'vacuum', 'implicit' or 'explicit'", solvent)
    pdb = _alanine_dipeptide_pdb()
    topology, positions = pdb.topology, pdb.positions
    if residue != "ALA":
        from pdbfixer import PDBFixer
        fixer = PDBFixer(filename=_alanine_dipeptide_path())
        fixer.applyMutations([f"ALA-2-{residue}"], next(fixer.topology.chains()).id)
        fixer.missingResidues = {}
        fixer.findMissingAtoms()
        # the same structure every time: the minimisation is seeded, and OpenMM's Modeller places new
        # hydrogens with Python's global random numbers, which are seeded here and then given back
        fixer.addMissingAtoms(seed=1)
        state = random.getstate()
        random.seed(1)
        try:
            fixer.addMissingHydrogens(7.0)
        finally:
            random.setstate(state)
        topology, positions = fixer.topology, fixer.positions
    if solvent == "explicit":
        modeller = app.Modeller(topology, positions)
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
        edge = positive(box_size, unit.nanometer, "box_size")
        modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(edge, edge, edge) * unit.nanometer)
        topology, positions = modeller.topology, modeller.positions
    system = create_force_field_system(topology, force_field, implicit_solvent="obc2" if solvent == "implicit"
                                       else None, hydrogen_mass=hydrogen_mass, constraints=constraints,
                                       rigid_water=constraints is not None)
    name = "alanine" if residue == "ALA" else RESIDUE_NAMES[residue]
    source = {"box_size": edge} if solvent == "explicit" and edge != 2.5 else {}
    return MolecularSystem(topology, system, _as_nm(positions),
                           _recipe(f"{name}-dipeptide-{solvent}", source, hydrogen_mass, constraints))


def alanine_dipeptide(solvent: str = "vacuum", **options) -> MolecularSystem:
    """Alanine dipeptide (ACE-ALA-NME, 22 atoms); see :func:`capped_dipeptide`."""
    return capped_dipeptide("ALA", solvent, **options)


RESIDUE_NAMES = {"VAL": "valine", "CYS": "cysteine", "MET": "methionine"}


def ethanol(hydrogen_mass=None, constraints=None) -> MolecularSystem:
    """Ethanol in vacuum (9 atoms; CHARMM36/CGenFF residue ETOH from OpenMM's charmm36.xml), staggered with
    the hydroxyl anti, built from textbook bond lengths (A) and tetrahedral angles; minimise before use.
    The molecule of the MD17 ethanol benchmark (which is sampled at 500 K with an ab initio potential; here
    ANI-1x stands in for it: ``with_potential("ethanol-vacuum", "ani1x")``)."""
    def placed(bonded, angled, dihedral_to, bond, angle, dihedral):  # A and degrees
        values = (torch.tensor([v], dtype=torch.float64) for v in (bond, np.radians(angle), np.radians(dihedral)))
        return place(x[bonded][None], x[angled][None], x[dihedral_to][None], *values)[0]

    tetrahedral = np.radians(109.5)
    x = {"C1": torch.zeros(3, dtype=torch.float64), "C2": torch.tensor([1.53, 0.0, 0.0], dtype=torch.float64),
         "O1": 1.43 * torch.tensor([np.cos(tetrahedral), np.sin(tetrahedral), 0.0], dtype=torch.float64)}
    x["HO1"] = placed("O1", "C1", "C2", 0.96, 108.5, 180.0)
    for name, dihedral in (("H11", 60.0), ("H12", -60.0)):
        x[name] = placed("C1", "O1", "HO1", 1.09, 109.5, dihedral)
    for name, dihedral in (("H21", 180.0), ("H22", 60.0), ("H23", -60.0)):
        x[name] = placed("C2", "C1", "O1", 1.09, 109.5, dihedral)
    topology = app.Topology()
    residue = topology.addResidue("ETOH", topology.addChain())
    atoms = {name: topology.addAtom(name, app.element.Element.getBySymbol(name[0]), residue)
             for name in ("C1", "O1", "HO1", "H11", "H12", "C2", "H21", "H22", "H23")}
    for first, second in (("C1", "C2"), ("C1", "O1"), ("C1", "H11"), ("C1", "H12"), ("O1", "HO1"),
                          ("C2", "H21"), ("C2", "H22"), ("C2", "H23")):
        topology.addBond(atoms[first], atoms[second])
    system = create_force_field_system(topology, "charmm36", hydrogen_mass=hydrogen_mass, constraints=constraints)
    positions = torch.stack([x[atom.name] for atom in topology.atoms()]).numpy() / 10.0
    return MolecularSystem(topology, system, positions * unit.nanometer,
                           _recipe("ethanol-vacuum", {}, hydrogen_mass, constraints))


def water_box(size=2.0 * unit.nanometer, hydrogen_mass=None, constraints=None) -> MolecularSystem:
    """A cubic box of flexible TIP3P water (amber14 parameters) with PME (cutoff 1 nm, or 0.4 x the edge of a
    smaller box, which leaves a barostat room to compress it); rigid with ``constraints``."""
    edge = positive(size, unit.nanometer, "size")
    modeller = app.Modeller(app.Topology(), [])
    forcefield = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(edge, edge, edge) * unit.nanometer)
    system = create_force_field_system(modeller.topology, "amber14", hydrogen_mass=hydrogen_mass,
                                       nonbonded_cutoff=min(1.0, 0.4 * edge) * unit.nanometer,
                                       constraints=constraints, rigid_water=constraints is not None)
    return MolecularSystem(modeller.topology, system, _as_nm(modeller.positions),
                           _recipe("water-box", {} if edge == 2.0 else {"size": edge}, hydrogen_mass, constraints))


def _particles(recipe: Recipe, n_particles: int, mass, expression: str, positions: np.ndarray) -> MolecularSystem:
    if int(n_particles) < 1:
        raise fail("n_particles", "a positive integer", n_particles)
    topology = app.Topology()
    chain = topology.addChain()
    system = openmm.System()
    force = openmm.CustomExternalForce(expression)
    argon = app.Element.getBySymbol("Ar")
    for i in range(n_particles):
        residue = topology.addResidue("PRT", chain)
        topology.addAtom("P", argon, residue)
        system.addParticle(positive(mass, unit.amu, "mass"))
        force.addParticle(i, [])
    system.addForce(force)
    return MolecularSystem(topology, system, positions * unit.nanometer, recipe)


def harmonic_oscillators(n_particles: int = 100, k=1000.0, mass=12.0, seed: int = 0) -> MolecularSystem:
    """``n_particles`` independent 3-D harmonic oscillators ``U = k |x|^2 / 2`` (k in kJ/mol/nm^2)."""
    model = HarmonicModel(int(n_particles), k)
    start = np.random.default_rng(seed).normal(scale=0.05, size=(int(n_particles), 3))
    recipe = Recipe("harmonic-oscillators", {"n_particles": int(n_particles), "k": model.k, "mass":
                                             positive(mass, unit.amu, "mass"), "seed": int(seed)})
    return _particles(recipe, n_particles, mass, model.openmm_expression(), start)


def double_well(n_particles: int = 100, barrier=5.0, a=0.1, k_perp=1000.0, mass=12.0,
                seed: int = 0) -> MolecularSystem:
    """``n_particles`` independent double wells along x (barrier in kJ/mol, minima at x = +-a nm)."""
    model = DoubleWellModel(int(n_particles), barrier, a, k_perp)
    rng = np.random.default_rng(seed)
    start = rng.normal(scale=0.01, size=(int(n_particles), 3))
    start[:, 0] += model.a * rng.choice([-1.0, 1.0], size=int(n_particles))
    recipe = Recipe("double-well", {"n_particles": int(n_particles), "barrier": model.barrier, "a": model.a,
                                    "k_perp": model.k_perp, "mass": positive(mass, unit.amu, "mass"),
                                    "seed": int(seed)})
    return _particles(recipe, n_particles, mass, model.openmm_expression(), start)


def _recipe(source: str, options: dict, hydrogen_mass, constraints) -> Recipe:
    """The recipe of a standard system built with these options."""
    return Recipe(source, options, "none" if constraints is None else "hbonds",
                  None if hydrogen_mass is None else positive(hydrogen_mass, unit.amu, "hydrogen_mass"))


def _as_nm(positions) -> unit.Quantity:
    return np.array(positions.value_in_unit(unit.nanometer)) * unit.nanometer


SYSTEMS: Dict[str, Callable[..., MolecularSystem]] = {
    "alanine-dipeptide-vacuum": lambda **o: alanine_dipeptide("vacuum", **o),
    "alanine-dipeptide-implicit": lambda **o: alanine_dipeptide("implicit", **o),
    "alanine-dipeptide-explicit": lambda **o: alanine_dipeptide("explicit", **o),
    "valine-dipeptide-vacuum": lambda **o: capped_dipeptide("VAL", "vacuum", **o),
    "valine-dipeptide-implicit": lambda **o: capped_dipeptide("VAL", "implicit", **o),
    "valine-dipeptide-explicit": lambda **o: capped_dipeptide("VAL", "explicit", **o),
    "ethanol-vacuum": ethanol,
    "water-box": water_box,
    "water-box-small": lambda **o: water_box(1.5 * unit.nanometer, **o),  # ~110 molecules, for FlashMD
    "harmonic-oscillators": harmonic_oscillators,
    "double-well": double_well,
}


#: The standard systems that can be built with X-H constraints (``constraints=app.HBonds``).
CONSTRAINABLE = tuple(name for name in SYSTEMS if "dipeptide" in name or name.startswith(("water-box", "ethanol")))


def openmmtools_system(name: str, constrained: bool = False, **options) -> MolecularSystem:
    """An ``openmmtools.testsystems`` class by name (e.g. ``"HarmonicOscillator"``, ``"AlanineDipeptideImplicit"``).

    Unless ``constrained``, ``constraints=None`` is passed where the class accepts it (and a System with
    constraints refused), the package's unconstrained default. ``hydrogen_mass`` (the package's name, as
    for the standard systems) becomes the class's ``hydrogenMass``, or is refused where the class has none
    (its ``**kwargs`` would swallow it); other ``options`` (e.g. ``constraints=app.HBonds``) go to the class.
    """
    import inspect
    import logging
    level, logging.getLogger().level = logging.getLogger().level, logging.ERROR  # pymbar's import banner
    try:
        from openmmtools import testsystems
    finally:
        logging.getLogger().setLevel(level)
    classes = {n: c for n, c in vars(testsystems).items()
               if inspect.isclass(c) and issubclass(c, testsystems.TestSystem) and c is not testsystems.TestSystem}
    if name not in classes:
        raise closest_name(name, classes, "system", "openmmtools test system")
    parameters = inspect.signature(classes[name].__init__).parameters
    if "hydrogen_mass" in options:
        if "hydrogenMass" not in parameters:
            raise fail("hydrogen_mass", f"no hydrogen mass repartitioning for openmmtools:{name} (its class "
                       "takes no hydrogenMass)", options["hydrogen_mass"])
        options["hydrogenMass"] = options.pop("hydrogen_mass")
    if "constraints" in parameters and not constrained:
        options.setdefault("constraints", None)
    if "rigid_water" in parameters and not constrained:
        options.setdefault("rigid_water", False)
    test_system = classes[name](**options)
    if test_system.system.getNumConstraints() > 0 and not constrained:
        raise fail("system", "an openmmtools test system that can be built without constraints",
                   f"{name} with {test_system.system.getNumConstraints()} constraints")
    hydrogen_mass = options.pop("hydrogenMass", None)
    options.pop("constraints", None), options.pop("rigid_water", None)
    return MolecularSystem(test_system.topology, test_system.system, _as_nm(test_system.positions),
                           _recipe(f"openmmtools:{name}", options, hydrogen_mass, "hbonds" if constrained else None))


SOLVENTS = ("vacuum", "implicit", "explicit")


def in_solvent(name: str, solvent: str) -> Optional[str]:
    """The name of the same molecule in ``solvent`` (one of :data:`SOLVENTS`): ``valine-dipeptide-implicit`` ->
    ``valine-dipeptide-explicit``, ``openmmtools:AlanineDipeptideImplicit`` -> ``...Explicit``; None for a
    system without solvent variants. (An openmmtools name is only rewritten; building it tells if it exists.)"""
    if solvent not in SOLVENTS:
        raise fail("solvent", f"one of {', '.join(SOLVENTS)}", solvent)
    for known in SOLVENTS:
        if name in SYSTEMS and name.endswith("-" + known):
            other = name[:-len(known)] + solvent
            return other if other in SYSTEMS else None
        if name.startswith("openmmtools:") and name.endswith(known.capitalize()):
            return name[:-len(known)] + solvent.capitalize()
    return None


#: Sources of systems beyond the standard ones, registered in this entry-point group by the prefix of their
#: names (``"PREFIX:REST"``, e.g. ``openmmtools = openmm_accel.systems:openmmtools_system``): each builds a
#: MolecularSystem from ``REST`` and the builder options (``constrained=True`` asks for X-H constraints).
#: Adding a source is one module and one entry point (another package can add its own).
SOURCE_GROUP = "openmm_accel.sources"


def _source(name: str):
    """The builder of a prefixed name's source and the rest of the name, or (None, name). A file's path
    (``file:PATH``, or a path ending in a suffix :mod:`.structures` reads) is the ``file`` source."""
    prefix, _, rest = str(name).partition(":")
    if prefix == "file" and rest:
        return file_source, rest
    if rest and prefix in registered(SOURCE_GROUP):
        return load_entry_point(SOURCE_GROUP, prefix, "system", "system source"), rest
    if is_structure_file(name) and name not in SYSTEMS:
        return file_source, name
    return None, name


def canonical_source(name: str) -> str:
    """A system's name as recipes record it: a file's as ``file:`` and its absolute path."""
    builder, rest = _source(name)
    return "file:" + os.path.abspath(rest) if builder is file_source else name


def check_name(name: str, argument: str = "system") -> None:
    """Refuse a name that is neither a standard system nor ``"PREFIX:REST"`` of a registered source."""
    if name not in SYSTEMS and _source(name)[0] is None:
        choice(name, SYSTEMS, argument)


_BUILD_OPTIONS = ("hydrogen_mass", "constraints", "constrained", "rigid_water")


def load(name: str, **options) -> MolecularSystem:
    """Build the standard system ``name`` (one of :data:`SYSTEMS`, or ``"PREFIX:REST"`` of a registered source,
    e.g. ``"openmmtools:ClassName"`` for any openmmtools test system) with its own force field; ``options`` go
    to its builder."""
    builder, rest = _source(name)
    if builder is not None:
        built = builder(rest, **options)
    elif name not in SYSTEMS:
        raise closest_name(name, SYSTEMS, "system", "system")
    else:
        try:
            built = SYSTEMS[name](**options)
        except TypeError as error:
            raise InputError(f"system {name!r}: {error}") from None
    if builder is file_source:  # its recipe records the files (absolute paths, digests) itself
        return built
    source = {key: value for key, value in options.items() if key not in _BUILD_OPTIONS}
    built.recipe = replace(built.recipe, source=name, source_options=tuple(sorted(source.items())))
    return built


#: The options of :class:`SystemOptions` that say how a file becomes a system.
FILE_OPTIONS = ("coordinates", "forcefield", "implicit_solvent", "remove_solvent", "add_hydrogens")


@dataclass
class SystemOptions:
    """The system a command builds: a standard system's name, ``openmmtools:NAME`` or a lab's own file, and
    how a file becomes a system (:func:`.structures.structure_system`; those options are refused with a
    name). Declared once for ``run``, ``data`` and ``train flashmd``."""

    system: str = option("alanine-dipeptide-vacuum", "--system", "a standard system (see 'openmm-accel systems'), "
                         "'openmmtools:NAME', or a structure or topology file (.pdb, .cif, .prmtop, .top, .psf, "
                         ".xml)", check=check_name)
    coordinates: Optional[str] = option(None, "--coordinates", "coordinates of a topology file given as --system "
                                        "(Amber .inpcrd/.rst7, GROMACS .gro, CHARMM .crd, or a PDB for a System "
                                        "XML)")
    forcefield: Tuple[str, ...] = option((), "--forcefield", "OpenMM force-field XMLs for a structure file (default: "
                                         "amber14-all.xml amber14/tip3p.xml), or the CHARMM parameter files of a psf")
    implicit_solvent: Optional[str] = option(None, "--implicit-solvent", "generalized-Born solvent for a system "
                                             "from a file", choices=tuple(IMPLICIT_SOLVENTS))
    remove_solvent: bool = option(False, "--remove-solvent", "delete the water and ions of a system from a file "
                                  "(with --forcefield for a solvated prmtop, top or psf)")
    add_hydrogens: Optional[float] = option(None, "--add-hydrogens", "add missing hydrogens at this pH (Modeller)",
                                            check=positive_in(unit.dimensionless, "add_hydrogens"))
    ml_atoms: Optional[str] = option(None, "--ml-atoms", "the atoms an ML --model covers, in mdtraj's selection "
                                     "language (e.g. 'resname LIG', 'resid 10 to 20'); the rest keeps the force "
                                     "field (ML/MM; default: the solute)")

    def unset_options(self) -> set:
        """The options added since data and runs were first recorded that are left unset: what such a record
        says nothing about (file options and the ML region)."""
        return set(FILE_OPTIONS + ("ml_atoms",)) - set(self.given_file_options()) - (
            {"ml_atoms"} if self.ml_atoms is not None else set())

    def given_file_options(self) -> Dict[str, object]:
        """The options of a file that were given (not left at None, empty or off)."""
        values = {name: getattr(self, name) for name in FILE_OPTIONS}
        return {name: value for name, value in values.items()
                if value is not None and value is not False and not (isinstance(value, (list, tuple)) and not value)}

    def source_options(self) -> Dict[str, object]:
        """The options given (for the system's recipe), refused unless ``system`` is a file."""
        given = self.given_file_options()
        if given and _source(self.system)[0] is not file_source:
            name = next(iter(given))
            raise fail(name, "it only with a structure or topology file as --system", f"{given[name]!r} with "
                       f"{self.system}")
        return given


def check_potential(model: str, member: Optional[int], what: str = "an ML --model", argument: str = "model") -> None:
    """Refuse an unknown potential (naming ``argument``), and ``member`` (one network of an ensemble) with
    ``"mm"``, where it would have no effect (it is needed with ``what``)."""
    if model_file(model):
        checked_model_file(*model_file(model), argument=argument)
    elif model != MM_MODEL:
        choice(model, available(), argument)
    elif member is not None:
        raise fail("member (--member)", f"it only with {what}, where it has an effect", f"{member!r} with --model mm")


def constrainable(name: str) -> bool:
    """Whether system ``name`` can be built with X-H constraints: a source's systems (which build them or refuse
    by name) and :data:`CONSTRAINABLE`."""
    return _source(name)[0] is not None or name in CONSTRAINABLE


#: Forces of a generalized-Born solvent, which an ML potential on every atom keeps (as ML/MM).
IMPLICIT_SOLVENT_FORCES = (openmm.GBSAOBCForce, openmm.CustomGBForce)


def build(recipe: Recipe) -> MolecularSystem:
    """The system ``recipe`` describes: its source built with its options, constraints and hydrogen mass,
    with its potential: the force field's own (``"mm"``), the ML model alone (a molecule in vacuum) or on
    the ML region (default: the solute) with the force field around it (ML/MM, mechanical embedding; also
    for a whole molecule in implicit solvent, whose generalized-Born solvation stays)."""
    if not isinstance(recipe, Recipe):
        raise fail("recipe", "a Recipe", type(recipe).__name__)
    name = recipe.source
    options = dict(recipe.source_options)
    if recipe.hydrogen_mass_amu is not None:
        options["hydrogen_mass"] = positive(recipe.hydrogen_mass_amu, unit.amu, "hydrogen_mass") * unit.amu
    if recipe.constraints == "hbonds":
        if not constrainable(name):
            raise fail("constraints", "'none' for this system (X-H constraints are built for openmmtools systems "
                       f"and {', '.join(CONSTRAINABLE)})", f"'hbonds' with {name}")
        options.update(constraints=app.HBonds, **({"constrained": True} if _source(name)[0] is not None else {}))
    molecular = load(name, **options)
    # the source as built (a file's source records its path and digests), with the recipe's potential
    recipe = replace(recipe, source=molecular.recipe.source, source_options=molecular.recipe.source_options)
    if recipe.potential == MM_MODEL:
        molecular.recipe = replace(recipe, potential_options=(), ml_atoms=None)
        return molecular
    if model_file(recipe.potential):  # a model file: by its absolute path and digest
        prefix, path = model_file(recipe.potential)
        path = os.path.abspath(path)
        recipe = replace(recipe, potential=prefix + path,
                         potential_options=tuple(sorted({**recipe.options, "sha256": file_sha256(path)}.items()))
                         if os.path.isfile(path) and "sha256" not in recipe.options else recipe.potential_options)
    region = molecular.solute_atoms if recipe.ml_atoms is None else selected(molecular.topology, recipe.ml_atoms)
    recipe = replace(recipe, ml_atoms=None if recipe.ml_atoms is None else tuple(region))
    if not region:
        raise fail("model", f"'mm' for {name}, which has no solute for an ML potential (its default region)",
                   repr(recipe.potential))
    whole = (len(region) == molecular.topology.getNumAtoms() and not molecular.system.usesPeriodicBoundaryConditions()
             and not any(isinstance(force, IMPLICIT_SOLVENT_FORCES) for force in molecular.system.getForces()))
    if whole:
        energy_model = create(recipe.potential, molecular.topology, **recipe.options)
        system = create_ml_system(energy_model, molecular.masses, recipe.backend)
        for k in range(molecular.system.getNumConstraints()):
            system.addConstraint(*molecular.system.getConstraintParameters(k))
    else:
        energy_model = create(recipe.potential, molecular.topology, atoms=region, **recipe.options)
        system = create_mixed_system(molecular.system, energy_model, region, recipe.backend)
    return MolecularSystem(molecular.topology, system, molecular.positions, recipe, energy_model,
                           None if whole else region, molecular.system)


def selected(topology: app.Topology, atoms, argument: str = "ml_atoms") -> list:
    """Indices of ``atoms`` of ``topology``: indices as given, or the atoms an mdtraj selection (a str, e.g.
    ``"resname LIG"``) matches; a selection matching nothing, or one mdtraj cannot read, is refused naming
    ``argument``."""
    if not isinstance(atoms, str):
        return [int(i) for i in atoms]
    import mdtraj
    try:
        indices = mdtraj.Topology.from_openmm(topology).select(atoms)
    except Exception as error:
        raise fail(argument, "a selection in mdtraj's language (e.g. 'resname LIG')",
                   f"{atoms!r} ({error})") from None
    if len(indices) == 0:
        raise fail(argument, "a selection that matches atoms of the system", f"{atoms!r}, which matches none")
    return [int(i) for i in indices]


def with_potential(name: str, model: str = MM_MODEL, member: Optional[int] = None, hydrogen_mass=None,
                   backend: str = "torchforce", constraints: str = "none",
                   source_options: Optional[dict] = None, ml_atoms=None) -> MolecularSystem:
    """The system ``name`` (a standard system or a file) with potential ``model`` (see :func:`build`).
    ``member``: one network of an ensemble; ``hydrogen_mass`` (amu or Quantity): HMR;
    ``constraints="hbonds"``: X-H bonds at the force field's lengths and rigid water, also under an ML model;
    ``source_options``: how a file becomes a system (:class:`SystemOptions`); ``ml_atoms``: the atoms the
    model covers (indices, or an mdtraj selection; default: the solute)."""
    choice(constraints, CONSTRAINT_CHOICES, "constraints")
    hydrogen_mass = None if hydrogen_mass is None else positive(hydrogen_mass, unit.amu, "hydrogen_mass")
    return build(Recipe.of(name, model, member, constraints=constraints, hydrogen_mass_amu=hydrogen_mass,
                           backend=backend, source_options=source_options or {}, ml_atoms=ml_atoms))
