"""The method template: every way of running dynamics (plain MD, speculative dynamics, FlashMD, ...) is one
:class:`Method` subclass in a folder of its own, registered in the ``openmm_accel.methods`` entry-point group.
``openmm-accel run/train/sample/bench`` and :func:`openmm_accel.simulate.run` know methods only through it:

* ``Config``: the method's run options, a dataclass whose fields are declared with :func:`options.option`
  (the single source of the ``--help`` group, defaults, checks); ``unused(config)`` names the options that
  have no effect in a given set-up, which are refused rather than ignored;
* what ``run`` may change for it (class attributes: ``brings_potential``, ``brings_timestep``,
  ``keeps_constraints``, ``allows_zero_friction``) and its defaults (``default_friction``, ...);
* ``integrator(run, start)``: the integrator and the state to start from;
* its ``train``, ``sample`` and ``bench`` jobs: :class:`Job` subclasses, each with a ``Config`` and
  ``run(config)``, importing their implementation only when they run.

Adding a method is one folder and one entry point; no other method and no application module changes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

from .devices import AUTO, device_option
from .options import Option, checked, option, options_of
from .registry import load, registered
from .storage import writable_folder
from .validation import check_seed, count, fail

ENTRY_POINT_GROUP = "openmm_accel.methods"


@dataclass(frozen=True)
class NoOptions:
    """The run options of a method that has none of its own."""


@dataclass
class Start:
    """What a method's integrator starts from: ``molecular`` (the
    :class:`~openmm_accel.molecular.MolecularSystem` to simulate, with its potential), ``state`` (minimised,
    with velocities; None when resuming), the OpenMM ``platform``, what :meth:`Method.prepare` returned, the
    run's output files by name (``paths``) and its ``device`` (:mod:`openmm_accel.devices`), where the
    method's own models run."""

    molecular: Any
    state: Any
    platform: Any
    prepared: Any = None
    paths: Optional[Dict[str, str]] = None
    device: str = AUTO


def _check_threads(values, name) -> None:
    for threads in values:
        count(threads, name, "positive numbers of torch threads")


def at_least_two_samples(value, name) -> None:
    """The ``check`` of a benchmark's sample count: distributions are compared, which one sample cannot do."""
    count(value, name, "an integer >= 2", minimum=2)


@dataclass(frozen=True)
class BenchConfig:
    """The options every ``bench`` job shares (each job's ``Config`` extends it)."""

    json: Optional[str] = option(None, "--json", "write results to this JSON file (a Markdown table and plots "
                                 "beside it)")
    threads: Tuple[int, ...] = option((1, 2), "--threads", "torch thread counts (lsd, flashmd: the first)",
                                      check=_check_threads)
    device: str = device_option()
    overwrite: bool = option(False, "--overwrite", "replace an earlier report at JSON (its .json, .md, .png and "
                             ".npz; without it they are refused)")

    def check_outputs(self) -> None:
        """Refuse, before the benchmark, a report that cannot be written or would replace an earlier one."""
        if not self.json:
            return
        stem, extension = os.path.splitext(self.json)
        if extension != ".json":  # the table, plot and arrays are written beside it as STEM.md, .png, .npz
            raise fail("json", "a file name ending in .json", self.json)
        writable_folder(os.path.dirname(os.path.abspath(self.json)), "json", self.json)
        earlier = [path for path in (self.json, stem + ".md", stem + ".png", stem + ".npz") if os.path.exists(path)]
        if earlier and not self.overwrite:
            raise fail("json", "a new report (or --overwrite to replace an earlier one)",
                       f"{self.json}, where {', '.join(earlier)} exist already")


_count = count  # (the name ``count`` is a field of SampleConfig)


@dataclass(frozen=True)
class SampleConfig:
    """The options every ``sample`` job shares (each job's ``Config`` extends it)."""

    count: int = option(1000, "-n", "configurations to draw", check=_count)
    seed: int = option(1, "--seed", "seed of the draws", check=check_seed)
    output: str = option("samples.dcd", "--output", "trajectory file (any format mdtraj writes; a DCD gets its "
                         "topology as OUTPUT.pdb)")
    system: Optional[str] = option(None, "--system", "the system whose shipped model draws, when no model file is "
                                   "given (default: the method's default system)")
    threads: int = option(1, "--threads", "torch intra-op threads (1 is fastest for these small networks on 2 "
                          "cores)", check=_count)
    device: str = device_option("where the model draws")


class Job:
    """A method's ``train``, ``sample`` or ``bench`` job: ``Config`` declares its options (see
    :mod:`openmm_accel.options`) and :meth:`run` does it, returning the line to print (or None). Calling the
    job checks the config first: ``METHOD.train(TrainScoreConfig(data="...", epochs=10))``."""

    help: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions

    def __call__(self, config) -> Optional[str]:
        if not isinstance(config, self.Config):
            raise fail("config", f"a {self.Config.__name__}", type(config).__name__)
        config = checked(config)
        if hasattr(config, "check_outputs"):  # e.g. a report that would replace an earlier one
            config.check_outputs()
        return self.run(config)

    def run(self, config) -> Optional[str]:
        raise NotImplementedError

    @classmethod
    def options(cls) -> Tuple[Option, ...]:
        return options_of(cls.Config)


class Method:
    """What ``run`` needs of a method (see the module). Subclasses set ``name``, ``help`` and ``Config`` and
    implement :meth:`integrator`; everything else has the plain-MD default."""

    name: ClassVar[str]
    help: ClassVar[str]
    Config: ClassVar[type] = NoOptions
    brings_potential: ClassVar[bool] = False  # the method brings the potential (``--model`` is refused)
    brings_timestep: ClassVar[bool] = False   # the method's step is its model's (``--timestep`` is refused)
    keeps_constraints: ClassVar[bool] = False  # its integrator keeps X-H constraints and rigid water
    allows_zero_friction: ClassVar[bool] = False  # friction 0 (Newtonian dynamics) is meaningful
    default_system: ClassVar[Optional[str]] = None  # the system when --system is not given
    output_files: ClassVar[Tuple[str, ...]] = ()  # every file the method may write into the run's folder
    reported_files: ClassVar[Tuple[str, ...]] = ()  # those its reporters write, a row per report (see reporters)
    statistics_key: ClassVar[Optional[str]] = None  # summary key of ``integrator.statistics``
    resumable: ClassVar[Tuple[str, ...]] = ()  # its options a resumed run may change (they leave what is simulated)
    train: ClassVar[Optional[Job]] = None
    sample: ClassVar[Optional[Job]] = None  # independent configurations from the method's model
    bench: ClassVar[Optional[Job]] = None

    @classmethod
    def options(cls) -> Tuple[Option, ...]:
        return options_of(cls.Config)

    def unused(self, run) -> Dict[str, str]:
        """The method's options that have no effect in ``run``, each with where it would have one."""
        return {}

    def default_system_of(self, run) -> Optional[str]:
        """The system when ``--system`` is not given (None: the common default)."""
        return self.default_system

    def default_friction(self, run) -> float:
        """Langevin friction (1/ps) when ``--friction`` is not given."""
        return 1.0

    def default_model(self, run) -> Optional[str]:
        """The potential when ``--model`` is not given (None: the common default)."""
        return None

    def system(self, run):
        """The :class:`~openmm_accel.molecular.MolecularSystem` of a method that simulates its own system (e.g.
        a coarse-grained one); None: ``--system`` with ``--model``'s potential."""
        return None

    def prepare(self, run, molecular):
        """Checks and inputs made before the output folder is looked at (e.g. a model file, refused if made for
        another system); what it returns reaches :meth:`integrator` as ``start.prepared``."""
        return None

    def integrator(self, run, start: Start):
        """(the integrator, the state to start from)."""
        raise NotImplementedError

    def load_model(self, path: Optional[str]):
        """The method's model from a model file of its own (None: the method has no model file)."""
        return None

    def save_model(self, path: str, model) -> None:
        """Write ``model`` (what :meth:`load_model` returns) to the shared model-file format."""
        raise NotImplementedError(f"method {self.name!r} has no model file")

    def files(self, run) -> Tuple[str, ...]:
        """The output files this run's integrator writes itself (kept on --overwrite, needed on --resume)."""
        return ()

    def reporters(self, run, molecular, paths: Dict[str, str], integrator) -> list:
        """OpenMM reporters of the method's own, added after the trajectory and log: each writes one of
        :attr:`reported_files` (cut back to the checkpoint on --resume, then appended to) and has ``postfix()``
        (progress-bar fields), ``summary()`` (kept in ``summary.json`` under the method's statistics, by its
        ``key``) and ``close()``."""
        return []

    def progress(self, integrator) -> Dict[str, str]:
        """Fields of the progress bar."""
        return {}

    def describe(self, statistics: dict) -> Optional[str]:
        """One line for the command line from ``integrator.statistics``."""
        return None


_cache: Dict[str, Method] = {}


def methods() -> Dict[str, Method]:
    """Every registered method by name, plain MD (the reference the others are measured against) first."""
    names = registered(ENTRY_POINT_GROUP)
    for name in names:
        if name not in _cache:
            method = load(ENTRY_POINT_GROUP, name, "method", "method")
            if not isinstance(method, Method) or method.name != name:
                raise TypeError(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not a Method named {name!r}")
            _cache[name] = method
    return {name: _cache[name] for name in sorted(names, key=lambda name: (name != "plain", name))}


def get_method(name: str) -> Method:
    """The method registered as ``name`` (an unknown name is refused with the closest known one)."""
    known = methods()
    if name not in known:
        load(ENTRY_POINT_GROUP, name, "method", "method")  # raises with the known names
    return known[name]


def jobs(kind: str) -> Dict[str, Job]:
    """The ``train``, ``sample`` or ``bench`` jobs of the registered methods, by method name."""
    return {name: getattr(method, kind) for name, method in methods().items() if getattr(method, kind)}


__all__ = ["BenchConfig", "Job", "Method", "NoOptions", "SampleConfig", "Start", "get_method", "jobs",
           "methods"]
