"""Run outputs: rounds.jsonl, summary.json and the accuracy-vs-bytes plot (all written atomically)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write


def summary_of(config: dict[str, Any], label: str, history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's totals, from the per-round records (bytes that crossed)."""
    last = history[-1] if history else {}
    return {
        "config": label,
        "settings": config,
        "rounds": len(history),
        "final_accuracy": last.get("accuracy"),
        "final_loss": last.get("loss"),
        "best_accuracy": max((r["accuracy"] for r in history), default=None),
        # one round's test accuracy moves by a few test images; the last-5 mean is steadier
        "mean_last5_accuracy": _mean([r["accuracy"] for r in history[-5:]]),
        "total_bytes_up": sum(r["bytes_up"] for r in history),
        "total_bytes_down": sum(r["bytes_down"] for r in history),
        "encode_s": sum(r["encode_s"] for r in history),
        "decode_s": sum(r["decode_s"] for r in history),
        "rejected": sum(len(r["rejected"]) for r in history),
        "skipped_rounds": sum(1 for r in history if r["skipped"]),
        "mean_upstream_rel_error": _mean([r.get("upstream_rel_error") for r in history]),
    }


def _mean(values: Sequence[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def write_rounds(out: Path, records: Sequence[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write(Path(out) / "rounds.jsonl", text.encode("utf-8"))


def write_summary(out: Path, summaries: Sequence[dict[str, Any]]) -> None:
    atomic_write(Path(out) / "summary.json", (json.dumps(list(summaries), indent=2, sort_keys=True) + "\n").encode("utf-8"))


def plot(out: Path, histories: dict[str, Sequence[dict[str, Any]]]) -> Path | None:
    """Test accuracy against cumulative upstream MB (log x), one line per configuration."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (nnupdate[plot])
        return None
    import io

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, history in histories.items():
        xs = [r["cum_bytes_up"] / 1e6 for r in history if r["cum_bytes_up"] > 0]
        ys = [r["accuracy"] for r in history if r["cum_bytes_up"] > 0]
        if xs:
            ax.plot(xs, ys, marker=".", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("cumulative upstream MB (bytes that crossed)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    target = Path(out) / "accuracy_vs_bytes.png"
    atomic_write(target, buffer.getvalue())
    return target
