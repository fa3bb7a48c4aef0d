"""The training curve: loss, learning rate, momentum and positive/negative similarity over steps (PNG)."""
from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curve(metrics_path: str | Path, png_path: str | Path, title: str = "textmoco") -> Path:
    """Four panels from ``metrics.jsonl``: loss (and its q->k / k->q terms), lr, momentum, positive/negative
    cosine with the fraction of queue kept. Headless (Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    if not rows:
        raise ValueError(f"{metrics_path} has no metrics rows to plot")
    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0, 0], "loss", [("loss", "loss"), ("loss_q2k", "q->k"), ("loss_k2q", "k->q"), ("loss_sym", "swapped")]),
        (axes[0, 1], "learning rate", [("lr", "lr")]),
        (axes[1, 0], "key-encoder momentum", [("momentum", "m")]),
        (axes[1, 1], "similarity", [("pos_cos", "positive cos"), ("neg_cos", "kept negative cos"),
                                    ("kept_fraction", "fraction of queue kept")]),
    ]
    for ax, label, series in panels:
        for key, name in series:
            if any(key in r for r in rows):
                values = [r.get(key) for r in rows]
                ax.plot(steps, [float("nan") if v is None else v for v in values], label=name)
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
    fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
