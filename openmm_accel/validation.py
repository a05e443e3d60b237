"""Input validation shared by the whole package.

Every check raises :class:`InputError` (a ``ValueError``) whose message names the argument, what was
expected and what was supplied, so a mistake in a long script is found at once and nothing is lost.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Optional

import numpy as np
from openmm import unit


class InputError(ValueError):
    """Bad input to an ``openmm_accel`` function or command."""


class SimulationError(RuntimeError):
    """A simulation reached a state it cannot continue from (non-finite positions, energies or forces)."""


def fail(argument: str, expected: str, supplied) -> InputError:
    """Build the standard error: ``argument``: expected ..., got .... (a str ``supplied`` is a description)."""
    shown = supplied if isinstance(supplied, str) else repr(supplied)
    return InputError(f"{argument}: expected {expected}, got {shown}")


def closest_name(name: str, choices: Iterable[str], argument: str, kind: str) -> InputError:
    """Error for an unknown name, suggesting the closest known one."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return InputError(f"{argument}: unknown {kind} {name!r}{hint} Known: {', '.join(choices)}")


def strip_unit(value, default_unit: unit.Unit, argument: str) -> float:
    """Return ``value`` as a float in ``default_unit``; plain numbers are taken to be in that unit."""
    if unit.is_quantity(value):
        if not value.unit.is_compatible(default_unit):
            raise fail(argument, f"a quantity compatible with {default_unit}", value)
        value = value.value_in_unit(default_unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise fail(argument, f"a number or a quantity in {default_unit}", value) from None
    if not np.isfinite(number):
        raise fail(argument, "a finite number", value)
    return number


def positive(value, default_unit: unit.Unit, argument: str, allow_zero: bool = False) -> float:
    """Like :func:`strip_unit`, and require the value to be > 0 (or >= 0)."""
    number = strip_unit(value, default_unit, argument)
    if number < 0 or (number == 0 and not allow_zero):
        raise fail(argument, "a positive value" if not allow_zero else "a non-negative value", value)
    return number


def count(value, argument: str, expected: str = "a positive integer", minimum: int = 1,
          maximum: Optional[int] = None) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum`` (and <= ``maximum``; bools and fractions
    are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum or (
            maximum is not None and value > maximum):
        raise fail(argument, expected, value)
    return int(value)


#: Seeds are passed to OpenMM, whose random number seeds are 32-bit signed integers.
LARGEST_SEED = 2**31 - 1


def check_seed(value, argument: str, minimum: int = 1) -> int:
    """``value`` if it is an integer seed from ``minimum`` to :data:`LARGEST_SEED` (OpenMM's integrators read
    0 as "from the clock", so a seed that reaches one starts at 1)."""
    return count(value, argument, f"an integer seed from {minimum} to {LARGEST_SEED}"
                 + (" (OpenMM reads 0 as 'from the clock')" if minimum else ""), minimum, LARGEST_SEED)


def as_array(value, default_unit: unit.Unit, argument: str) -> np.ndarray:
    """``value`` as a float64 array in ``default_unit``: an ``openmm.unit`` Quantity, or a list of them, is
    converted (an incompatible unit is refused), anything else is read as already in that unit."""
    if isinstance(value, (list, tuple)) and any(unit.is_quantity(item) for item in value):
        return np.array([as_array(item, default_unit, argument) for item in value])
    if unit.is_quantity(value):
        if not value.unit.is_compatible(default_unit):
            raise fail(argument, f"values in {default_unit} (or a compatible unit)", f"a quantity in {value.unit}")
        value = value.value_in_unit(default_unit)
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(argument, f"numbers in {default_unit}", type(value).__name__) from None


def as_positions(positions, n_atoms: int | None, argument: str = "positions") -> np.ndarray:
    """Positions as a finite float64 ``(n_atoms, 3)`` array in nm (accepts Quantity or array-like)."""
    array = as_array(positions, unit.nanometer, argument)
    if array.ndim != 2 or array.shape[1] != 3 or (n_atoms is not None and array.shape[0] != n_atoms):
        want = f"({n_atoms}, 3)" if n_atoms is not None else "(n_atoms, 3)"
        raise fail(argument, f"an array of shape {want} in nm", f"shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.argwhere(~np.isfinite(array))[0, 0])
        raise fail(argument, "finite coordinates", f"non-finite coordinate at atom {bad}")
    return array


def choice(value: str, choices: Iterable[str], argument: str) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise a 'did you mean' error."""
    choices = list(choices)
    if value not in choices:
        raise closest_name(str(value), choices, argument, "option")
    return value
