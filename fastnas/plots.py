"""PNG plots of a run: search curves, Pareto front, cell graphs (matplotlib, headless)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .pareto import non_dominated  # noqa: E402
from .search_spaces.darts import Genotype  # noqa: E402


def plot_search_curves(metrics: list[dict], path: Path) -> None:
    """Live operators and the sparsity-entropy S against the step."""
    steps = [m["step"] for m in metrics]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(steps, [m["live_ops"] for m in metrics], color="tab:blue")
    left.set(xlabel="step", ylabel="live operators", title="super-network size")
    right.plot(steps, [m["sparsity"] for m in metrics], color="tab:red")
    right.set(xlabel="step", ylabel="S = sum log(1 + 50 w)", title="sparsity entropy")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pareto_front(points: list[dict], path: Path) -> None:
    """Validation error against params and against FLOPs: the non-dominated points joined as the front, the
    dominated ones drawn apart in grey; a circle per Pareto point saved while shrinking, a star for the final one."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, cost, label in ((axes[0], "params", "parameters"), (axes[1], "flops", "FLOPs (MACs)")):
        on_front = non_dominated(points, cost)
        front = sorted((p for p, on in zip(points, on_front) if on), key=lambda p: (p[cost], -p["val_accuracy"]))
        ax.plot([p[cost] for p in front], [100 * (1 - p["val_accuracy"]) for p in front], color="tab:blue",
                lw=1, zorder=1, label="front (non-dominated)")
        for kind, marker in (("pareto", "o"), ("final", "*")):
            for on, style in ((True, dict(color="tab:blue")), (False, dict(facecolors="none", edgecolors="grey"))):
                chosen = [p for p, o in zip(points, on_front) if p["kind"] == kind and o == on]
                ax.scatter([p[cost] for p in chosen], [100 * (1 - p["val_accuracy"]) for p in chosen],
                           marker=marker, s=90 if kind == "final" else 30, zorder=2, **style,
                           label=f"{kind}{'' if on else ', dominated'}" if chosen else None)
        ax.set(xlabel=label, ylabel="validation error (%)", xscale="log")
        ax.legend(fontsize=7)
    fig.suptitle("architectures saved during the search")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_cell(ax, nodes: list, title: str) -> None:
    """One cell: inputs c_{k-2}, c_{k-1} on the left, nodes in a column, op names on the edges."""
    positions = {0: (0.0, 1.0), 1: (0.0, 0.0)}
    for j in range(len(nodes)):
        positions[2 + j] = (1.0 + j, 0.5 + 0.35 * (-1) ** j)
    for j, node in enumerate(nodes):
        x1, y1 = positions[2 + j]
        by_source: dict[int, list[str]] = {}
        for op, source in node:  # parallel operations on one edge share one arrow and one label
            by_source.setdefault(source, []).append(op.replace("_conv", "").replace("_connect", ""))
        for source, ops in by_source.items():
            x0, y0 = positions[source]
            ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", lw=0.8, alpha=0.6))
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, "+".join(ops), fontsize=5, ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", lw=0, alpha=0.8))
    for index, (x, y) in positions.items():
        empty = index >= 2 and not nodes[index - 2]
        label = {0: "k-2", 1: "k-1"}.get(index, str(index - 2))
        ax.scatter([x], [y], s=220, color="lightgrey" if empty else ("tab:green" if index < 2 else "tab:blue"))
        ax.text(x, y, label, fontsize=6, ha="center", va="center", color="white")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_cells(genotype: Genotype, path: Path) -> None:
    """Every cell of a genotype (DNAD: one per cell; DARTS: the normal and the reduction cell)."""
    if genotype.cells is not None:
        cells = [(f"cell {i}", nodes) for i, nodes in enumerate(genotype.cells)]
    else:
        cells = [("normal", genotype.normal), ("reduce", genotype.reduce)]
    columns = min(4, len(cells))
    rows = math.ceil(len(cells) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, nodes) in zip(axes.flat, cells):
        _draw_cell(ax, nodes, title)
    fig.tight_layout()
    fig.savefig(path, dpi=140)
    plt.close(fig)


def plot_proxy_scatter(rows: list[dict], scores, accuracy, path: Path, ylabel: str = "KD accuracy (%)") -> None:
    """One panel per proxy: distilled accuracy against the architecture's rank by the proxy.

    rows: `correlation_table` rows (proxy, kendall, ...) in the order of the rows of scores [P, N]
    (without NaN: pass `nan_as_lowest(scores)`); accuracy [N]. Ranks, not raw scores, since proxies span
    many orders of magnitude (synflow ~1e20).
    """
    columns = min(4, len(rows))
    fig, axes = plt.subplots(math.ceil(len(rows) / columns), columns, figsize=(3.2 * columns, 2.8 * math.ceil(
        len(rows) / columns)), squeeze=False)
    for ax, row, row_scores in zip(axes.flat, rows, scores):
        ranks = row_scores.argsort().argsort() + 1
        ax.scatter(ranks.tolist(), [100 * a for a in accuracy.tolist()], s=12)
        ax.set(title=f"{row['proxy']}  tau={row['kendall']:.2f}", xlabel="proxy rank (1 = lowest)",
               ylabel=ylabel)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_proxy_fitness(metrics: list[dict], path: Path) -> None:
    """Auto-DAS proxy search: best and mean fitness (Kendall tau on the fitting split) per iteration,
    and the best program's held-out Kendall tau when logged."""
    iterations = [m["iteration"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(iterations, [m["best_fitness"] for m in metrics], color="tab:blue", label="best (fit split)")
    ax.plot(iterations, [m["mean_fitness"] for m in metrics], color="tab:gray", label="population mean")
    if metrics and "held_out_kendall" in metrics[0]:
        ax.plot(iterations, [m["held_out_kendall"] for m in metrics], color="tab:red", label="best (held out)")
    ax.set(xlabel="iteration", ylabel="Kendall tau", title="Auto-DAS proxy search")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_alpha_evolution(metrics: list[dict], primitives: list[str], path: Path) -> None:
    """DARTS/SD-DARTS: the softmax weight of each operator, averaged over the edges, per epoch and cell type."""
    epochs = [m for m in metrics if m.get("kind") == "epoch"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, cell in zip(axes, ("normal", "reduce")):
        x = [m["epoch"] for m in epochs]
        for k, name in enumerate(primitives):
            ax.plot(x, [sum(edge[k] for edge in m["weights"][cell]) / len(m["weights"][cell]) for m in epochs],
                    label=name, marker=".")
        ax.set(xlabel="epoch", ylabel="mean softmax weight over edges", title=f"{cell} cell")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sharpness(metrics: list[dict], path: Path) -> None:
    """DARTS/SD-DARTS: the largest Hessian eigenvalue (lambda_max) of the validation loss w.r.t. alpha, per epoch."""
    points = [(m["epoch"], m["sharpness"]) for m in metrics if m.get("kind") == "epoch" and m["sharpness"] is not None]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="tab:red")
    ax.set(xlabel="epoch", ylabel="largest eigenvalue of the Hessian", title="sharpness (val loss w.r.t. alpha)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
