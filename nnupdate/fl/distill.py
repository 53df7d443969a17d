"""Federated distillation mode (CFD-style): needs ``nnupdate.distill`` (soft-label codec)."""

from __future__ import annotations

from ..errors import UnsupportedError


def check_available() -> None:
    try:
        from .. import distill  # noqa: F401
    except ImportError:
        raise UnsupportedError("mode 'distill' needs nnupdate.distill (the soft-label codec), which is not installed here") from None
    raise UnsupportedError("mode 'distill' is not wired into the FL harness yet")
