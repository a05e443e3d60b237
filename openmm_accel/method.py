"""The method registry: every way of running dynamics (plain MD, speculative dynamics, FlashMD, ...) is one
:class:`Method` record, registered in the ``openmm_accel.methods`` entry-point group by the folder that
implements it. ``openmm-accel run/train/bench`` and :func:`openmm_accel.simulate.run` know methods only
through these records: their options (grouped per method in ``--help``, refused with any other method),
how to build the integrator, and their ``train`` and ``bench`` jobs. Adding a method is one folder and one
entry point; no other method and no application module changes.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .registry import load, registered
from .validation import fail, positive

ENTRY_POINT_GROUP = "openmm_accel.methods"


def _always(config) -> bool:
    return True


@dataclass(frozen=True)
class Option:
    """One option of a command: ``name`` is the config field (and argparse destination), ``flag`` the
    command-line spelling. ``check(value, name)`` validates a value (e.g. :func:`validation.count`);
    ``applies(config)`` says when it has an effect within its method, ``where`` says so in the error that
    refuses it otherwise (e.g. ``--workers`` only ``--scheduler ray``)."""

    name: str
    flag: str
    default: Any = None
    help: str = ""
    type: Optional[Callable] = None
    choices: Optional[Sequence] = None
    action: Optional[str] = None  # "store_true" / "store_false"; else a value is read with ``type``
    nargs: Optional[str] = None
    check: Optional[Callable[[Any, str], Any]] = None
    applies: Callable[[Any], bool] = _always
    where: str = ""

    def add_to(self, parser) -> argparse.Action:
        """Add this option to an argparse parser or argument group; returns its action."""
        settings: Dict[str, Any] = {"dest": self.name, "default": self.default, "help": self.help}
        if self.action:
            settings["action"] = self.action
        else:
            settings.update(type=self.type, choices=self.choices, nargs=self.nargs)
        return parser.add_argument(self.flag, **settings)

    def validate(self, value) -> None:
        """Refuse a value out of ``choices`` or failing ``check`` (None stands for "not given" where that is
        the default)."""
        if value is None and self.default is None:
            return
        if self.choices is not None and value not in self.choices:
            raise fail(self.name, f"one of {', '.join(map(str, self.choices))}", value)
        if self.check is not None:
            self.check(value, self.name)


def positive_in(quantity, argument: Optional[str] = None, allow_zero: bool = False) -> Callable[[Any, str], float]:
    """An :class:`Option` check: a positive (or, with ``allow_zero``, non-negative) value in ``quantity``
    (errors name ``argument``, else the option)."""
    return lambda value, name: positive(value, quantity, argument or name, allow_zero=allow_zero)


@dataclass(frozen=True)
class Command:
    """A method's ``train`` or ``bench`` job: its options and ``run(args)``, which returns the line to print."""

    help: str
    options: Tuple[Option, ...]
    run: Callable[[argparse.Namespace], Optional[str]]


@dataclass(frozen=True)
class Method:
    """What ``run`` needs of a method.

    ``build(config, setup, state, platform, prepared, paths)`` returns the integrator and the state to start
    from (``setup``: :class:`openmm_accel.systems.Setup`, the standard system with ``--model``'s potential, or
    what the method's own ``setup(config)`` builds, e.g. a coarse-grained system; ``prepared``: what ``prepare(config, setup)``
    returned, which runs before the output folder is looked at, so that e.g. a mismatched model file is
    refused before anything is touched; ``paths``: the run's output files, by name).
    """

    name: str
    help: str
    build: Callable
    options: Tuple[Option, ...] = ()
    setup: Optional[Callable] = None   # config -> Setup, for a method that simulates its own system (else --model's)
    own_potential: bool = False        # the method brings the potential (``--model`` is refused)
    prepare: Optional[Callable] = None
    default_friction: Callable[[Any], float] = lambda config: 1.0  # 1/ps
    default_system: Optional[str] = None  # the system when --system is not given (else the common default)
    default_model: Optional[Callable[[Any], str]] = None  # config -> the potential when --model is not given
    zero_friction: bool = False        # friction 0 (Newtonian dynamics) is meaningful
    keeps_constraints: bool = False    # its integrator keeps X-H constraints and rigid water (``--constraints``)
    own_timestep: bool = False         # the method's step is its model's (``--timestep`` is refused)
    # output files ``build`` writes (kept on --overwrite, needed on --resume), and every name it may return
    files: Callable[[Any], Tuple[str, ...]] = lambda config: ()
    all_files: Tuple[str, ...] = ()
    progress: Optional[Callable[[Any], Dict[str, str]]] = None  # integrator -> progress-bar fields
    statistics_key: Optional[str] = None  # summary key of ``integrator.statistics``
    describe: Optional[Callable[[dict], str]] = None  # statistics -> one line for the command line
    train: Optional[Command] = None
    bench: Optional[Command] = None
    sample: Optional[Command] = None  # independent configurations from the method's model

    def applies(self, option: Option, config) -> bool:
        """Whether ``option`` (one of this method's) has an effect in ``config``."""
        return config.method == self.name and option.applies(config)


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


def commands(kind: str) -> Dict[str, Command]:
    """The ``train`` or ``bench`` commands of the registered methods, by method name."""
    return {name: getattr(method, kind) for name, method in methods().items() if getattr(method, kind)}


def add_options(parser: argparse.ArgumentParser, shared: Sequence[Option], groups: Dict[str, Sequence[Option]],
                title: Callable[[str], str]) -> Dict[str, Tuple[Option, Tuple[str, ...]]]:
    """Add ``shared`` options, then each group's in an argument group of its own (``title(name)``); an option
    declared by several groups (same name) is added once, in the first. Returns name -> (option, the groups
    declaring it; empty for shared options)."""
    added: Dict[str, Tuple[Option, Tuple[str, ...]]] = {}
    actions = {}
    for option in shared:
        option.add_to(parser)
        added[option.name] = (option, ())
    for group, options in groups.items():
        section = parser.add_argument_group(title(group))
        for option in options:
            if option.name in added:
                first, groups_so_far = added[option.name]
                added[option.name] = (first, groups_so_far + (group,))
                if option.default != first.default and option.name in actions:  # say so in --help
                    action = actions[option.name]
                    if len(groups_so_far) == 1:  # the first other default: name the first job's too
                        action.help = "; ".join(filter(None, [action.help, f"{title(groups_so_far[0])}: "
                                                                           f"{first.default}"]))
                    action.help += f"; {title(group)}: {option.default}"
                continue
            actions[option.name] = option.add_to(section)
            added[option.name] = (option, (group,))
    return added


def job_defaults(args: argparse.Namespace, options: Sequence[Option], given: set) -> None:
    """Give every option of the chosen job that the user did not set that job's own default (argparse knows
    only the first default of an option several jobs declare)."""
    for option in options:
        if option.name not in given:
            setattr(args, option.name, option.default)


__all__ = ["Command", "Method", "Option", "add_options", "commands", "get_method", "job_defaults", "methods",
           "positive_in"]
