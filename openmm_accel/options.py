"""Options declared once: a config dataclass is the single source of a command's options.

Each field that is a command-line option is declared with :func:`option`: its default, its flag, help,
unit, bounds (``check``) and choices travel in the field's metadata, and :func:`options_of` derives the
:class:`Option` (argparse argument and validation) from the field and its type annotation::

    @dataclass
    class SamplerConfig:
        samples: int = option(1000, "-n", "configurations to draw", check=count)
        snr: float = option(0.3, "--snr", "signal-to-noise ratio", check=positive_in(unit.dimensionless))

``bool`` fields become switches (``--no-...`` flags switch a default on off), ``int``/``float``/``str``
fields read one value, tuples read one or more (``nargs="+"``). :func:`checked` validates every field of a
config and :func:`from_values` builds a config from argparse's values, so no option is written twice.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from openmm import unit

from .validation import fail, positive

_KEY = "openmm_accel.option"


@dataclass(frozen=True)
class Option:
    """One option of a command: ``name`` is the config field (and argparse destination), ``flag`` the
    command-line spelling, ``check(value, name)`` validates a value (e.g. :func:`validation.count`)."""

    name: str
    flag: str
    default: Any = None
    help: str = ""
    type: Optional[type] = None
    choices: Optional[Sequence] = None
    action: Optional[str] = None  # "store_true" / "store_false"; else a value is read with ``type``
    nargs: Optional[str] = None
    check: Optional[Callable[[Any, str], Any]] = None

    def add_to(self, parser) -> argparse.Action:
        """Add this option to an argparse parser or argument group; returns its action."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        settings: Dict[str, Any] = {"dest": self.name, "default": default, "help": self.help}
        if self.action:
            settings["action"] = self.action
        else:
            settings.update(type=self.type, choices=self.choices, nargs=self.nargs)
        return parser.add_argument(self.flag, **settings)

    def validate(self, value):
        """The value a config holds for this option: checked (``choices``, ``check``) and made plain - a
        quantity converted to the option's unit by its check, numpy numbers as Python's, a path as ``str``, a
        list as a tuple - or refused by name (None stands for "not given" where that is the default)."""
        if value is None and self.default is None:
            return None
        if self.nargs:
            if isinstance(value, (str, bytes)) or not isinstance(value, typing.Iterable):
                raise fail(self.name, "one or more values (a list or tuple)", value)
            value = tuple(_plain_value(item) for item in value)
        else:
            value = _plain_value(value)
        if self.choices is not None and value not in self.choices:
            raise fail(self.name, f"one of {', '.join(map(str, self.choices))}", value)
        if self.check is not None:
            converted = self.check(value, self.name)
            if unit.is_quantity(value) and isinstance(converted, (int, float)):
                value = converted
        for item in value if self.nargs else (value,):
            if not isinstance(item, self.kind) or isinstance(item, bool) != (self.kind is bool):
                raise fail(self.name, _EXPECTED[self.kind], item)
        return float(value) if self.type is float and not self.nargs else value

    @property
    def kind(self) -> type:
        """What each value is: bool for a switch, else argparse's type (None: str); int counts as float."""
        if self.action:
            return bool
        return (int, float) if self.type is float else (self.type or str)


_EXPECTED = {bool: "True or False", int: "an integer", (int, float): "a number (in the option's unit)",
             str: "a str (or a path)"}


def _plain_value(value):
    """numpy scalars as Python numbers, a path as ``str``; anything else as it is."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


@dataclass(frozen=True)
class _Declared:
    flag: str
    help: str
    check: Optional[Callable[[Any, str], Any]]
    choices: Optional[Sequence]


def option(default, flag: str, help: str = "", *, check: Optional[Callable[[Any, str], Any]] = None,
           choices: Optional[Sequence] = None):
    """A config field that is also a command-line option ``flag`` (see the module)."""
    return dataclasses.field(default=default, metadata={_KEY: _Declared(flag, help, check, choices)})


def redefault(config_class, name: str, default):
    """The option ``name`` of ``config_class`` with another default, for a subclass whose job needs one (its
    flag, help and checks stay declared once, in ``config_class``)."""
    field = config_class.__dataclass_fields__[name]
    return dataclasses.field(default=default, metadata=field.metadata)


def positive_in(quantity, argument: Optional[str] = None, allow_zero: bool = False) -> Callable[[Any, str], float]:
    """A ``check``: a positive (or, with ``allow_zero``, non-negative) value in ``quantity`` (errors name
    ``argument``, else the option)."""
    return _Positive(quantity, argument, allow_zero)


@dataclass(frozen=True)
class _Positive:
    quantity: Any
    argument: Optional[str]
    allow_zero: bool

    def __call__(self, value, name):
        return positive(value, self.quantity, self.argument or name, allow_zero=self.allow_zero)


def _plain(annotation) -> Tuple[Any, bool]:
    """(the value type, whether several values are read) of a field annotation: ``Optional[X]`` -> X,
    ``Tuple[X, ...]`` -> X read as one or more values."""
    if typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) in (tuple, list):
        return typing.get_args(annotation)[0], True
    return annotation, False


def options_of(config_class) -> Tuple[Option, ...]:
    """The command-line options a config dataclass declares (its fields made with :func:`option`)."""
    hints = typing.get_type_hints(config_class)
    derived = []
    for field in dataclasses.fields(config_class):
        declared = field.metadata.get(_KEY)
        if declared is None:
            continue
        kind, several = _plain(hints[field.name])
        settings: Dict[str, Any] = {}
        if kind is bool:
            settings["action"] = "store_false" if declared.flag.startswith("--no-") else "store_true"
        else:
            settings.update(type=None if kind is str else kind, nargs="+" if several else None)
        derived.append(Option(field.name, declared.flag, field.default, declared.help, choices=declared.choices,
                              check=declared.check, **settings))
    return tuple(derived)


def checked(config):
    """``config`` with every declared option validated and made plain (quantities in the option's unit,
    Python numbers, paths as ``str``; an :class:`InputError` names the first bad one): a copy if anything
    changed. Use what it returns."""
    changes = {}
    for declared in options_of(type(config)):
        given = getattr(config, declared.name)
        value = declared.validate(given)
        if value is not given and (type(value) is not type(given) or value != given):
            changes[declared.name] = value
    return dataclasses.replace(config, **changes) if changes else config


def from_values(config_class, values: Dict[str, Any]):
    """A ``config_class`` from argparse's values (or any mapping): every field named there, lists of a tuple
    field as tuples."""
    hints = typing.get_type_hints(config_class)
    settings = {}
    for field in dataclasses.fields(config_class):
        if field.name in values:
            value = values[field.name]
            if isinstance(value, list) and _plain(hints[field.name])[1]:
                value = tuple(value)
            settings[field.name] = value
    return config_class(**settings)


def add_options(parser: argparse.ArgumentParser, shared: Sequence[Option], groups: Dict[str, Sequence[Option]],
                title) -> Dict[str, Tuple[Option, Tuple[str, ...]]]:
    """Add ``shared`` options, then each group's in an argument group of its own (``title(name)``); an option
    declared by several groups (same name) is added once, in the first (its help names each group's default).
    Returns name -> (option, the groups declaring it; empty for shared options)."""
    added: Dict[str, Tuple[Option, Tuple[str, ...]]] = {}
    actions = {}
    for declared in shared:
        declared.add_to(parser)
        added[declared.name] = (declared, ())
    for group, options in groups.items():
        section = parser.add_argument_group(title(group))
        for declared in options:
            if declared.name in added:
                first, groups_so_far = added[declared.name]
                added[declared.name] = (first, groups_so_far + (group,))
                if declared.default != first.default and declared.name in actions:  # say so in --help
                    action = actions[declared.name]
                    if len(groups_so_far) == 1:  # the first other default: name the first job's too
                        action.help = "; ".join(filter(None, [action.help, f"{title(groups_so_far[0])}: "
                                                                           f"{first.default}"]))
                    action.help += f"; {title(group)}: {declared.default}"
                    action.default = argparse.SUPPRESS  # no single "(default: ...)": each job uses its own
                continue
            actions[declared.name] = declared.add_to(section)
            added[declared.name] = (declared, (group,))
    return added


__all__ = ["Option", "add_options", "checked", "from_values", "option", "options_of", "positive_in", "redefault"]
