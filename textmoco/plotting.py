"""The training curve: loss, learning rate, momentum and positive/negative similarity over steps (PNG)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curve(metrics_path: str | Path, png_path: str | Path, title: str = "textmoco",
                        eval_metrics: Sequence[str] = ()) -> Path:
    """Panels from ``metrics.jsonl``: loss (and its q->k / k->q terms), lr, momentum, positive/negative cosine with
    the fraction of queue kept, and — when rows hold any of ``eval_metrics`` (the evaluation during training) — an
    evaluation panel with those at the steps they were measured. Headless (Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path} has no metrics rows to plot")
    panels = [
        ("loss", [("loss", "loss"), ("loss_q2k", "q->k"), ("loss_k2q", "k->q"), ("loss_sym", "swapped")]),
        ("learning rate", [("lr", "lr")]),
        ("key-encoder momentum", [("momentum", "m")]),
        ("similarity", [("pos_cos", "positive cos"), ("neg_cos", "kept negative cos"),
                        ("kept_fraction", "fraction of queue kept")]),
    ]
    evaluated = [k for k in eval_metrics if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if evaluated:
        panels.append((f"evaluation during training: {', '.join(evaluated)}", [(k, k) for k in evaluated]))
    columns = (len(panels) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(5 * columns, 7), sharex=True, squeeze=False)
    for ax, (label, series) in zip(axes.flat, panels):
        for key, name in series:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:  # a metric measured at some steps only is drawn at those (with markers)
                xs, ys = zip(*points)
                ax.plot(xs, [float("nan") if v is None else v for v in ys], label=name,
                        marker="o" if len(points) < len(rows) else None)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
