"""Progress events of long library calls (nnupdate.progress) and the CLI bar that draws them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import nnupdate
from nnupdate import progress


def _update(tensors: int = 6) -> nnupdate.Update:
    g = np.random.default_rng(0)
    new = {f"layer{i}.weight": g.normal(size=(64, 300)).astype(np.float32) for i in range(tensors)}
    return nnupdate.diff({k: np.zeros_like(v) for k, v in new.items()}, new)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_encode_reports_the_search_then_every_element_encoded(threads: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNUPDATE_THREADS", threads)
    update = _update()
    events: list[progress.Event] = []
    with progress.listening(events.append):
        report = nnupdate.encode_with_report(update, "ctx:max_rel_error=0.1,quant=fast")
    search = [e for e in events if e.phase.startswith("ctx: searching the step")]
    assert search and all(e.total == 0 for e in search)
    assert [e.done for e in search] == list(range(1, len(search) + 1))  # trials numbered in order
    encoding = [e for e in events if e.phase == "encoding"]
    total = sum(c.size for c in update.changes.values())
    assert encoding and all(e.total == total for e in encoding)
    assert [e.done for e in encoding] == sorted(e.done for e in encoding)
    assert encoding[-1].done == total
    decoding: list[progress.Event] = []
    with progress.listening(decoding.append):
        nnupdate.decode(report.data)
    assert decoding[-1] == progress.Event("decoding", total, total)


def test_no_listener_and_nested_listeners() -> None:
    progress.report("nobody listens", 1, 2)  # a no-op, not an error
    outer: list[progress.Event] = []
    inner: list[progress.Event] = []
    with progress.listening(outer.append):
        progress.report("a", 1)
        with progress.listening(inner.append):
            progress.report("b", 1)
        progress.report("c", 1)
    progress.report("d", 1)
    assert [e.phase for e in outer] == ["a", "c"]
    assert [e.phase for e in inner] == ["b"]


def test_a_listener_error_is_not_swallowed() -> None:
    """A broken listener is the caller's bug: it surfaces rather than being hidden."""

    def broken(event: progress.Event) -> None:
        raise RuntimeError("listener failed")

    with pytest.raises(RuntimeError, match="listener failed"), progress.listening(broken):
        nnupdate.encode_with_report(_update(2), "uniform")


def test_cli_bar_stays_off_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Under a pipe (CI logs, a captured run) the bar draws nothing: stderr stays empty and
    stdout holds the summary alone."""
    from nnupdate.cli import main

    g = np.random.default_rng(1)
    base = {"w": g.normal(size=(32, 32)).astype(np.float32)}
    new = {"w": base["w"] + 0.01 * g.normal(size=(32, 32)).astype(np.float32)}
    np.savez(tmp_path / "b.npz", w=base["w"])
    np.savez(tmp_path / "n.npz", w=new["w"])
    assert main(["encode", str(tmp_path / "b.npz"), str(tmp_path / "n.npz"), "-o", str(tmp_path / "u.nnu"), "--codec", "ctx"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("wrote ") and out.err == ""
