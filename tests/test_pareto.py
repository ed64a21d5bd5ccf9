"""The Pareto front of saved architectures: dominance on a hand case, pareto.json's marks, the plot's front line."""

import json

import pytest

from fastnas import plots
from fastnas.pareto import dominates, mark_front, non_dominated


def point(kind, params, flops, accuracy):
    return {"kind": kind, "params": params, "flops": flops, "val_accuracy": accuracy}


# By hand, with params: A and its twin F (equal points never dominate each other), B and G are on the front;
# C (costs more than A, less accurate), D (costs as much as B, less accurate) and E (as accurate as B, costs
# more) are dominated. With FLOPs the order differs: C is the cheapest there and so on the front, A and F cost
# more than C and are more accurate (on it too), B, D and E are dominated by G (more accurate, fewer FLOPs).
POINTS = [
    point("pareto", 100, 50, 0.90),  # A
    point("pareto", 200, 70, 0.95),  # B
    point("pareto", 150, 10, 0.85),  # C
    point("pareto", 200, 80, 0.90),  # D
    point("pareto", 300, 90, 0.95),  # E
    point("pareto", 100, 50, 0.90),  # F, A's twin
    point("final", 400, 60, 0.97),   # G
]
ON_PARAMS_FRONT = [True, True, False, False, False, True, True]
ON_FLOPS_FRONT = [True, False, True, False, False, True, True]


def test_dominance_on_a_hand_case():
    assert non_dominated(POINTS, "params") == ON_PARAMS_FRONT
    assert non_dominated(POINTS, "flops") == ON_FLOPS_FRONT
    a, b, c = POINTS[:3]
    assert dominates(a, c, "params") and not dominates(c, a, "params")
    assert not dominates(a, POINTS[5], "params")  # equal points
    assert not dominates(a, b, "params") and not dominates(b, a, "params")  # a trade-off
    assert non_dominated([], "params") == []


def test_pareto_json_marks_per_cost():
    points = [dict(p) for p in POINTS]
    assert mark_front(points) is points
    assert [p["non_dominated"] for p in points] == [{"params": on_p, "flops": on_f}
                                                     for on_p, on_f in zip(ON_PARAMS_FRONT, ON_FLOPS_FRONT)]
    assert json.loads(json.dumps(points)) == points  # stays plain JSON


def test_the_plot_joins_the_front_and_draws_the_dominated_apart(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to look at what was drawn
    plots.plot_pareto_front(POINTS, tmp_path / "pareto.png")
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [figure] = figures
    for ax, cost, on_front in zip(figure.axes, ("params", "flops"), (ON_PARAMS_FRONT, ON_FLOPS_FRONT)):
        [line] = ax.lines
        front = sorted((p[cost], 100 * (1 - p["val_accuracy"])) for p, on in zip(POINTS, on_front) if on)
        assert list(line.get_xdata()) == [x for x, _ in front]
        assert list(line.get_ydata()) == pytest.approx([y for _, y in front])
        drawn = {}
        for collection in ax.collections:
            drawn[collection.get_label()] = sorted(map(tuple, collection.get_offsets().tolist()))
        dominated = sorted((p[cost], 100 * (1 - p["val_accuracy"])) for p, on in zip(POINTS, on_front) if not on)
        assert [x for x, _ in drawn["pareto, dominated"]] == [x for x, _ in dominated]
        assert [y for _, y in drawn["pareto, dominated"]] == pytest.approx([y for _, y in dominated])
        assert len(drawn["pareto"]) + len(drawn.get("final", [])) == sum(on_front)
    plots.plt.close(figure)
