"""``check_number``: the one check of a numeric option, with the message every option gives.

A bool is never a number here (``True`` is an ``int`` to Python, never a learn rate to a user),
NaN is in no interval, and the message names the option, what is allowed and the value given.

>>> check_number("goal", 0.5, "(0, 1]")
>>> check_number("goal", 0, "(0, 1]")
Traceback (most recent call last):
...
ValueError: goal must be a number in (0, 1], got 0
>>> check_number("max_epochs", 2.0, "[1, inf)", integer=True)
Traceback (most recent call last):
...
ValueError: max_epochs must be a positive integer, got 2.0
>>> check_number("flops_weight", float("nan"), "[0, inf)")
Traceback (most recent call last):
...
ValueError: flops_weight must be a number >= 0, got nan
"""

from __future__ import annotations

import math
import re
from typing import TypeGuard

_INTERVAL = re.compile(r"^([\[(])\s*([-+]?(?:inf|[0-9.e+-]+))\s*,\s*([-+]?(?:inf|[0-9.e+-]+))\s*([\])])$")


def is_number(value: object, *, integer: bool = False) -> TypeGuard[int | float]:
    """Whether ``value`` is an int (or, unless ``integer``, a float), and not a bool."""
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def check_number(name: str, value: object, interval: str = "(-inf, inf)", *, integer: bool = False) -> None:
    """Raise ValueError unless ``value`` is a number (an int with ``integer``) in ``interval``.

    ``interval`` is written as in mathematics: "(0, 1]", "[0, 1)", "[1, inf)".
    """
    low_bracket, low, high, high_bracket = _parse(interval)
    inside = False
    if is_number(value, integer=integer):
        number = float(value)
        inside = (low <= number if low_bracket == "[" else low < number) and (
            number <= high if high_bracket == "]" else number < high
        )
    if not inside:
        raise ValueError(f"{name} must be {describe(interval, integer=integer)}, got {value!r}")


def describe(interval: str, *, integer: bool = False) -> str:
    """What ``check_number`` asks for, in words: "a positive integer", "a number in (0, 1]".

    >>> describe("(0, inf)"), describe("[0, inf)", integer=True)
    ('a positive number', 'an integer >= 0')
    """
    low_bracket, low, high, _ = _parse(interval)
    kind = "an integer" if integer else "a number"
    if high != math.inf:
        return f"{kind} in {interval}"
    if low == -math.inf:
        return kind
    if (low_bracket == "(" and low == 0) or (integer and low_bracket == "[" and low == 1):
        return f"a positive {kind.split()[-1]}"
    return f"{kind} {'>=' if low_bracket == '[' else '>'} {low:g}"


def _parse(interval: str) -> tuple[str, float, float, str]:
    match = _INTERVAL.match(interval)
    if match is None:
        raise ValueError(f"interval {interval!r} is not an interval; write it as '(0, 1]' or '[1, inf)'")
    low_bracket, low, high, high_bracket = match.groups()
    return low_bracket, float(low), float(high), high_bracket
