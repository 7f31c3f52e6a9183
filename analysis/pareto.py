"""Pareto fronts: the rows no other row beats on both of two columns.

A row is dominated when another row is at least as good on both columns and strictly better
on one ("good" follows each column's direction). ``pareto_front`` returns the non-dominated
rows sorted along the first column; ``fronts_by`` does it per value of a hyperparameter.
Rejected iterations (``rejected``: a run crossed its validation threshold or diverged there,
and returned the network before; no checkpoint exists) are left out unless
``include_rejected=True``: a front is made of networks that can be loaded.

>>> import pandas as pd
>>> rows = pd.DataFrame({"reduction": [0.1, 0.5, 0.5, 0.9], "validation_accuracy": [98, 97, 95, 90]})
>>> pareto_front(rows).index.tolist()
[0, 1, 3]
>>> rows["rejected"] = [False, False, False, True]
>>> pareto_front(rows).index.tolist(), pareto_front(rows, include_rejected=True).index.tolist()
([0, 1], [0, 1, 3])
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(
    table: pd.DataFrame,
    x: str = "reduction",
    y: str = "validation_accuracy",
    maximize: tuple[bool, bool] = (True, True),
    include_rejected: bool = False,
) -> pd.DataFrame:
    """The non-dominated rows of ``table`` for columns ``x`` and ``y`` (rows with NaN are ignored)."""
    for column in (x, y):
        if column not in table:
            raise ValueError(f"column {column!r} is not in the table; columns: {list(table.columns)}")
    rows = table.dropna(subset=[x, y])
    if not include_rejected and "rejected" in rows:
        rows = rows[~rows["rejected"].astype(bool)]
    a = rows[x].to_numpy(float) * (1 if maximize[0] else -1)
    b = rows[y].to_numpy(float) * (1 if maximize[1] else -1)
    order = np.lexsort((-b, -a))  # best x first; among equal x, best y first
    keep, best_b = [], -np.inf
    for i in order:
        if b[i] > best_b:
            keep.append(i)
            best_b = b[i]
    front = rows.iloc[keep]
    return front.sort_values(x)


def fronts_by(
    table: pd.DataFrame,
    by: str,
    x: str = "reduction",
    y: str = "validation_accuracy",
    maximize: tuple[bool, bool] = (True, True),
    include_rejected: bool = False,
) -> pd.DataFrame:
    """``pareto_front`` of each group of rows sharing a value of ``by`` (concatenated)."""
    if by not in table:
        raise ValueError(f"column {by!r} is not in the table; columns: {list(table.columns)}")
    return pd.concat([pareto_front(group, x, y, maximize, include_rejected) for _, group in table.groupby(by)])
