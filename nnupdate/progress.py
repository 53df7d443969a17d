"""Progress of long library calls, for whoever wants to show it.

Encoding a large update with rate control can take minutes; the library says where it is
(``report``) and a caller that wants to show it installs a listener for the duration of
a call (``listening``). Nothing is printed by the library itself, and with no listener a
report costs one context-variable lookup. The listener lives in a ``ContextVar``, so two
threads or tasks encoding at once each see only their own progress; reports are made on
the calling thread (record threads hand their results back to it first).

    def show(event: nnupdate.progress.Event) -> None:
        print(event.phase, event.done, event.total, event.detail)

    with nnupdate.progress.listening(show):
        nnupdate.encode_with_report(update, "ctx:max_rel_error=0.05")

The CLI draws a bar from these events on a terminal (``nnupdate encode``, ``apply``,
``decode``, ``verify``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """``done`` of ``total`` units of ``phase`` (elements, or trials when ``total`` is 0:
    a search whose length is not known in advance); ``detail`` says what the last unit was."""

    phase: str
    done: float
    total: float = 0.0
    detail: str = ""


Listener = Callable[[Event], None]

_listener: ContextVar[Listener | None] = ContextVar("nnupdate_progress", default=None)


def report(phase: str, done: float, total: float = 0.0, detail: str = "") -> None:
    """Tell the current listener, if any, that ``done`` of ``total`` units of ``phase`` are done."""
    listener = _listener.get()
    if listener is not None:
        listener(Event(phase, done, total, detail))


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the reports made inside this block (on this thread or task) to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


class Trials:
    """Numbers the trials of a search and reports each one (``total`` 0: open-ended)."""

    def __init__(self, phase: str) -> None:
        self.phase = phase
        self.count = 0

    def __call__(self, detail: str) -> None:
        self.count += 1
        report(self.phase, self.count, 0.0, detail)
