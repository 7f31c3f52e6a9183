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

A study that is resumed must search each parameter as it did: Optuna lets a range change, but
not a choice's values or a parameter's kind. ``check_resumable(space, trials, study_name)``
refuses such a space before any trial is asked (a refused ``study.ask`` would leave its trial
RUNNING).

>>> print(sweep_expression(CategoricalDistribution([0.1, 0.2])), sweep_expression(IntDistribution(1, 8, log=True)))
choice(0.1, 0.2) tag(log, int(interval(1, 8)))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.trial import FrozenTrial

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


def sweep_expression(dist: BaseDistribution) -> str:
    """A distribution written back in Hydra's sweep grammar (for messages)."""
    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(map(str, dist.choices))})"
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if dist.step is not None and not (isinstance(dist, IntDistribution) and dist.step == 1):
            expression = f"range({dist.low}, {dist.high + dist.step}, {dist.step})"
        else:
            expression = f"interval({dist.low}, {dist.high})"
            expression = f"int({expression})" if isinstance(dist, IntDistribution) else expression
        return f"tag(log, {expression})" if dist.log else expression
    return repr(dist)


def check_resumable(space: dict[str, BaseDistribution], trials: Sequence[FrozenTrial], study_name: str) -> None:
    """Raise ValueError if ``space`` searches a parameter of the study's ``trials`` in a way Optuna refuses."""
    stored: dict[str, BaseDistribution] = {}
    for trial in trials:
        for name, dist in trial.distributions.items():
            stored.setdefault(name, dist)
    for name, new in space.items():
        old = stored.get(name)
        if old is None:
            continue
        try:
            check_distribution_compatibility(old, new)
        except ValueError as exc:
            raise ValueError(
                f"{name}: study {study_name!r} searched it as {sweep_expression(old)}, this run asks for "
                f"{sweep_expression(new)}, and Optuna cannot change that within a study ({exc}). Use another "
                f"hydra.sweeper.study_name, or search it as before"
            ) from None
