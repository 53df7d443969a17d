"""``zstd``: Zstandard on the bytes of the previous stage (a bytes→bytes stage)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import zstandard

from ..errors import CodecError
from .base import BytesToBytes, register

_LOCAL = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """A per-thread compressor per level: creating one costs ~100 us, more than
    compressing a small tensor (compressor objects are not thread-safe, hence per thread)."""
    cache = _LOCAL.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]  # type: ignore[no-any-return]


@register
@dataclass(frozen=True)
class Zstd(BytesToBytes):
    """One Zstandard frame (RFC 8878) declaring its content size; ``level`` is informational for decoders."""

    codec_id = 0x0030
    name = "zstd"
    lossless = True
    level: int = 3

    def encode(self, data: bytes) -> tuple[bytes, Zstd]:
        return _compressor(self.level).compress(data), self

    def decode(self, data: bytes, max_size: int) -> bytes:
        try:
            size = zstandard.frame_content_size(data)
        except zstandard.ZstdError:
            raise CodecError("zstd: not a zstd frame") from None
        if size < 0 or size > max_size:
            raise CodecError("zstd: frame lacks a content size or declares too many bytes")
        # One frame, exactly: libzstd stops at a declared content size, and bytes after the
        # frame (which ZstdDecompressor.decompress would silently ignore) are refused.
        stream = zstandard.ZstdDecompressor().decompressobj()
        try:
            out = stream.decompress(data)
        except zstandard.ZstdError as exc:
            raise CodecError(f"zstd: {exc}") from None
        if not stream.eof:
            raise CodecError("zstd: frame is cut off")
        if stream.unused_data:
            raise CodecError("zstd: bytes after the frame")
        if len(out) != size:
            raise CodecError("zstd: frame size mismatch")
        return out
