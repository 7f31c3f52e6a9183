"""Hydra's sweep grammar -> Optuna distributions.

=====================================  =====================================================
Hydra expression                       Optuna distribution
=====================================  =====================================================
``choice(a, b, c)`` or ``a,b,c``       ``CategoricalDistribution([a, b, c])``
``range(1, 10)`` (stop exclusive)      ``IntDistribution(1, 9)``; ``range(0, 1, 0.25)`` ->
                                       ``FloatDistribution(0, 0.75, step=0.25)``
``interval(0.01, 0.2)``                ``FloatDistribution(0.01, 0.2)``
``int(interval(1, 8))``                ``IntDistribution(1, 8)``
``tag(log, interval(1e-4, 1e-1))``     the same with ``log=True``
=====================================  =====================================================

>>> space, fixed = search_space(["a=interval(0.01,0.2)", "b=range(1,10,2)", "c=x,y", "d=3"])
>>> space["a"], space["b"], space["c"].choices, fixed
(FloatDistribution(high=0.2, log=False, low=0.01, step=None), IntDistribution(high=9, log=False, low=1, step=2), \
('x', 'y'), ['d=3'])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

GRAMMAR = "choice(a,b), a,b, range(start,stop[,step]), interval(low,high), int(interval(...)), tag(log, ...)"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override."""
    key, sweep = override.get_key_element(), override.value()
    log = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        if log:
            raise ValueError(f"{key}: tag(log, ...) applies to range() and interval(), not to choice()")
        return CategoricalDistribution([v for v in sweep.list])
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        values = [start + k * step for k in range(max(0, math.ceil((stop - start) / step - 1e-12)))]
        if not values:
            raise ValueError(f"{key}: range({start}, {stop}, {step}) is empty (its stop is exclusive)")
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(start, values[-1], log=log, step=1 if log else step)
        return FloatDistribution(float(start), float(values[-1]), log=log, step=None if log else float(step))
    if isinstance(sweep, IntervalSweep):
        if isinstance(sweep.start, int) and isinstance(sweep.end, int):
            return IntDistribution(sweep.start, sweep.end, log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise ValueError(f"{key}: unsupported sweep {override.input_line!r}; use {GRAMMAR}")


def search_space(arguments: Sequence[str], config_loader=None) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Split overrides into the searched distributions and the fixed overrides every trial gets."""
    parser = OverridesParser.create(config_loader=config_loader)
    space, fixed = {}, []
    for override in parser.parse_overrides(list(arguments)):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def grid(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """Every value of every dimension, for Optuna's GridSampler (continuous intervals are refused)."""
    out = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = list(dist.choices)
        elif dist.step is not None and not dist.log:
            count = round((dist.high - dist.low) / dist.step) + 1
            out[key] = [dist.low + k * dist.step for k in range(count)]
        else:
            raise ValueError(f"{key}: the grid sampler needs choice() or range() values, not a continuous {dist!r}")
    return out


def as_override(key: str, value) -> str:
    """``key=value`` in Hydra's override syntax (strings quoted when they need it)."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, str) and not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"{key}='{escaped}'"
    if _number(value) or isinstance(value, (bool, str)):
        return f"{key}={value}"
    raise TypeError(f"{key}: cannot pass {value!r} as an override")
