"""The scaling picture of `make bench`: rows/s against dataset size and against shard count, every variant."""

from __future__ import annotations

from pathlib import Path


def scaling_png(sweep: dict[str, dict[str, dict]], path: Path) -> None:
    """Two panels from the sweep (dataset label -> variant -> result): by size at 12+ shards, by shard count at 14M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    by_size = [label for label in sweep if label.endswith("12 shards") or label.startswith("56M")]
    by_count = [label for label in sweep if label.startswith("14M")]
    variants = list(next(iter(sweep.values())))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [(axes[0], by_size, "rows", "dataset size (million rows)"),
              (axes[1], by_count, "shards", "shard count (14M rows)")]
    for ax, labels, key, xlabel in panels:
        for variant in variants:
            xs = [_number(label, key) for label in labels]
            ys = [sweep[label][variant]["rows_per_s"] / 1e6 for label in labels]
            ax.plot(xs, ys, marker="o", label=variant)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # only the measured sizes are labelled
        ax.set_xticks([_number(label, key) for label in labels])
        ax.set_xticklabels([f"{_number(label, key):g}" for label in labels])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("million rows/s (whole process)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title("rows/s by dataset size")
    axes[1].set_title("rows/s by shard count")
    axes[1].legend(fontsize=8)
    fig.suptitle("The Ray example's model on a 2-core machine, cluster up (make bench)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _number(label: str, key: str) -> float:
    """3.5 from '3.5M rows, 12 shards' (key rows), 48 from '56M rows, 48 shards' (key shards)."""
    rows, shards = label.split(", ")
    return float(rows.split("M")[0]) if key == "rows" else float(shards.split()[0])
