"""Channel labels: which removable channel each tensor position belongs to.

The graph analysis gives every output channel of a prunable layer (a conv filter, a
hidden unit of a linear layer) its own integer *slot*. Each tensor in the traced network carries
a label array: an integer array with the tensor's number of dimensions, broadcastable to
the tensor's shape, whose entries name the slot of every position. A conv output of shape
``(N, C, H, W)`` has labels of shape ``(1, C, 1, 1)``; after ``flatten`` the labels have
shape ``(1, C*H*W)`` and repeat each slot ``H*W`` times, which is exactly the mapping a
following ``Linear`` needs.

Operations that tie channels together (residual additions, squeeze-and-excitation
products, grouped convolutions, group norms) *unify* slots in a union-find structure:
unified slots form one removal unit. Slots that must never be removed (they reach the
network output, an unsupported operation, or a network input) are *blocked* with a reason.

>>> slots = SlotTable()
>>> a, b = slots.new_slots(3), slots.new_slots(3)
>>> slots.unify_arrays(a, b)
>>> slots.find(int(a[0])) == slots.find(int(b[0]))
True
>>> slots.block(a[:1], "reaches the network output")
>>> sorted(slots.reasons(int(b[0])))
['reaches the network output']
"""

from __future__ import annotations

from collections import deque

import numpy as np


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, ascending: ``np.unique`` by one sort (NumPy 2's hashing
    ``np.unique`` takes three times as long on the slot arrays here).

    >>> distinct(np.array([[3, 1], [3, 2]])).tolist()
    [1, 2, 3]
    """
    ordered = np.sort(values, axis=None)
    keep = np.ones(ordered.size, dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


class SlotTable:
    """Union-find over channel slots, with the reasons a slot class cannot be removed."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self._reasons: dict[int, set[str]] = {}

    def __len__(self) -> int:
        return len(self._parent)

    def new_slots(self, count: int) -> np.ndarray:
        """Create ``count`` fresh slots and return their ids."""
        start = len(self._parent)
        self._parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def new_blocked(self, reason: str) -> int:
        """One fresh slot that is blocked from the start (inputs, unsupported outputs)."""
        slot = int(self.new_slots(1)[0])
        self._reasons[slot] = {reason}
        return slot

    def find(self, slot: int) -> int:
        parent = self._parent
        root = slot
        while parent[root] != root:
            root = parent[root]
        while parent[slot] != root:
            parent[slot], slot = root, parent[slot]
        return root

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self._parent[rb] = ra
        moved = self._reasons.pop(rb, None)
        if moved:
            self._reasons.setdefault(ra, set()).update(moved)
        return ra

    def unify_arrays(self, a: np.ndarray, b: np.ndarray) -> None:
        """Unify ``a`` and ``b`` position by position (they must broadcast together).

        Where every greater root of a pair is in that pair alone, the pairs are linked at once; the classes,
        their roots (each class's least slot) and reasons are those of one ``union`` per position:

        >>> def same_as_union_by_union(seed: int) -> bool:
        ...     fast, slow, rng = SlotTable(), SlotTable(), np.random.default_rng(seed)
        ...     for table in (fast, slow):
        ...         _ = table.new_slots(60)
        ...         table.block(np.array([5, 33, 41, 50, 57, 59]), "reaches the network output")
        ...     for size in [6, 4, 8, 3, 5, 6]:
        ...         a, b = rng.integers(0, 60, size), rng.integers(0, 60, size)
        ...         fast.unify_arrays(a, b)
        ...         for x, y in zip(a.tolist(), b.tolist()):
        ...             _ = slow.union(x, y)
        ...     return np.array_equal(fast.all_roots(), slow.all_roots()) and all(
        ...         fast.reasons(i) == slow.reasons(i) for i in range(60)
        ...     )
        >>> all(same_as_union_by_union(seed) for seed in range(5))
        True
        """
        a, b = np.broadcast_arrays(a, b)
        size, parent, find = len(self._parent), self._parent, self.find
        keys = distinct(a * size + b)  # one sort of int64 keys, not a 2-D unique
        slots = np.concatenate([keys // size, keys % size])
        roots = np.fromiter(map(parent.__getitem__, slots.tolist()), np.int64, slots.size)  # each slot's parent...
        moved = np.flatnonzero(roots != slots)
        if moved.size:  # ...which is its root unless it was linked to another slot
            roots[moved] = [find(x) for x in slots[moved].tolist()]
        low, high = (
            np.minimum(roots[: keys.size], roots[keys.size :]),
            np.maximum(roots[: keys.size], roots[keys.size :]),
        )
        pairs = distinct((low * size + high)[low != high])
        low_list, high_list = (pairs // size).tolist(), (pairs % size).tolist()
        greater = set(high_list)
        if len(greater) == len(high_list) and greater.isdisjoint(low_list):
            # each greater root in one pair and never a lesser one (a product's two factors, a grouped layer's
            # groups times the channels of each): every greater root joins its lesser one at once
            deque(map(parent.__setitem__, high_list, low_list), 0)
            for moved in self._reasons.keys() & greater:
                self._reasons.setdefault(low_list[high_list.index(moved)], set()).update(self._reasons.pop(moved))
        else:
            for x, y in zip(low_list, high_list):
                self.union(x, y)

    def unify_all(self, slots: np.ndarray) -> int:
        """Unify every slot in ``slots`` into one class and return its root."""
        flat = distinct(slots)
        first = int(flat[0])
        for other in flat[1:]:
            self.union(first, int(other))
        return self.find(first)

    def unify_rows(self, rows: np.ndarray) -> np.ndarray:
        """``unify_all`` on each row of a 2-D array (a grouped convolution's groups): the root of each row.

        >>> slots = SlotTable()
        >>> slots.unify_rows(slots.new_slots(6).reshape(3, 2)).tolist(), slots.find(5)
        ([0, 2, 4], 4)
        """
        flat, parent = rows.ravel().tolist(), self._parent
        if len(set(flat)) == len(flat) and [parent[s] for s in flat] == flat and self._reasons.keys().isdisjoint(flat):
            low = rows.min(axis=1)  # distinct roots without reasons: each row's least one becomes its root
            deque(map(parent.__setitem__, flat, np.repeat(low, rows.shape[1]).tolist()), 0)
            return low
        return np.asarray([self.unify_all(row) for row in rows], dtype=np.int64)

    def block(self, slots: np.ndarray, reason: str) -> None:
        for slot in distinct(slots).tolist():
            self._reasons.setdefault(self.find(int(slot)), set()).add(reason)

    def reasons(self, slot: int) -> set[str]:
        return self._reasons.get(self.find(slot), set())

    def root_reasons(self) -> dict[int, set[str]]:
        """The reasons recorded so far, by the root of the slots they hold for."""
        found: dict[int, set[str]] = {}
        for slot, reasons in self._reasons.items():
            found.setdefault(self.find(slot), set()).update(reasons)
        return found

    def all_roots(self) -> np.ndarray:
        """The root of every slot, by pointer jumping over the whole parent array."""
        parent = np.asarray(self._parent, dtype=np.int64)
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand


def squeeze_constant(labels: np.ndarray) -> np.ndarray:
    """Shrink every dimension along which the labels do not vary to size 1."""
    return squeeze_constant_from(labels, 0)


def squeeze_constant_from(labels: np.ndarray, first: int) -> np.ndarray:
    """``squeeze_constant``, for the dimensions from ``first`` on only."""
    for dim in range(first, labels.ndim):
        if labels.shape[dim] > 1:
            first = labels.take([0], axis=dim)
            if (labels == first).all():
                labels = first
    return np.ascontiguousarray(labels)


def varying_dims(labels: np.ndarray) -> list[int]:
    """Dimensions along which the (squeezed) labels may differ."""
    return [d for d, size in enumerate(labels.shape) if size > 1]


def along(labels: np.ndarray, dim: int, size: int) -> np.ndarray | None:
    """The label vector along ``dim``, or None when the labels also vary along another dim."""
    if any(d != dim for d in varying_dims(labels)):
        return None
    return np.broadcast_to(labels.reshape(-1), (size,)).copy() if labels.shape[dim] == 1 else labels.reshape(-1).copy()


def shaped(vector: np.ndarray, ndim: int, dim: int) -> np.ndarray:
    """Put a label vector along ``dim`` of an ``ndim``-dimensional label array."""
    shape = [1] * ndim
    shape[dim] = vector.size
    return vector.reshape(shape)


def leaves(value):
    """Every non-container value inside nested tuples, lists and dicts."""
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    else:
        yield value


def label_arrays(labels):
    """Every label array inside a nested structure of labels."""
    return (leaf for leaf in leaves(labels) if isinstance(leaf, np.ndarray))
