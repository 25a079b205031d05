"""Argument checks shared by every public function: one helper per kind of value.

Each check raises :class:`~transferkit.errors.InvalidArgumentError` (or a more specific
transferkit error) whose message names the argument, says what it must be and ends with
``Received: name=value``. Integers go through :func:`operator.index`, so numpy integers are
accepted and floats and bools are not.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Collection, Sequence
from typing import Any, TypeVar

from transferkit.errors import InvalidArgumentError, InvalidImageSizeError

__all__ = [
    "as_int",
    "choice",
    "class_names",
    "fraction",
    "image_size",
    "non_negative_int",
    "optional_positive_int",
    "positive_float",
    "positive_int",
]

T = TypeVar("T")


def as_int(value: object) -> int | None:
    """``value`` as an int if it is an integer of any type (numpy's too), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def positive_int(name: str, value: object) -> int:
    """Returns ``value`` as an int if it is an integer of at least 1."""
    number = as_int(value)
    if number is None or number < 1:
        msg = f"{name} must be a positive int. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return number


def optional_positive_int(name: str, value: object, *, none_means: str) -> int | None:
    """Like :func:`positive_int`, also accepting None (whose meaning the message states)."""
    if value is None:
        return None
    number = as_int(value)
    if number is None or number < 1:
        msg = f"{name} must be None ({none_means}) or a positive int. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return number


def non_negative_int(name: str, value: object) -> int:
    """Returns ``value`` as an int if it is an integer of at least 0."""
    number = as_int(value)
    if number is None or number < 0:
        msg = f"{name} must be an int of 0 or more. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return number


def positive_float(name: str, value: object) -> float:
    """Returns ``value`` as a float if it is a finite real number above 0."""
    if isinstance(value, bool) or not _is_real(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
        msg = f"{name} must be a positive number. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    number = float(value)  # type: ignore[arg-type]
    if number <= 0:
        msg = f"{name} must be a positive number. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return number


def fraction(
    name: str, value: object, *, low_inclusive: bool = False, high_inclusive: bool = False
) -> float:
    """Returns ``value`` as a float if it lies between 0 and 1 (ends as stated)."""
    low, high = ("[" if low_inclusive else "("), ("]" if high_inclusive else ")")
    number = float(value) if _is_real(value) and not isinstance(value, bool) else math.nan  # type: ignore[arg-type]
    above = number >= 0.0 if low_inclusive else number > 0.0
    below = number <= 1.0 if high_inclusive else number < 1.0
    if not (above and below):
        msg = f"{name} must be a number in {low}0, 1{high}. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return number


def choice(name: str, value: T, choices: Collection[Any]) -> T:
    """Returns ``value`` if it is one of ``choices``."""
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        allowed = False
    else:
        try:
            allowed = value in choices
        except TypeError:  # unhashable against a set
            allowed = False
    if not allowed:
        listed = ", ".join(repr(c) for c in choices)
        msg = f"{name} must be one of {listed}. Received: {name}={value!r}"
        raise InvalidArgumentError(msg)
    return value


def image_size(value: object, *, name: str = "image_size") -> tuple[int, int]:
    """Returns an int or ``(height, width)`` pair of positive ints as ``(height, width)``."""
    if as_int(value) is not None:
        sides: tuple[Any, ...] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        sides = tuple(value)
    else:
        sides = ()
    numbers = [as_int(side) for side in sides]
    if len(numbers) != 2 or any(n is None or n < 1 for n in numbers):
        msg = (
            f"{name} must be a positive int or a (height, width) pair of positive ints. "
            f"Received: {name}={value!r}"
        )
        raise InvalidImageSizeError(msg)
    return (int(numbers[0]), int(numbers[1]))  # type: ignore[arg-type]


def class_names(value: object) -> tuple[str, ...] | None:
    """Returns a sequence of unique strings as a tuple; None stays None."""
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not all(isinstance(n, str) for n in value)
    ):
        msg = f"class_names must be a list of strings. Received: class_names={value!r}"
        raise InvalidArgumentError(msg)
    names = tuple(value)
    if len(set(names)) != len(names):
        msg = f"class_names must be unique. Received: class_names={list(names)!r}"
        raise InvalidArgumentError(msg)
    return names


def _is_real(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bytes))
