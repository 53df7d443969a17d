"""Shared output helpers: rich tables for people, JSON for machines."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def console() -> Any:
    from rich.console import Console

    return Console()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


@contextlib.contextmanager
def library_progress(enabled: bool) -> Iterator[None]:
    """Draw the library's progress events (:mod:`nnupdate.progress`) as a transient bar
    on stderr while the block runs: a bar for phases of known size, a spinner with the
    trial count and its outcome for searches. Off with ``enabled`` false or when stderr is
    not a terminal (pipes, CI logs, --json)."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

    from .. import progress

    bar = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def show(event: progress.Event) -> None:
        if event.phase not in tasks:
            tasks[event.phase] = bar.add_task(event.phase, total=event.total or None, detail="")
        if event.total:
            bar.update(tasks[event.phase], completed=event.done, total=event.total, detail=event.detail)
        else:
            bar.update(tasks[event.phase], detail=f"trial {event.done:.0f}: {event.detail}")

    with bar, progress.listening(show):
        yield
