"""Which saved architectures form the Pareto front of validation accuracy against a cost (params or FLOPs).

A point is a dict with "val_accuracy" (higher is better) and the costs (lower is better), as DNAD writes them
to pareto.json. Point q dominates point p when q costs no more and is no less accurate, and is strictly better in
one of the two; the front is the points no other point dominates (equal points are both on it).
"""

from __future__ import annotations

COSTS = ("params", "flops")


def dominates(q: dict, p: dict, cost: str) -> bool:
    """Whether q is at least as good as p in `cost` and in val_accuracy, and strictly better in one."""
    no_worse = q[cost] <= p[cost] and q["val_accuracy"] >= p["val_accuracy"]
    return no_worse and (q[cost] < p[cost] or q["val_accuracy"] > p["val_accuracy"])


def non_dominated(points: list[dict], cost: str) -> list[bool]:
    """For each point, whether it is on the front of val_accuracy against `cost` (O(n^2): a search saves tens)."""
    return [not any(dominates(q, p, cost) for q in points) for p in points]


def mark_front(points: list[dict]) -> list[dict]:
    """Adds point["non_dominated"] = {"params": bool, "flops": bool} to every point, in place; returns `points`."""
    for cost in COSTS:
        for point, on_front in zip(points, non_dominated(points, cost)):
            point.setdefault("non_dominated", {})[cost] = on_front
    return points
