"""``nnupdate fl``: federated runs whose every message is a .nnu container.

``fl run`` runs one configuration; ``fl compare`` runs several with otherwise identical
settings and writes one table, one plot and one rounds.jsonl. Torch, Flower and the
harness are imported inside the commands so ``nnupdate --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from . import app
from .output import console, emit_json, human_bytes

if TYPE_CHECKING:
    from ..fl import FLConfig

fl_app = typer.Typer(help="Federated learning over real .nnu bytes (inproc or Flower).", no_args_is_help=True)
app.add_typer(fl_app, name="fl")

#: compare entries tried when --codecs is not given; kept only if their codec is registered
DEFAULT_COMPARE = (
    "none",
    "fp16",
    "uniform:max_rel_error=0.3+ef",
    "rd:max_rel_error=0.8+ef",
    "rd:target_bits=0.84",
    "qsgd:s=1",
    "qsgd:s=1,bucket=32768",
    "m22:levels=4,M=0+ef",
    "m22:levels=4,M=2+ef",
    "topk:fraction=0.01+ef",
    "sbc:fraction=0.01+ef",
    "ctx:max_rel_error=0.8+ef",
)

Engine = Annotated[str, typer.Option(help="inproc (one process, deterministic) or flower (Flower simulation engine).")]
Clients = Annotated[int, typer.Option("--clients", "-K", help="Number of clients K.")]
PerRound = Annotated[int | None, typer.Option("--per-round", "-m", help="Clients per round m (default: all K).")]
Rounds = Annotated[int | None, typer.Option("--rounds", "-T", help="Rounds (default 20; with --resume: extend to T).")]
Alpha = Annotated[float, typer.Option(help="Dirichlet alpha of the non-IID split (smaller = more skew).")]
Split = Annotated[str, typer.Option(help="iid, dirichlet or shards.")]
Downstream = Annotated[str, typer.Option(help="'full' (complete weights, lossless) or a codec spec for global deltas.")]
ErrorFeedback = Annotated[bool, typer.Option("--error-feedback/--no-error-feedback", help="Client-side error feedback.")]
Dropout = Annotated[float, typer.Option(help="Probability that a selected client drops out of a round.")]
Mode = Annotated[str, typer.Option(help="fedavg, fedadam, fedavgm or distill.")]
Out = Annotated[Path | None, typer.Option(help="Directory for rounds.jsonl, summary.json, the plot and checkpoints.")]
Task = Annotated[str, typer.Option(help="Task module with make_model/client_datasets/test_dataset.")]
Epochs = Annotated[int, typer.Option("--local-epochs", "-E", help="Local epochs of mini-batch SGD.")]
Lr = Annotated[float, typer.Option(help="Client learning rate.")]
ServerLr = Annotated[float, typer.Option(help="Server learning rate (0: the mode's default).")]
BatchSize = Annotated[int, typer.Option(help="Client mini-batch size.")]
MinUpdates = Annotated[int, typer.Option(help="Skip a round with fewer valid updates than this.")]
Seed = Annotated[int, typer.Option(help="Seed of the split, the client sampling and the training.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]


def _config(**kwargs: Any) -> FLConfig:
    from ..fl import FLConfig

    if kwargs.get("per_round") is None:
        kwargs["per_round"] = kwargs["clients"]
    if kwargs.get("rounds") is None:
        kwargs["rounds"] = 20
    return FLConfig(**kwargs)


class _Progress:
    """A rich progress bar over rounds (silent with --json)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console()
            )
            self.progress.__enter__()
        return self

    def start(self, label: str, total: int, done: int = 0) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task(label, total=total, completed=done, status="")

    def round(self, record: dict[str, Any]) -> None:
        if self.progress is not None and self.task is not None:
            status = f"acc {record['accuracy']:.3f}  up {human_bytes(record['cum_bytes_up'])}"
            if record["rejected"]:
                status += f"  rejected {len(record['rejected'])}"
            self.progress.update(self.task, completed=record["round"], status=status)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


def _table(summaries: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    reference = next((s for s in summaries if s["config"] == "none"), None)
    table = Table(title=title)
    columns = ["config", "final acc", "bytes up", "bytes down", "rejected", "encode s"]
    if reference is not None:
        columns[2:2] = ["Δ vs none (pt)", "× fewer up"]
    for col in columns:
        table.add_column(col, justify="left" if col == "config" else "right", overflow="fold")
    for s in summaries:
        row = [s["config"], f"{s['final_accuracy']:.4f}"]
        if reference is not None:
            ratio = reference["total_bytes_up"] / s["total_bytes_up"] if s["total_bytes_up"] else float("nan")
            row += [f"{100 * (s['final_accuracy'] - reference['final_accuracy']):+.2f}", f"{ratio:.1f}"]
        row += [human_bytes(s["total_bytes_up"]), human_bytes(s["total_bytes_down"]), str(s["rejected"]), f"{s['encode_s']:.2f}"]
        table.add_row(*row)
    console().print(table)


@fl_app.command("run")
def run_command(
    engine: Engine = "inproc",
    clients: Clients = 10,
    per_round: PerRound = None,
    rounds: Rounds = None,
    alpha: Alpha = 0.5,
    split: Split = "dirichlet",
    codec: Annotated[str, typer.Option(help="Upstream codec spec ('none' = uncompressed float32).")] = "none",
    downstream: Downstream = "full",
    error_feedback: ErrorFeedback = False,
    dropout: Dropout = 0.0,
    mode: Mode = "fedavg",
    out: Out = None,
    resume: Annotated[Path | None, typer.Option(help="Continue the run checkpointed in DIR (its config is reused).")] = None,
    task: Task = "nnupdate.tasks.digits",
    local_epochs: Epochs = 2,
    lr: Lr = 0.05,
    batch_size: BatchSize = 16,
    server_lr: ServerLr = 0.0,
    min_updates: MinUpdates = 1,
    seed: Seed = 0,
    timeout: Annotated[float, typer.Option(help="Flower engine: seconds to wait for replies (0: wait for all).")] = 0.0,
    json_: Json = False,
) -> None:
    """Run one federated configuration (or resume one) and print its summary."""
    import logging

    from ..fl import run

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = None
    if resume is None:
        config = _config(
            task=task, clients=clients, per_round=per_round, rounds=rounds, split=split, alpha=alpha, codec=codec,
            downstream=downstream, error_feedback=error_feedback, dropout=dropout, mode=mode, local_epochs=local_epochs,
            lr=lr, batch_size=batch_size, server_lr=server_lr, min_updates=min_updates, seed=seed, timeout_s=timeout,
        )  # fmt: skip
    with _Progress(not json_) as bar:
        if config is not None:
            bar.start(config.label, config.rounds)
        else:
            bar.start(f"resume {resume}", rounds or 0)
        result = run(config, engine=engine, out=out, resume=resume, rounds=rounds, on_round=bar.round)
    summary = result.summary
    if json_:
        emit_json({"summary": summary, "rounds": result.history})
        return
    _table([summary], f"nnupdate fl run ({engine}, {result.config.mode}, K={result.config.clients}, m={result.config.per_round})")
    if out is not None or resume is not None:
        console().print(f"wrote {(out or resume)}/rounds.jsonl, summary.json, accuracy_vs_bytes.png")


@fl_app.command("compare")
def compare_command(
    codecs: Annotated[
        str | None,
        typer.Option(help="Entries SPEC[+ef|+noef][@down=SPEC] separated by commas (default set: 'none', fp16 and the registered lossy codecs)."),
    ] = None,
    engine: Engine = "inproc",
    clients: Clients = 10,
    per_round: PerRound = None,
    rounds: Rounds = None,
    alpha: Alpha = 0.5,
    split: Split = "dirichlet",
    downstream: Downstream = "full",
    error_feedback: ErrorFeedback = False,
    dropout: Dropout = 0.0,
    mode: Mode = "fedavg",
    out: Out = None,
    task: Task = "nnupdate.tasks.digits",
    local_epochs: Epochs = 2,
    lr: Lr = 0.05,
    batch_size: BatchSize = 16,
    server_lr: ServerLr = 0.0,
    seed: Seed = 0,
    json_: Json = False,
) -> None:
    """Run several codecs on the same federated setup: one table, one plot (accuracy vs upstream MB)."""
    import logging

    from ..fl import compare

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    entries = split_entries(codecs) if codecs else default_entries()
    base = _config(
        task=task, clients=clients, per_round=per_round, rounds=rounds, split=split, alpha=alpha, codec="none",
        downstream=downstream, error_feedback=error_feedback, dropout=dropout, mode=mode, local_epochs=local_epochs,
        lr=lr, batch_size=batch_size, server_lr=server_lr, seed=seed,
    )  # fmt: skip
    with _Progress(not json_) as bar:
        results = compare(entries, base, out=out, engine=engine, on_round=bar.round, on_config=lambda c: bar.start(c.label, c.rounds))
    summaries = [r.summary for r in results]
    if json_:
        emit_json(summaries)
        return
    _table(summaries, f"nnupdate fl compare ({engine}, K={base.clients}, m={base.per_round}, T={base.rounds}, {base.split} α={base.alpha})")
    if out is not None:
        console().print(f"wrote {out}/rounds.jsonl, summary.json, accuracy_vs_bytes.png")


def split_entries(text: str) -> list[str]:
    """Entries are separated by commas that start a new codec name (options also use commas).

    ``"none,fp16,rd:max_rel_error=0.5,coder=elias+ef"`` -> ``["none", "fp16", "rd:max_rel_error=0.5,coder=elias+ef"]``:
    a comma-separated piece containing ``=`` but no ``:`` continues the previous entry's options.
    """
    entries: list[str] = []
    for piece in (p.strip() for p in text.replace(";", ",").split(",")):
        if not piece:
            continue
        head = piece.split("+", 1)[0].split("@", 1)[0]
        if entries and "=" in head and ":" not in head:
            entries[-1] += "," + piece
        else:
            entries.append(piece)
    return entries


def default_entries() -> list[str]:
    """The default comparison set, restricted to codecs registered in this install."""
    from ..codecs import registered_codecs

    names = set(registered_codecs()) | {"none"}
    return [e for e in DEFAULT_COMPARE if e.split(":", 1)[0].split("+", 1)[0] in names]
